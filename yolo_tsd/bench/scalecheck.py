"""``python -m yolo_tsd.bench scalecheck``: what a COCO-scale step costs, measured on the CPU with synthetic batches.

``memory``: peak extra memory of the loss part of a step (forward and backward) for Ultralytics' plain loss and for the
distillation loss, on a COCO-shaped batch (640 px, 80 classes, a chosen number of boxes per image) with a teacher and a
student built from their YAMLs, and the teacher's forward on its own. Each measurement runs in a fresh process (Linux:
the peak resident size is reset through ``/proc/self/clear_refs``, and ``MALLOC_MMAP_THRESHOLD_`` makes freed tensors
go back to the system, so the resident size follows the live tensors).

``flops``: FLOP counts of the teacher's forward, the student's forward and backward and the distillation terms at one
batch, from PyTorch's FLOP counter (convolutions and matrix products), and the bytes every other op writes (its
memory traffic): the basis of the estimated GPU step split in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_PAIRS = "yolov8x.yaml:yolov8n.yaml,yolo11x.yaml:yolo11n.yaml,yolo26x.yaml:yolo26n.yaml"
USAGE = f"""Scale check: python -m yolo_tsd.bench scalecheck (memory | flops) [key=value ...]

  memory  batches=16,64 boxes=50,300 teacher=yolov8x.yaml student=yolov8n.yaml imgsz=640 out=runs/scalecheck
          [step_batches=16: also whole training steps (student forward and backward included) at these batches]
  flops   pairs={DEFAULT_PAIRS} imgsz=640 batch=16 boxes=50
"""
NC = 80
STEP_MODES = ("plain_step", "tsd_step")


def coco_batch(bs: int, boxes: int, imgsz: int = 640, seed: int = 0) -> dict:
    """A preprocessed batch shaped like COCO: ``boxes`` boxes per image, log-uniform sizes, 80 classes."""
    g = torch.Generator().manual_seed(seed)
    n = bs * boxes
    wh = torch.empty(n, 2).uniform_(math.log(0.02), math.log(0.5), generator=g).exp()
    xy = torch.rand(n, 2, generator=g) * (1 - wh) + wh / 2
    return {
        "img": torch.rand(bs, 3, imgsz, imgsz, generator=g),
        "batch_idx": torch.arange(bs).repeat_interleave(boxes).float(),
        "cls": torch.randint(0, NC, (n, 1), generator=g).float(),
        "bboxes": torch.cat([xy, wh], 1),
    }


def build(cfg: str, seed: int) -> torch.nn.Module:
    """A random-weight detection model with Ultralytics' default hyperparameters, as a trainer builds it."""
    from ultralytics.nn.tasks import DetectionModel

    from ..ultralytics_internals import with_default_args

    torch.manual_seed(seed)
    model = DetectionModel(cfg, nc=NC, verbose=False)
    model.names = {i: str(i) for i in range(NC)}
    return with_default_args(model)


def status_bytes(key: str) -> int:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in bytes."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+) kB", text).group(1)) * 1024


def peak_extra(fn) -> tuple[float, float, Any]:
    """Peak resident memory above the start while ``fn`` runs (MiB), its seconds, and its result."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current resident size
    base, t0 = status_bytes("VmRSS"), time.perf_counter()
    out = fn()
    return (status_bytes("VmHWM") - base) / 2**20, time.perf_counter() - t0, out


def leaf_outputs(outputs: Any) -> Any:
    """Head outputs as fresh leaves that require grad (the student's forward is outside the measurement)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.detach().clone().requires_grad_()
    if isinstance(outputs, dict):
        return {k: leaf_outputs(v) for k, v in outputs.items()}
    return [leaf_outputs(v) for v in outputs]


def measure(mode: str, bs: int, boxes: int, teacher_cfg: str, student_cfg: str, imgsz: int) -> dict:
    """One memory measurement in this process.

    ``plain``/``tsd``: the loss part of a step (forward and backward from the student's head outputs); ``teacher``:
    the teacher's forward; ``plain_step``/``tsd_step``: a whole training step (student forward, teacher, loss,
    backward), where the order of teacher and student forward shows.
    """
    from ..config import TSDConfig
    from ..training.model import TSDModel
    from ..training.teacher import Teacher

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    batch = coco_batch(bs, boxes, imgsz)
    teacher = Teacher(build(teacher_cfg, 1))
    result = {"mode": mode, "batch": bs, "boxes": boxes, "teacher": teacher_cfg, "student": student_cfg}
    if mode == "teacher":
        teacher(batch["img"][:1])  # warm-up: one image, so first-call set-up is not counted
        mb, seconds, out = peak_extra(lambda: teacher(batch["img"]))
        kept = sum(t.numel() * t.element_size() for t in _tensors(out)) / 2**20
        return {**result, "peak_mb": mb, "seconds": seconds, "outputs_mb": kept}
    student = build(student_cfg, 0).train()
    tsd = TSDModel(student, teacher, TSDConfig())
    if mode.endswith("_step"):
        tsd.teacher_due = mode == "tsd_step"  # False: Ultralytics' own loss, the teacher does not run

        def whole_step():
            loss, _ = tsd(batch)
            loss.sum().backward()

        tsd(batch)  # warm-up without backward: lazy initialisation
        student.zero_grad(set_to_none=True)
        mb, seconds, _ = peak_extra(whole_step)
        return {**result, "peak_mb": mb, "seconds": seconds}
    with torch.no_grad():
        preds = leaf_outputs(student(batch["img"]))
    t_preds = teacher(batch["img"]) if mode == "tsd" else None

    def step():
        if mode == "plain":
            loss, _ = tsd.criterion(preds, batch)
        else:
            loss = tsd.terms.compute(tsd.criterion, preds, batch, t_preds, tsd.stats).loss
        loss.sum().backward()

    step()  # warm-up: lazy initialisation, allocator
    for t in _tensors(preds):
        t.grad = None
    mb, seconds, _ = peak_extra(step)
    return {**result, "peak_mb": mb, "seconds": seconds}


def _tensors(nest: Any) -> list[torch.Tensor]:
    """Every tensor in a nest of dicts, lists and tuples."""
    if isinstance(nest, torch.Tensor):
        return [nest]
    if isinstance(nest, (dict, list, tuple)):
        return [t for v in (nest.values() if isinstance(nest, dict) else nest) for t in _tensors(v)]
    return []


def run_memory(args: dict) -> list[dict]:
    """Every (batch, boxes) x (plain, tsd) measurement and the teacher's forward per batch, each in a fresh process."""
    out = Path(args.get("out", "runs/scalecheck"))
    out.mkdir(parents=True, exist_ok=True)
    batches = [int(b) for b in str(args.get("batches", "16,64")).strip("()").split(",")]
    box_counts = [int(b) for b in str(args.get("boxes", "50,300")).strip("()").split(",")]
    common = [args.get("teacher", "yolov8x.yaml"), args.get("student", "yolov8n.yaml"), str(args.get("imgsz", 640))]
    jobs = [(m, b, n) for b in batches for n in box_counts for m in ("plain", "tsd")]
    jobs += [("teacher", b, box_counts[0]) for b in batches]
    jobs += [(m, b, box_counts[0]) for b in str(args.get("step_batches", "")).split(",") if b for m in STEP_MODES]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    rows = []
    for mode, bs, boxes in jobs:
        cmd = [sys.executable, "-m", "yolo_tsd.bench.scalecheck", "_one", mode, str(bs), str(boxes), *common]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
        rows.append(json.loads(line))
        print(line, flush=True)
    (out / "memory.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(memory_table(rows))
    return rows


def memory_table(rows: list[dict]) -> str:
    """Markdown: plain and distillation loss peaks and their difference, per (batch, boxes)."""
    by = {(r["mode"], r["batch"], r["boxes"]): r for r in rows}
    lines = [
        "| batch | boxes/image | plain loss peak MiB | distillation loss peak MiB | extra MiB "
        "| teacher forward peak MiB |",
        "|---|---|---|---|---|---|",
    ]
    for (mode, bs, boxes), r in by.items():
        if mode != "plain" or ("tsd", bs, boxes) not in by:
            continue
        t = by[("tsd", bs, boxes)]
        teacher = next((x for (m, b, _), x in by.items() if m == "teacher" and b == bs), None)
        tf = f"{teacher['peak_mb']:.0f} (outputs kept: {teacher['outputs_mb']:.0f})" if teacher else "-"
        lines.append(
            f"| {bs} | {boxes} | {r['peak_mb']:.0f} | {t['peak_mb']:.0f} | {t['peak_mb'] - r['peak_mb']:.0f} | {tf} |"
        )
    steps = [(bs, boxes) for (mode, bs, boxes) in by if mode == "plain_step" and ("tsd_step", bs, boxes) in by]
    if steps:
        lines += ["", "| batch | boxes/image | plain step peak MiB | distillation step peak MiB | extra MiB |"]
        lines.append("|---|---|---|---|---|")
        for bs, boxes in steps:
            p, t = by[("plain_step", bs, boxes)]["peak_mb"], by[("tsd_step", bs, boxes)]["peak_mb"]
            lines.append(f"| {bs} | {boxes} | {p:.0f} | {t:.0f} | {t - p:.0f} |")
    return "\n".join(lines)


def count_flops(fn) -> tuple[float, float]:
    """(FLOPs of convolutions and matrix products from PyTorch's counter, bytes written by every other op) of ``fn``.

    The second figure counts the output bytes of every op that is not a convolution, a matrix product or a view
    (views move no data): the memory traffic of the elementwise work, which a GPU pays in bandwidth, not FLOPs.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class Written(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            view = any(r.alias_info is not None for r in func._schema.returns)
            if not view and "conv" not in func.__name__ and "mm" not in func.__name__:
                self.total += sum(t.numel() * t.element_size() for t in _tensors(out))
            return out

    counter, written = FlopCounterMode(display=False), Written()
    with counter, written:
        fn()
    return float(counter.get_total_flops()), float(written.total)


def pair_flops(teacher_cfg: str, student_cfg: str, batch: dict) -> dict:
    """FLOPs (GFLOP) of the teacher's forward, the student's training step and the distillation terms on ``batch``."""
    from ..config import TSDConfig
    from ..training.model import TSDModel
    from ..training.teacher import Teacher

    teacher, student = Teacher(build(teacher_cfg, 1)), build(student_cfg, 0).train()
    tsd = TSDModel(student, teacher, TSDConfig())
    t_model, t_other = count_flops(lambda: teacher(batch["img"]))

    def student_step():
        loss, _ = tsd.criterion(student(batch["img"]), batch)
        loss.sum().backward()

    s_model, s_other = count_flops(student_step)
    with torch.no_grad():
        preds = leaf_outputs(student(batch["img"]))
    t_preds = teacher(batch["img"])

    def terms_step():
        tsd.terms.compute(tsd.criterion, preds, batch, t_preds, tsd.stats).loss[3:].sum().backward()

    terms_model, terms_other = count_flops(terms_step)
    return {
        "teacher": teacher_cfg,
        "student": student_cfg,
        "batch": batch["img"].shape[0],
        "teacher_gflop": t_model / 1e9,
        "teacher_other_gb": t_other / 1e9,
        "student_step_gflop": s_model / 1e9,
        "student_other_gb": s_other / 1e9,
        "terms_gflop": terms_model / 1e9,
        "terms_other_gb": terms_other / 1e9,
    }


def run_flops(args: dict) -> list[dict]:
    """FLOPs per part of a distillation step for each teacher:student pair, at one batch."""
    pairs = [p.split(":") for p in str(args.get("pairs", DEFAULT_PAIRS)).split(",")]
    batch = coco_batch(int(args.get("batch", 16)), int(args.get("boxes", 50)), int(args.get("imgsz", 640)))
    rows = []
    for teacher_cfg, student_cfg in pairs:
        rows.append(pair_flops(teacher_cfg, student_cfg, batch))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def parse_args(argv: list[str]) -> dict:
    """``key=value`` pairs to a dict of strings."""
    return dict(a.split("=", 1) for a in argv if "=" in a)


def main(argv: list[str]) -> None:
    """CLI entry: ``memory``, ``flops``, or the hidden per-measurement ``_one`` worker."""
    if argv[:1] == ["_one"]:
        mode, bs, boxes, teacher, student, imgsz = argv[1:7]
        print(json.dumps(measure(mode, int(bs), int(boxes), teacher, student, int(imgsz))))
    elif argv[:1] == ["memory"]:
        run_memory(parse_args(argv[1:]))
    elif argv[:1] == ["flops"]:
        run_flops(parse_args(argv[1:]))
    else:
        print(USAGE)


if __name__ == "__main__":
    main(sys.argv[1:])
