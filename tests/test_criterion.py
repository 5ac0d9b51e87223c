"""The combined loss on tiny random-weight models: exactness at weight 0, zero at equality, gradients, copies."""

import pickle
from copy import deepcopy

import pytest
import torch
from helpers import TERMS_ON, build_model, distiller, make_batch

from yolo_tsd.config import TSDConfig
from yolo_tsd.method.significance import HIGH
from yolo_tsd.training.criterion import LOSS_NAMES
from yolo_tsd.training.model import TSDModel
from yolo_tsd.training.teacher import Teacher

ZERO = {"lambda_feat": 0.0, "lambda_cls": 0.0, "lambda_box": 0.0}


def test_all_weights_zero_is_exactly_ultralytics_loss_and_skips_the_teacher(monkeypatch):
    student, _, tsd = distiller(**ZERO)
    batch = make_batch()
    preds = student(batch["img"])
    monkeypatch.setattr(Teacher, "__call__", lambda *a: pytest.fail("teacher ran with every weight at 0"))
    loss, items = tsd.loss(batch, preds)
    ref_loss, ref_items = student.init_criterion()(preds, batch)
    assert torch.equal(loss[:3], ref_loss) and torch.equal(loss.sum(), ref_loss.sum())
    assert loss[3:].abs().sum() == 0
    assert all(torch.equal(items[k], v) for k, v in ref_items.items())
    assert tuple(items)[3:] == LOSS_NAMES and all(len(k) <= 10 for k in items)


def test_model_call_on_a_batch_is_the_loss_and_on_images_the_student():
    student, _, tsd = distiller()
    batch = make_batch()
    torch.manual_seed(0)
    loss, items = tsd(batch)  # what Ultralytics' trainer (and DDP) call
    assert loss.shape == (6,) and set(LOSS_NAMES) <= set(items)
    out = tsd(batch["img"])
    ref = student(batch["img"])
    assert torch.equal(out["scores"], ref["scores"])


def test_detection_part_is_unchanged_when_distilling():
    student, _, tsd = distiller(**TERMS_ON)
    batch = make_batch()
    preds = student(batch["img"])
    loss, items = tsd.loss(batch, preds)
    ref_loss, _ = student.init_criterion()(preds, batch)
    assert torch.allclose(loss[:3], ref_loss)
    assert all(items[k] > 0 for k in LOSS_NAMES), items


@pytest.mark.parametrize("reg_score", ["assigner", "iou"])
def test_terms_vanish_and_importance_agrees_when_student_equals_teacher(reg_score):
    student = build_model("yolov8n.yaml", seed=3).eval()  # eval: BatchNorm identical to the teacher's
    teacher = Teacher(deepcopy(student))
    tsd = TSDModel(student, teacher, TSDConfig(reg_score=reg_score, **TERMS_ON))  # identity adapters; terms on
    student.model[-1].training = True  # raw outputs, like the teacher
    batch = make_batch(boxes_per_image=4)
    step = tsd.step(batch, student(batch["img"]))
    assert all(step.items[k].abs() < 1e-6 for k in LOSS_NAMES), step.items
    sig = step.significance["detect"]
    # the teacher's own assignment (TaskAlignedAssigner on its outputs) must equal the student's
    assert torch.equal(sig.imp_t, sig.imp_s)
    assert (sig.imp_t > 0.16 + 1e-6).any()  # some anchors score above the floor: GT was seen
    assert not (sig.region == HIGH).any()  # no weak area when the student is the teacher


def test_gradients_reach_student_and_adapters_never_teacher():
    student, teacher, tsd = distiller(**TERMS_ON)
    batch = make_batch()
    loss, _ = tsd.loss(batch)
    loss[3:].sum().backward()  # the distillation terms alone
    assert all(p.grad is None for p in teacher.model.parameters())
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tsd.adapters.parameters())
    head = student.model[-1]
    assert head.cv3[0][-1].weight.grad.abs().sum() > 0  # class logits
    assert head.cv2[0][-1].weight.grad.abs().sum() > 0  # box distribution
    assert student.model[0].conv.weight.grad.abs().sum() > 0  # through the neck features to the backbone


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_each_lambda_zero_switches_off_only_its_term(name):
    weights = {"dfeat_loss": "lambda_feat", "dcls_loss": "lambda_cls", "dbox_loss": "lambda_box"}
    _, _, tsd = distiller(**{weights[name]: 0.0}, **TERMS_ON)
    _, items = tsd.loss(make_batch())
    assert items[name] == 0 and all(items[k] > 0 for k in LOSS_NAMES if k != name)


def test_lambda_scales_its_term_linearly():
    batch = make_batch()
    values = []
    for lam in (1.0, 3.0):
        _, _, tsd = distiller(lambda_cls=lam, **TERMS_ON)
        values.append(tsd.loss(batch)[1]["dcls_loss"].item())
    assert values[1] == pytest.approx(3 * values[0], rel=1e-5)


def test_a_step_without_the_teacher_is_ultralytics_loss(monkeypatch):
    student, _, tsd = distiller(**TERMS_ON)
    tsd.teacher_due = False  # a step of an epoch in which the teacher rests
    monkeypatch.setattr(Teacher, "__call__", lambda *a: pytest.fail("the teacher ran on a resting step"))
    batch = make_batch()
    preds = student(batch["img"])
    loss, _ = tsd.loss(batch, preds)
    assert torch.equal(loss[:3], student.init_criterion()(preds, batch)[0]) and loss[3:].sum() == 0
    assert tsd.stats.sizes is None  # nothing was measured on it


def test_empty_batch_and_no_ground_truth_stay_finite():
    _, _, tsd = distiller()
    loss, items = tsd.loss(make_batch(boxes_per_image=0))
    assert torch.isfinite(loss).all() and all(torch.isfinite(v) for v in items.values())


def test_module_copies_and_pickles_without_the_teacher_and_the_student_stays_plain():
    student, teacher, tsd = distiller()
    assert "teacher" not in dict(tsd.named_modules()) and not any(
        p is q for p in tsd.parameters() for q in teacher.model.parameters()
    )
    copied = deepcopy(tsd)
    assert copied.teacher is teacher  # referenced, never copied
    assert copied.adapters is not tsd.adapters and copied.student is not student
    restored = pickle.loads(pickle.dumps(tsd))
    assert restored.teacher is None and set(restored.state_dict()) == set(tsd.state_dict())
    with pytest.raises(RuntimeError, match="without its teacher"):
        restored.loss(make_batch())
    student_keys = set(build_model("yolov8n.yaml").state_dict())
    assert set(pickle.loads(pickle.dumps(student)).state_dict()) == student_keys  # no adapters in the student


def test_ultralytics_unwrap_reaches_the_student_through_ddp_style_wrapping():
    from ultralytics.utils.torch_utils import ModelEMA, unwrap_model

    student, _, tsd = distiller()
    assert unwrap_model(tsd) is student  # EMA, NaN recovery, class weights, criterion updates act on the student
    ema = ModelEMA(tsd)
    assert type(ema.ema) is type(student) and set(ema.ema.state_dict()) == set(student.state_dict())
    ema.update(tsd)  # keys match: the EMA averages the student, never the adapters
    assert tsd.stride is student.stride
    names = [n for n, _ in tsd.named_parameters()]
    assert any(n.startswith("adapters.") for n in names) and any(".model.0." in n for n in names)


def test_adapters_follow_the_students_memory_format():
    student = build_model("yolov8n.yaml").to(memory_format=torch.channels_last)
    tsd = TSDModel(student, Teacher(build_model("yolov8s.yaml", seed=1)), TSDConfig())
    convs = [m.weight for m in tsd.adapters.levels if hasattr(m, "weight")]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    _, _, plain = distiller()
    assert all(m.weight.is_contiguous() for m in plain.adapters.levels if hasattr(m, "weight"))


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
    _, _, tsd = distiller(teacher_cfg, student_cfg, **TERMS_ON)
    loss, items = tsd.loss(make_batch())
    assert torch.isfinite(loss).all() and all(items[k] > 0 for k in LOSS_NAMES), items
    loss.sum().backward()
    assert all(p.grad is not None for p in tsd.adapters.parameters())


def test_end_to_end_student_follows_ultralytics_branch_weighting():
    student, _, tsd = distiller("yolo26s.yaml", "yolo26n.yaml", balance="off", **TERMS_ON)  # raw terms
    det = tsd.criterion
    assert hasattr(det, "one2many") and hasattr(det, "one2one")  # Ultralytics' E2ELoss
    batch = make_batch()
    preds = student(batch["img"])
    loss, items = tsd.loss(batch, preds)
    ref_loss, ref_items = det(preds, batch)
    assert torch.allclose(loss[:3], ref_loss) and all(torch.allclose(items[k], v) for k, v in ref_items.items())
    assert "l1_loss" in items  # YOLO26 has no DFL: Ultralytics names its box-distance term l1_loss
    o2m = det.o2m
    det.update()  # Ultralytics' per-epoch schedule, on the student's criterion, is what the module reads
    assert tsd.criterion.o2m < o2m and tsd.criterion.updates == 1
    # the feature term is shared by both branches: it must not shrink with the one-to-many gain
    feat_before = tsd.loss(batch, preds)[1]["dfeat_loss"]
    det.o2m, det.o2o = 0.1, 0.9
    assert feat_before > 0 and tsd.loss(batch, preds)[1]["dfeat_loss"] == pytest.approx(feat_before.item(), rel=1e-6)


def test_reg_max_1_box_term_is_l1_or_iou_on_decoded_distances():
    batch = make_batch()
    values = {}
    for mode in ("l1", "iou"):
        _, _, tsd = distiller(
            "yolo26s.yaml",
            "yolo26n.yaml",
            box_r1=mode,
            lambda_feat=0,
            lambda_cls=0,
            lambda_box=1,
            balance="off",
            **TERMS_ON,
        )  # raw term: the balance would rescale it to lambda times the detection loss
        values[mode] = tsd.loss(batch)[1]["dbox_loss"].item()
    assert values["l1"] > 0 and 0 < values["iou"] <= 1 and values["l1"] != values["iou"]


def test_balanced_terms_are_lambda_times_the_detection_loss():
    student, _, tsd = distiller(balance="loss", lambda_feat=0.5, lambda_cls=0.25, lambda_box=0.1, **TERMS_ON)
    batch = make_batch()
    step = tsd.step(batch, student(batch["img"]))
    det = step.loss[:3].sum().item() / batch["img"].shape[0]  # the first step sets the running sizes
    got = [step.items[k].item() for k in LOSS_NAMES]
    assert got == pytest.approx([0.5 * det, 0.25 * det, 0.1 * det], rel=1e-4)
    for _ in range(3):  # afterwards, running sizes: still of that order, never exploding
        step = tsd.step(batch, student(batch["img"]))
    det = step.loss[:3].sum().item() / batch["img"].shape[0]
    assert 0.2 * det < step.items["dfeat_loss"].item() < 2.5 * det


def test_balanced_class_term_does_not_grow_with_the_number_of_classes():
    sizes = {}
    for nc in (5, 80):
        student, _, tsd = distiller(nc=nc, balance="loss", lambda_feat=0, lambda_box=0, lambda_cls=0.5, **TERMS_ON)
        batch = make_batch()
        step = tsd.step(batch, student(batch["img"]))
        sizes[nc] = step.items["dcls_loss"].item() / (step.loss[:3].sum().item() / batch["img"].shape[0])
    assert sizes[5] == pytest.approx(0.5, rel=1e-4) and sizes[80] == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("weighting", ["uniform", "teacher_score"])
def test_comparison_weightings_change_only_where_the_terms_act(weighting, monkeypatch):
    import yolo_tsd.training.criterion as criterion

    seen = {}
    original = criterion.distillation_weights
    monkeypatch.setattr(criterion, "distillation_weights", lambda *a: seen.setdefault("w", original(*a)))
    student, _, tsd = distiller(weighting=weighting, **TERMS_ON)
    batch = make_batch()
    step = tsd.step(batch, student(batch["img"]))
    w, sig = seen["w"], step.significance["detect"]
    if weighting == "uniform":
        assert torch.equal(w, torch.ones_like(sig.weight))
    else:
        assert w.min() >= 0 and w.max() <= 1 and not torch.equal(w, sig.weight) and w.std() > 0
    assert all(step.items[k] > 0 for k in LOSS_NAMES)


def test_gradient_split_matches_separate_backward_passes():
    from yolo_tsd.training.model import gradient_split, gradient_summary

    student, _, tsd = distiller(**TERMS_ON)
    batch = make_batch()
    loss = tsd.loss(batch)[0]
    norms = gradient_split(loss, student)
    params = [p for p in student.parameters() if p.requires_grad]
    det = torch.autograd.grad(loss[:3].sum(), params, retain_graph=True, allow_unused=True)
    det_norm = torch.cat([g.flatten() for g in det if g is not None]).norm()
    assert norms[0].item() == pytest.approx(det_norm.item(), rel=1e-5) and norms[1] > 0
    summary = gradient_summary([norms])
    assert 0 < summary["tsd/grad_share"] < 1 and -1 <= summary["tsd/grad_cos"] <= 1
