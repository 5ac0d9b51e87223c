"""``python train.py demo``: distil on the embedded dataset and compare with the same student trained alone.

Builds the deterministic shapes dataset in the cache folder, trains a small teacher there once (reused afterwards)
unless ``teacher=`` is given, then trains the same student with and without distillation for the same budget and
prints mAP50-95, mAP50 and seconds per epoch for both.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import LOGGER, colorstr

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


def demo_teacher(args: dict[str, Any], data: Path, common: dict[str, Any]) -> Path:
    """Train (once) and cache the demo teacher; a later demo with the same settings reuses it."""
    key = f"{Path(args['teacher_model']).stem}-e{args['teacher_epochs']}-{data.parent.name}"
    cached = cache_dir() / "teachers" / f"{key}.pt"
    if cached.is_file():
        LOGGER.info(f"{colorstr('demo:')} reusing teacher {cached} (delete it to train a new one)")
        return cached
    LOGGER.info(
        f"{colorstr('demo:')} training the demo teacher {args['teacher_model']} for {args['teacher_epochs']} epochs"
    )
    trainer = DetectionTrainer(
        overrides={**common, "model": args["teacher_model"], "epochs": args["teacher_epochs"], "name": "teacher"}
    )
    trainer.train()
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trainer.best, cached)
    return cached


def demo_inputs(args: dict[str, Any], common: dict[str, Any]) -> tuple[Path, Path]:
    """Return the dataset yaml and teacher of a demo or benchmark.

    ``data=``/``teacher=`` when given, else the embedded data (generated into the cache) and the demo teacher (trained
    once into the cache with the ``common`` training arguments).
    """
    args = {**DEFAULTS, **args}
    data = args.get("data") or make_dataset(
        cache_dir() / "data", args["n_train"], args["n_val"], args["imgsz"], args["seed"]
    )
    teacher = args.get("teacher") or demo_teacher(args, Path(data), {**common, "data": str(data)})
    return Path(data), Path(teacher)


def run_demo(**overrides: Any) -> list[dict[str, Any]]:
    """Run the demo and return one result row per variant (also printed as a table).

    Args:
        **overrides (Any): Demo settings (see ``DEFAULTS``), ``teacher=`` to skip teacher training, ``tsd``/``tsd_*``
            settings, and any ``yolo train`` argument, applied to both students.

    Returns:
        (list[dict]): ``variant``, ``mAP50-95``, ``mAP50``, ``s/epoch`` and ``save_dir`` per run.
    """
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
    table = format_table(rows, args, teacher)
    LOGGER.info("\n" + table + f"\n(students trained in {time.time() - t0:.0f} s)")
    (Path(rows[-1]["save_dir"]).parent / "demo_results.md").write_text(table + "\n")
    return rows


def format_table(rows: list[dict[str, Any]], args: dict[str, Any], teacher: str | Path) -> str:
    """Markdown table of the demo results."""
    lines = [
        f"Demo: {args['model']} on the embedded shapes data, {args['epochs']} epochs, imgsz={args['imgsz']}, "
        f"seed={args['seed']}; teacher {teacher}",
        "",
        "| variant | mAP50-95 | mAP50 | s/epoch |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['variant']} | {r['mAP50-95']:.4f} | {r['mAP50']:.4f} | {r['s/epoch']:.1f} |" for r in rows]
    return "\n".join(lines)
