"""Benchmark statistics: means over seeds, paired per-seed differences with 95 % confidence intervals, step ratios.

A paired difference compares two variants on the same seeds (same data order, augmentation and initialisation), which
removes most of the seed-to-seed spread; its interval is Student's t over the seeds (``mean ± t(0.975, n-1) · sd/√n``).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]  # t(0.975, df) for df = 1..10
REFERENCES = ("plain", "builtin", "uniform")  # what every variant is compared with, where measured


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (NaN, 0 when there are none / one)."""
    values = [v for v in values if v == v]
    if not values:
        return float("nan"), 0.0
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences and its 95 % confidence interval (low, high); NaN bounds for fewer than 2."""
    m, sd = mean_std(differences)
    n = len([d for d in differences if d == d])
    if n < 2:
        return m, float("nan"), float("nan")
    half = (T975[n - 2] if n - 1 <= len(T975) else 1.96) * sd / math.sqrt(n)
    return m, m - half, m + half


def summarise(results: list[dict[str, Any]], variants: list[str]) -> list[dict[str, Any]]:
    """One row per variant: means, paired differences against ``REFERENCES`` (in points), ratios, diagnostics."""
    by = {v: {r["seed"]: r for r in results if r["variant"] == v} for v in variants}
    rows = []
    for v in variants:
        runs = list(by[v].values())
        if not runs:
            continue
        row = {"variant": v, "seeds": len(runs)}
        means = ("mAP50-95", "mAP50", "step_s", "epoch_s", "peak_mb", "teacher_s", "terms_s", "grad_share", "grad_cos")
        for key in means:
            row[key], row[key + "_std"] = mean_std([r.get(key, float("nan")) for r in runs])
        for key in ("o2o_mAP50-95", "dup_per_object"):
            if any(key in r for r in runs):
                row[key], row[key + "_std"] = mean_std([r.get(key, float("nan")) for r in runs])
        for ref in REFERENCES:
            seeds = [s for s in by[v] if s in by.get(ref, {})]
            diffs = [100 * (by[v][s]["mAP50-95"] - by[ref][s]["mAP50-95"]) for s in seeds]
            row[f"d_{ref}"], row[f"d_{ref}_lo"], row[f"d_{ref}_hi"] = paired_interval(diffs)
            row[f"time_x_{ref}"] = mean_std([by[v][s]["step_s"] / by[ref][s]["step_s"] for s in seeds])[0]
            epochs = [by[v][s].get("epoch_s", math.nan) / by[ref][s].get("epoch_s", math.nan) for s in seeds]
            row[f"epoch_x_{ref}"] = mean_std(epochs)[0]
        rows.append(row)
    return rows


def interval(row: dict[str, Any], ref: str) -> str:
    """``+2.61 [+1.10, +4.12]`` points, or ``-`` when not measured."""
    m, lo, hi = row[f"d_{ref}"], row[f"d_{ref}_lo"], row[f"d_{ref}_hi"]
    if m != m or row["variant"] == ref:
        return "-"
    return f"{m:+.2f}" if lo != lo else f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of ``summarise`` rows (differences in mAP50-95 points with their 95 % intervals)."""
    e2e = any("o2o_mAP50-95" in r for r in rows)
    head = (
        "| variant | seeds | mAP50-95 | mAP50 | Δ vs plain [95 % CI] | Δ vs built-in [95 % CI] "
        "| Δ vs uniform [95 % CI] "
        "| step × built-in | epoch × plain | teacher % step | own terms % step (fwd) | grad share | peak MB |"
        + (" NMS-free mAP50-95 | duplicates/object |" if e2e else "")  # YOLO26: the one-to-one head's own
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [
            r["variant"],
            str(r["seeds"]),
            f"{r['mAP50-95']:.4f} ± {r['mAP50-95_std']:.4f}",
            f"{r['mAP50']:.4f}",
            interval(r, "plain"),
            interval(r, "builtin"),
            interval(r, "uniform"),
            f"{r['time_x_builtin']:.2f}" if r["time_x_builtin"] == r["time_x_builtin"] else "-",
            f"{r['epoch_x_plain']:.2f}" if r["epoch_x_plain"] == r["epoch_x_plain"] else "-",
            f"{100 * r['teacher_s'] / r['step_s']:.1f}",
            f"{100 * r['terms_s'] / r['step_s']:.1f}",
            f"{r['grad_share']:.2f}" if r["grad_share"] == r["grad_share"] else "-",
            f"{r['peak_mb']:.0f}",
        ]
        if e2e:
            cells += [f"{r.get('o2o_mAP50-95', float('nan')):.4f}", f"{r.get('dup_per_object', float('nan')):.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(results: list[dict[str, Any]], variants: list[str]) -> str:
    """Markdown table of every run's mAP50-95, one row per variant, one column per seed."""
    seeds = sorted({r["seed"] for r in results})
    value = {(r["variant"], r["seed"]): r["mAP50-95"] for r in results}
    lines = ["| variant | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for v in variants:
        cells = [f"{value[v, s]:.4f}" if (v, s) in value else "-" for s in seeds]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """mAP50-95 per variant with seed error bars, and step-time ratios against the built-in distillation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    a.bar(names, [r["mAP50-95"] for r in rows], yerr=[r["mAP50-95_std"] for r in rows], capsize=4)
    a.set_ylabel("mAP50-95 (mean ± std over seeds)")
    b.bar(names, [r["time_x_builtin"] for r in rows])
    b.axhline(1.0, color="k", linewidth=0.8)
    b.set_ylabel("step time / built-in")
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
