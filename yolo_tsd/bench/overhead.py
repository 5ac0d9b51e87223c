"""``python -m yolo_tsd.bench overhead regime=...``: what one training step costs with each method, backward included.

On one real batch of the regime's training data, with the regime's student, teacher and batch size, each method's
step (forward, loss and backward; no optimizer update, the same for all) is timed in interleaved rounds:

- ``plain``: the student with Ultralytics' loss;
- ``builtin``: Ultralytics' ``DistillationModel`` (its teacher, projector and feature loss);
- ``tsd``: this method's module (teacher, significance, the three terms);
- ``teacher_only``: the student with Ultralytics' loss after a teacher forward, so ``tsd - teacher_only`` is the cost of
  this method's own terms, forward and backward.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch


def real_batch(data: str | Path, batch: int, imgsz: int) -> dict:
    """The first ``batch`` training images of a generated dataset and their labels, as a trainer's batch holds them."""
    images = sorted((Path(data).parent / "images" / "train").iterdir())[:batch]
    imgs, idx, cls, boxes = [], [], [], []
    for i, path in enumerate(images):
        imgs.append(cv2.resize(cv2.imread(str(path))[..., ::-1], (imgsz, imgsz)))
        label = path.parent.parent.parent / "labels" / "train" / f"{path.stem}.txt"
        rows = np.loadtxt(label, ndmin=2) if label.is_file() else np.zeros((0, 5))
        idx += [i] * len(rows)
        cls += list(rows[:, 0])
        boxes += list(rows[:, 1:])
    return {
        "img": torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255,
        "batch_idx": torch.tensor(idx, dtype=torch.float32),
        "cls": torch.tensor(cls, dtype=torch.float32).view(-1, 1),
        "bboxes": torch.tensor(np.array(boxes), dtype=torch.float32).view(-1, 4),
    }


def build_student(model: str, nc: int, names: dict, args: dict) -> torch.nn.Module:
    """The regime's student as its trainer would build it (a YAML from scratch, or a checkpoint's weights)."""
    from ultralytics.nn.tasks import DetectionModel

    from ..ultralytics_internals import load_model, with_default_args

    torch.manual_seed(0)
    if model.endswith(".pt"):
        weights = load_model(model)
        student = DetectionModel(weights.yaml, nc=nc, verbose=False)
        student.load(weights, verbose=False)
    else:
        student = DetectionModel(model, nc=nc, verbose=False)
    student.args, student.names = args, names
    return with_default_args(student).train()


def run_overhead(regime: str = "shapes", rounds: int = 15, **overrides: Any) -> dict:
    """Median seconds of one step per method on the regime's data, and the ratios that matter. Printed and returned.

    ``device=0`` runs on the first GPU (CUDA time is synchronised around each step); the default is the CPU.
    """
    from ultralytics.utils import YAML

    from ..config import TSDConfig
    from ..training.model import TSDModel
    from ..training.teacher import Teacher
    from ..training.timing import synced_clock
    from ..ultralytics_internals import builtin_distiller, training_threads
    from .regimes import cache_dir, regime_inputs

    device = torch.device("cuda:0" if str(overrides.get("device", "cpu")) in {"0", "cuda"} else "cpu")
    torch.set_num_threads(training_threads())  # what Ultralytics' trainer uses on a CPU, so the step matches training
    cache = cache_dir()  # a teacher not yet trained is trained once, its run folder kept beside the checkpoint
    data, teacher_path, student_args = regime_inputs(regime, cache, {"device": "cpu", "project": str(cache / "runs")})
    student_args = {**student_args, **{k: v for k, v in overrides.items() if k != "device"}}
    names = YAML.load(data)["names"]
    batch = real_batch(data, int(student_args.get("batch", 16)), int(student_args.get("imgsz", 640)))
    batch = {k: v.to(device) for k, v in batch.items()}
    args = {k: v for k, v in student_args.items() if k != "model"}
    tsd_cfg = TSDConfig.load(None, {k[4:]: v for k, v in overrides.items() if k.startswith("tsd_")})
    teacher = Teacher.load(teacher_path).to(device)

    def make(kind: str):
        student = build_student(student_args["model"], len(names), names, args).to(device)
        if kind == "builtin":
            wrapped = builtin_distiller(teacher_path, student).train()
            return lambda: wrapped.loss(batch)[0].sum().backward()
        tsd = TSDModel(student, teacher, tsd_cfg)
        if kind == "tsd":
            return lambda: tsd.loss(batch)[0].sum().backward()
        if kind == "teacher_only":
            return lambda: (teacher(batch["img"]), tsd.criterion(student(batch["img"]), batch)[0].sum().backward())
        return lambda: tsd.criterion(student(batch["img"]), batch)[0].sum().backward()

    steps = {k: make(k) for k in ("plain", "builtin", "tsd", "teacher_only")}
    seconds: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(rounds + 1):
        order = list(steps)[r % len(steps) :] + list(steps)[: r % len(steps)]  # rotate: no method always goes first
        for k in order:
            t0 = synced_clock(device)
            steps[k]()
            if r:  # round 0 warms up
                seconds[k].append(synced_clock(device) - t0)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    result = {
        "regime": regime,
        "batch": int(student_args.get("batch", 16)),
        "imgsz": int(student_args.get("imgsz", 640)),
        "rounds": rounds,
        "median_s": med,
        "tsd_x_builtin": med["tsd"] / med["builtin"],
        "tsd_x_plain": med["tsd"] / med["plain"],
        "builtin_x_plain": med["builtin"] / med["plain"],
        "own_terms_share_of_tsd_step": (med["tsd"] - med["teacher_only"]) / med["tsd"],
        "teacher_share_of_tsd_step": (med["teacher_only"] - med["plain"]) / med["tsd"],
    }
    print(json.dumps(result, indent=1))
    return result
