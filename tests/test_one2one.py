"""A YOLO26 student's NMS-free one-to-one branch, taught by a YOLOv8 teacher, keeps one firing anchor per object.

The teacher is a dense one (it fires on every anchor inside an object, as a teacher trained for NMS does). The student
trains for 100 steps on a fixed batch; then the one-to-one branch's anchors above 0.3 confidence are counted per object.
"""

import pytest
import torch
from helpers import TERMS_ON, distiller, make_batch
from ultralytics.utils.tal import make_anchors

from yolo_tsd.ultralytics_internals import head, raw_outputs

STEPS, CONF = 100, 0.3


def dense_teacher_outputs(teacher, batch, nc=5, reg_max=16):
    """The teacher's features, with class and box outputs that fire confidently on every anchor inside an object."""
    out = raw_outputs(teacher.model, batch["img"])
    anchors, strides = make_anchors(out["feats"], head(teacher.model).stride, 0.5)
    px, py = (anchors * strides).unbind(-1)
    b, a, imgsz = batch["img"].shape[0], anchors.shape[0], batch["img"].shape[2]
    scores, dist = torch.full((b, nc, a), -8.0), torch.full((b, a, 4), 0.5)
    for i, (c, (x, y, w, h)) in enumerate(zip(batch["cls"].view(-1).long(), batch["bboxes"] * imgsz)):
        j = int(batch["batch_idx"][i])
        inside = (px > x - w / 2) & (px < x + w / 2) & (py > y - h / 2) & (py < y + h / 2)
        scores[j, c, inside] = 4.0
        ltrb = torch.stack([px - (x - w / 2), py - (y - h / 2), (x + w / 2) - px, (y + h / 2) - py], -1)
        dist[j, inside] = (ltrb / strides)[inside]
    bins = torch.full((b, a, 4, reg_max), -5.0).scatter_(-1, dist.clamp(0, reg_max - 1).round().long()[..., None], 8.0)
    return {"boxes": bins.permute(0, 2, 3, 1).reshape(b, 4 * reg_max, a), "scores": scores, "feats": out["feats"]}


def firing_per_object(mode):
    # raw class and box terms, strong enough on 100 steps to show the harm; the default's weaker pull differs only in
    # degree (and a random teacher is not trusted: TERMS_ON)
    weight = 0.0 if mode == "plain" else 2.0
    student, teacher, tsd = distiller(
        "yolov8s.yaml",
        "yolo26n.yaml",
        one2one_mode="all" if mode == "all" else "positives",
        lambda_feat=0.0,
        lambda_cls=weight,
        lambda_box=weight,
        balance="off",
        **TERMS_ON,
    )
    batch = make_batch(bs=2, imgsz=64, boxes_per_image=1, seed=3)
    batch["bboxes"] = torch.tensor([[0.3, 0.35, 0.45, 0.5], [0.6, 0.55, 0.5, 0.6]])  # big: many anchors inside
    dense = dense_teacher_outputs(teacher, batch)
    tsd.teacher_ref.obj = lambda images: dense
    optimizer = torch.optim.Adam([p for p in tsd.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(STEPS):
        loss, _ = tsd(batch)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
    with torch.no_grad():
        out = student(batch["img"])["one2one"]
    anchors, strides = make_anchors(out["feats"], student.model[-1].stride, 0.5)
    px, py = (anchors * strides).unbind(-1)
    conf = out["scores"].sigmoid().amax(1)
    counts = []
    for i, (x, y, w, h) in enumerate(batch["bboxes"] * 64):
        inside = (px > x - w / 2) & (px < x + w / 2) & (py > y - h / 2) & (py < y + h / 2)
        counts.append(int(((conf[i] > CONF) & inside).sum()))
    return counts


@pytest.fixture(scope="module")
def counts():
    return {mode: firing_per_object(mode) for mode in ("plain", "positives", "all")}


def test_distilling_on_one_to_one_positives_keeps_one_anchor_per_object_like_plain_training(counts):
    assert counts["plain"] == [1, 1], counts  # the one-to-one loss alone: one confident anchor per object
    assert counts["positives"] == counts["plain"], counts


def test_distilling_every_anchor_from_a_dense_teacher_would_fire_several(counts):
    assert min(counts["all"]) >= 3, counts  # what one2one_mode=positives (the default) prevents
