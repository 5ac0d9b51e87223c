"""The combined loss on tiny random-weight models: exactness at weight 0, zero at equality, gradients, copies."""

import pickle
from copy import deepcopy

import pytest
import torch
from helpers import build_model, make_batch

from yolo_tsd.config import TSDConfig
from yolo_tsd.criterion import LOSS_NAMES, TSDLoss
from yolo_tsd.losses import FeatureAdapters
from yolo_tsd.significance import HIGH
from yolo_tsd.teacher import Teacher, head_channels

ZERO = {"lambda_feat": 0.0, "lambda_cls": 0.0, "lambda_box": 0.0}


def setup(teacher_cfg="yolov8s.yaml", student_cfg="yolov8n.yaml", **settings):
    student = build_model(student_cfg, seed=0).train()
    teacher = Teacher(build_model(teacher_cfg, seed=1))
    adapters = FeatureAdapters(head_channels(student), head_channels(teacher.model))
    return student, teacher, adapters, TSDLoss(student, teacher, adapters, TSDConfig(**settings))


def test_all_weights_zero_is_exactly_ultralytics_loss_and_skips_the_teacher(monkeypatch):
    student, teacher, _, crit = setup(**ZERO)
    batch = make_batch()
    preds = student(batch["img"])
    monkeypatch.setattr(Teacher, "__call__", lambda *a: pytest.fail("teacher ran with every weight at 0"))
    loss, items = crit(preds, batch)
    ref_loss, ref_items = student.init_criterion()(preds, batch)
    assert torch.equal(loss[:3], ref_loss) and torch.equal(loss.sum(), ref_loss.sum())
    assert loss[3:].abs().sum() == 0
    assert all(torch.equal(items[k], v) for k, v in ref_items.items())
    assert tuple(items)[3:] == LOSS_NAMES and all(len(k) <= 10 for k in items)


def test_detection_part_is_unchanged_when_distilling():
    student, _, _, crit = setup()
    batch = make_batch()
    preds = student(batch["img"])
    loss, items = crit(preds, batch)
    ref_loss, _ = student.init_criterion()(preds, batch)
    assert torch.allclose(loss[:3], ref_loss)
    assert all(items[k] > 0 for k in LOSS_NAMES), items


@pytest.mark.parametrize("reg_score", ["assigner", "iou"])
def test_terms_vanish_and_importance_agrees_when_student_equals_teacher(reg_score):
    student = build_model("yolov8n.yaml", seed=3).eval()  # eval: BatchNorm identical to the teacher's
    teacher = Teacher(deepcopy(student))
    adapters = FeatureAdapters(head_channels(student), head_channels(teacher.model))  # identity: same widths
    crit = TSDLoss(student, teacher, adapters, TSDConfig(reg_score=reg_score))
    student.model[-1].training = True  # raw outputs, like the teacher
    batch = make_batch(boxes_per_image=4)
    _, items = crit(student(batch["img"]), batch)
    assert all(items[k].abs() < 1e-6 for k in LOSS_NAMES), items
    # the teacher's own assignment (TaskAlignedAssigner on its outputs) must equal the student's
    assert torch.equal(crit.last["imp_t"], crit.last["imp_s"])
    assert (crit.last["imp_t"] > 0.16 + 1e-6).any()  # some anchors score above the floor: GT was seen
    assert not (crit.last["region"] == HIGH).any()  # no weak area when the student is the teacher


def test_gradients_reach_student_and_adapters_never_teacher():
    student, teacher, adapters, crit = setup()
    batch = make_batch()
    loss, _ = crit(student(batch["img"]), batch)
    loss[3:].sum().backward()  # the distillation terms alone
    assert all(p.grad is None for p in teacher.model.parameters())
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapters.parameters())
    head = student.model[-1]
    assert head.cv3[0][-1].weight.grad.abs().sum() > 0  # class logits
    assert head.cv2[0][-1].weight.grad.abs().sum() > 0  # box distribution
    assert student.model[0].conv.weight.grad.abs().sum() > 0  # through the neck features to the backbone


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_each_lambda_zero_switches_off_only_its_term(name):
    weights = {"dfeat_loss": "lambda_feat", "dcls_loss": "lambda_cls", "dbox_loss": "lambda_box"}
    _, _, _, crit = setup(**{weights[name]: 0.0})
    student = build_model("yolov8n.yaml", seed=0).train()
    batch = make_batch()
    _, items = crit(student(batch["img"]), batch)
    assert items[name] == 0 and all(items[k] > 0 for k in LOSS_NAMES if k != name)


def test_lambda_scales_its_term_linearly():
    batch = make_batch()
    values = []
    for lam in (1.0, 3.0):
        student, _, _, crit = setup(lambda_cls=lam)
        values.append(crit(student(batch["img"]), batch)[1]["dcls_loss"])
    assert values[1] == pytest.approx(3 * values[0], rel=1e-5)


def test_schedule_scale_zero_is_ultralytics_loss():
    student, _, _, crit = setup()
    crit.scale = 0.0
    batch = make_batch()
    preds = student(batch["img"])
    loss, _ = crit(preds, batch)
    assert torch.equal(loss[:3], student.init_criterion()(preds, batch)[0]) and loss[3:].sum() == 0


def test_empty_batch_and_no_ground_truth_stay_finite():
    student, _, _, crit = setup()
    batch = make_batch(boxes_per_image=0)
    loss, items = crit(student(batch["img"]), batch)
    assert torch.isfinite(loss).all() and all(torch.isfinite(v) for v in items.values())


def test_student_with_criterion_copies_and_pickles_without_teacher():
    student, _, _, crit = setup()
    student.criterion = crit
    copied = deepcopy(student)
    assert copied.criterion is None
    restored = pickle.loads(pickle.dumps(student))
    assert restored.criterion is None
    assert set(restored.state_dict()) == set(build_model("yolov8n.yaml").state_dict())
    assert student.criterion is crit  # the live model keeps it


@pytest.mark.parametrize(
    "teacher_cfg, student_cfg",
    [
        ("yolo11s.yaml", "yolov8n.yaml"),
        ("yolov8s.yaml", "yolo26n.yaml"),
        ("yolo11s.yaml", "yolo26n.yaml"),
        ("yolo26s.yaml", "yolo11n.yaml"),
        ("yolo26s.yaml", "yolo26n.yaml"),
    ],
)
def test_cross_family_pairs_distil(teacher_cfg, student_cfg):
    student, teacher, adapters, crit = setup(teacher_cfg, student_cfg)
    batch = make_batch()
    loss, items = crit(student(batch["img"]), batch)
    assert torch.isfinite(loss).all() and all(items[k] > 0 for k in LOSS_NAMES), items
    loss.sum().backward()
    assert all(p.grad is not None for p in adapters.parameters())


def test_end_to_end_student_follows_ultralytics_branch_weighting():
    student, _, _, crit = setup("yolo26s.yaml", "yolo26n.yaml")
    det = crit.det
    assert hasattr(det, "one2many") and hasattr(det, "one2one")  # Ultralytics' E2ELoss
    batch = make_batch()
    preds = student(batch["img"])
    loss, items = crit(preds, batch)
    ref_loss, ref_items = det(preds, batch)
    assert torch.allclose(loss[:3], ref_loss) and all(torch.allclose(items[k], v) for k, v in ref_items.items())
    assert "l1_loss" in items  # YOLO26 has no DFL: Ultralytics names its box-distance term l1_loss
    o2m = det.o2m
    crit.update()  # the per-epoch schedule reaches Ultralytics' criterion
    assert det.o2m < o2m and det.updates == 1
    # the feature term is shared by both branches: it must not shrink with the one-to-many gain
    feat_before = crit(preds, batch)[1]["dfeat_loss"]
    det.o2m, det.o2o = 0.1, 0.9
    assert crit(preds, batch)[1]["dfeat_loss"] == pytest.approx(feat_before.item(), rel=1e-6)


def test_reg_max_1_box_term_is_l1_or_iou_on_decoded_distances():
    batch = make_batch()
    values = {}
    for mode in ("l1", "iou"):
        student, _, _, crit = setup("yolo26s.yaml", "yolo26n.yaml", box_r1=mode, lambda_feat=0, lambda_cls=0)
        values[mode] = crit(student(batch["img"]), batch)[1]["dbox_loss"].item()
    assert values["l1"] > 0 and 0 < values["iou"] <= 1 and values["l1"] != values["iou"]
