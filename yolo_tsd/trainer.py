"""``TSDTrainer``: Ultralytics' ``DetectionTrainer`` with a frozen teacher and task-significance distillation.

The student stays a plain Ultralytics ``DetectionModel`` throughout: the teacher and the feature adapters live on the
trainer and in the training-only criterion, so the EMA, ``last.pt`` and ``best.pt`` hold the student alone.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from copy import copy
from pathlib import Path
from typing import Any

import torch
from ultralytics.cfg import cfg2dict, check_dict_alignment
from ultralytics.models import yolo
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, DEFAULT_CFG_DICT, LOGGER, RANK, YAML, colorstr
from ultralytics.utils.checks import check_model_file_from_stem
from ultralytics.utils.torch_utils import unwrap_model

from .checks import check_data, resolve_weights
from .config import PREFIX, TSDConfig
from .criterion import TSDLoss
from .losses import FeatureAdapters
from .teacher import Teacher, head_channels
from .visualize import plot_losses, render_batch

ADAPTERS_FILE = "tsd_adapters.pt"  # beside last.pt: the adapters' weights, for resume; never inside the student


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], Any, Any, dict[str, Any]]:
    """Separate our keys from Ultralytics' ones.

    Returns:
        (tuple): Ultralytics overrides, ``teacher``, ``tsd`` source, and the single ``tsd_*`` settings.
    """
    ul = dict(overrides)
    teacher, tsd = ul.pop("teacher", None), ul.pop("tsd", None)
    singles = {k[len(PREFIX) :]: ul.pop(k) for k in list(ul) if k.startswith(PREFIX)}
    return ul, teacher, tsd, singles


def update_schedule(trainer: TSDTrainer) -> None:
    """``on_train_epoch_start`` callback: set this epoch's factor on the distillation terms.

    A plain function, not a bound method: Ultralytics pickles the callbacks into its DDP relaunch, and a bound method
    would carry the parent trainer (and its teacher) into every worker.
    """
    trainer.criterion.scale = trainer.schedule_scale(trainer.epoch)


def plot_significance(trainer: TSDTrainer) -> None:
    """``on_fit_epoch_end``: significance pictures of a few fixed validation images, ``tsd_epoch{N}_{i}.png``.

    Drawn at the first, middle and last epoch when Ultralytics' ``plots=True``, from the EMA student it validates.
    """
    last = trainer.epochs - 1
    if not trainer.args.plots or RANK not in {-1, 0} or trainer.epoch not in {0, last // 2, last}:
        return
    if trainer.plot_batch is None:
        dataset = trainer.test_loader.dataset  # read directly: the validator's loader iterator stays untouched
        batch = dataset.collate_fn([dataset[i] for i in range(min(PLOT_IMAGES, len(dataset)))])
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


def plot_loss_curves(trainer: TSDTrainer) -> None:
    """``on_train_end``: ``tsd_losses.png``, every detection and distillation loss term over the epochs."""
    if trainer.args.plots and RANK in {-1, 0} and trainer.csv.is_file():
        plot_losses(trainer.csv, trainer.save_dir / "tsd_losses.png")


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Give every DDP rank rank 0's values (each rank is seeded differently), as DDP does for the modules it wraps."""
    for p in module.parameters():
        torch.distributed.broadcast(p.data, 0)


def sync_gradients(module: torch.nn.Module, world_size: int) -> None:
    """Average ``module``'s gradients over the DDP ranks, as DDP does for the modules it wraps."""
    for p in module.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= world_size


CALLBACKS = (
    ("on_train_epoch_start", update_schedule),
    ("on_fit_epoch_end", plot_significance),
    ("on_train_end", plot_loss_curves),
)
PLOT_IMAGES = 2  # validation images drawn by plot_significance


class TSDTrainer(DetectionTrainer):
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
        overrides, o_teacher, o_tsd, singles = split_overrides(overrides or {})
        teacher, tsd = o_teacher or teacher, o_tsd if o_tsd is not None else tsd
        if overrides.get("resume") is True and str(overrides.get("model", "")).endswith(".pt"):
            overrides["resume"] = overrides["model"]  # `resume model=last.pt`, as Ultralytics' Model.train reads it
        if overrides.get("resume"):  # the interrupted run's settings win, as Ultralytics' resume keeps its arguments
            saved = self.saved_run_args(overrides["resume"])
            if saved.get("tsd") is not None:
                if tsd is not None or singles:
                    LOGGER.warning(f"{colorstr('tsd:')} resume keeps the run's distillation settings; ignoring tsd=")
                tsd, singles = saved["tsd"], {}
            teacher = teacher or saved.get("teacher")  # a moved teacher file may be given again, like distill_model
        self.tsd = TSDConfig.load(tsd, singles)
        dis = overrides.get("dis", DEFAULT_CFG_DICT["dis"])  # the default arrives in every DDP relaunch and resume
        if overrides.get("distill_model") is not None or dis != DEFAULT_CFG_DICT["dis"]:
            raise ValueError(
                "distill_model=/dis= select Ultralytics' built-in distillation; yolo_tsd distils with teacher=. "
                "Use one of the two, never both: drop distill_model and dis."
            )
        if not teacher:
            raise ValueError("teacher= is required: pass teacher=path/to/teacher.pt (an Ultralytics detection .pt)")
        model = str(check_model_file_from_stem(overrides.get("model") or "yolov8n.yaml"))
        if not overrides.get("resume"):
            check_dict_alignment(cfg2dict(cfg), overrides)  # Ultralytics' own check, before the teacher loads
            if model.endswith(".pt"):
                resolve_weights(model, "model")  # fail fast instead of Ultralytics' download attempts
            check_data(overrides.get("data") or "")
        self.teacher = Teacher.load(teacher)

        super().__init__(cfg, overrides, _callbacks)
        with self.clean_up_on_error():
            self.teacher.check_names(self.data["names"])
        self.args.teacher, self.args.tsd = self.teacher.path, self.tsd.to_dict()  # survive DDP relaunch and resume
        if RANK in {-1, 0}:
            YAML.save(self.save_dir / "args.yaml", vars(self.args))
        self.adapters: FeatureAdapters | None = None
        for event, callback in CALLBACKS:  # plain functions, registered once: a DDP relaunch brings them along
            if callback not in self.callbacks[event]:
                self.add_callback(event, callback)
        self.plot_batch: dict | None = None  # fixed validation images for the significance pictures

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

    def setup_model(self):
        """Build the student as Ultralytics does, check it against the teacher, and create the feature adapters."""
        ckpt = super().setup_model()
        with self.clean_up_on_error():
            self.teacher.check_student(self.model)
        self.teacher.to(self.device, half=self.tsd.teacher_half)
        self.adapters = FeatureAdapters(head_channels(self.model), head_channels(self.teacher.model)).to(self.device)
        return ckpt

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        """Ultralytics' optimizer for the student, plus param groups for the adapters, with the student's settings."""
        optimizer = super().build_optimizer(model, name, lr, momentum, decay, iterations)
        named = list(self.adapters.named_parameters())
        for kind in ("weight", "bias"):
            params = [p for n, p in named if n.endswith("bias") == (kind == "bias")]
            template = next((g for g in reversed(optimizer.param_groups) if g.get("param_group") == kind), None)
            if params and template is not None:
                optimizer.add_param_group({**{k: v for k, v in template.items() if k != "params"}, "params": params})
        return optimizer

    def _setup_train(self):
        """Ultralytics' setup, then install the distillation criterion on the student (after the EMA copy exists)."""
        super()._setup_train()
        student = unwrap_model(self.model)
        self.criterion = TSDLoss(
            student, self.teacher, self.adapters, self.tsd, det=getattr(student, "criterion", None)
        )
        student.criterion = self.criterion
        if self.resume:
            self.load_adapters()
        if self.world_size > 1 and torch.distributed.is_initialized():
            broadcast_parameters(self.adapters)
        n_teacher = sum(p.numel() for p in self.teacher.model.parameters())
        n_adapters = sum(p.numel() for p in self.adapters.parameters())
        LOGGER.info(
            f"{colorstr('tsd:')} teacher {self.teacher.path} ({n_teacher:,} params, frozen), "
            f"adapters {n_adapters:,} params, {self.tsd}"
        )

    def schedule_scale(self, epoch: int) -> float:
        """Factor on the distillation terms in ``epoch`` (warm-up, optional stop for the close_mosaic epochs)."""
        if self.tsd.close_mosaic_stop and self.args.close_mosaic and epoch >= self.epochs - self.args.close_mosaic:
            return 0.0
        return min(1.0, (epoch + 1) / (self.tsd.warmup_epochs + 1))

    def get_validator(self):
        """Ultralytics' detection validator, given Ultralytics' arguments only (it rejects unknown keys)."""
        args = copy(self.args)
        del args.teacher, args.tsd
        return yolo.detect.DetectionValidator(
            self.test_loader, save_dir=self.save_dir, args=args, _callbacks=self.callbacks
        )

    def optimizer_step(self):
        """Average and clip the adapters' gradients (they are outside the DDP module and the student), then step."""
        if self.world_size > 1 and torch.distributed.is_initialized():
            sync_gradients(self.adapters, self.world_size)
        # Ultralytics clips the student's gradients to norm 10 after unscaling; clip the adapters' alike (the norm of
        # the still-scaled gradients is the scale times the unscaled one)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        torch.nn.utils.clip_grad_norm_(self.adapters.parameters(), max_norm=10.0 * scale)
        super().optimizer_step()

    def save_model(self):
        """Save Ultralytics' checkpoints (student only), and the adapters beside them for resume."""
        saved = super().save_model()
        torch.save(
            {"epoch": self.epoch, "adapters": self.adapters.state_dict(), "tsd": self.tsd.to_dict()},
            self.wdir / ADAPTERS_FILE,
        )
        return saved

    def load_adapters(self) -> None:
        """Restore the adapters' trained weights when resuming."""
        path = Path(self.args.resume).with_name(ADAPTERS_FILE) if isinstance(self.args.resume, str) else None
        if path is None or not path.is_file():
            LOGGER.warning(f"{colorstr('tsd:')} no {ADAPTERS_FILE} beside the resumed checkpoint: adapters start anew")
            return
        saved = torch.load(path, map_location=self.device)
        if saved["epoch"] != self.start_epoch - 1:
            LOGGER.warning(
                f"{colorstr('tsd:')} {path} holds the adapters of epoch {saved['epoch'] + 1}, the checkpoint is of "
                f"epoch {self.start_epoch}: resume from weights/last.pt to continue with matching adapters"
            )
        self.adapters.load_state_dict(saved["adapters"])
        LOGGER.info(f"{colorstr('tsd:')} restored adapters from {path}")
