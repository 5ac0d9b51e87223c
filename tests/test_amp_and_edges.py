"""Mixed precision and the odd batches a real dataset produces: finite, sensible values, never NaN."""

import pytest
import torch
from helpers import build_model, make_batch

from yolo_tsd.config import TSDConfig
from yolo_tsd.criterion import LOSS_NAMES, TSDLoss
from yolo_tsd.losses import FeatureAdapters
from yolo_tsd.significance import LOW
from yolo_tsd.teacher import Teacher, head_channels


def make_crit(nc=5, **settings):
    student = build_model("yolov8n.yaml", nc=nc, seed=0).train()
    teacher = Teacher(build_model("yolov8s.yaml", nc=nc, seed=1))
    torch.manual_seed(0)  # adapters: the same init whatever ran before
    adapters = FeatureAdapters(head_channels(student), head_channels(teacher.model))
    return student, TSDLoss(student, teacher, adapters, TSDConfig(**settings))


def run(student, crit, batch):
    loss, items = crit(student(batch["img"]), batch)
    assert torch.isfinite(loss).all() and all(torch.isfinite(v) for v in items.values()), items
    return loss, items


def test_bf16_autocast_matches_fp32():
    student, crit = make_crit()
    batch = make_batch(bs=4, imgsz=128)
    _, ref = run(student, crit, batch)
    ref_region = crit.last["region"].clone()
    ref = {**ref, "weight": crit.last["weight"].clone()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, items = run(student, crit, batch)
    assert all(v.dtype == torch.float32 for v in crit.last.values() if v.is_floating_point())  # significance in fp32
    assert (crit.last["region"] == ref_region).float().mean() > 0.99
    # the terms, compared under the fp32 weights: one anchor changing region moves a small region's normalised weights
    crit.weights = lambda *args: ref["weight"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, items = run(student, crit, batch)
    for k in ("dfeat_loss", "dbox_loss", "box_loss", "dfl_loss"):
        assert items[k] == pytest.approx(ref[k].item(), rel=0.05), k
    assert abs(items["dcls_loss"] - ref["dcls_loss"]) < 1e-3


def test_bf16_gradients_are_finite():
    student, crit = make_crit()
    batch = make_batch(bs=2, imgsz=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = run(student, crit, batch)
    loss.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
    assert all(torch.isfinite(p.grad).all() for p in crit.adapters.parameters())


def test_batch_without_any_ground_truth_is_all_background():
    student, crit = make_crit()
    _, items = run(student, crit, make_batch(boxes_per_image=0))
    # no object: at most "top" holds, importance <= 0.4 * 1.5, so no key area; a weak area needs I_T - I_S >= 1
    assert (crit.last["imp_t"] <= 0.4 * 1.5 + 1e-6).all() and (crit.last["region"] == LOW).all()
    assert items["dfeat_loss"] > 0 and items["dcls_loss"] > 0  # the low region is still distilled (w_low)


def test_some_images_without_labels():
    student, crit = make_crit()
    batch = make_batch(bs=3, boxes_per_image=2)
    keep = batch["batch_idx"] != 1  # image 1 has no labels
    batch = {**batch, **{k: batch[k][keep] for k in ("batch_idx", "cls", "bboxes")}}
    run(student, crit, batch)
    assert (crit.last["region"][1] == LOW).all()  # the unlabelled image has no key or weak anchor
    assert (crit.last["imp_t"][1] <= 0.4 * 1.5 + 1e-6).all()


def test_single_class():
    student, crit = make_crit(nc=1)
    batch = make_batch()
    batch["cls"].zero_()
    _, items = run(student, crit, batch)
    assert all(items[k] > 0 for k in LOSS_NAMES)


@pytest.mark.parametrize("wh", [(0.01, 0.01), (1.0, 1.0), (0.02, 0.9)], ids=["tiny", "huge", "thin"])
def test_tiny_huge_and_thin_objects(wh):
    student, crit = make_crit()
    batch = make_batch(bs=2, boxes_per_image=1)
    batch["bboxes"] = torch.tensor([[0.5, 0.5, *wh]] * 2)
    run(student, crit, batch)


def test_non_square_input_like_rect_validation():
    student, crit = make_crit()
    batch = make_batch(bs=2, imgsz=64)
    batch["img"] = torch.rand(2, 3, 64, 96)
    run(student, crit, batch)
