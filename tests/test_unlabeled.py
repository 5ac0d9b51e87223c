"""Unlabeled images (``unlabeled=``): the teacher's detections as their ground truth, no detection loss on them, the
trust from the labeled images only, and a run that trains, resumes and refuses bad pools (docs/method.md §9)."""

import csv
import shutil
from copy import deepcopy

import pytest
import torch
import yaml
from helpers import build_model, tiny_run

from yolo_tsd import TSDTrainer
from yolo_tsd.config import TSDConfig
from yolo_tsd.errors import UsageError
from yolo_tsd.method.significance import LOW
from yolo_tsd.training.criterion import LOSS_NAMES
from yolo_tsd.training.model import TSDModel
from yolo_tsd.training.teacher import Teacher
from yolo_tsd.training.unlabeled import UNLABELED_KEY, PoolSteps, UnlabeledPool
from yolo_tsd.ultralytics_internals import detections_as_labels, slice_outputs


def test_detections_become_labels_after_nms_and_the_threshold():
    probs = torch.zeros(2, 4, 3)
    boxes = torch.zeros(2, 4, 4)
    boxes[0, 0], probs[0, 0, 1] = torch.tensor([10.0, 10, 30, 50]), 0.9  # an object of class 1
    boxes[0, 1], probs[0, 1, 1] = torch.tensor([11.0, 10, 31, 50]), 0.8  # the same object again: NMS keeps one
    boxes[0, 2], probs[0, 2, 2] = torch.tensor([40.0, 0, 60, 20]), 0.2  # below the threshold
    boxes[0, 3], probs[0, 3, 0] = torch.tensor([0.0, 0, 64, 32]), 0.5  # another object, class 0
    labels = detections_as_labels(probs, boxes, imgsz=(64, 128), conf=0.25)  # image 1: nothing found
    assert labels["batch_idx"].tolist() == [0, 0] and sorted(labels["cls"].view(-1).tolist()) == [0, 1]
    found = {int(c): b.tolist() for c, b in zip(labels["cls"].view(-1), labels["bboxes"])}
    assert found[1] == pytest.approx([20 / 128, 30 / 64, 20 / 128, 40 / 64])  # normalised xywh, as a dataset's labels
    assert found[0] == pytest.approx([32 / 128, 16 / 64, 64 / 128, 32 / 64])


@pytest.fixture(scope="module")
def models(data_yaml, teacher_pt):
    """The session's teacher (trained on the generated data), four of its training images as a batch, and an untrained
    student with BatchNorm frozen (eval mode), so that each image's outputs do not depend on the rest of its batch."""
    from yolo_tsd.bench.overhead import real_batch
    from yolo_tsd.ultralytics_internals import load_model

    student = build_model("yolov8n.yaml", seed=0).train()
    for m in student.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    return load_model(teacher_pt).float(), student, real_batch(data_yaml, batch=4, imgsz=64)


def labeled_and_pool(batch, labeled=2):
    """The batch's first ``labeled`` images with their labels, then the rest as pool images (labels dropped)."""
    keep = batch["batch_idx"] < labeled
    return {**{k: batch[k][keep] for k in ("batch_idx", "cls", "bboxes")}, "img": batch["img"], UNLABELED_KEY: 2}


def step(models, batch, **settings):
    teacher, student, _ = models
    torch.manual_seed(0)
    tsd = TSDModel(deepcopy(student), Teacher(deepcopy(teacher)), TSDConfig(**settings))
    return tsd.step(batch), tsd


def test_pool_images_have_no_detection_loss_and_do_not_move_the_trust(models):
    _, _, full = models
    with_pool, tsd = step(models, labeled_and_pool(full), unlabeled_det=0)
    alone_batch = {**labeled_and_pool(full), "img": full["img"][:2], UNLABELED_KEY: 0}
    alone, alone_tsd = step(models, alone_batch)
    preds = tsd.student(full["img"])
    det_loss, det_items = tsd.student.init_criterion()(slice_outputs(preds, 0, 2), alone_batch)
    assert torch.allclose(with_pool.loss[:3], det_loss) and torch.allclose(alone.loss[:3], det_loss)
    assert all(torch.allclose(with_pool.items[k], v) for k, v in det_items.items())
    # both models' quality from the labeled objects only: the same with or without the pool
    assert torch.equal(tsd.stats.qualities, alone_tsd.stats.qualities) and tsd.stats.trust > 0.9
    sig = with_pool.significance["detect"]
    assert sig.weight.shape[0] == 4 and all(with_pool.items[k] > 0 for k in LOSS_NAMES)
    # the pool images are distilled too (raw terms: the balance would make each term lambda times the detection loss)
    raw_pool, _ = step(models, labeled_and_pool(full), balance="off", unlabeled_det=0)
    raw_alone, _ = step(models, alone_batch, balance="off")
    assert all(raw_pool.items[k] != raw_alone.items[k] for k in LOSS_NAMES)


def test_the_teachers_detections_make_key_areas_on_pool_images(models):
    _, _, full = models
    result, _ = step(models, labeled_and_pool(full), unlabeled_conf=0.05)
    sig = result.significance["detect"]
    assert (sig.region[2:] != LOW).any() and sig.key[2:].any()  # the fitted teacher finds objects there
    nothing, _ = step(models, labeled_and_pool(full), unlabeled_conf=1.0)  # the teacher finds nothing it trusts
    sig = nothing.significance["detect"]
    assert (sig.region[2:] == LOW).all() and torch.all(sig.weight[2:] == TSDConfig().w_low)
    assert nothing.items["dcls_loss"] > 0  # still distilled, at the background weight


def test_unlabeled_det_trains_the_pool_images_on_the_teachers_detections(models):
    teacher, _, full = models
    batch = labeled_and_pool(full)
    terms_only, tsd = step(models, batch, unlabeled_conf=0.05, unlabeled_det=0)
    with_det, _ = step(models, batch, unlabeled_conf=0.05, unlabeled_det=0.5)
    # independently: the teacher's own inference decoding (Ultralytics' Detect in eval mode), NMS, the threshold
    with torch.no_grad():
        decoded = deepcopy(teacher).eval()(full["img"][2:])[0]  # (images, 4 + classes, anchors), xywh in pixels
    xywh, probs = decoded[:, :4].transpose(1, 2), decoded[:, 4:].transpose(1, 2)
    xyxy = torch.cat([xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2], -1)
    labels = detections_as_labels(probs, xyxy, tuple(full["img"].shape[2:]), conf=0.05)
    assert len(labels["cls"]) > 0  # the fitted teacher finds objects on these images
    pool_det, _ = tsd.student.init_criterion()(
        slice_outputs(tsd.student(full["img"]), 2, 4), {**labels, "img": full["img"][2:]}
    )
    assert torch.allclose(with_det.loss[:3] - terms_only.loss[:3], 0.5 * pool_det, rtol=1e-4, atol=1e-5)
    assert torch.allclose(with_det.loss[3:], terms_only.loss[3:])  # the balance and trust do not see it


def test_a_batch_of_pool_images_alone_learns_from_the_teacher_with_the_labeled_steps_balance(models):
    _, _, full = models
    labeled = {**labeled_and_pool(full), "img": full["img"][:2], UNLABELED_KEY: 0}
    pool_only = {**{k: full[k][:0] for k in ("batch_idx", "cls", "bboxes")}, "img": full["img"][2:], UNLABELED_KEY: 2}
    _, tsd = step(models, labeled, unlabeled_conf=0.05, unlabeled_det=0)
    sizes, qualities, trust, total = (x.clone() for x in (tsd.stats.sizes, tsd.stats.qualities, tsd.stats.trust,
                                                          tsd.stats.trust_total))  # fmt: skip
    tsd.teacher_due = False  # a pool batch runs the teacher anyway: without it, it teaches nothing
    out = tsd.step(pool_only)
    # no labeled image: no detection loss of Ultralytics' and no update of the running statistics (DDP: no collective)
    assert torch.equal(out.loss[:3], torch.zeros(3)) and out.loss.requires_grad
    assert torch.equal(tsd.stats.sizes, sizes) and torch.equal(tsd.stats.qualities, qualities)
    assert torch.equal(tsd.stats.trust, trust) and torch.equal(tsd.stats.trust_total, total)
    # the terms: the raw pool terms times the labeled steps' balance (independently: balance=off gives the raw ones)
    raw, raw_tsd = step(models, labeled, unlabeled_conf=0.05, balance="off", unlabeled_det=0)
    raw_tsd.teacher_due = False
    raw_out = raw_tsd.step(pool_only)
    factor = sizes[0] / sizes[1:]
    assert torch.allclose(out.loss[3:], raw_out.loss[3:] * factor * trust, rtol=1e-4)
    assert all(out.items[k] > 0 for k in LOSS_NAMES) and out.significance["detect"].key.any()
    with_det, det_tsd = step(models, labeled, unlabeled_conf=0.05, unlabeled_det=0.5)
    det_out = det_tsd.step(pool_only)
    assert (det_out.loss[:3] > 0).all() and torch.allclose(det_out.loss[3:], out.loss[3:])


class FakeLoader(list):
    """A list of labeled batches standing for Ultralytics' loader."""

    dataset, batch_size = "labeled dataset", 8

    def reset(self):
        return "reset"


@pytest.mark.parametrize(("ratio", "pattern"), [(1, "LPLPLP"), (0.5, "LPLLPL"), (2, "LPPLPPLPP"), (0.25, "LLPLL")])
def test_pool_steps_come_evenly_between_the_labeled_batches(ratio, pattern):
    pool = UnlabeledPool(("a.jpg",), ratio, "steps")
    pool.next_batch = lambda: {"img": torch.zeros(8, 3, 4, 4), UNLABELED_KEY: 8}
    labeled = FakeLoader({"img": torch.zeros(8, 3, 4, 4)} for _ in range(pattern.count("L")))
    loader = PoolSteps(labeled, pool)
    got = "".join("P" if b.get(UNLABELED_KEY) else "L" for b in loader)
    assert got == pattern and len(loader) == len(pattern)
    assert loader.dataset == "labeled dataset" and loader.batch_size == 8 and loader.reset() == "reset"
    assert sum(pool.steps_after(k) for k in range(1, 101)) == round(100 * ratio)  # the ratio, over an epoch


class Interrupt(Exception):
    pass


def test_a_run_with_an_unlabeled_pool_trains_and_resumes(data_yaml, teacher_pt, pool, tmp_path, monkeypatch):
    sizes, original = [], TSDModel.step
    record = lambda m, b, p=None: sizes.append((len(b["img"]), b.get(UNLABELED_KEY, 0))) or original(m, b, p)  # noqa: E731
    monkeypatch.setattr(TSDModel, "step", record)
    overrides = tiny_run(data_yaml, teacher_pt, tmp_path, epochs=2, unlabeled=str(pool), tsd_unlabeled_ratio=0.5)
    first = TSDTrainer(overrides=overrides)
    first.add_callback("on_fit_epoch_end", lambda t: (_ for _ in ()).throw(Interrupt()) if t.epoch == 0 else None)
    with pytest.raises(Interrupt):
        first.train()
    assert sizes == [(8, 0), (8, 8), (8, 0)]  # 2 labeled batches of 8 and, after the first, a batch of 8 from the pool
    assert yaml.safe_load((first.save_dir / "args.yaml").read_text())["unlabeled"] == [str(pool.resolve())]
    second = TSDTrainer(overrides={"resume": str(first.wdir / "last.pt")})  # the pool comes back with the run
    second.train()
    assert second.pool is not None and len(second.pool.files) == 8 and sizes[3:] == sizes[:3]
    rows = list(csv.DictReader((first.save_dir / "results.csv").open()))
    assert len(rows) == 2 and all(float(rows[-1][f"train/{k}"]) > 0 for k in LOSS_NAMES)


def test_appended_pool_images_come_only_with_the_teacher(data_yaml, teacher_pt, pool, tmp_path, monkeypatch):
    sizes, original = [], TSDModel.step
    monkeypatch.setattr(TSDModel, "step", lambda m, b, p=None: sizes.append(len(b["img"])) or original(m, b, p))
    overrides = tiny_run(
        data_yaml, teacher_pt, tmp_path, epochs=1, unlabeled=str(pool), tsd_unlabeled_ratio=0.5,
        tsd_unlabeled_mix="append",
    )  # fmt: skip
    trainer = TSDTrainer(overrides=overrides)
    trainer.add_callback("on_train_batch_start", lambda t: setattr(t.tsd_model, "teacher_due", t.epoch_batch != 1))
    trainer.train()
    assert sizes == [8 + 4, 8]  # half as many pool images after the labeled ones; none when the teacher rests


def test_corrupt_pool_images_are_left_out_with_one_warning(data_yaml, teacher_pt, pool, tmp_path):
    from helpers import logged_messages

    broken = tmp_path / "broken"
    shutil.copytree(pool, broken)
    (broken / "zz_corrupt.png").write_bytes(b"not an image")
    overrides = tiny_run(data_yaml, teacher_pt, tmp_path, epochs=1, unlabeled=str(broken), tsd_unlabeled_ratio=0.5)
    with logged_messages() as messages:
        trainer = TSDTrainer(overrides=overrides)
        trainer.train()
    assert sum("1 of 9 unlabeled images are corrupt or unreadable" in m for m in messages) == 1
    assert len(trainer.pool.shapes) == 8


def test_the_data_yaml_can_name_the_pool(data_yaml, teacher_pt, pool, tmp_path):
    spec = {**yaml.safe_load(data_yaml.read_text()), "unlabeled": str(pool)}
    with_pool = tmp_path / "with_pool.yaml"
    with_pool.write_text(yaml.safe_dump(spec))
    trainer = TSDTrainer(overrides=tiny_run(with_pool, teacher_pt, tmp_path, epochs=1))
    assert trainer.pool is not None and len(trainer.pool.files) == 8


def test_bad_pools_are_refused_before_any_run_folder(data_yaml, teacher_pt, pool, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ({"unlabeled": str(tmp_path / "missing")}, "no such folder"),
        ({"unlabeled": str(empty)}, "no images found"),
        ({"unlabeled": str(pool), "rect": True}, "rect=True"),
    ]
    for extra, match in cases:
        with pytest.raises(UsageError, match=match):
            TSDTrainer(overrides=tiny_run(data_yaml, teacher_pt, tmp_path / "runs", **extra))
    without_teacher = tiny_run(data_yaml, teacher_pt, tmp_path / "runs", unlabeled=str(pool))
    del without_teacher["teacher"]
    with pytest.raises(UsageError, match="needs teacher="):
        TSDTrainer(overrides=without_teacher)
    assert not (tmp_path / "runs").exists()
