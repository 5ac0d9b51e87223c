"""``python -m yolo_tsd.bench``: the same student with no, built-in and task-significance distillation, per regime.

Every (variant, seed) trains in its own subprocess (clean peak memory) and leaves ``runs/<variant>-s<seed>.json``; a
re-run skips what is done, so an interrupted benchmark continues where it stopped. The summary (markdown, CSV, PNG)
compares means over seeds, paired per-seed differences with 95 % intervals and step-time ratios, all measured in the
same benchmark. ``overhead`` times one step of each method on a regime's data (``overhead.py``).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .errors import UsageError

USAGE = """Benchmark: python -m yolo_tsd.bench [report|ranking|overhead] [key=value ...]   (also: yolo-tsd bench ...)

  regime=shapes            one of the built-in regimes (data generated offline, teacher trained once into the cache):
{regimes}
  data=PATH teacher=PATH   your own dataset yaml and teacher instead of a regime (Ultralytics' training defaults)
  regime=R teacher=PATH    the regime's data and student recipe with another teacher (same classes), e.g. another
                           split's, or one trained longer; the regime's own teacher is then not trained
  seeds=0,1,2              seeds; every variant runs with each (seed=<seed>, deterministic=True, plots=False)
  variants=a,b,...         subset of: {variants}
                           a variant may carry its own settings after colons, to tune or compare in one table:
                           builtin:dis=2 (the built-in's weight), tsd:lambda_feat=0.5:region_norm=size (this method's)
  project=PATH             output folder (default runs/tsd_bench/<regime>; re-run the same command to resume)
  tsd=PATH tsd_<key>=V     this method's settings for all its variants (an ablation's own setting wins)
  dis=X                    Ultralytics' built-in distillation weight for the builtin variant (default {dis}: tuned on
                           the tuning regime like this method's weights; Ultralytics' own default is 6.0)
  any yolo train key       applies to every variant (e.g. epochs=2 for a quick check)
  report project=PATH      summarise the finished runs of a benchmark folder (all, or variants=/seeds=) without training
  ranking project=PATH     AP at IoU 0.5 / 0.75 / 0.9 and how well each run's scores rank its own boxes (score-IoU
                           rank correlation), from every finished run's best.pt (yolo_tsd/ranking.py; device=0 on a GPU)
  overhead                 time one training step of plain, built-in and tsd (forward and backward) on the regime's
                           data instead of training: python -m yolo_tsd.bench overhead regime=scenes
"""

# tsd_* settings per variant; None = not our trainer. Single-task ablations keep the thresholds' meaning by setting the
# switched-off score to 2 (the product then spans 0.8-4 like the full importance).
VARIANTS: dict[str, dict[str, Any] | None] = {
    "plain": None,
    "builtin": None,
    "tsd": {},
    "uniform": {"tsd_weighting": "uniform"},
    "teacher_score": {"tsd_weighting": "teacher_score"},
    "fixed_iou": {"tsd_reg_score": "iou"},
    "cls_only": {"tsd_importance": "cls", "tsd_single_task_value": 2.0},
    "reg_only": {"tsd_importance": "reg", "tsd_single_task_value": 2.0},
    "no_weak": {"tsd_weak_mode": "off"},
    "binary": {"tsd_split": "binary"},
    "feat_only": {"tsd_lambda_cls": 0.0, "tsd_lambda_box": 0.0},
    "logits_only": {"tsd_lambda_feat": 0.0},
    "o2o_off": {"tsd_one2one_mode": "off"},  # YOLO26 students: the one-to-one branch not distilled at all
    "o2o_all": {"tsd_one2one_mode": "all"},  # ... or on every anchor (what one2one_mode=positives prevents)
}
BUILTIN_DIS = 3.0  # the built-in's weight when dis= is not given: tuned on shapes_tune (0.5, 1.5, 3, 6, 12)
DEFAULTS = {"regime": "shapes", "seeds": "0,1,2", "variants": "plain,builtin,tsd,uniform,teacher_score"}
# what makes two runs of a (variant, seed) comparable; "settings" is the resolved TSDConfig, so a run measured before a
# change of this method's defaults is not silently mixed with one measured after
JOB_KEYS = ("regime", "train", "teacher", "tsd", "settings", "dis")
BENCH_KEYS = ("regime", "seeds", "variants", "project", "teacher", "data", "dis")


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``tsd:lambda_feat=0.5:region_norm=size`` into the variant ``tsd`` and its own settings.

    This method's variants take ``TSDConfig`` keys (returned with the ``tsd_`` prefix), ``builtin`` takes ``dis``,
    ``plain`` nothing. Values are read as on the command line (``0.5`` a number, ``off`` a word).
    """
    from ultralytics.cfg import smart_value

    from .config import PREFIX, TSDConfig

    base, *pairs = spec.split(":")
    if base not in VARIANTS:
        raise UsageError(f"unknown variant {base!r} in {spec!r}; choose from {', '.join(VARIANTS)}")
    settings = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not value:
            raise UsageError(f"variant {spec!r}: {pair!r} is not key=value (e.g. builtin:dis=2, tsd:lambda_feat=0.5)")
        settings[key] = smart_value(value)
    if base == "plain" and settings:
        raise UsageError(f"variant {spec!r}: plain training takes no settings")
    if base == "builtin":
        if set(settings) - {"dis"}:
            raise UsageError(f"variant {spec!r}: the built-in distillation takes only dis=")
        return base, settings
    TSDConfig.load(None, {**{k[len(PREFIX) :]: v for k, v in (VARIANTS[base] or {}).items()}, **settings})  # check
    return base, {PREFIX + k: v for k, v in settings.items()}


def train_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one variant with one seed in this process and return its measurements.

    ``job["tsd"]`` holds every setting of this method's variants (the benchmark's ``tsd_*``, the ablation's, the
    variant's own, later ones winning) and is empty for plain and built-in; ``job["dis"]`` is the built-in's weight.
    """
    import torch
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils.torch_utils import unwrap_model

    from .timing import synced_clock
    from .trainer import TSDTrainer
    from .ultralytics_internals import builtin_teacher

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
        teacher_model = builtin_teacher(unwrap_model(t.model))
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
    if trainer.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        import resource  # POSIX only, like the RSS it reads

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = list(csv.DictReader((trainer.save_dir / "results.csv").open()))
    shares, cosines, trusts = (epoch_values(rows, f"tsd/{k}") for k in ("grad_share", "grad_cos", "trust"))
    result = {
        "variant": variant,
        "seed": seed,
        "mAP50-95": m["metrics/mAP50-95(B)"],
        "mAP50": m["metrics/mAP50(B)"],
        "step_s": statistics.median(steps) if steps else float("nan"),
        "peak_mb": peak,
        "teacher_s": per_step(parts["teacher"], len(steps)),
        "terms_s": per_step(parts["terms"], len(steps)),
        "grad_share": statistics.mean(shares) if shares else float("nan"),
        "grad_share_per_epoch": shares,
        "grad_cos": statistics.mean(cosines) if cosines else float("nan"),
        "trust_per_epoch": trusts,
        "save_dir": str(trainer.save_dir),
    }
    if job.get("e2e"):
        from .e2e import one2one_stats

        result.update(one2one_stats(trainer.best, job["train"]["data"], job["train"].get("imgsz", 640)))
    return result


def per_step(seconds: list[float], steps: int) -> float:
    """A part's seconds per step: its median where it ran, times the fraction of the timed steps it ran on.

    A resting teacher runs on some steps only; scaled so, its time compares with the median step. 0 if it never ran.
    """
    return statistics.median(seconds) * len(seconds) / steps if seconds else 0.0


def epoch_values(rows: list[dict[str, str]], key: str) -> list[float]:
    """The finite values of a results.csv column (epochs without a probe hold NaN)."""
    values = [float(r.get(key, "nan")) for r in rows]
    return [v for v in values if v == v]


def resolved_settings(tsd: dict[str, Any]) -> dict[str, Any]:
    """Every TSDConfig value a variant trains with: the defaults, a ``tsd=`` file, then the ``tsd_*`` settings."""
    from .config import PREFIX, TSDConfig

    singles = {k[len(PREFIX) :]: v for k, v in tsd.items() if k.startswith(PREFIX)}
    return TSDConfig.load(tsd.get("tsd"), singles).to_dict()


def check_same_job(done: Path, job: dict[str, Any]) -> None:
    """Refuse to mix results: a finished run counts only if it was measured with the same data, teacher and settings."""
    saved = json.loads(done.read_text()).get("job")
    now = json.loads(json.dumps({k: job[k] for k in JOB_KEYS}))  # the same JSON round trip as the saved copy
    if saved != now:
        diff = {k: (saved.get(k) if saved else None, now[k]) for k in JOB_KEYS if not saved or saved.get(k) != now[k]}
        raise UsageError(
            f"{done} was measured with other arguments ({diff}, saved vs now). Re-running the same command resumes a "
            "benchmark; for new arguments pass a new project= (or delete that folder)."
        )


def as_list(value: Any) -> list[str]:
    """A list of strings from ``0,1,2`` (a tuple after Ultralytics' value parsing), ``0`` (an int) or a string."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def as_seeds(value: Any) -> list[int]:
    """Seeds from ``0,1,2`` or ``0`` (see ``as_list``)."""
    return [int(s) for s in as_list(value)]


def inputs(args: dict[str, Any], train_user: dict[str, Any], out: Path) -> tuple[str, str, dict[str, Any], bool]:
    """Data yaml, teacher and student training arguments: a regime's, or the user's ``data=`` and ``teacher=``."""
    from .checks import check_data, resolve_weights
    from .demo import cache_dir
    from .regimes import REGIMES, regime_inputs

    if args.get("data"):  # a real dataset: Ultralytics' training defaults, and a teacher made for it
        if not args.get("teacher"):
            raise UsageError(
                f"data={args['data']} needs teacher=path/to/teacher.pt (trained on the same classes); a regime's "
                "teacher is trained only for its own data."
            )
        check_data(args["data"])
        teacher = str(resolve_weights(args["teacher"], "teacher").resolve())
        return str(args["data"]), teacher, {"model": "yolov8n.yaml", **train_user}, False
    if args["regime"] not in REGIMES:
        raise UsageError(f"unknown regime={args['regime']}; choose from {', '.join(REGIMES)}")
    train_user = {"device": "cpu", **train_user}  # the regimes are sized for a CPU
    common = {k: v for k, v in train_user.items() if k in ("device", "workers")}
    own = resolve_weights(args["teacher"], "teacher").resolve() if args.get("teacher") else None  # another teacher
    data, teacher, student = regime_inputs(args["regime"], cache_dir(), {**common, "project": str(out / "train")}, own)
    return str(data), str(teacher), {**student, **train_user}, REGIMES[args["regime"]].e2e


def run(**overrides: Any) -> str:
    """Run (or continue) the benchmark and write ``summary.md``, ``summary.csv`` and ``summary.png``."""
    args = {**DEFAULTS, **overrides}
    if len(as_list(args.get("device") or "")) > 1:
        raise UsageError(
            f"device={args['device']}: the benchmark times single-device steps; Ultralytics' multi-GPU relaunch would "
            "bypass its timers. Pass one device, e.g. device=0."
        )
    seeds, variants = as_seeds(args["seeds"]), as_list(args["variants"])
    specs = {v: parse_variant(v) for v in variants}  # refuses an unknown variant or setting before any training
    label = "custom" if args.get("data") else args["regime"]
    out = Path(args.get("project") or f"runs/tsd_bench/{label}").resolve()
    tsd = {k: v for k, v in args.items() if k.startswith("tsd")}  # this method's settings, for its variants only
    train_user = {k: v for k, v in args.items() if k not in BENCH_KEYS and k not in tsd}
    data, teacher, train, e2e = inputs(args, train_user, out)
    train = {**train, "data": data}
    dis = float(args.get("dis", BUILTIN_DIS))
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for seed in seeds:  # seed-major: an interrupted benchmark has complete seeds first
        for v in variants:
            base, own = specs[v]
            done = out / "runs" / f"{v}-s{seed}.json"
            ours = VARIANTS[base] is not None  # plain and built-in never see this method's settings
            job = {
                "regime": label,
                "variant": v,
                "seed": seed,
                "train": train,
                "teacher": teacher if base != "plain" else None,  # plain runs are not tied to a teacher
                "tsd": {**tsd, **VARIANTS[base], **own} if ours else {},
                "settings": resolved_settings({**tsd, **VARIANTS[base], **own}) if ours else None,
                "dis": float(own.get("dis", dis)) if base == "builtin" else None,
                "out": str(out),
                "e2e": e2e,
            }
            if done.is_file():
                check_same_job(done, job)
                print(f"bench: {done.name} done, skipping")
                continue
            subprocess.run(
                [sys.executable, "-m", "yolo_tsd.bench", "_one", json.dumps(job)], check=True, env=os.environ
            )
    header = (
        f"Benchmark {label}: {train['model']} on {data}, teacher {teacher}, seeds={seeds}, training: "
        f"{' '.join(f'{k}={v}' for k, v in train.items() if k not in ('model', 'data')) or 'defaults'}, "
        f"settings: {tsd or 'defaults'}, built-in dis={dis}"
    )
    return write_summary(out, header, variants, seeds)


def write_summary(out: Path, header: str, variants: list[str] | None = None, seeds: list[int] | None = None) -> str:
    """Summarise the finished runs in ``out/runs`` (all of them, or these variants and seeds) as md, csv and png."""
    from .summary import per_seed_table, plot, summarise, table

    results = [{"end": p.stat().st_mtime, **json.loads(p.read_text())} for p in sorted((out / "runs").glob("*.json"))]
    if variants is None:  # every variant found, in the order the benchmark ran them
        variants = list(dict.fromkeys(r["variant"] for r in sorted(results, key=lambda r: (r["seed"], r["end"]))))
    results = [r for r in results if r["variant"] in variants and (seeds is None or r["seed"] in seeds)]
    rows = summarise(results, variants)
    text = f"{header}\n\n{table(rows)}\n\nmAP50-95 per seed:\n\n{per_seed_table(results, variants)}\n"
    (out / "summary.md").write_text(text)
    keys = list(rows[0]) if rows else []
    (out / "summary.csv").write_text(
        ",".join(keys) + "\n" + "".join(",".join(str(r[k]) for k in keys) + "\n" for r in rows)
    )
    if rows:
        plot(rows, out / "summary.png")
    print(text)
    return text


def write_ranking(out: Path, device: str = "cpu") -> str:
    """AP at IoU 0.5 / 0.75 / 0.9 and the score-IoU rank correlation of every finished run (``ranking.py``).

    Each run's ``best.pt`` is validated again on its own data (a few seconds per run); the table, means over seeds per
    variant, goes to ``ranking.md`` in the benchmark folder.
    """
    from .ranking import score_ranking

    keys = ("AP50", "AP75", "AP90", "score_iou_rank", "matched_per_object")
    per_variant: dict[str, list[dict[str, float]]] = {}
    for path in sorted((out / "runs").glob("*.json")):
        result = json.loads(path.read_text())
        weights = Path(result["save_dir"]) / "weights" / "best.pt"
        if not weights.is_file():
            raise UsageError(f"{path.name}: its weights {weights} are gone; ranking validates each run's best.pt")
        train = result["job"]["train"]
        stats = score_ranking(weights, train["data"], train.get("imgsz", 640), device)
        per_variant.setdefault(result["variant"], []).append({"seed": result["seed"], **stats})
    lines = ["| variant | seeds | " + " | ".join(keys) + " | score_iou_rank per seed |", "|---" * (len(keys) + 3) + "|"]
    for variant, rows in per_variant.items():
        rows.sort(key=lambda r: r["seed"])
        means = " | ".join(f"{statistics.mean(r[k] for r in rows):.4f}" for k in keys)
        seeds = " / ".join(f"{r['score_iou_rank']:.3f}" for r in rows)
        lines.append(f"| {variant} | {len(rows)} | {means} | {seeds} |")
    text = f"Score ranking of {out.name} (python -m yolo_tsd.bench ranking project={out})\n\n" + "\n".join(lines) + "\n"
    (out / "ranking.md").write_text(text)
    print(text)
    return text


def main(argv: list[str]) -> None:
    """CLI entry: ``help``, ``report``, ``ranking``, ``overhead``, the hidden ``_one`` worker, or key=value args."""
    if argv[:1] == ["_one"]:
        job = json.loads(argv[1])
        result = train_one(job)
        result["job"] = {k: job[k] for k in JOB_KEYS}
        result["end"] = time.time()
        done = Path(job["out"]) / "runs" / f"{job['variant']}-s{job['seed']}.json"
        done.with_suffix(".tmp").write_text(json.dumps(result, indent=1))
        done.with_suffix(".tmp").rename(done)  # atomic: a half-written result never counts as done
        return
    from .cli import parse
    from .regimes import describe

    if argv[:1] in (["report"], ["ranking"]):  # both read the finished runs of a benchmark folder
        args = parse(argv[1:])[1]
        if not args.get("project") or not (Path(args["project"]) / "runs").is_dir():
            raise UsageError(f"{argv[0]} needs project=PATH, the folder of a benchmark (it holds runs/)")
        out = Path(args["project"]).resolve()
        if argv[0] == "ranking":
            write_ranking(out, str(args.get("device", "cpu")))
            return
        variants = as_list(args["variants"]) if args.get("variants") else None
        seeds = as_seeds(args["seeds"]) if args.get("seeds") is not None else None
        write_summary(out, f"Benchmark {out.name} (report of the finished runs)", variants, seeds)
        return
    if argv[:1] == ["overhead"]:
        from .overhead import run_overhead

        run_overhead(**parse(argv[1:])[1])
        return
    command, overrides = parse(argv)
    if command == "help":
        print(USAGE.format(variants=", ".join(VARIANTS), regimes=describe(), dis=BUILTIN_DIS))
        return
    run(**overrides)


if __name__ == "__main__":
    main(sys.argv[1:])
