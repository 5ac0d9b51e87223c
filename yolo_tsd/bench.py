"""``python -m yolo_tsd.bench``: the same student under no, built-in and task-significance distillation and ablations.

Every (variant, seed) trains in its own subprocess (clean peak memory) and leaves ``runs/<variant>-s<seed>.json``; a
re-run skips what is done, so an interrupted benchmark continues where it stopped. The summary (markdown, CSV, PNG)
compares means over seeds, paired per-seed differences and step-time ratios, all measured in the same benchmark.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

USAGE = """Benchmark: python -m yolo_tsd.bench [key=value ...]

  data=PATH teacher=PATH   dataset yaml and teacher .pt; data= needs teacher= (default: the embedded demo data
                           and the demo teacher, trained once into the cache like `python train.py demo`)
  model=yolov8n.yaml       the student; every other yolo train key (epochs, imgsz, batch, device, ...) applies to
                           all variants. Defaults on the embedded data, the demo's:
                             {embedded}
                           with data=, Ultralytics' own (imgsz=640, batch=16, epochs=100, first GPU if any)
  seeds=0,1,2              seeds; every variant runs with each (each run is fixed to seed=<seed>,
                           deterministic=True, plots=False, project=<project>/train, name=<variant>-s<seed>)
  variants=a,b,...         subset of: {variants}
  project=runs/tsd_bench   output folder (re-run the same command to resume an interrupted benchmark)
  tsd=PATH tsd_<key>=V     this method's settings for all its variants (an ablation's own setting wins)
"""

# tsd_* settings per variant; None = not our trainer. Single-task ablations keep the thresholds' meaning by setting the
# switched-off score to 2 (the product then spans 0.8-4 like the full importance).
VARIANTS: dict[str, dict[str, Any] | None] = {
    "plain": None,
    "builtin": None,
    "tsd": {},
    "cls_only": {"tsd_importance": "cls", "tsd_single_task_value": 2.0},
    "reg_only": {"tsd_importance": "reg", "tsd_single_task_value": 2.0},
    "no_weak": {"tsd_weak_mode": "off"},
    "binary": {"tsd_split": "binary"},
    "feat_only": {"tsd_lambda_cls": 0.0, "tsd_lambda_box": 0.0},
    "logits_only": {"tsd_lambda_feat": 0.0},
}
DEFAULTS = {
    "model": "yolov8n.yaml",
    "seeds": "0,1,2",
    "variants": ",".join(VARIANTS),
    "project": "runs/tsd_bench",
}
JOB_KEYS = ("train", "teacher", "tsd")  # what makes two runs of a (variant, seed) comparable
EMBEDDED_TRAIN = ("epochs", "imgsz", "batch", "nbs", "warmup_epochs")  # the demo's values, on the embedded data only
BENCH_KEYS = ("seeds", "variants", "project", "teacher", "data", "teacher_model", "teacher_epochs", "n_train", "n_val")


def train_one(
    variant: str, seed: int, train: dict[str, Any], teacher: str, out: Path, tsd: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train one variant with one seed in this process and return its measurements.

    ``tsd`` holds ``tsd_*`` settings given to the benchmark: they apply to every variant of this method (the
    variant's own ablation settings win) and never to plain or built-in.
    """
    import torch
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils.torch_utils import unwrap_model

    from .criterion import synced_clock
    from .trainer import TSDTrainer
    from .ultralytics_internals import builtin_teacher

    overrides = {
        **train,
        "seed": seed,
        "deterministic": True,
        "exist_ok": True,
        "plots": False,
        "project": str(out / "train"),
        "name": f"{variant}-s{seed}",
    }
    if VARIANTS[variant] is None:
        trainer = DetectionTrainer(
            overrides={**overrides, **({"distill_model": teacher} if variant == "builtin" else {})}
        )
    else:
        trainer = TSDTrainer(overrides={**overrides, "teacher": teacher, **(tsd or {}), **VARIANTS[variant]})
    steps: list[float] = []
    parts: dict[str, list[float]] = {"teacher": [], "terms": []}
    clock = {}

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
        teacher_model = builtin_teacher(unwrap_model(t.model))
        if teacher_model is None:
            return
        box = {}
        teacher_model.register_forward_pre_hook(lambda *_: box.update(t0=synced_clock(t.device)))
        teacher_model.register_forward_hook(lambda *_: extra.update(teacher=synced_clock(t.device) - box["t0"]))

    extra: dict[str, float] = {}
    trainer.add_callback("on_pretrain_routine_end", time_builtin_teacher)
    trainer.add_callback("on_train_batch_start", start)
    trainer.add_callback("on_train_batch_end", end)
    trainer.train()
    m = trainer.metrics
    cuda = trainer.device.type == "cuda"
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        import resource  # POSIX only, like the RSS it reads

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "variant": variant,
        "seed": seed,
        "mAP50-95": m["metrics/mAP50-95(B)"],
        "mAP50": m["metrics/mAP50(B)"],
        "step_s": statistics.median(steps) if steps else float("nan"),
        "peak_mb": peak,
        "teacher_s": statistics.median(parts["teacher"]) if parts["teacher"] else 0.0,
        "terms_s": statistics.median(parts["terms"]) if parts["terms"] else 0.0,
        "save_dir": str(trainer.save_dir),
    }


def summarise(results: list[dict[str, Any]], variants: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """Mean ± std per variant, paired differences and step-time ratios against plain and built-in."""

    def ms(values):
        values = [v for v in values if v == v]
        return (
            (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
            if values
            else (float("nan"), 0.0)
        )

    by = {v: {r["seed"]: r for r in results if r["variant"] == v} for v in variants}
    rows = []
    for v in variants:
        rs = list(by[v].values())
        if not rs:
            continue
        row = {"variant": v, "seeds": len(rs)}
        for key in ("mAP50-95", "mAP50", "step_s", "peak_mb", "teacher_s", "terms_s"):
            row[key], row[key + "_std"] = ms([r[key] for r in rs])
        row["terms_share"] = ms([r["terms_s"] / r["step_s"] for r in rs])[0]
        row["teacher_share"] = ms([r["teacher_s"] / r["step_s"] for r in rs])[0]
        for ref in ("plain", "builtin"):
            common = [s for s in by[v] if s in by.get(ref, {})]
            d = [by[v][s]["mAP50-95"] - by[ref][s]["mAP50-95"] for s in common]
            row[f"d_{ref}"], row[f"d_{ref}_std"] = ms(d)
            row[f"time_x_{ref}"] = ms([by[v][s]["step_s"] / by[ref][s]["step_s"] for s in common])[0]
        rows.append(row)
    head = (
        "| variant | seeds | mAP50-95 | mAP50 | Δ vs plain | Δ vs built-in | step s | × plain | × built-in "
        "| teacher % step | own terms % step | student fwd/bwd/opt % step | peak MB |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['variant']} | {r['seeds']} | {r['mAP50-95']:.4f} ± {r['mAP50-95_std']:.4f} | "
        f"{r['mAP50']:.4f} ± {r['mAP50_std']:.4f} | {r['d_plain']:+.4f} ± {r['d_plain_std']:.4f} | "
        f"{r['d_builtin']:+.4f} ± {r['d_builtin_std']:.4f} | {r['step_s']:.3f} | {r['time_x_plain']:.2f} | "
        f"{r['time_x_builtin']:.2f} | {100 * r['teacher_share']:.1f} | {100 * r['terms_share']:.1f} | "
        f"{100 * (1 - r['teacher_share'] - r['terms_share']):.1f} | {r['peak_mb']:.0f} |\n"
        for r in rows
    )
    return head + body, rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """mAP50-95 per variant with seed error bars, and step-time ratios against plain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    a.bar(names, [r["mAP50-95"] for r in rows], yerr=[r["mAP50-95_std"] for r in rows], capsize=4)
    a.set_ylabel("mAP50-95 (mean ± std over seeds)")
    b.bar(names, [r["time_x_plain"] for r in rows])
    b.axhline(1.0, color="k", linewidth=0.8)
    b.set_ylabel("step time / plain")
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def check_same_job(done: Path, job: dict[str, Any]) -> None:
    """Refuse to mix results: a finished run counts only if it was measured with the same data, teacher and settings."""
    saved = json.loads(done.read_text()).get("job")
    now = json.loads(json.dumps({k: job[k] for k in JOB_KEYS}))  # the same JSON round trip as the saved copy
    if saved != now:
        diff = {k: (saved.get(k) if saved else None, now[k]) for k in JOB_KEYS if not saved or saved.get(k) != now[k]}
        raise ValueError(
            f"{done} was measured with other arguments ({diff}, saved vs now). Re-running the same command resumes a "
            "benchmark; for new arguments pass a new project= (or delete that folder)."
        )


def as_list(value: Any) -> list[str]:
    """A list of strings from ``0,1,2`` (a tuple after Ultralytics' value parsing), ``0`` (an int) or a string."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def run(**overrides: Any) -> str:
    """Run (or continue) the benchmark and write ``summary.md``, ``summary.csv`` and ``summary.png``."""
    from .checks import check_data, resolve_weights
    from .demo import DEFAULTS as DEMO
    from .demo import demo_inputs

    if overrides.get("data"):  # a real dataset: Ultralytics' training defaults, and a teacher made for it
        if not overrides.get("teacher"):
            raise ValueError(
                f"data={overrides['data']} needs teacher=path/to/teacher.pt (trained on the same classes); the demo "
                "teacher is trained only for the embedded data."
            )
        check_data(overrides["data"])
        args = {**DEFAULTS, **overrides}
    else:
        args = {**DEFAULTS, **{k: DEMO[k] for k in EMBEDDED_TRAIN}, "device": "cpu", **overrides}
    if args.get("teacher"):  # checked now, not after the first variant trained; absolute, as the results record it
        args["teacher"] = str(resolve_weights(args["teacher"], "teacher").resolve())
    if len(as_list(args.get("device") or "")) > 1:
        raise ValueError(
            f"device={args['device']}: the benchmark times single-device steps; Ultralytics' multi-GPU relaunch would "
            "bypass its timers. Pass one device, e.g. device=0."
        )
    seeds = [int(s) for s in as_list(args["seeds"])]
    variants = as_list(args["variants"])
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    out = Path(args["project"]).resolve()
    tsd = {k: v for k, v in args.items() if k.startswith("tsd")}  # this method's settings, for its variants only
    train = {k: v for k, v in args.items() if k not in BENCH_KEYS and k not in tsd}
    common = {**{k: v for k, v in train.items() if k != "model"}, "exist_ok": True, "plots": False}
    data, teacher = demo_inputs(
        {k: v for k, v in args.items() if k not in ("seeds", "variants", "project") and k not in tsd},
        {**common, "project": str(out / "train")},
    )
    args["data"] = train["data"] = str(data)
    args["teacher"] = str(teacher)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for seed in seeds:  # seed-major: an interrupted benchmark has complete seeds first
        for v in variants:
            done = out / "runs" / f"{v}-s{seed}.json"
            own = tsd if VARIANTS[v] is not None else {}  # plain and built-in never see this method's settings
            teacher = args["teacher"] if v != "plain" else None
            job = {"variant": v, "seed": seed, "train": train, "teacher": teacher, "out": str(out), "tsd": own}
            if done.is_file():
                check_same_job(done, job)
                print(f"bench: {done.name} done, skipping")
                continue
            subprocess.run(
                [sys.executable, "-m", "yolo_tsd.bench", "_one", json.dumps(job)], check=True, env=os.environ
            )
    results = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    results = [r for r in results if r["variant"] in variants and r["seed"] in seeds]
    table, rows = summarise(results, variants)
    header = (
        f"Benchmark: {train['model']} on {train['data']}, teacher {args['teacher']}, seeds={seeds}, training: "
        f"{' '.join(f'{k}={v}' for k, v in train.items() if k not in ('model', 'data')) or 'defaults'}, "
        f"settings: {tsd or 'defaults'}\n\n"
    )
    (out / "summary.md").write_text(header + table)
    keys = list(rows[0]) if rows else []
    (out / "summary.csv").write_text(
        ",".join(keys) + "\n" + "".join(",".join(str(r[k]) for k in keys) + "\n" for r in rows)
    )
    if rows:
        plot(rows, out / "summary.png")
    print(header + table)
    return header + table


def main(argv: list[str]) -> None:
    """CLI entry: ``help``, the hidden per-run ``_one`` worker, or key=value benchmark arguments."""
    if argv[:1] == ["_one"]:
        job = json.loads(argv[1])
        result = train_one(job["variant"], job["seed"], job["train"], job["teacher"], Path(job["out"]), job.get("tsd"))
        result["job"] = {k: job[k] for k in JOB_KEYS}
        done = Path(job["out"]) / "runs" / f"{job['variant']}-s{job['seed']}.json"
        done.with_suffix(".tmp").write_text(json.dumps(result, indent=1))
        done.with_suffix(".tmp").rename(done)  # atomic: a half-written result never counts as done
        return
    from .cli import parse
    from .demo import DEFAULTS as DEMO

    command, overrides = parse(argv)
    if command == "help":
        embedded = " ".join(f"{k}={DEMO[k]}" for k in EMBEDDED_TRAIN) + " device=cpu"
        print(USAGE.format(variants=", ".join(VARIANTS), embedded=embedded))
        return
    run(**overrides)


if __name__ == "__main__":
    main(sys.argv[1:])
