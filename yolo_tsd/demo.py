"""``python train.py demo``: distil on the embedded dataset and compare with the same student trained alone.

Builds the deterministic shapes dataset in the cache folder, trains a small teacher there once (reused afterwards)
unless ``teacher=`` is given, then trains the same student with and without distillation for the same budget and
prints mAP50-95, mAP50 and seconds per epoch for both, the library versions the numbers depend on, and where the
results, the runs and a significance picture are.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import LOGGER, colorstr

from .checks import check_keys
from .config import PREFIX, TSDConfig
from .data import make_dataset
from .trainer import TSDTrainer

DEFAULTS = {  # sized for under 10 minutes on a 2-core CPU, teacher training included
    "model": "yolov8n.yaml",
    "teacher_model": "yolov8s.yaml",
    "teacher_epochs": 20,
    "epochs": 15,
    "imgsz": 128,
    "batch": 8,
    "nbs": 8,  # one optimizer step per batch: from-scratch training needs the steps
    "warmup_epochs": 1,
    "n_train": 256,
    "n_val": 64,
    "seed": 0,
    "project": "runs/tsd_demo",
}


def cache_dir() -> Path:
    """Where generated data and the demo teacher live: ``$YOLO_TSD_CACHE`` or ``~/.cache/yolo_tsd``."""
    return Path(os.environ.get("YOLO_TSD_CACHE", Path.home() / ".cache" / "yolo_tsd")).expanduser()


def seconds_per_epoch(save_dir: Path) -> float:
    """Mean wall time of one epoch (training plus validation) from Ultralytics' results.csv."""
    rows = list(csv.DictReader((save_dir / "results.csv").open()))
    return float(rows[-1]["time"]) / len(rows)


def demo_inputs(args: dict[str, Any], common: dict[str, Any]) -> tuple[Path, Path]:
    """Return the dataset yaml and teacher of a demo.

    ``data=``/``teacher=`` when given, else the embedded data (generated into the cache) and the demo teacher (trained
    once into the cache with the ``common`` training arguments; the benchmark's shapes regime shares it).
    """
    from .regimes import trained_once

    args = {**DEFAULTS, **args}
    data = args.get("data") or make_dataset(
        cache_dir() / "data", args["n_train"], args["n_val"], args["imgsz"], args["seed"]
    )
    teacher = args.get("teacher") or trained_once(
        cache_dir() / "teachers",
        {**common, "model": args["teacher_model"], "epochs": args["teacher_epochs"], "data": str(data)},
    )
    return Path(data), Path(teacher)


def run_demo(**overrides: Any) -> list[dict[str, Any]]:
    """Run the demo and return one result row per variant (also printed as a table).

    Args:
        **overrides (Any): Demo settings (see ``DEFAULTS``), ``teacher=`` to skip teacher training, ``tsd``/``tsd_*``
            settings, and any ``yolo train`` argument, applied to both students.

    Returns:
        (list[dict]): ``variant``, ``mAP50-95``, ``mAP50``, ``s/epoch`` and ``save_dir`` per run.
    """
    check_keys({k: v for k, v in overrides.items() if not k.startswith(PREFIX)}, extra=tuple(DEFAULTS))
    TSDConfig.load(overrides.get("tsd"), {k[len(PREFIX) :]: v for k, v in overrides.items() if k.startswith(PREFIX)})
    args = {**DEFAULTS, **overrides}
    args["project"] = str(Path(args["project"]).resolve())  # relative projects would go under Ultralytics' runs_dir
    demo_keys = ("teacher_model", "teacher_epochs", "n_train", "n_val", "teacher", "tsd")
    train_args = {k: v for k, v in args.items() if k not in demo_keys and not k.startswith("tsd_") and k != "model"}
    common = {"device": "cpu", "exist_ok": True, "plots": False, "deterministic": True, **train_args}
    data, teacher = demo_inputs(args, common)
    common["data"] = str(data)

    rows = []
    t0 = time.time()
    for variant, trainer_cls, extra in (
        ("student alone", DetectionTrainer, {}),
        (
            "student + TSD",
            TSDTrainer,
            {"teacher": str(teacher), **{k: v for k, v in args.items() if k.startswith("tsd")}},
        ),
    ):
        name = "plain" if trainer_cls is DetectionTrainer else "tsd"
        trainer = trainer_cls(overrides={**common, "model": args["model"], "name": name, **extra})
        trainer.train()
        m = trainer.metrics
        rows.append(
            {
                "variant": variant,
                "mAP50-95": m["metrics/mAP50-95(B)"],
                "mAP50": m["metrics/mAP50(B)"],
                "s/epoch": seconds_per_epoch(trainer.save_dir),
                "save_dir": str(trainer.save_dir),
            }
        )
    table = format_table(rows, args, teacher) + "\n\n" + environment()
    folder = Path(rows[-1]["save_dir"]).parent
    results = folder / "demo_results.md"
    results.write_text(table + "\n")
    picture = explain_picture(teacher, Path(rows[-2]["save_dir"]) / "weights" / "best.pt", data, args["imgsz"], folder)
    LOGGER.info(
        f"\n{table}\n(students trained in {time.time() - t0:.0f} s)\n"
        f"{colorstr('demo:')} table: {results}\n{colorstr('demo:')} runs: {folder}/plain, {folder}/tsd\n"
        f"{colorstr('demo:')} where the distillation focuses (for the student alone): {picture}\n"
        f"{colorstr('demo:')} teacher: {teacher}; data: {data}"
    )
    return rows


def teacher_map(teacher: str | Path) -> str:
    """The teacher's mAP50-95 on its validation set, as recorded in its checkpoint ('?' if it was not recorded)."""
    import torch

    metrics = torch.load(teacher, map_location="cpu", weights_only=False).get("train_metrics") or {}
    value = metrics.get("metrics/mAP50-95(B)")
    return f"{value:.3f}" if value is not None else "?"


def environment() -> str:
    """The versions and machine facts a demo's numbers depend on (they differ across these; see README)."""
    import platform

    import cv2
    import numpy
    import torch
    import ultralytics

    return (
        f"Environment: Python {platform.python_version()}, torch {torch.__version__}, ultralytics "
        f"{ultralytics.__version__}, numpy {numpy.__version__}, opencv {cv2.__version__}; CPU {platform.machine()} "
        f"with {torch.backends.cpu.get_cpu_capability()} kernels, {torch.get_num_threads()} threads"
    )


def explain_picture(teacher: Path, student: Path, data: Path, imgsz: int, out: Path) -> Path:
    """The significance picture of the first validation image for a trained student, written into ``out``."""
    from .visualize import explain

    images = Path(data).parent / "images" / "val"
    first = sorted(images.iterdir())[0] if images.is_dir() else None
    if first is None:
        return Path("(no validation image found)")
    return explain(teacher=teacher, model=student, source=first, imgsz=imgsz, out=out)[0]


def format_table(rows: list[dict[str, Any]], args: dict[str, Any], teacher: str | Path) -> str:
    """Markdown table of the demo results."""
    lines = [
        f"Demo: {args['model']} on the embedded shapes data, {args['epochs']} epochs, imgsz={args['imgsz']}, "
        f"seed={args['seed']}; teacher {Path(teacher).name} (mAP50-95 {teacher_map(teacher)})",
        "",
        "| variant | mAP50-95 | mAP50 | s/epoch |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['variant']} | {r['mAP50-95']:.4f} | {r['mAP50']:.4f} | {r['s/epoch']:.1f} |" for r in rows]
    return "\n".join(lines)
