"""A distillation step makes the GPU wait for the host no more often than Ultralytics' own step does.

Counted on the CPU with ``SyncCounter`` (reads to the host, data-dependent shapes, tensors from host data). Ultralytics'
loss has some of its own (padding the ground truth reads the per-image box count; its assigner gathers the real
boxes with ``nonzero``); the distillation step may repeat exactly the assigner's, once more per head branch, for the
teacher's assignment, and nothing else.
"""

from collections import Counter

import pytest
import torch
from helpers import distiller, make_batch
from syncs import SyncCounter
from ultralytics.utils.tal import TaskAlignedAssigner

import yolo_tsd.method.significance as significance

PAIRS = [("yolov8s.yaml", "yolov8n.yaml"), ("yolo26s.yaml", "yolo26n.yaml"), ("yolov8s.yaml", "yolo26n.yaml")]


def counted(monkeypatch, step) -> SyncCounter:
    """Run ``step`` (loss and backward) under a counter that attributes the assigner's events to ``assigner``."""
    counter = SyncCounter()
    forward = TaskAlignedAssigner.forward

    def scoped_forward(self, *args, **kwargs):
        with counter.scope("assigner"):
            return forward(self, *args, **kwargs)

    monkeypatch.setattr(TaskAlignedAssigner, "forward", scoped_forward)
    with counter:
        step()
    monkeypatch.setattr(TaskAlignedAssigner, "forward", forward)
    return counter


def compare(monkeypatch, teacher_cfg, student_cfg) -> tuple[SyncCounter, SyncCounter]:
    student, _, tsd = distiller(teacher_cfg, student_cfg)  # the release defaults: the trust's quality measure too
    batch = make_batch(bs=2, boxes_per_image=3)
    preds = student(batch["img"])  # the student's forward is Ultralytics' in both cases
    _ = tsd.criterion  # built once per run (it reads the strides on the host), not per step

    def plain():
        loss, _ = tsd.criterion(preds, batch)
        loss.sum().backward(retain_graph=True)

    def distil():
        loss, _ = tsd.loss(batch, preds)  # teacher forward, Ultralytics' loss, significance, terms
        loss.sum().backward()

    return counted(monkeypatch, plain), counted(monkeypatch, distil)


@pytest.mark.parametrize("teacher_cfg, student_cfg", PAIRS)
def test_distillation_step_syncs_only_where_ultralytics_does(monkeypatch, teacher_cfg, student_cfg):
    plain, ours = compare(monkeypatch, teacher_cfg, student_cfg)
    assert plain.in_scope("step"), "the counter sees Ultralytics' own syncs (else it would see nothing at all)"
    assert ours.in_scope("step") == plain.in_scope("step"), (ours.counts, plain.counts)
    per_assigner_run = plain.in_scope("assigner")
    doubled = Counter({k: 2 * v for k, v in per_assigner_run.items()})  # the student's run and the teacher's
    assert ours.in_scope("assigner") == doubled, (ours.counts, plain.counts)


def test_the_comparison_fails_when_a_sync_is_added(monkeypatch):
    """The counter is not blind: one ``.item()`` or boolean mask in the significance breaks the equality."""
    original = significance.anchor_weights

    def with_item(region, *args):
        w = original(region, *args)
        _ = float(w.sum().item())
        return w

    monkeypatch.setattr(significance, "anchor_weights", with_item)
    plain, ours = compare(monkeypatch, *PAIRS[0])
    assert ours.in_scope("step") - plain.in_scope("step") == Counter({"host read (item/bool/float)": 1})

    def with_mask(region, *args):
        w = original(region, *args)
        w[region == significance.LOW] = w[region == significance.LOW] * 1.0
        return w

    monkeypatch.setattr(significance, "anchor_weights", with_mask)
    plain, ours = compare(monkeypatch, *PAIRS[0])
    assert ours.in_scope("step")["boolean-mask indexing"] == plain.in_scope("step")["boolean-mask indexing"] + 2


@pytest.mark.parametrize(
    "code, kind",
    [
        ("x.sum().item()", "host read (item/bool/float)"),
        ("bool(x.sum() > 0)", "host read (item/bool/float)"),
        ("x.tolist()", "copy to host (tolist)"),
        ("x.cpu()", "copy to host (cpu)"),
        ("x.to('cpu')", "copy to host (to cpu)"),
        ("x[x > 0]", "boolean-mask indexing"),
        ("x.nonzero()", "data-dependent shape (nonzero)"),
        ("x.unique()", "data-dependent shape (_unique2)"),
        ("torch.tensor([1.0, 2.0], device=x.device)", "tensor from host data"),
    ],
)
def test_counter_sees_each_kind_of_sync(code, kind):
    scope = {"torch": torch, "x": torch.randn(8)}
    with SyncCounter() as counter:
        eval(code, scope)
    assert counter.in_scope("step")[kind] >= 1, counter.counts


def test_counter_ignores_device_side_work():
    x = torch.randn(8)
    with SyncCounter() as counter:
        torch.where(x > 0, 2.0, torch.full_like(x, 0.5)).topk(3).indices.scatter(0, torch.zeros(1, dtype=torch.long), 1)
    assert not counter.counts
