"""``TSDTrainer``: Ultralytics' ``DetectionTrainer`` with a frozen teacher and task-significance distillation.

During training ``trainer.model`` is a ``TSDModel`` (student + feature adapters, the teacher referenced), so
Ultralytics' own machinery (DDP, optimizer, clipping, AMP) covers the adapters, while the EMA and ``best.pt`` hold
the plain student. ``last.pt`` carries the adapters' weights under its own key while a run is resumable, as a plain
tensor dict that plain Ultralytics ignores; the key is removed when training ends.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from copy import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn
from ultralytics.cfg import cfg2dict, check_dict_alignment, get_cfg, get_save_dir
from ultralytics.models import yolo
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, DEFAULT_CFG_DICT, LOGGER, RANK, YAML, colorstr
from ultralytics.utils.checks import check_model_file_from_stem
from ultralytics.utils.torch_utils import unwrap_model

from .callbacks import CALLBACKS, pace_words
from .checks import check_data, check_keys, resolve_weights
from .config import PREFIX, TSDConfig
from .errors import MissingFileError, UsageError
from .model import TSDModel, gradient_summary
from .teacher import Teacher
from .ultralytics_internals import NanRecoveryHook, check_version, merge_param_groups

# a run with fewer optimizer steps than this is warned: a chosen value between measured points (BENCHMARKS.md, "Few
# optimizer steps": no gain over training alone at 190 steps on scenes, gains at 480 on shapes and yolo26 and at 750 on
# scenes_tune with one step per batch)
FEW_STEPS = 300
CKPT_KEY = "tsd"  # in last.pt while a run is resumable: {"adapters": state dict, "epoch": int}; plain tensors only
OLD_ADAPTERS_FILE = "tsd_adapters.pt"  # where yolo_tsd 0.1 kept the adapters, beside last.pt (read on resume)


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], Any, Any, dict[str, Any]]:
    """Separate our keys from Ultralytics' ones.

    Returns:
        (tuple): Ultralytics overrides, ``teacher``, ``tsd`` source, and the single ``tsd_*`` settings.
    """
    ul = dict(overrides)
    teacher, tsd = ul.pop("teacher", None), ul.pop("tsd", None)
    singles = {k[len(PREFIX) :]: ul.pop(k) for k in list(ul) if k.startswith(PREFIX)}
    return ul, teacher, tsd, singles


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
        "with this few, distillation measured no gain over training alone (BENCHMARKS.md, 'Few optimizer steps'). "
        f"More steps: {more}."
    )


def cpu_copies(tensors: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
    """Float32 CPU copies of a checkpoint's tensors (None stays None), detached from training."""
    return {k: None if v is None else v.detach().float().cpu().clone() for k, v in tensors.items()}


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
        overrides, o_teacher, o_tsd, singles = split_overrides(overrides or {})
        teacher, tsd = o_teacher or teacher, o_tsd if o_tsd is not None else tsd
        if overrides.get("resume") is True and str(overrides.get("model", "")).endswith(".pt"):
            overrides["resume"] = overrides["model"]  # `resume model=last.pt`, as Ultralytics' Model.train reads it
        resume = overrides.get("resume")
        if isinstance(resume, str) and not Path(resume).is_file():
            raise MissingFileError(f"resume={resume}: no such checkpoint; pass the interrupted run's weights/last.pt")
        if resume:  # the interrupted run's settings win, as Ultralytics' resume keeps its arguments
            saved = self.saved_run_args(overrides["resume"])
            if saved.get("tsd") is not None:
                if tsd is not None or singles:
                    LOGGER.warning(f"{colorstr('tsd:')} resume keeps the run's distillation settings; ignoring tsd=")
                tsd, singles = saved["tsd"], {}
            teacher = teacher or saved.get("teacher")  # a moved teacher file may be given again, like distill_model
        self.tsd = TSDConfig.load(tsd, singles)
        dis = overrides.get("dis", DEFAULT_CFG_DICT["dis"])  # the default arrives in every DDP relaunch and resume
        if overrides.get("distill_model") is not None or dis != DEFAULT_CFG_DICT["dis"]:
            raise UsageError(
                "distill_model=/dis= select Ultralytics' built-in distillation; yolo_tsd distils with teacher=. "
                "Use one of the two, never both: drop distill_model and dis."
            )
        if not teacher:
            raise UsageError("teacher= is required: pass teacher=path/to/teacher.pt (an Ultralytics detection .pt)")
        run_dir = None
        if not resume:
            check_keys(overrides)  # unknown keys, with the closest spelling, before Ultralytics' own check
            try:
                check_dict_alignment(cfg2dict(cfg), overrides)  # deprecated keys, Ultralytics' way
                run_dir = get_save_dir(get_cfg(cfg, overrides))  # where Ultralytics will create the run folder
            except (TypeError, ValueError, SyntaxError) as e:  # a value of the wrong type or out of range
                raise UsageError(str(e)) from e
            model = str(check_model_file_from_stem(overrides.get("model") or "yolov8n.yaml"))
            if model.endswith(".pt"):
                resolve_weights(model, "model")  # fail fast instead of Ultralytics' download attempts
            check_data(overrides.get("data"))
        self.teacher = Teacher.load(teacher)
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
        if RANK in {-1, 0}:
            YAML.save(self.save_dir / "args.yaml", vars(self.args))
        self.tsd_model: TSDModel | None = None  # trainer.model during training (wrapped by DDP on several GPUs)
        for event, callback in CALLBACKS:  # plain functions, registered once: a DDP relaunch brings them along
            if callback not in self.callbacks[event]:
                self.add_callback(event, callback)
        self.plot_batch: dict | None = None  # fixed validation images for the significance pictures
        self.untrusted_warned = False  # the warning that the teacher adds nothing is given once
        self.scheduled_epoch: int | None = None  # the epoch update_schedule last started (an epoch can start again)

    def get_dataset(self):
        """Ultralytics' dataset check; its refusal of a dataset becomes a ``UsageError`` (one line, no traceback)."""
        try:
            return super().get_dataset()
        except RuntimeError as e:
            raise UsageError(" ".join(str(e).split())) from e

    @staticmethod
    def saved_run_args(resume: str | bool) -> dict:
        """``train_args`` of the checkpoint a resume continues from (empty if it cannot be read here)."""
        from ultralytics.utils.files import get_latest_run

        path = Path(resume) if isinstance(resume, (str, Path)) and Path(resume).is_file() else None
        path = path or Path(get_latest_run() or "")
        if not path.is_file():
            return {}
        return torch.load(path, map_location="cpu", weights_only=False).get("train_args") or {}

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

        ``trainer.model`` becomes the ``TSDModel``; resuming restores its adapters from the checkpoint.
        """
        super().set_model_attributes()
        student = self.model.student if isinstance(self.model, TSDModel) else self.model
        with self.clean_up_on_error():
            self.teacher.check_student(student)
        self.teacher.to(self.device, half=self.tsd.teacher_half)
        self.tsd_model = self.model = TSDModel(student, self.teacher, self.tsd)
        if self.resume:
            self.restore_adapters(Path(self.args.resume))
        n_teacher = sum(p.numel() for p in self.teacher.model.parameters())
        n_adapters = sum(p.numel() for p in self.tsd_model.adapters.parameters())
        LOGGER.info(
            f"{colorstr('tsd:')} teacher {self.teacher.path} ({n_teacher:,} params, frozen), "
            f"adapters {n_adapters:,} params, {self.tsd}"
        )

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        """Ultralytics' optimizer over the student and the adapters, grouped by Ultralytics' own rules.

        Ultralytics groups the parameters of ``unwrap_model(model)`` — the student alone for a ``TSDModel`` — so it is
        given a view that holds both (the student's layers first, under the name ``model`` its head lookup expects).
        """
        view = nn.Module()
        view.model, view.adapters = unwrap_model(model).model, self.tsd_model.adapters
        warning = few_steps_warning(len(self.train_loader), self.epochs, self.batch_size, self.accumulate)
        if warning and self.tsd.distils and not (self.args.time or self.resume) and RANK in {-1, 0}:
            LOGGER.warning(warning)  # time= re-estimates the epochs later, and a resumed run keeps its nbs and epochs
        return super().build_optimizer(view, name, lr, momentum, decay, iterations)

    def resume_training(self, ckpt):
        """Ultralytics' resume, after upgrading an optimizer state of yolo_tsd 0.1 (adapters in extra groups)."""
        if ckpt is not None and self.resume and ckpt.get("optimizer") is not None:
            saved = ckpt["optimizer"]
            if len(saved["param_groups"]) != len(self.optimizer.param_groups) and not merge_param_groups(
                saved, self.optimizer
            ):
                LOGGER.warning(f"{colorstr('tsd:')} the checkpoint's optimizer state does not fit; it starts anew")
                ckpt["optimizer"] = None
        super().resume_training(ckpt)

    def schedule_scale(self, epoch: int) -> float:
        """Factor on the distillation terms in ``epoch``: warm-up, linear decay, stop for the close_mosaic epochs.

        The decay is Ultralytics' linear learning-rate factor with ``final_scale`` in the place of ``lrf``: 1 in the
        first epoch, ``final_scale + (1 - final_scale) / epochs`` in the last.
        """
        if self.tsd.close_mosaic_stop and self.args.close_mosaic and epoch >= self.epochs - self.args.close_mosaic:
            return 0.0
        final = self.tsd.final_scale
        decay = (1 - epoch / self.epochs) * (1 - final) + final
        return min(1.0, (epoch + 1) / (self.tsd.warmup_epochs + 1), decay)

    def save_metrics(self, metrics):
        """Ultralytics' results.csv row, plus the epoch's gradient split and mean trust factor.

        The extra columns: ``tsd/grad_share``, ``tsd/grad_cos`` (gradient probes) and ``tsd/trust`` (every step
        that ran the teacher).
        """
        extra = {}
        if self.tsd_model:
            extra = {**gradient_summary(self.tsd_model.gradient_stats), "tsd/trust": self.tsd_model.terms.epoch_trust()}
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
        """Ultralytics' detection validator, given Ultralytics' arguments only (it rejects unknown keys)."""
        args = copy(self.args)
        del args.teacher, args.tsd
        return yolo.detect.DetectionValidator(
            self.test_loader, save_dir=self.save_dir, args=args, _callbacks=self.callbacks
        )

    def save_model(self):
        """Ultralytics' checkpoints (the EMA student), then the adapters into ``last.pt`` under ``CKPT_KEY``.

        ``best.pt`` is left exactly as Ultralytics wrote it. ``last.pt`` gets a plain dict of tensors, which plain
        Ultralytics ignores when it loads the file.
        """
        saved = super().save_model()
        if saved:
            ckpt = torch.load(self.last, map_location="cpu", weights_only=False)
            ckpt[CKPT_KEY] = self.adapters_state()
            torch.save(ckpt, self.last)
        return saved

    def adapters_state(self) -> dict:
        """What a resume needs beside the student: adapter weights, running statistics, and their epoch.

        The adapters' weights are float32 copies on the CPU; the running statistics are the balance's term sizes and
        the trust's qualities.
        """
        adapters, running = self.tsd_model.adapters.state_dict(), self.tsd_model.terms.running_state()
        return {"adapters": cpu_copies(adapters), "running": cpu_copies(running), "epoch": self.epoch}

    def final_eval(self):
        """Remove the adapters from ``last.pt`` (the run is finished: nothing resumes it), then Ultralytics' eval."""
        if RANK in {-1, 0} and self.last.is_file():
            ckpt = torch.load(self.last, map_location="cpu", weights_only=False)
            if ckpt.pop(CKPT_KEY, None) is not None:
                torch.save(ckpt, self.last)
        super().final_eval()

    def restore_adapters(self, checkpoint: Path) -> None:
        """Load the adapters saved with ``checkpoint`` (its ``tsd`` key, or a 0.1 run's side file beside it)."""
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False) if checkpoint.is_file() else {}
        saved, source = ckpt.get(CKPT_KEY), checkpoint
        if saved is None and checkpoint.with_name(OLD_ADAPTERS_FILE).is_file():
            source = checkpoint.with_name(OLD_ADAPTERS_FILE)
            saved = torch.load(source, map_location="cpu")
        if saved is None:
            LOGGER.warning(f"{colorstr('tsd:')} {checkpoint} holds no adapter weights: the adapters start anew")
            return
        if saved["epoch"] != ckpt.get("epoch", saved["epoch"]):
            LOGGER.warning(
                f"{colorstr('tsd:')} {source} holds the adapters of epoch {saved['epoch'] + 1}, the checkpoint is of "
                f"epoch {ckpt['epoch'] + 1}: resume from weights/last.pt to continue with matching adapters"
            )
        self.tsd_model.adapters.load_state_dict(saved["adapters"])
        self.tsd_model.terms.load_running_state(saved.get("running", {}), self.device)  # older checkpoints: none
        LOGGER.info(f"{colorstr('tsd:')} restored adapters and running term sizes from {source}")

    def after_recovery(self) -> None:
        """After Ultralytics' NaN recovery reloaded the student from ``last.pt``, reload the adapters from it too."""
        self.restore_adapters(self.last)
