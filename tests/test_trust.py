"""The trust factor: distillation follows a teacher only as far as it detects the batch's objects better.

A "better" model here is one trained on the test batch; the other is the same architecture untrained. Swapping
teacher and student must switch the terms off.
"""

import csv
import math
from copy import deepcopy
from types import SimpleNamespace

import pytest
import torch
from helpers import build_model, fit, logged_messages, make_batch, tiny_run

from yolo_tsd import TSDTrainer
from yolo_tsd.config import TSDConfig
from yolo_tsd.method.significance import GroundTruth, mean_quality, object_quality
from yolo_tsd.training.callbacks import GRADIENT_PROBES, start_batch, update_pace
from yolo_tsd.training.criterion import LOSS_NAMES
from yolo_tsd.training.model import TSDModel
from yolo_tsd.training.stats import RunningStats
from yolo_tsd.training.teacher import Teacher


@pytest.fixture(scope="module")
def trained_and_fresh():
    """(trained, fresh) yolov8n of the same seed: the trained one fitted to ``make_batch(boxes_per_image=4)``."""
    batch = make_batch(boxes_per_image=4)
    fresh = build_model("yolov8n.yaml", seed=0)
    return fit(deepcopy(fresh), batch), fresh, batch


def distil(teacher_model, student_model, batch, **settings):
    """One distillation step of a training-mode copy of ``student_model`` with ``teacher_model`` as the teacher."""
    student = deepcopy(student_model).train()
    torch.manual_seed(0)
    tsd = TSDModel(student, Teacher(deepcopy(teacher_model)), TSDConfig(**settings))
    step = tsd.step(batch)
    return step, tsd.stats


def test_trust_factor_follows_the_quality_ratio():
    running = RunningStats(TSDConfig())
    running.track_trust(torch.tensor([0.8, 0.4]))  # student half as good: half trust
    assert running.trust.item() == pytest.approx(0.5)
    running.qualities = None
    running.track_trust(torch.tensor([0.8, 0.76]))  # 5 % behind: 0.05
    assert running.trust.item() == pytest.approx(0.05)
    running.qualities = None
    running.track_trust(torch.tensor([0.5, 0.6]))  # student better: the teacher is not followed
    assert running.trust.item() == 0.0
    running.qualities = None
    running.track_trust(torch.tensor([0.0, 0.0]))  # neither detects anything: nothing to follow
    assert running.trust.item() == 0.0
    running.qualities = None
    running.track_trust(torch.tensor([0.8, 0.2]))
    for _ in range(200):  # running means: a student that overtakes the teacher ends the trust
        running.track_trust(torch.tensor([0.5, 0.7]))
    assert running.trust.item() == 0.0


def test_object_quality_is_the_best_aligned_anchor_inside_each_object():
    gt = GroundTruth(torch.tensor([[1, 0]]), torch.tensor([[[0.0, 0, 10, 10], [0, 0, 0, 0]]]), torch.tensor([[1, 0]]))
    anchors = torch.tensor([[5.0, 5.0], [6.0, 6.0], [20.0, 20.0]])
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 10]]])  # exact, half, exact but outside
    logits = torch.full((1, 3, 2), -20.0)
    logits[0, :, 1] = torch.tensor([0.0, 20.0, 20.0])  # p(class 1): 0.5, ~1, ~1
    q = object_quality(logits, boxes, anchors, gt, alpha=0.5, beta=6.0)
    assert q[0, 0].item() == pytest.approx(max(0.5**0.5, 0.5**6)) and q[0, 1] == 0  # anchor 3 lies outside the box
    assert mean_quality(q, gt).item() == pytest.approx(0.5**0.5)
    small_chunks = object_quality(logits, boxes, anchors, gt, alpha=0.5, beta=6.0, chunk=1)
    assert torch.equal(q, small_chunks)


def test_a_better_teacher_is_followed_and_a_worse_one_is_not(trained_and_fresh):
    trained, fresh, batch = trained_and_fresh
    good, good_stats = distil(trained, fresh, batch)
    bad, bad_stats = distil(fresh, trained, batch)  # the same two models, roles swapped
    q_t, q_s = good_stats.qualities.tolist()
    assert q_s < 0.75 * q_t  # the trained model detects the batch's objects far better
    assert good_stats.trust.item() > 0.99 and all(good.items[k] > 0 for k in LOSS_NAMES), good.items
    assert bad_stats.trust.item() == 0.0 and all(bad.items[k] == 0 for k in LOSS_NAMES), bad.items
    # the detection part is Ultralytics' either way, and trust=off distils the swapped pair again
    off, _ = distil(fresh, trained, batch, trust="off")
    assert torch.equal(bad.loss[:3], off.loss[:3]) and all(off.items[k] > 0 for k in LOSS_NAMES)


def test_training_records_the_mean_of_the_factors_it_applied(data_yaml, teacher_pt, tmp_path, monkeypatch):
    """results.csv's ``tsd/trust`` is the mean of the factors the epoch's steps multiplied their terms by: a run whose
    factor moves from step to step (the student's quality given here, rising towards the teacher's) must report their
    mean, not a factor stuck at 0 or 1, and the terms must carry each step's factor."""
    applied, update = [], RunningStats.update

    def update_with_rising_student(self, det, raw, quality):
        if quality is not None:  # the teacher at 0.8, the student from 0.2 up: factors 0.75, 0.70, 0.66, ...
            quality = torch.stack([quality.new_tensor(0.8), quality.new_tensor(0.2 + 0.05 * len(applied))])
        weights = update(self, det, raw, quality)
        applied.append(self.trust.item())
        return weights

    monkeypatch.setattr(RunningStats, "update", update_with_rising_student)
    trainer = TSDTrainer(overrides=tiny_run(data_yaml, teacher_pt, tmp_path, epochs=2))
    trainer.train()
    rows = list(csv.DictReader((trainer.save_dir / "results.csv").open()))
    per_epoch = len(trainer.train_loader)
    for epoch, row in enumerate(rows):
        factors = applied[epoch * per_epoch : (epoch + 1) * per_epoch]
        assert len(factors) == per_epoch and 0.05 < min(factors) < max(factors) < 0.8, factors
        assert float(row["tsd/trust"]) == pytest.approx(sum(factors) / per_epoch, abs=1e-4)
        assert float(row["train/dfeat_loss"]) > 0


def epoch_of_steps(trainer):
    """Run the trainer's epoch-start and batch-start callbacks; which of the epoch's steps run the teacher."""
    update_pace(trainer)
    due = [start_batch(trainer) or trainer.tsd_model.teacher_due for _ in trainer.train_loader]
    trainer.epoch += 1
    return due


def pace_only(batches=8, **settings):
    """A stand-in trainer holding only what the pace callbacks read and set."""
    cfg = TSDConfig(**settings)
    tsd_model = SimpleNamespace(stats=RunningStats(cfg), teacher_due=True, probe=False)
    return SimpleNamespace(
        tsd_model=tsd_model, tsd=cfg, epoch=0, paced_epoch=None, world_size=1, train_loader=range(batches)
    )


def steps(running, *qualities):
    """One distilling step per (teacher, student) quality pair."""
    for q in qualities:
        running.update(torch.ones(()), torch.ones(3), torch.tensor(q))


AHEAD, BEHIND = (0.5, 0.6), (0.8, 0.2)  # (teacher, student) quality: the student ahead (trust 0), far behind


def test_an_untrusted_teacher_runs_on_one_step_in_n_until_the_student_falls_behind():
    trainer = pace_only(untrusted_every=4)
    running = trainer.tsd_model.stats
    assert epoch_of_steps(trainer) == [True] * 8  # nothing measured yet: the teacher runs on every step
    steps(running, *[AHEAD] * 8)
    assert running.trust.item() == 0
    assert epoch_of_steps(trainer) == [True, False, False, False] * 2 and running.pace == 4
    steps(running, AHEAD, AHEAD)  # its two teacher steps find no trust either: it stays at rest
    assert epoch_of_steps(trainer) == [True, False, False, False] * 2
    resting = deepcopy(running)
    steps(running, BEHIND, BEHIND)  # the student falls far behind: two teacher steps at one in 4 stand for 8 steps ...
    assert running.trust.item() > 0
    assert epoch_of_steps(trainer) == [True] * 8 and running.pace == 1  # ... so the teacher is back on every step
    resting.pace = 1  # the same two steps counted as two training steps have not yet moved the running qualities
    steps(resting, BEHIND, BEHIND)
    assert resting.trust.item() == 0
    # an epoch whose trust ends at 0 but was above 0 on some step keeps the teacher on every step (any factor above 0
    # in the epoch counts, not only its last) ...
    steps(running, *[AHEAD] * 200)
    assert running.trust.item() == 0
    assert epoch_of_steps(trainer) == [True] * 8
    steps(running, *[AHEAD] * 8)  # ... and the next epoch, at 0 throughout, starts from a fresh count: rest again
    assert epoch_of_steps(trainer) == [True, False, False, False] * 2


def test_an_epoch_that_starts_again_keeps_its_pace():
    """Ultralytics' first-epoch out-of-memory retry restarts the epoch: its unfinished try's factors decide nothing."""
    trainer = pace_only(untrusted_every=4)
    running = trainer.tsd_model.stats
    update_pace(trainer)
    steps(running, AHEAD, AHEAD)  # two steps at trust 0, then the epoch starts again
    assert epoch_of_steps(trainer) == [True] * 8 and math.isnan(running.epoch_trust())  # still every step, count anew
    steps(running, *[AHEAD] * 8)  # the whole epoch at 0: the next one rests
    assert epoch_of_steps(trainer) == [True, False, False, False] * 2
    trainer.epoch -= 1  # that epoch starts again (NaN recovery): it keeps resting, whatever its try measured
    steps(running, *[BEHIND] * 4)
    assert running.trust.item() > 0
    assert epoch_of_steps(trainer) == [True, False, False, False] * 2


def test_a_restarted_epoch_reports_the_trust_of_its_own_steps_only():
    """results.csv's ``tsd/trust`` of an epoch that starts again (out-of-memory retry): the mean over the steps of the
    try that finished, not over the unfinished try's steps too, even when those trusted the teacher."""
    trainer = pace_only()
    running = trainer.tsd_model.stats
    update_pace(trainer)
    steps(running, BEHIND, BEHIND)  # the unfinished try: the teacher far ahead, factor 0.75
    assert running.epoch_trust() == pytest.approx(0.75)
    update_pace(trainer)  # the same epoch starts again
    factors = []
    for _ in range(200):  # the student now ahead: the running qualities bring the factor down to 0
        steps(running, AHEAD)
        factors.append(running.trust.item())
    assert factors[0] > 0 and factors[-1] == 0
    assert running.epoch_trust() == pytest.approx(sum(factors) / len(factors))


def test_the_teacher_rests_at_most_for_an_epoch_and_its_gradient_probes_fall_on_its_steps():
    trainer = pace_only(batches=32, untrusted_every=100)
    steps(trainer.tsd_model.stats, AHEAD)
    assert epoch_of_steps(trainer) == [True] + [False] * 31  # beyond the batches of an epoch: once an epoch
    trainer = pace_only(batches=32, untrusted_every=4)
    for expected_teacher_steps in (32, 8):
        due, probes = [], []
        update_pace(trainer)
        for _ in trainer.train_loader:
            start_batch(trainer)
            due.append(trainer.tsd_model.teacher_due)
            probes.append(trainer.tsd_model.probe)
        assert sum(due) == expected_teacher_steps
        assert sum(probes) == GRADIENT_PROBES and all(d for d, p in zip(due, probes) if p)
        steps(trainer.tsd_model.stats, AHEAD)
        trainer.epoch += 1


def test_restored_running_statistics_replace_the_current_ones():
    """Resume and NaN recovery: the checkpoint's qualities are taken as they are and the epoch's statistics restart."""
    running = RunningStats(TSDConfig())
    steps(running, AHEAD)
    saved = {"sizes": None, "qualities": torch.tensor(BEHIND)}
    running.load_state_dict(saved, torch.device("cpu"))
    assert running.trust.item() == pytest.approx(0.75) and running.take_trust_sum() is None
    assert math.isnan(running.epoch_trust())
    running.qualities = torch.tensor([float("nan"), float("nan")])  # what a NaN step leaves behind
    running.load_state_dict(saved, torch.device("cpu"))
    assert running.trust.item() == pytest.approx(0.75)


def test_without_the_trust_factor_the_teacher_never_rests():
    trainer = pace_only(trust="off", untrusted_every=4)
    epoch_of_steps(trainer)
    trainer.tsd_model.stats.update(torch.ones(()), torch.ones(3), None)  # trust=off measures no quality
    assert epoch_of_steps(trainer) == [True] * 8


def fine_tuning_the_teacher(data_yaml, teacher_pt, tmp_path):
    """A 2-epoch run whose student starts from the (untrained) teacher's own weights, so that trust is 0 throughout;
    untrusted_every=2."""
    run = tiny_run(data_yaml, teacher_pt, tmp_path, epochs=2, model=str(teacher_pt), tsd_untrusted_every=2)
    return TSDTrainer(overrides=run)


def test_a_student_as_good_as_its_teacher_is_not_distilled_and_the_user_is_told(
    data_yaml, random_teacher_pt, tmp_path, monkeypatch
):
    """Fine-tuning the teacher's own weights: both models detect alike, so trust is 0 from the start; in the next
    epoch the teacher runs on one step in ``untrusted_every`` only."""
    teacher_epochs, teacher_call = [], Teacher.__call__
    trainer = fine_tuning_the_teacher(data_yaml, random_teacher_pt, tmp_path)
    monkeypatch.setattr(Teacher, "__call__", lambda t, x: teacher_epochs.append(trainer.epoch) or teacher_call(t, x))
    with logged_messages() as messages:
        trainer.train()
    rows = list(csv.DictReader((trainer.save_dir / "results.csv").open()))
    assert float(rows[0]["tsd/trust"]) == 0 and all(float(rows[0][f"train/{k}"]) == 0 for k in LOSS_NAMES)
    assert sum("distillation adds nothing" in m for m in messages) == 1
    # every step of epoch 1, then one of the two steps of epoch 2
    assert len(trainer.train_loader) == 2 and teacher_epochs == [0, 0, 1]
    assert sum("epoch 2: the teacher runs on one step in 2 only" in m for m in messages) == 1
    # 16 images at Ultralytics' nbs=64 for 2 epochs: 4 batches, accumulated into 1 optimizer step, told once
    assert sum("about 1 optimizer step in all" in m and "nbs=8 (one step per batch" in m for m in messages) == 1


def test_an_out_of_memory_retry_of_the_first_epoch_keeps_the_teacher_on(
    data_yaml, random_teacher_pt, tmp_path, monkeypatch
):
    """Ultralytics halves the batch and restarts the first epoch after an out-of-memory error: the restarted epoch
    runs the teacher on every step (its first try's single step at trust 0 is no epoch's worth of evidence), and the
    epoch after it rests as usual."""
    teacher_epochs, teacher_call = [], Teacher.__call__
    trainer = fine_tuning_the_teacher(data_yaml, random_teacher_pt, tmp_path)

    def call(t, x):
        if len(teacher_epochs) == 1 and trainer.batch_size == 8:
            raise RuntimeError("CPU out of memory (raised by the test)")
        teacher_epochs.append(trainer.epoch)
        return teacher_call(t, x)

    monkeypatch.setattr(Teacher, "__call__", call)
    trainer.train()
    assert trainer.batch_size == 4 and len(trainer.train_loader) == 4  # the retry ran at half the batch
    # the first try's step, the restarted epoch's 4 steps, then one step in 2 of the next epoch
    assert teacher_epochs == [0] + [0] * 4 + [1] * 2
