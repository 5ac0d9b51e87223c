"""Our keys among Ultralytics' training arguments: split them off, take a resumed run's own, refuse what conflicts.

Everything here runs before Ultralytics creates a run folder; a refusal is a ``UsageError`` naming the problem and
the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ultralytics.utils import DEFAULT_CFG_DICT, LOGGER, colorstr

from ..checks import check_data, check_keys, check_unlabeled, resolve_weights, unlabeled_source
from ..config import PREFIX, TSDConfig
from ..errors import MissingFileError, UsageError
from ..ultralytics_internals import check_train_args, checkpoint_train_args, latest_run, model_file, model_task

OUR_ARGS = ("teacher", "tsd", "unlabeled")  # in the trainer's args (DDP relaunch, resume), hidden from its validator


@dataclass
class RunSettings:
    """What a distillation run takes besides Ultralytics' arguments.

    Attributes:
        overrides (dict): Ultralytics' arguments.
        teacher (str): The teacher checkpoint as given.
        cfg (TSDConfig): The distillation settings.
        unlabeled (list[str] | None): Absolute paths of the unlabeled pool's folders, lists or images, if any.
        unlabeled_files (list[str]): The pool's image files (empty without a pool).
    """

    overrides: dict[str, Any]
    teacher: str
    cfg: TSDConfig
    unlabeled: list[str] | None = None
    unlabeled_files: tuple[str, ...] = ()


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Separate our keys from Ultralytics' ones.

    Returns:
        (tuple): Ultralytics overrides, our keys given (``teacher``, ``tsd``, ``unlabeled``), the ``tsd_*`` settings.
    """
    ul = dict(overrides)
    ours = {k: ul.pop(k) for k in OUR_ARGS if k in ul}
    singles = {k[len(PREFIX) :]: ul.pop(k) for k in list(ul) if k.startswith(PREFIX)}
    return ul, ours, singles


def saved_run_args(resume: str | bool) -> dict:
    """``train_args`` of the checkpoint a resume continues from (empty if it cannot be read here)."""
    path = Path(resume) if isinstance(resume, (str, Path)) and Path(resume).is_file() else latest_run()
    return checkpoint_train_args(path) if path and path.is_file() else {}


def run_settings(overrides: dict[str, Any], teacher: Any, tsd: Any) -> RunSettings:
    """Ultralytics' arguments, the teacher, the distillation settings and the unlabeled pool of a run, checked.

    A resumed run keeps its own settings (as Ultralytics' resume keeps its arguments), its teacher and its pool, unless
    the teacher file is given again (it may have moved). Ultralytics' built-in distillation cannot be combined.

    Args:
        overrides (dict): Every argument given, ours included.
        teacher (Any): ``teacher=`` given outside ``overrides`` (Python API), or None.
        tsd (Any): ``tsd=`` given outside ``overrides``, or None.
    """
    overrides, ours, singles = split_overrides(overrides)
    teacher, tsd = ours.get("teacher") or teacher, ours["tsd"] if ours.get("tsd") is not None else tsd
    unlabeled = ours.get("unlabeled")
    if overrides.get("resume") is True and str(overrides.get("model", "")).endswith(".pt"):
        overrides["resume"] = overrides["model"]  # `resume model=last.pt`, as Ultralytics' Model.train reads it
    resume = overrides.get("resume")
    if isinstance(resume, str) and not Path(resume).is_file():
        raise MissingFileError(f"resume={resume}: no such checkpoint; pass the interrupted run's weights/last.pt")
    if resume:
        saved = saved_run_args(resume)
        if saved.get("tsd") is not None:
            if tsd is not None or singles:
                LOGGER.warning(f"{colorstr('tsd:')} resume keeps the run's distillation settings; ignoring tsd=")
            tsd, singles = saved["tsd"], {}
        teacher = teacher or saved.get("teacher")
        unlabeled = unlabeled or saved.get("unlabeled")
    cfg = TSDConfig.load(tsd, singles)
    source = unlabeled_source(unlabeled, overrides.get("data"))
    files = tuple(check_unlabeled(source, teacher)) if source and cfg.unlabeled_ratio > 0 else ()
    if files and not cfg.distils:  # every lambda at 0 is Ultralytics' training, on the labeled images
        LOGGER.warning(f"{colorstr('tsd:')} every lambda is 0: the unlabeled images are not used")
        files = ()
    dis = overrides.get("dis", DEFAULT_CFG_DICT["dis"])  # the default arrives in every DDP relaunch and resume
    if overrides.get("distill_model") is not None or dis != DEFAULT_CFG_DICT["dis"]:
        raise UsageError(
            "distill_model=/dis= select Ultralytics' built-in distillation; yolo_tsd distils with teacher=. "
            "Use one of the two, never both: drop distill_model and dis."
        )
    if not teacher:
        raise UsageError("teacher= is required: pass teacher=path/to/teacher.pt (an Ultralytics detection .pt)")
    if files and overrides.get("rect"):
        raise UsageError(
            "rect=True batches the labeled images by shape; unlabeled images cannot join such batches: drop rect=True "
            "or unlabeled="
        )
    return RunSettings(overrides, teacher, cfg, source if files else None, files)


def check_new_run(cfg: Any, overrides: dict[str, Any]) -> Path:
    """Check a new run's arguments, model and data before any folder exists; the run folder Ultralytics will make.

    Raises:
        UsageError: An unknown key (with the closest spelling), a value Ultralytics refuses, weights that would be
            downloaded, or a data yaml whose images are missing.
    """
    check_keys(overrides)
    try:
        run_dir = check_train_args(cfg, overrides)
    except (TypeError, ValueError, SyntaxError) as e:  # a value of the wrong type or out of range
        raise UsageError(str(e)) from e
    model = model_file(overrides.get("model") or "yolov8n.yaml")
    if model.endswith(".pt"):
        model = str(resolve_weights(model, "model"))  # fail fast instead of Ultralytics' download attempts
    check_supported(model, overrides)
    check_data(overrides.get("data"))
    return run_dir


def check_supported(model: str, overrides: dict[str, Any]) -> None:
    """Refuse, before any run folder, what does not work with distillation yet.

    A student of another task than detection (it would train an epoch as a detector, then fail in validation), and
    Ultralytics' quantization-aware training (``quantize=``, which cannot prepare the wrapped student).
    """
    given = overrides.get("task") not in (None, "detect")
    task = overrides["task"] if given else model_task(model)
    if task not in (None, "detect"):
        what = f"task={task}" if given else f"model={overrides.get('model')} is a {task} model"
        raise UsageError(
            f"{what}: yolo_tsd distils detection students only for now ({task} students are planned). Use a "
            "detection model and teacher, e.g. model=yolov8n.yaml, or train this one without distillation with yolo "
            "train."
        )
    if overrides.get("quantize"):
        raise UsageError(
            f"quantize={overrides['quantize']} (Ultralytics' quantization-aware training) does not work with "
            "distillation yet. Distil without it, then run Ultralytics' own QAT on the distilled best.pt "
            "(yolo train model=.../best.pt data=... quantize=8)."
        )
