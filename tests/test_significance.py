"""Hand-built cases with known answers for every score bucket, the top-2.5 % rule, key/weak areas and regions."""

import pytest
import torch

from yolo_tsd.config import TSDConfig
from yolo_tsd.method.significance import (
    HIGH,
    LOW,
    MID,
    Assignment,
    GroundTruth,
    anchor_weights,
    classification_score,
    importance,
    key_weak_areas,
    max_iou,
    pairwise_iou,
    regions,
    regression_score,
    top_confidence,
)

CFG = TSDConfig()
ABS, OFF, BIN = TSDConfig(weak_mode="abs"), TSDConfig(weak_mode="off"), TSDConfig(split="binary")


def test_regression_score_buckets():
    fg = torch.tensor([[True, False, False, True]])
    max_iou = torch.tensor([[0.1, 0.45, 0.39, 0.9]])
    assert regression_score(fg, max_iou, CFG)[0].tolist() == pytest.approx([2.0, 1.5, 0.4, 2.0])


def test_regression_score_fixed_iou_variant_ignores_the_assigner():
    cfg = TSDConfig(reg_score="iou", iou_pos=0.6)
    fg = torch.tensor([[True, False, False]])
    max_iou = torch.tensor([[0.1, 0.7, 0.5]])
    assert regression_score(fg, max_iou, cfg)[0].tolist() == pytest.approx([0.4, 2.0, 1.5])


def test_top_confidence_takes_ceil_of_2_5_percent():
    conf = torch.arange(80, dtype=torch.float).view(1, -1) / 100  # k = ceil(0.025 * 80) = 2
    top = top_confidence(conf, 0.025)
    assert top.sum() == 2 and top[0, 79] and top[0, 78]
    conf = torch.rand(2, 81)  # k = ceil(2.025) = 3, per image
    assert top_confidence(conf, 0.025).sum(1).tolist() == [3, 3]


def test_classification_score_buckets():
    # 40 anchors -> one top anchor per image; class 1 is predicted everywhere, anchor 0 is the most confident
    logits = torch.full((1, 40, 3), -5.0)
    logits[0, :, 1] = -1.0
    logits[0, 0, 1] = 3.0
    matched = torch.ones(1, 40, dtype=torch.long)
    matched[0, 2] = 0  # wrong class
    has = torch.ones(1, 40, dtype=torch.bool)
    has[0, 3] = False  # no ground truth near: cannot be right
    matched_top_wrong = matched.clone()
    matched_top_wrong[0, 0] = 2
    sc = classification_score(logits, matched, has, CFG)[0]
    assert sc[0] == 2.0  # top and right
    assert sc[1] == 1.5  # right only
    assert sc[2] == 0.4 and sc[3] == 0.4  # neither
    assert classification_score(logits, matched_top_wrong, has, CFG)[0, 0] == 1.5  # top only


def gt_one_box():
    return GroundTruth(
        labels=torch.tensor([[1, 0]]),
        boxes=torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]]]),  # second row is padding
        mask=torch.tensor([[True, False]]),
    )


def test_pairwise_iou_known_values_and_padding():
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]]])
    iou = pairwise_iou(boxes, gt_one_box())
    assert torch.allclose(iou[0, :, 0], torch.tensor([1.0, 50 / 150, 0.0]))
    assert iou[0, :, 1].abs().sum() == 0  # padding never matches


def test_importance_is_the_product_and_ablations_replace_one_factor():
    # 40 anchors; anchor 0: positive, confident, right class; anchor 1: overlapping box, wrong class; rest: far away
    boxes = torch.tensor([[100.0, 100.0, 110.0, 110.0]]).repeat(1, 40, 1)
    boxes[0, 0] = torch.tensor([0.0, 0.0, 10.0, 10.0])
    boxes[0, 1] = torch.tensor([0.0, 0.0, 10.0, 8.0])  # IoU 0.8 with the ground truth
    logits = torch.full((1, 40, 3), -4.0)
    logits[0, 0, 1] = 4.0
    logits[0, 1, 2] = 0.0
    assigned = Assignment(torch.tensor([[True] + [False] * 39]), torch.zeros(1, 40, dtype=torch.long))
    imp = importance(logits, boxes, assigned, gt_one_box(), CFG)[0]
    assert imp[0] == pytest.approx(4.0)  # Sr 2 * Sc 2
    assert imp[1] == pytest.approx(1.5 * 0.4)  # near-positive, wrong class, not top
    assert imp[5] == pytest.approx(0.4 * 0.4)
    cls_only = importance(logits, boxes, assigned, gt_one_box(), TSDConfig(importance="cls", single_task_value=1.0))
    reg_only = importance(logits, boxes, assigned, gt_one_box(), TSDConfig(importance="reg", single_task_value=2.0))
    assert cls_only[0, :2].tolist() == pytest.approx([2.0, 0.4])
    assert reg_only[0, :2].tolist() == pytest.approx([4.0, 3.0])


def test_importance_without_any_ground_truth():
    gt = GroundTruth(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool))
    assigned = Assignment(torch.zeros(2, 40, dtype=torch.bool), torch.zeros(2, 40, dtype=torch.long))
    imp = importance(torch.randn(2, 40, 3), torch.rand(2, 40, 4), assigned, gt, CFG)
    assert torch.isfinite(imp).all()
    assert sorted(set(imp.flatten().tolist())) == pytest.approx([0.4 * 0.4, 0.4 * 1.5])  # only "top" can hold


def test_three_way_regions():
    imp_t = torch.tensor([[4.0, 4.0, 1.0, 1.0, 0.16]])
    imp_s = torch.tensor([[2.0, 3.9, 0.0, 1.0, 4.0]])
    # K: t>=3 -> [1,1,0,0,0]; W: t-s>=1 -> [1,0,1,0,0]
    assert regions(*key_weak_areas(imp_t, imp_s, CFG), CFG).tolist() == [[HIGH, MID, MID, LOW, LOW]]
    # |t-s| also catches the over-confident student at anchor 4
    assert regions(*key_weak_areas(imp_t, imp_s, ABS), ABS).tolist() == [[HIGH, MID, MID, LOW, MID]]
    assert regions(*key_weak_areas(imp_t, imp_s, OFF), OFF).tolist() == [[MID, MID, LOW, LOW, LOW]]
    assert regions(*key_weak_areas(imp_t, imp_s, BIN), BIN).tolist() == [[HIGH, HIGH, HIGH, LOW, LOW]]


def test_weights_are_per_anchor_by_region_so_the_background_counts_by_its_size():
    region = torch.tensor([[HIGH, LOW, LOW, LOW, MID, LOW]])
    w = anchor_weights(region, torch.ones(1, 6), TSDConfig())
    assert w[0].tolist() == pytest.approx([1.0, 0.05, 0.05, 0.05, 0.5, 0.05])
    many = torch.tensor([[HIGH] + [LOW] * 99])  # 99 background anchors now weigh more than the object together
    w = anchor_weights(many, torch.ones(1, 100), TSDConfig())
    assert w[0, 1:].sum() > w[0, 0]


def test_continuous_weights_scale_with_teacher_importance():
    region = torch.tensor([[HIGH, HIGH]])
    w = anchor_weights(region, torch.tensor([[4.0, 3.0]]), TSDConfig(continuous=True))
    assert w[0].tolist() == pytest.approx([4.0, 3.0])  # w_high (1.0) per anchor, times I_T


def test_matched_ground_truth_is_the_assigned_one_for_positives_else_the_max_iou_one():
    gt = GroundTruth(
        labels=torch.tensor([[0, 2]]),
        boxes=torch.tensor([[[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]]]),
        mask=torch.tensor([[True, True]]),
    )
    boxes = torch.tensor([[100.0, 100.0, 110.0, 110.0]]).repeat(1, 40, 1)
    boxes[0, 0] = torch.tensor([0.0, 0.0, 10.0, 10.0])  # overlaps GT 0 (class 0) best ...
    boxes[0, 1] = torch.tensor([20.0, 0.0, 30.0, 9.0])  # overlaps GT 1 (class 2) best, not a positive
    logits = torch.full((1, 40, 3), -6.0)
    logits[0, 0, 2] = 5.0  # anchor 0 predicts class 2, confidently (top)
    logits[0, 1, 2] = -1.0  # anchor 1 predicts class 2, not top
    gt_idx = torch.zeros(1, 40, dtype=torch.long)
    gt_idx[0, 0] = 1  # ... but the assigner gave anchor 0 to GT 1 (class 2)
    fg = torch.zeros(1, 40, dtype=torch.bool)
    fg[0, 0] = True
    imp = importance(logits, boxes, Assignment(fg, gt_idx), gt, CFG)[0]
    assert imp[0] == pytest.approx(2.0 * 2.0)  # right w.r.t. the assigned GT (class 2), not the max-IoU one (0)
    assert imp[1] == pytest.approx(1.5 * 1.5)  # non-positive: matched by IoU to GT 1, class 2 is right, not top


@pytest.mark.parametrize("chunk", [1, 7, 64, 10**9])
def test_chunked_max_iou_equals_the_full_pairwise_max(chunk):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(3, 50, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(3, 50, 2, generator=g) * 40], -1)
    gxy = torch.rand(3, 4, 2, generator=g) * 100
    gt = GroundTruth(
        labels=torch.zeros(3, 4, dtype=torch.long),
        boxes=torch.cat([gxy, gxy + 30], -1),
        mask=torch.tensor([[True] * 4, [True, True, False, False], [False] * 4]),
    )
    full = pairwise_iou(boxes, gt).max(-1)
    best, idx = max_iou(boxes, gt, chunk=chunk)
    assert torch.equal(best, full.values) and torch.equal(idx, full.indices)
    assert (best[2] == 0).all()  # an image whose boxes are all padding matches nothing
