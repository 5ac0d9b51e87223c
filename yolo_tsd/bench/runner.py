"""The benchmark runner: every (variant, seed) of a regime trained in its own process, then the summary.

Every (variant, seed) trains in its own subprocess (clean peak memory) and leaves ``runs/<variant>-s<seed>.json``; a
re-run skips what is done, so an interrupted benchmark continues where it stopped. The summary (markdown, CSV, PNG)
compares means over seeds, paired per-seed differences with 95 % intervals and step-time ratios, all measured in the
same benchmark.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .job import JOB_KEYS
from .variants import BUILTIN_DIS, POOL_USE, VARIANTS, parse_variant, resolved_settings

DEFAULTS = {"regime": "shapes", "seeds": "0,1,2", "variants": "plain,builtin,tsd,uniform,teacher_score"}
BENCH_KEYS = ("regime", "seeds", "variants", "project", "teacher", "data", "dis", "unlabeled", "pseudo_conf")


def check_same_job(done: Path, job: dict[str, Any]) -> None:
    """Refuse to mix results: a finished run counts only if it was measured with the same data, teacher and settings."""
    saved = json.loads(done.read_text()).get("job")
    now = json.loads(json.dumps({k: job[k] for k in JOB_KEYS}))  # the same JSON round trip as the saved copy
    if saved and saved.get("settings") and now.get("settings"):  # a setting added since, at its default, is no change
        from ..config import TSDConfig

        defaults = TSDConfig().to_dict()
        added = {k: v for k, v in now["settings"].items() if k not in saved["settings"] and v == defaults.get(k)}
        now["settings"] = {k: v for k, v in now["settings"].items() if k not in added}
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
    from ..checks import check_data, resolve_weights
    from .regimes import REGIMES, cache_dir, regime_inputs

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


def pool_inputs(args: dict[str, Any], uses: set[str], data: str, teacher: str, train: dict[str, Any], out: Path):
    """The unlabeled pool (a regime's, or ``unlabeled=`` with ``data=``) and, for ``pseudo`` variants, its labeled set.

    Returns:
        (tuple[str | None, str | None]): The pool folder and the pseudo-labeled data yaml (None where not needed).
    """
    if not uses:
        return None, None
    from .regimes import cache_dir, regime_pool

    if args.get("data"):
        if not args.get("unlabeled"):
            raise UsageError("the pool variants need unlabeled=path/to/images with data= (a regime brings its own)")
        pool = Path(args["unlabeled"]).resolve()
    else:
        pool = regime_pool(args["regime"], cache_dir())
    if "pseudo" not in uses:
        return str(pool), None
    from .pseudo import PSEUDO_CONF, pseudo_dataset

    device, conf = str(train.get("device", "cpu")), float(args.get("pseudo_conf", PSEUDO_CONF))
    return str(pool), str(pseudo_dataset(data, pool, teacher, out / "pseudo", train.get("imgsz", 640), device, conf))


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
    uses = {POOL_USE[b] for b, _ in specs.values() if b in POOL_USE}
    pool, pseudo = pool_inputs(args, uses, data, teacher, train, out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for seed in seeds:  # seed-major: an interrupted benchmark has complete seeds first
        for v in variants:
            base, own = specs[v]
            done = out / "runs" / f"{v}-s{seed}.json"
            ours = VARIANTS[base] is not None  # plain and built-in never see this method's settings
            use = POOL_USE.get(base)
            job = {
                "regime": label,
                "variant": v,
                "seed": seed,
                "train": {**train, "data": pseudo} if use == "pseudo" else train,
                "teacher": teacher if base != "plain" else None,  # plain runs are not tied to a teacher
                "tsd": {**tsd, **VARIANTS[base], **own, **({"unlabeled": pool} if use == "unlabeled" else {})}
                if ours
                else {},
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
        + (f", unlabeled pool {pool}" if pool else "")
        + (f", pseudo-labeled set {pseudo}" if pseudo else "")
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
