"""Mixed precision and the odd batches a real dataset produces: finite, sensible values, never NaN."""

from dataclasses import replace

import pytest
import torch
from helpers import TERMS_ON, distiller, make_batch

import yolo_tsd.training.criterion as criterion
from yolo_tsd.method.significance import LOW
from yolo_tsd.training.criterion import LOSS_NAMES


def make_crit(nc=5, **settings):
    """A random teacher and student with the terms on (``TERMS_ON``: a random teacher would not be trusted)."""
    student, _, tsd = distiller(nc=nc, **{**TERMS_ON, **settings})
    return student, tsd


def run(student, tsd, batch):
    """One step; returns loss, items and the single branch's significance."""
    step = tsd.step(batch, student(batch["img"]))
    loss, items = step.loss, step.items
    assert torch.isfinite(loss).all() and all(torch.isfinite(v) for v in items.values()), items
    return loss, items, step.significance["detect"]


def test_bf16_autocast_matches_fp32(monkeypatch):
    student, crit = make_crit(balance="off")  # raw terms: the balance's running sizes would change between the calls
    batch = make_batch(bs=4, imgsz=128)
    _, ref, ref_sig = run(student, crit, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, items, sig = run(student, crit, batch)
    floats = [v for v in vars(sig).values() if v is not None and v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)  # significance in fp32
    assert (sig.region == ref_sig.region).float().mean() > 0.99
    # the terms, compared under the fp32 weights: one anchor changing region changes its weight
    assess = criterion.assess
    monkeypatch.setattr(criterion, "assess", lambda *args: replace(assess(*args), weight=ref_sig.weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, items, _ = run(student, crit, batch)
    for k in ("dfeat_loss", "dbox_loss", "box_loss", "dfl_loss"):
        assert items[k] == pytest.approx(ref[k].item(), rel=0.05), k
    assert abs(items["dcls_loss"] - ref["dcls_loss"]) < 1e-3


def test_bf16_gradients_are_finite():
    student, crit = make_crit()
    batch = make_batch(bs=2, imgsz=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _, _ = run(student, crit, batch)
    loss.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
    assert all(torch.isfinite(p.grad).all() for p in crit.adapters.parameters())


def test_batch_without_any_ground_truth_is_all_background():
    student, crit = make_crit()
    _, items, sig = run(student, crit, make_batch(boxes_per_image=0))
    # no object: at most "top" holds, importance <= 0.4 * 1.5, so no key area; a weak area needs I_T - I_S >= 1
    assert (sig.imp_t <= 0.4 * 1.5 + 1e-6).all() and (sig.region == LOW).all()
    assert items["dfeat_loss"] > 0 and items["dcls_loss"] > 0  # the low region is still distilled (w_low)


def test_some_images_without_labels():
    student, crit = make_crit()
    batch = make_batch(bs=3, boxes_per_image=2)
    keep = batch["batch_idx"] != 1  # image 1 has no labels
    batch = {**batch, **{k: batch[k][keep] for k in ("batch_idx", "cls", "bboxes")}}
    _, _, sig = run(student, crit, batch)
    assert (sig.region[1] == LOW).all()  # the unlabelled image has no key or weak anchor
    assert (sig.imp_t[1] <= 0.4 * 1.5 + 1e-6).all()


def test_single_class():
    student, crit = make_crit(nc=1)
    batch = make_batch()
    batch["cls"].zero_()
    _, items, _ = run(student, crit, batch)
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
