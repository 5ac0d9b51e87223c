"""``yolo-tsd demo``: distil on the embedded dataset and compare with the same student trained alone.

Builds the deterministic shapes dataset in the cache folder, trains a small teacher there once (reused afterwards)
unless ``teacher=`` is given, then trains the same student with and without distillation for the same budget and
prints mAP50-95, mAP50 and seconds per epoch for both, the library versions the numbers depend on, and where the
results, the runs and a significance picture are.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import LOGGER, colorstr

from ..checks import check_keys, resolve_weights
from ..cli import parse
from ..config import PREFIX, TSDConfig
from ..errors import UsageError
from ..training.trainer import TSDTrainer
from ..ultralytics_internals import checkpoint_map
from .data import make_dataset
from .regimes import cache_dir, trained_once

VARIANTS = {"plain": "student alone", "tsd": "student + TSD"}  # run name -> table row
STUDENT_WORKER = "_student"  # python -m yolo_tsd.bench.demo _student JOB: one student, trained beside the demo
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


def seconds_per_epoch(save_dir: Path) -> float:
    """Mean wall time of one epoch (training plus validation) from Ultralytics' results.csv."""
    rows = list(csv.DictReader((save_dir / "results.csv").open()))
    return float(rows[-1]["time"]) / len(rows)


def demo_data(args: dict[str, Any]) -> Path:
    """The dataset yaml of a demo: ``data=`` when given, else the embedded data (generated into the cache once)."""
    if args.get("data"):
        return Path(args["data"])
    return make_dataset(cache_dir() / "data", args["n_train"], args["n_val"], args["imgsz"], args["seed"])


def demo_teacher(args: dict[str, Any], common: dict[str, Any], data: Path) -> Path:
    """``teacher=`` when given, else the demo teacher, trained once into the cache (shared with the shapes regime)."""
    if args.get("teacher"):
        return Path(args["teacher"])
    recipe = {**common, "model": args["teacher_model"], "epochs": args["teacher_epochs"], "data": str(data)}
    return trained_once(cache_dir() / "teachers", recipe)


def train_student(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train one demo student (``plain``: Ultralytics' own trainer; ``tsd``: distilled) and return its table row."""
    trainer = (DetectionTrainer if name == "plain" else TSDTrainer)(overrides={**overrides, "name": name})
    trainer.train()
    m = trainer.metrics
    return {
        "variant": VARIANTS[name],
        "mAP50-95": m["metrics/mAP50-95(B)"],
        "mAP50": m["metrics/mAP50(B)"],
        "s/epoch": seconds_per_epoch(trainer.save_dir),
        "save_dir": str(trainer.save_dir),
    }


def start_beside(name: str, overrides: dict[str, Any], log: Path) -> tuple[subprocess.Popen, Path]:
    """Train a demo student in another process (its output in ``log``); returns it and where its row will be.

    Ultralytics trains on a CPU with ``min(8, cores - 1)`` threads: on 2 cores one, so a second training beside it
    uses the other core instead of waiting (and computes the same numbers: the thread count, not the load, sets them).
    """
    row = log.with_suffix(".json")
    row.unlink(missing_ok=True)
    job = json.dumps({"name": name, "overrides": overrides, "row": str(row)})
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "yolo_tsd.bench.demo", STUDENT_WORKER, job], stdout=out, stderr=subprocess.STDOUT
        )
    return process, row


def collect(process: subprocess.Popen, row: Path, log: Path) -> dict[str, Any]:
    """Wait for a student trained beside and read its row."""
    if process.wait() != 0 or not row.is_file():
        raise RuntimeError(f"the student trained beside failed (exit status {process.returncode}); its output: {log}")
    return json.loads(row.read_text())


def run_demo(**overrides: Any) -> list[dict[str, Any]]:
    """Run the demo and return one result row per variant (also printed as a table).

    The student alone trains in a second process while this one trains the teacher (the first time) and the distilled
    student: on 2 cores the demo takes about the teacher's time plus the distilled student's.

    Args:
        **overrides (Any): Demo settings (see ``DEFAULTS``), ``teacher=`` to skip teacher training, ``tsd``/``tsd_*``
            settings, and any ``yolo train`` argument, applied to both students.

    Returns:
        (list[dict]): ``variant``, ``mAP50-95``, ``mAP50``, ``s/epoch`` and ``save_dir`` per run.
    """
    check_keys({k: v for k, v in overrides.items() if not k.startswith(PREFIX)}, extra=tuple(DEFAULTS))
    TSDConfig.load(overrides.get("tsd"), {k[len(PREFIX) :]: v for k, v in overrides.items() if k.startswith(PREFIX)})
    if overrides.get("teacher"):
        resolve_weights(overrides["teacher"], "teacher")  # before anything trains
    args = {**DEFAULTS, **overrides}
    args["project"] = str(Path(args["project"]).resolve())  # relative projects would go under Ultralytics' runs_dir
    demo_keys = ("teacher_model", "teacher_epochs", "n_train", "n_val", "teacher", "tsd")
    train_args = {k: v for k, v in args.items() if k not in demo_keys and not k.startswith("tsd_") and k != "model"}
    common = {"device": "cpu", "exist_ok": True, "plots": False, "deterministic": True, **train_args}
    t0 = time.time()
    data = demo_data(args)
    student = {**common, "data": str(data), "model": args["model"]}
    Path(args["project"]).mkdir(parents=True, exist_ok=True)
    log = Path(args["project"]) / "plain.log"
    beside = start_beside("plain", student, log)
    LOGGER.info(f"{colorstr('demo:')} the student alone trains in a second process (its output: {log})")
    try:
        teacher = demo_teacher(args, common, data)
        ours = {"teacher": str(teacher), **{k: v for k, v in args.items() if k.startswith("tsd")}}
        distilled = train_student("tsd", {**student, **ours})
        rows = [collect(*beside, log), distilled]
    finally:
        if beside[0].poll() is None:  # this process failed first: do not leave the other training running
            beside[0].terminate()
    table = format_table(rows, args, teacher) + "\n\n" + environment()
    folder = Path(rows[-1]["save_dir"]).parent
    results = folder / "demo_results.md"
    results.write_text(table + "\n")
    picture = explain_picture(teacher, Path(rows[0]["save_dir"]) / "weights" / "best.pt", data, args["imgsz"], folder)
    LOGGER.info(
        f"\n{table}\n(the demo took {time.time() - t0:.0f} s)\n"
        f"{colorstr('demo:')} table: {results}\n{colorstr('demo:')} runs: {folder}/plain, {folder}/tsd\n"
        f"{colorstr('demo:')} where the distillation focuses (for the student alone): {picture}\n"
        f"{colorstr('demo:')} teacher: {teacher}; data: {data}"
    )
    return rows


def teacher_map(teacher: str | Path) -> str:
    """The teacher's mAP50-95 on its validation set, as recorded in its checkpoint ('?' if it was not recorded)."""
    value = checkpoint_map(teacher)
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
    from ..visualize import explain

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


def main(argv: list[str]) -> list[dict[str, Any]] | None:
    """``yolo-tsd demo [help | key=value ...]`` (registered as the ``demo`` command of ``yolo-tsd``)."""
    command, overrides = parse(argv)
    if command == "help":
        keys = " ".join(f"{k}={v}" for k, v in DEFAULTS.items())
        print(
            f"Demo: yolo-tsd demo [key=value ...]\n  demo keys and their defaults: {keys}\n"
            "  teacher=PATH skips the demo teacher; any yolo train key and tsd_<setting>= apply to both students"
        )
        return None
    if command != "train":
        raise UsageError(f"demo takes key=value pairs or help, not '{command}'")
    return run_demo(**overrides)


if __name__ == "__main__":
    if sys.argv[1:2] == [STUDENT_WORKER]:
        job = json.loads(sys.argv[2])
        Path(job["row"]).write_text(json.dumps(train_student(job["name"], job["overrides"])))
