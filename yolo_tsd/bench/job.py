"""One benchmark job: one variant trained with one seed, in its own process, and what it measured.

The runner starts ``python -m yolo_tsd.bench _one JOB``; ``train_one`` trains and times the steps, and ``finish``
writes ``runs/<variant>-s<seed>.json`` atomically, so a half-written result never counts as done.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from pathlib import Path
from typing import Any

from .variants import VARIANTS, parse_variant

# what makes two runs of a (variant, seed) comparable; "settings" is the resolved TSDConfig, so a run measured before a
# change of this method's defaults is not silently mixed with one measured after
JOB_KEYS = ("regime", "train", "teacher", "tsd", "settings", "dis")


def per_step(seconds: list[float], steps: int) -> float:
    """A part's seconds per step: its median where it ran, times the fraction of the timed steps it ran on.

    A resting teacher runs on some steps only; scaled so, its time compares with the median step. 0 if it never ran.
    """
    return statistics.median(seconds) * len(seconds) / steps if seconds else 0.0


def epoch_values(rows: list[dict[str, str]], key: str) -> list[float]:
    """The finite values of a results.csv column (epochs without a probe hold NaN)."""
    values = [float(r.get(key, "nan")) for r in rows]
    return [v for v in values if v == v]


def peak_memory_mb(device: Any) -> float:
    """Peak memory of this process: CUDA's allocator peak on a GPU, the peak resident size on a CPU (POSIX)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one variant with one seed in this process and return its measurements.

    ``job["tsd"]`` holds every setting of this method's variants (the benchmark's ``tsd_*``, the ablation's, the
    variant's own, later ones winning) and is empty for plain and built-in; ``job["dis"]`` is the built-in's weight.
    """
    from ultralytics.models.yolo.detect import DetectionTrainer

    from ..training.timing import synced_clock
    from ..training.trainer import TSDTrainer
    from ..ultralytics_internals import builtin_teacher

    variant, seed, out = job["variant"], job["seed"], Path(job["out"])
    base = parse_variant(variant)[0]
    overrides = {
        **job["train"],
        "seed": seed,
        "deterministic": True,
        "exist_ok": True,
        "plots": False,
        "project": str(out / "train"),
        "name": f"{variant}-s{seed}",
    }
    if VARIANTS[base] is None:
        builtin = {"distill_model": job["teacher"], "dis": job["dis"]} if base == "builtin" else {}
        trainer = DetectionTrainer(overrides={**overrides, **builtin})
    else:
        trainer = TSDTrainer(overrides={**overrides, "teacher": job["teacher"], **job["tsd"]})
    steps: list[float] = []
    parts: dict[str, list[float]] = {"teacher": [], "terms": []}
    clock: dict[str, float] = {}
    extra: dict[str, float] = {}

    def start(t):
        if getattr(t, "tsd_model", None) is not None:  # our method: profile this step's parts
            t.tsd_model.timer.start()
        clock["t0"] = synced_clock(t.device)

    def end(t):
        now = synced_clock(t.device)
        if t.epoch > 0:  # after warm-up: the first epoch pays for allocation, caching and lr warm-up
            steps.append(now - clock["t0"])
            timer = getattr(getattr(t, "tsd_model", None), "timer", None)
            for k, v in {**((timer and timer.seconds) or {}), **extra}.items():
                parts[k].append(v)

    def time_builtin_teacher(t):
        """Ultralytics' built-in distillation runs its teacher inside the student's forward: time it with hooks."""
        teacher_model = builtin_teacher(t.model)
        if teacher_model is None:
            return
        box = {}
        teacher_model.register_forward_pre_hook(lambda *_: box.update(t0=synced_clock(t.device)))
        teacher_model.register_forward_hook(lambda *_: extra.update(teacher=synced_clock(t.device) - box["t0"]))

    trainer.add_callback("on_pretrain_routine_end", time_builtin_teacher)
    trainer.add_callback("on_train_batch_start", start)
    trainer.add_callback("on_train_batch_end", end)
    trainer.train()
    m = trainer.metrics
    rows = list(csv.DictReader((trainer.save_dir / "results.csv").open()))
    shares, cosines, trusts = (epoch_values(rows, f"tsd/{k}") for k in ("grad_share", "grad_cos", "trust"))
    result = {
        "variant": variant,
        "seed": seed,
        "mAP50-95": m["metrics/mAP50-95(B)"],
        "mAP50": m["metrics/mAP50(B)"],
        "step_s": statistics.median(steps) if steps else float("nan"),
        "epoch_s": sum(steps) / max(1, trainer.epochs - 1) if steps else float("nan"),  # one pass over its train split
        "peak_mb": peak_memory_mb(trainer.device),
        "teacher_s": per_step(parts["teacher"], len(steps)),
        "terms_s": per_step(parts["terms"], len(steps)),
        "grad_share": statistics.mean(shares) if shares else float("nan"),
        "grad_share_per_epoch": shares,
        "grad_cos": statistics.mean(cosines) if cosines else float("nan"),
        "trust_per_epoch": trusts,
        "save_dir": str(trainer.save_dir),
    }
    if job.get("e2e"):
        from .one2one import one2one_stats

        result.update(one2one_stats(trainer.best, job["train"]["data"], job["train"].get("imgsz", 640)))
    return result


def finish(job: dict[str, Any]) -> Path:
    """Run ``job`` and write its result, with the job's comparable keys, to ``runs/<variant>-s<seed>.json``."""
    result = train_one(job)
    result["job"] = {k: job[k] for k in JOB_KEYS}
    result["end"] = time.time()
    done = Path(job["out"]) / "runs" / f"{job['variant']}-s{job['seed']}.json"
    done.with_suffix(".tmp").write_text(json.dumps(result, indent=1))
    done.with_suffix(".tmp").rename(done)  # atomic: a half-written result never counts as done
    return done
