"""Each model's importance comes from that model's own outputs, each branch from its own teacher branch.

The references are computed independently of the criterion: Ultralytics' own loss and assigner, a fresh criterion,
Ultralytics' box decoding, and ``importance()`` on the model's own outputs. Teacher and student differ (other
architecture and seed), so a swap of the two, or of two branches, fails these tests.
"""

import pytest
import torch
from helpers import TERMS_ON, distiller, make_batch
from ultralytics.utils.tal import make_anchors

from yolo_tsd.method.significance import Assignment, GroundTruth, importance
from yolo_tsd.ultralytics_internals import head, raw_outputs


def reference_importance(crit, outputs, batch, cfg, own_assignment=None):
    """``importance()`` of one model from its own raw outputs, with a fresh run of Ultralytics' assigner on them."""
    bs, imgsz = batch["img"].shape[0], batch["img"].shape[2]
    targets = torch.cat((batch["batch_idx"].view(-1, 1), batch["cls"].view(-1, 1), batch["bboxes"]), 1)
    gt = crit.preprocess(targets, bs, scale_tensor=torch.tensor([imgsz] * 4, dtype=torch.float32))
    labels, boxes = gt.split((1, 4), 2)
    mask = boxes.sum(2, keepdim=True) > 0
    anchors, strides = make_anchors(outputs["feats"], crit.stride, 0.5)
    logits = outputs["scores"].detach().permute(0, 2, 1)
    pixel_boxes = crit.bbox_decode(anchors, outputs["boxes"].detach().permute(0, 2, 1)) * strides  # Ultralytics' decode
    if own_assignment is None:
        _, _, _, fg, idx = crit.assigner(logits.sigmoid(), pixel_boxes, anchors * strides, labels, boxes, mask.float())
    else:
        fg, idx = own_assignment
    truth = GroundTruth(labels.squeeze(-1).long(), boxes, mask.squeeze(-1))
    return importance(logits, pixel_boxes, Assignment(fg.bool(), idx), truth, cfg)


def student_assignment(crit, preds, batch):
    """The assignment Ultralytics' own loss makes for the student."""
    (fg, idx, *_), _, _ = crit.get_assigned_targets_and_loss(preds, batch)
    return fg, idx


def test_teacher_and_student_importance_each_come_from_their_own_outputs():
    student, teacher, tsd = distiller("yolov8s.yaml", "yolov8n.yaml")
    batch = make_batch(bs=2, boxes_per_image=4)
    preds = student(batch["img"])
    sig = tsd.step(batch, preds).significance["detect"]

    fresh = student.init_criterion()  # an independent criterion: its own assigner, its own ground-truth padding
    t_out = raw_outputs(teacher.model, batch["img"])
    imp_t = reference_importance(fresh, t_out, batch, tsd.cfg)
    imp_s = reference_importance(fresh, preds, batch, tsd.cfg, student_assignment(fresh, preds, batch))
    assert not torch.equal(imp_t, imp_s), "teacher and student must differ for this test to mean anything"
    assert torch.equal(sig.imp_t, imp_t)
    assert torch.equal(sig.imp_s, imp_s)


def test_one_to_one_branch_learns_from_the_teachers_one_to_one_branch():
    student, teacher, tsd = distiller("yolo26s.yaml", "yolo26n.yaml")
    with torch.no_grad():  # a new head's one-to-one branch is a copy of its one-to-many one: make the teacher's differ
        torch.manual_seed(5)
        for p in [*head(teacher.model).one2one_cv2.parameters(), *head(teacher.model).one2one_cv3.parameters()]:
            p.add_(torch.randn_like(p) * 0.3)
    batch = make_batch(bs=2, boxes_per_image=4)
    preds = student(batch["img"])
    step = tsd.step(batch, preds)
    assert set(step.significance) == {"one2many", "one2one"}

    det = student.init_criterion()  # Ultralytics' E2ELoss: a one-to-many and a one-to-one criterion
    t_out = raw_outputs(teacher.model, batch["img"])
    for name, crit in (("one2many", det.one2many), ("one2one", det.one2one)):
        own = reference_importance(crit, t_out[name], batch, tsd.cfg)
        assert torch.equal(step.significance[name].imp_t, own), name
        s_own = reference_importance(crit, preds[name], batch, tsd.cfg, student_assignment(crit, preds[name], batch))
        assert torch.equal(step.significance[name].imp_s, s_own), name
    crossed = reference_importance(det.one2one, t_out["one2many"], batch, tsd.cfg)
    assert not torch.equal(step.significance["one2one"].imp_t, crossed)  # it would be this if the branches were crossed


def one2one_score_gradient(mode):
    """Where the one-to-one class term pushes a YOLO26 student taught by a YOLOv8 teacher (no one-to-one head)."""
    student, _, tsd = distiller(
        "yolov8s.yaml", "yolo26n.yaml", one2one_mode=mode, lambda_feat=0, lambda_box=0, **TERMS_ON
    )
    batch = make_batch(bs=2, boxes_per_image=4)
    preds = student(batch["img"])
    scores = preds["one2one"]["scores"].detach().requires_grad_()
    preds["one2one"]["scores"] = scores
    step = tsd.step(batch, preds)
    step.loss[4].backward()  # the class term alone
    fresh = student.init_criterion().one2one
    fg, _ = student_assignment(fresh, {**preds["one2one"], "scores": scores.detach()}, batch)
    pushed = scores.grad.abs().sum(1) > 0  # (B, A): anchors whose one-to-one class logits the term moves
    return pushed, fg


def test_one_to_one_branch_without_a_teacher_counterpart_is_taught_only_on_its_own_positives():
    pushed, fg = one2one_score_gradient("positives")
    assert fg.any() and torch.equal(pushed, fg)
    pushed, fg = one2one_score_gradient("off")
    assert not pushed.any()
    pushed, fg = one2one_score_gradient("all")
    assert pushed.sum() > 10 * fg.sum()  # what "positives" prevents: every anchor pulled towards a dense teacher


@pytest.mark.parametrize("mode", ["positives", "off", "all"])
def test_one2one_mode_leaves_the_dense_branch_alone(mode):
    student, _, tsd = distiller("yolov8s.yaml", "yolo26n.yaml", one2one_mode=mode, **TERMS_ON)
    step = tsd.step(make_batch(), student(make_batch()["img"]))
    assert "one2many" in step.significance and step.items["dcls_loss"] > 0
    assert ("one2one" in step.significance) == (mode != "off")
