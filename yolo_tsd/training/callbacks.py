"""The trainer's callbacks: the teacher's pace, gradient probes and pictures.

Plain functions, not bound methods: Ultralytics pickles the callbacks into its DDP relaunch, and a bound method would
carry the parent trainer (and its teacher) into every worker. Each is registered once by ``TSDTrainer``.
"""

from __future__ import annotations

from ultralytics.models.yolo.detect import DetectionTrainer as Trainer  # each callback gets the TSDTrainer
from ultralytics.utils import LOGGER, RANK, colorstr

from ..ultralytics_internals import validation_images
from ..visualize import plot_losses, render_batch

GRADIENT_PROBES = 4  # steps per epoch whose gradient split between detection and distillation is recorded
PLOT_IMAGES = 2  # validation images drawn by plot_significance


def pace_words(every: int) -> str:
    """How often the teacher runs, in words."""
    return "every step" if every == 1 else f"one step in {every} only"


def update_pace(trainer: Trainer) -> None:
    """``on_train_epoch_start``: how often the teacher runs in this epoch.

    After an epoch whose trust factor was 0 on every step that ran the teacher, the teacher runs on one step in
    ``untrusted_every`` only (at most once per epoch's worth of batches); those steps keep the trust measured and
    distil whenever it is above 0, and any trust on them brings the teacher back to every step the epoch after. Every
    rank holds the same factor, so every rank decides alike. An epoch that starts again (Ultralytics' first-epoch
    out-of-memory retry, NaN recovery) keeps its pace: the steps of its unfinished try decide nothing.
    """
    stats = trainer.tsd_model.stats
    trainer.epoch_batch = -1
    total = stats.take_trust_sum()  # None: the last epoch did not distil (keep the teacher's pace)
    if trainer.epoch == trainer.paced_epoch:
        total = None
    trainer.paced_epoch = trainer.epoch
    every = stats.pace if total is None else trainer.tsd.untrusted_every if total == 0 else 1  # NaN: 1
    every = min(every, len(trainer.train_loader)) if every > 1 else 1  # a value beyond the batches: once an epoch
    if every != stats.pace and RANK in {-1, 0}:
        why = "no trust in the last epoch (these steps notice if the student falls behind)"
        why = why if every > 1 else "the student fell behind it again"
        LOGGER.info(f"{colorstr('tsd:')} epoch {trainer.epoch + 1}: the teacher runs on {pace_words(every)}: {why}")
    stats.pace = every


def close_pool_mosaic(trainer: Trainer) -> None:
    """``on_train_epoch_start``: the pool stops mosaic in the epoch Ultralytics stops it for the labeled data."""
    close = trainer.args.close_mosaic
    if trainer.pool is not None and close and trainer.epoch >= trainer.epochs - close:
        trainer.pool.close_mosaic(trainer.args)


def start_batch(trainer: Trainer) -> None:
    """``on_train_batch_start``: whether this step runs the teacher, and whether it records the gradient split.

    The gradient split is recorded on ``GRADIENT_PROBES`` evenly spaced steps among those that run the teacher, in a
    single process only: the probe's extra backward passes are not part of DDP's synchronised step.
    """
    trainer.epoch_batch += 1
    tsd_model, pace = trainer.tsd_model, trainer.tsd_model.stats.pace
    teacher_step, rest = divmod(trainer.epoch_batch, pace)
    tsd_model.teacher_due = rest == 0
    every = max(1, -(-len(trainer.train_loader) // pace) // GRADIENT_PROBES)
    tsd_model.probe = trainer.world_size <= 1 and rest == 0 and teacher_step % every == every // 2


def plot_significance(trainer: Trainer) -> None:
    """``on_fit_epoch_end``: significance pictures of a few fixed validation images, ``tsd_epoch{N}_{i}.png``.

    Drawn at the first, middle and last epoch when Ultralytics' ``plots=True``, from the EMA student it validates.
    """
    last = trainer.epochs - 1
    if not trainer.args.plots or RANK not in {-1, 0} or trainer.epoch not in {0, last // 2, last}:
        return
    if trainer.plot_batch is None:
        batch = validation_images(trainer, PLOT_IMAGES)
        keep = batch["batch_idx"] < PLOT_IMAGES
        trainer.plot_batch = {
            "img": batch["img"][:PLOT_IMAGES].to(trainer.device).float() / 255,
            **{k: batch[k][keep].to(trainer.device) for k in ("batch_idx", "cls", "bboxes")},
        }
    title = f"epoch {trainer.epoch + 1}/{trainer.epochs}: where the distillation focuses"
    render_batch(
        trainer.ema.ema,
        trainer.teacher,
        trainer.plot_batch,
        trainer.tsd,
        trainer.save_dir / f"tsd_epoch{trainer.epoch + 1}",
        title,
    )


def plot_loss_curves(trainer: Trainer) -> None:
    """``on_train_end``: ``tsd_losses.png``, every detection and distillation loss term over the epochs."""
    if trainer.args.plots and RANK in {-1, 0} and trainer.csv.is_file():
        plot_losses(trainer.csv, trainer.save_dir / "tsd_losses.png")


CALLBACKS = (
    ("on_train_epoch_start", update_pace),
    ("on_train_epoch_start", close_pool_mosaic),
    ("on_train_batch_start", start_batch),
    ("on_fit_epoch_end", plot_significance),
    ("on_train_end", plot_loss_curves),
)
