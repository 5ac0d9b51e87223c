"""``TSDTrainer``: Ultralytics' ``DetectionTrainer`` with a frozen teacher and task-significance distillation.

During training ``trainer.model`` is a ``TSDModel`` (student + feature adapters, the teacher referenced, the running
statistics), so Ultralytics' own machinery (DDP, optimizer, clipping, AMP) covers the adapters, while the EMA and
``best.pt`` hold the plain student. ``last.pt`` carries the adapters and running statistics while a run is resumable
(``checkpoint.py``).
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, LOGGER, RANK, YAML, colorstr

from ..config import TSDConfig
from ..errors import UsageError
from ..ultralytics_internals import (
    NanRecoveryHook,
    check_version,
    hidden_args,
    optimizer_view,
    upgrade_optimizer_state,
)
from .arguments import OUR_ARGS, check_new_run, run_settings
from .callbacks import CALLBACKS, pace_words
from .checkpoint import add_state, read_state, remove_state
from .model import TSDModel, gradient_summary
from .teacher import Teacher
from .unlabeled import PoolSteps, UnlabeledPool

# a run with fewer optimizer steps than this is warned: a chosen value between measured points (BENCHMARKS.md: +1.1
# over training alone at 190 steps on scenes, +6 to +12 at 480 on shapes and yolo26 and at 750 on scenes at nbs=16)
FEW_STEPS = 300


def few_steps_warning(batches: int, epochs: int, batch: int, accumulate: int) -> str | None:
    """What to tell a user whose run makes fewer than ``FEW_STEPS`` optimizer steps in all, else None.

    Args:
        batches (int): Batches per epoch.
        epochs (int): Epochs of the run.
        batch (int): Images per batch.
        accumulate (int): Batches per optimizer step (Ultralytics' ``max(round(nbs / batch), 1)``).
    """
    steps = batches * epochs // accumulate
    if steps >= FEW_STEPS:
        return None
    per_step, more = "one step per batch", "more epochs"
    if accumulate > 1:
        per_step = f"one optimizer step per {accumulate} batches of {batch}"
        measured = "on the benchmark's photograph-like data it took the student alone from 0.06 to 0.29 mAP50-95"
        more = f"nbs={batch} (one step per batch; {measured}, 0.42 with distillation) or more epochs"
    return (
        f"{colorstr('tsd:')} about {steps} optimizer step{'s' * (steps != 1)} in all ({epochs} epochs, {per_step}): "
        "with this few, distillation measured little gain over training alone (+1.1 points at 190 steps, "
        f"BENCHMARKS.md, section 'scenes'). More steps: {more}."
    )


class TSDTrainer(NanRecoveryHook, DetectionTrainer):
    """Distil a frozen YOLO teacher into a YOLO student with task-significance distillation.

    Every ``yolo train`` argument works as in Ultralytics. Extra keys: ``teacher`` (path to the teacher ``.pt``),
    ``tsd`` (settings YAML path or dict) and single settings as ``tsd_<name>=value``.

    Args:
        cfg (str | dict): Ultralytics default configuration.
        overrides (dict, optional): Training arguments, plus ``teacher``, ``tsd`` and ``tsd_*`` keys.
        _callbacks (dict, optional): Ultralytics callbacks.
        teacher (str | Path, optional): Teacher checkpoint, if not in ``overrides``.
        tsd (str | Path | dict | TSDConfig, optional): Settings, if not in ``overrides``.

    Examples:
        >>> args = {"model": "yolov8n.yaml", "data": "my.yaml", "epochs": 100}
        >>> trainer = TSDTrainer(overrides=args, teacher="t.pt", tsd="cfg/tsd.yaml")
        >>> trainer.train()
    """

    def __init__(
        self,
        cfg: str | dict = DEFAULT_CFG,
        overrides: dict[str, Any] | None = None,
        _callbacks: dict | None = None,
        teacher: str | Path | None = None,
        tsd: str | Path | dict | TSDConfig | None = None,
    ):
        """Check every input that can be checked before Ultralytics creates the run folder, then set up the run."""
        check_version()
        run = run_settings(overrides or {}, teacher, tsd)
        overrides, self.tsd = run.overrides, run.cfg
        run_dir = None if overrides.get("resume") else check_new_run(cfg, overrides)
        self.teacher = Teacher.load(run.teacher)
        files, ratio, mix = run.unlabeled_files, self.tsd.unlabeled_ratio, self.tsd.unlabeled_mix
        self.pool = UnlabeledPool(files, ratio, mix) if files else None
        if overrides.get("compile"):  # as Ultralytics does for its own distillation: the teacher runs eagerly
            LOGGER.warning(f"{colorstr('tsd:')} compile is not supported with distillation and is disabled")
            overrides["compile"] = False

        fresh = run_dir is not None and not run_dir.exists()
        try:
            super().__init__(cfg, overrides, _callbacks)
            self.teacher.check_names(self.data["names"])
        except Exception:
            if fresh and RANK in {-1, 0} and run_dir.exists():  # never leave a half-made run folder behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        self.args.teacher, self.args.tsd = self.teacher.path, self.tsd.to_dict()  # survive DDP relaunch and resume
        self.args.unlabeled = run.unlabeled
        if RANK in {-1, 0}:
            YAML.save(self.save_dir / "args.yaml", vars(self.args))
        self.tsd_model: TSDModel | None = None  # trainer.model during training (wrapped by DDP on several GPUs)
        for event, callback in CALLBACKS:  # plain functions, registered once: a DDP relaunch brings them along
            if callback not in self.callbacks[event]:
                self.add_callback(event, callback)
        self.plot_batch: dict | None = None  # fixed validation images for the significance pictures
        self.untrusted_warned = False  # the warning that the teacher adds nothing is given once
        self.paced_epoch: int | None = None  # the epoch update_pace last started (an epoch can start again)

    def get_dataloader(self, dataset_path: str, batch_size: int = 16, rank: int = 0, mode: str = "train"):
        """Ultralytics' loader; for training with an unlabeled pool, also the pool's loader (same rank and workers).

        With ``unlabeled_mix=steps`` the training loader yields the pool's batches between the labeled ones.
        """
        loader = super().get_dataloader(dataset_path, batch_size, rank, mode)
        if mode == "train" and self.pool is not None:
            self.pool.open(self.args, self.data, batch_size, self.stride, rank, self.device)
            if self.pool.mix == "steps":
                return PoolSteps(loader, self.pool)
        return loader

    def preprocess_batch(self, batch: dict) -> dict:
        """Ultralytics' preprocessing, of the labeled images and (``append``) the pool images appended to them.

        Pool images are appended only on steps that run the teacher: without it they teach nothing.
        """
        appending = self.pool is not None and self.pool.mix == "append" and self.pool.loader is not None
        if appending and (self.tsd_model is None or self.tsd_model.teacher_due):
            batch = self.pool.append(batch)
        return super().preprocess_batch(batch)

    def get_dataset(self):
        """Ultralytics' dataset check; its refusal of a dataset becomes a ``UsageError`` (one line, no traceback)."""
        try:
            return super().get_dataset()
        except RuntimeError as e:
            raise UsageError(" ".join(str(e).split())) from e

    @contextmanager
    def clean_up_on_error(self):
        """On an error, remove the run folder this trainer just created, so no half-written run is left behind."""
        try:
            yield
        except Exception:
            fresh = not self.args.resume and not any(self.save_dir.rglob("*.pt"))
            if fresh and RANK in {-1, 0} and self.save_dir.exists():
                shutil.rmtree(self.save_dir, ignore_errors=True)
            raise

    def set_model_attributes(self):
        """Ultralytics' model attributes, then wrap the student for distillation (before DDP, EMA and the optimizer).

        ``trainer.model`` becomes the ``TSDModel``; resuming restores its adapters and running statistics.
        """
        super().set_model_attributes()
        student = self.model.student if isinstance(self.model, TSDModel) else self.model
        with self.clean_up_on_error():
            self.teacher.check_student(student)
        self.teacher.to(self.device, half=self.tsd.teacher_half)
        self.tsd_model = self.model = TSDModel(student, self.teacher, self.tsd)
        if self.resume:
            self.restore_state(Path(self.args.resume))
        n_teacher = sum(p.numel() for p in self.teacher.model.parameters())
        n_adapters = sum(p.numel() for p in self.tsd_model.adapters.parameters())
        LOGGER.info(
            f"{colorstr('tsd:')} teacher {self.teacher.path} ({n_teacher:,} params, frozen), "
            f"adapters {n_adapters:,} params, {self.tsd}"
        )

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        """Ultralytics' optimizer over the student and the adapters, grouped by Ultralytics' own rules."""
        warning = few_steps_warning(len(self.train_loader), self.epochs, self.batch_size, self.accumulate)
        if warning and self.tsd.distils and not (self.args.time or self.resume) and RANK in {-1, 0}:
            LOGGER.warning(warning)  # time= re-estimates the epochs later, and a resumed run keeps its nbs and epochs
        view = optimizer_view(model, self.tsd_model.adapters)
        return super().build_optimizer(view, name, lr, momentum, decay, iterations)

    def resume_training(self, ckpt):
        """Ultralytics' resume, after upgrading an optimizer state of yolo_tsd 0.1 (adapters in extra groups)."""
        if ckpt is not None and self.resume and not upgrade_optimizer_state(ckpt, self.optimizer):
            LOGGER.warning(f"{colorstr('tsd:')} the checkpoint's optimizer state does not fit; it starts anew")
        super().resume_training(ckpt)

    def save_metrics(self, metrics):
        """Ultralytics' results.csv row, plus the epoch's gradient split and mean trust factor.

        The extra columns: ``tsd/grad_share``, ``tsd/grad_cos`` (gradient probes) and ``tsd/trust`` (every step
        that ran the teacher).
        """
        extra = {}
        if self.tsd_model:
            extra = {**gradient_summary(self.tsd_model.gradient_stats), "tsd/trust": self.tsd_model.stats.epoch_trust()}
            self.tsd_model.gradient_stats.clear()
            if extra["tsd/trust"] == 0 and not self.untrusted_warned:
                self.untrusted_warned = True
                LOGGER.warning(
                    f"{colorstr('tsd:')} trust 0 for all of epoch {self.epoch + 1}: the student detects its training "
                    "objects as well as the teacher, so distillation adds nothing (the terms are 0; while that lasts "
                    f"the teacher runs on {pace_words(self.tsd.untrusted_every)}, to notice if the student falls "
                    "behind). A stronger teacher, or training without one, would serve this data better."
                )
        super().save_metrics({**metrics, **extra})

    def get_validator(self):
        """Ultralytics' validator for the task, built without our arguments (validators refuse unknown keys)."""
        with hidden_args(self.args, OUR_ARGS):
            return super().get_validator()

    def save_model(self):
        """Ultralytics' checkpoints (the EMA student), then the adapters and running statistics into ``last.pt``."""
        saved = super().save_model()
        if saved:
            model = self.tsd_model
            add_state(self.last, model.adapters.state_dict(), model.stats.state_dict(), self.epoch)
        return saved

    def final_eval(self):
        """Remove the resumable state from ``last.pt`` (the run is finished: nothing resumes it), then Ultralytics'."""
        if RANK in {-1, 0} and self.last.is_file():
            remove_state(self.last)
        super().final_eval()

    def restore_state(self, checkpoint: Path) -> None:
        """Load the adapters and running statistics saved with ``checkpoint``."""
        saved, source, epoch = read_state(checkpoint)
        if saved is None:
            LOGGER.warning(f"{colorstr('tsd:')} {checkpoint} holds no adapter weights: the adapters start anew")
            return
        if epoch is not None and saved["epoch"] != epoch:
            LOGGER.warning(
                f"{colorstr('tsd:')} {source} holds the adapters of epoch {saved['epoch'] + 1}, the checkpoint is of "
                f"epoch {epoch + 1}: resume from weights/last.pt to continue with matching adapters"
            )
        self.tsd_model.adapters.load_state_dict(saved["adapters"])
        self.tsd_model.stats.load_state_dict(saved.get("running", {}), self.device)  # older checkpoints: none
        LOGGER.info(f"{colorstr('tsd:')} restored adapters and running term sizes from {source}")

    def after_recovery(self) -> None:
        """After Ultralytics' NaN recovery reloaded the student from ``last.pt``, reload our state from it too."""
        self.restore_state(self.last)
