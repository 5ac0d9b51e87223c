"""Named benchmark regimes: data, teacher and student recipes that differ in nature, each generated offline.

A regime fixes everything but the variant and the seed: the dataset (generated), the teacher (trained once on it and
cached), the student's training recipe, and for ``finetune`` a student pretrained on another dataset. Settings are
tuned on the ``TUNING`` regimes and validated on every other regime; no setting is chosen on a report regime. Every
regime has an unlabeled pool of its kind, four times its labeled set, for the variants that use one (``regime_pool``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .data import make_dataset, make_pool

TUNING = ("shapes_tune", "scenes_tune", "finetune_pt_tune")  # settings are chosen on these only


def cache_dir() -> Path:
    """Where generated data, teachers and pretrained students live: ``$YOLO_TSD_CACHE`` or ``~/.cache/yolo_tsd``."""
    return Path(os.environ.get("YOLO_TSD_CACHE", Path.home() / ".cache" / "yolo_tsd")).expanduser()


@dataclass(frozen=True)
class Regime:
    """One benchmark setting.

    Attributes:
        about (str): What it stands for, for ``help``.
        data (dict): ``make_dataset`` arguments (kind, n_train, n_val, imgsz, seed).
        teacher (dict): Ultralytics training arguments of the teacher (trained once, cached).
        student (dict): Ultralytics training arguments of every student of the regime (model, epochs, ...).
        pretrain (dict | None): For fine-tuning: the dataset (``data``) and training arguments of the student's
            pretraining (``train``) and, when the teacher is fine-tuned too, of the teacher's (``teacher``; its
            ``teacher`` arguments then fine-tune that checkpoint).
        teacher_from (str | None): Use another regime's teacher (same classes) instead of training one.
        e2e (bool): The student has an NMS-free one-to-one head (its own metrics are measured too).
        pool_factor (int): Unlabeled images of the data's kind and seed per labeled training image (generated only
            when a variant uses them).
    """

    about: str
    data: dict[str, Any]
    teacher: dict[str, Any]
    student: dict[str, Any]
    pretrain: dict[str, Any] | None = None
    teacher_from: str | None = None
    e2e: bool = field(default=False)
    pool_factor: int = 4


SHAPES_DATA = {"kind": "shapes", "n_train": 256, "n_val": 64, "imgsz": 128}
SMALL = {"imgsz": 128, "batch": 8, "nbs": 8, "warmup_epochs": 1}  # from scratch on 256 images: one step per batch
PRETRAIN = {  # the fine-tuning regimes' pretraining: other classes' data, as COCO is for yolov8n.pt
    "data": {"kind": "scenes", "n_train": 600, "n_val": 100, "imgsz": 128, "seed": 5},
    "train": {"model": "yolov8n.yaml", "epochs": 30, **SMALL},
}
PRETRAIN_BOTH = {**PRETRAIN, "teacher": {"model": "yolov8s.yaml", "epochs": 30, **SMALL}}  # ... and of the teacher


def tuning_split(report: Regime, about: str, **changes: Any) -> Regime:
    """The report regime's recipe on other images (dataset seed 1), so a tuning split cannot drift from what it tunes.

    Args:
        report (Regime): The report regime whose recipe the split copies.
        about (str): The split's own description, for ``help``.
        **changes (Any): Other fields that differ (e.g. where the teacher comes from).
    """
    return replace(report, about=about, data={**report.data, "seed": 1}, **changes)


SHAPES = Regime(
    "the demo: 5 flat shape classes, 128 px, a yolov8s teacher trained 20 epochs, yolov8n from scratch 15 epochs, "
    "an optimizer step per batch of 8",
    {**SHAPES_DATA, "seed": 0},
    {"model": "yolov8s.yaml", "epochs": 20, **SMALL},
    {"model": "yolov8n.yaml", "epochs": 15, **SMALL},
)
SCENES = Regime(
    "photograph-like: 11 textured classes in cluttered, unevenly lit scenes, 256 px, a strong yolov8s teacher "
    "(40 epochs, an optimizer step per batch), yolov8n from scratch 20 epochs at batch 16 with Ultralytics' "
    "nbs=64 (190 optimizer steps)",
    {"kind": "scenes", "n_train": 600, "n_val": 150, "imgsz": 256, "seed": 0},
    {"model": "yolov8s.yaml", "epochs": 40, "imgsz": 256, "batch": 16, "nbs": 16},
    {"model": "yolov8n.yaml", "epochs": 20, "imgsz": 256, "batch": 16, "close_mosaic": 5},
)
FINETUNE_PT = Regime(
    "fine-tuning as users do it, from yolov8n.pt with a yolov8s.pt teacher: both pretrained on scenes, the "
    "teacher fine-tuned 20 epochs on the shapes data, the student distilled on it for 10 epochs",
    {**SHAPES_DATA, "seed": 0},
    {"epochs": 20, **SMALL},
    {"epochs": 10, **SMALL},
    pretrain=PRETRAIN_BOTH,
)
REGIMES: dict[str, Regime] = {
    "shapes": SHAPES,
    "shapes_tune": tuning_split(
        SHAPES, "the tuning split: the shapes regime on other images (dataset seed 1), its own teacher"
    ),
    "scenes": SCENES,
    "scenes_tune": tuning_split(
        SCENES,
        "the second tuning split, for the few-step, strong-teacher setting the shapes splits lack: the scenes regime's "
        "recipe on other images (dataset seed 1), taught by the scenes teacher (trained on other images of the kind)",
        teacher={},
        teacher_from="scenes",
    ),
    "finetune": Regime(
        "fine-tuning: a yolov8n pretrained on scenes (other classes' data, as yolov8n.pt is on COCO), distilled on "
        "the shapes data for 10 epochs with the shapes teacher, trained from scratch and weaker than the student",
        {**SHAPES_DATA, "seed": 0},
        {},
        {"epochs": 10, **SMALL},
        pretrain=PRETRAIN,
        teacher_from="shapes",
    ),
    "finetune_pt": FINETUNE_PT,
    "finetune_pt_tune": tuning_split(
        FINETUNE_PT,
        "the third tuning split, for fine-tuning: the finetune_pt recipe on the shapes_tune images, its own teacher "
        "fine-tuned on them from the same pretrained yolov8s",
    ),
    "yolo26": Regime(
        "a YOLO26 student (NMS-free one-to-one head, no DFL) with the shapes regime's YOLOv8 teacher",
        {**SHAPES_DATA, "seed": 0},
        {},
        {"model": "yolo26n.yaml", "epochs": 15, **SMALL},
        teacher_from="shapes",
        e2e=True,
    ),
}


def regime_inputs(
    name: str, cache: Path, train_common: dict[str, Any], teacher: Path | None = None
) -> tuple[Path, Path, dict[str, Any]]:
    """The data yaml and teacher of a regime (generated and trained once into ``cache``) and its student arguments.

    Args:
        name (str): A key of ``REGIMES``.
        cache (Path): Folder for generated data, teachers and pretrained students.
        train_common (dict): Ultralytics arguments for every training done here (device, project, ...).
        teacher (Path | None): Another teacher for the regime's data and student (checked against the data's classes
            before any training); the regime's own is then neither trained nor looked up.

    Returns:
        (tuple): Data yaml, teacher checkpoint, and the student's training arguments (``model`` included).
    """
    regime = REGIMES[name]
    data = make_dataset(cache / "data", **regime.data)
    if teacher is not None:
        from ultralytics.utils import YAML

        from ..training.teacher import Teacher

        Teacher.load(teacher).check_names(YAML.load(data)["names"])
    pre = regime.pretrain or {}
    pre_data = str(make_dataset(cache / "data", **pre["data"])) if pre else ""

    def pretrained(train: dict[str, Any]) -> str:
        return str(trained_once(cache / "pretrained", {**train_common, **train, "data": pre_data}))

    if teacher is None and regime.teacher_from:
        _, teacher, _ = regime_inputs(regime.teacher_from, cache, train_common)
    elif teacher is None:
        fine_tuned = {"model": pretrained(pre["teacher"])} if "teacher" in pre else {}
        teacher = trained_once(cache / "teachers", {**train_common, **regime.teacher, **fine_tuned, "data": str(data)})
    student = dict(regime.student)
    if pre:
        student["model"] = pretrained(pre["train"])
    return data, teacher, student


def regime_pool(name: str, cache: Path) -> Path:
    """The folder of a regime's unlabeled images (generated once into ``cache``): its data's kind, seed and size."""
    regime = REGIMES[name]
    d = {"seed": 0, **regime.data}
    return make_pool(cache / "data", regime.pool_factor * d["n_train"], d["imgsz"], d["seed"], d.get("kind", "shapes"))


def trained_once(folder: Path, overrides: dict[str, Any]) -> Path:
    """A plain Ultralytics model trained with ``overrides``: from ``folder`` if there, else trained now and kept there.

    The file is named after what determines it (model, epochs, batch, nbs, image size, data), so the demo and the
    benchmark share a teacher trained the same way, and a changed recipe never picks up a stale one.
    """
    o = {"batch": 16, "nbs": 64, "imgsz": 640, **overrides}
    name = (
        f"{Path(o['model']).stem}-e{o['epochs']}-b{o['batch']}-n{o['nbs']}-i{o['imgsz']}-{Path(o['data']).parent.name}"
    )
    target = folder / f"{name}.pt"
    if target.is_file():
        return target
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils import LOGGER, colorstr

    LOGGER.info(f"{colorstr('regime:')} training {overrides['model']} once for {target} ({overrides['epochs']} epochs)")
    trainer = DetectionTrainer(overrides={"exist_ok": True, "plots": False, **overrides, "name": name})
    trainer.train()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trainer.best, target)
    return target


def describe() -> str:
    """One line per regime, for ``help``."""
    width = max(map(len, REGIMES))
    return "\n".join(f"  {k:{width}s} {r.about}{' (tuning)' if k in TUNING else ''}" for k, r in REGIMES.items())
