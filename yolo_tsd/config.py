"""Distillation settings: one typed dataclass, loaded from ``cfg/tsd.yaml`` and ``tsd_*`` overrides.

Two tiers. The **user settings** come first: what a user tunes (the three term weights, the temperature, the trust
factor, the teacher's precision); README and ``yolo-tsd help`` show them. The **method settings** follow: the paper's
constants and the ablation switches the benchmark measures, documented with the method (``docs/method.md``) and set
the same way, but not for tuning a run. The dataclass is the single source of truth: ``cfg/tsd.yaml``, README's and
``docs/method.md``'s tables are generated from it (``python -m yolo_tsd.config``) and tests keep them identical.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ultralytics.utils import LOGGER, colorstr

from .errors import MissingFileError, UsageError, did_you_mean

PREFIX = "tsd_"  # command-line prefix for single settings, e.g. tsd_lambda_feat=2.0
USER, METHOD = "user", "method"  # the two tiers
# Settings removed in 0.2 (measured without gain: benchmarks/HISTORY.md) and the value whose behaviour was kept. An
# old settings file or the args.yaml of an earlier run may still hold them: they are ignored with a warning.
REMOVED = {
    "feat_norm": "off",
    "region_norm": "off",
    "box_anchors": "all",
    "warmup_epochs": 0.0,
    "final_scale": 1.0,
    "close_mosaic_stop": False,
    "trust_margin": 1.0,
}


def _setting(
    default: Any,
    doc: str,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple = (),
    whole: bool = False,
    tier: str = METHOD,
) -> Any:
    """Declare one setting: its comment, valid range (``lo``/``hi`` inclusive), allowed values, ``whole``, tier."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "choices": choices, "whole": whole, "tier": tier}
    return field(default=default, metadata=meta)


@dataclass
class TSDConfig:
    """Task-significance distillation settings: the user's first, then the method's (``docs/method.md``).

    Examples:
        >>> cfg = TSDConfig.load("cfg/tsd.yaml", {"lambda_feat": 2.0})
        >>> cfg.lambda_feat
        2.0
    """

    # the user's settings
    lambda_feat: float = _setting(1.0, "weight of the neck-feature term (0 disables it)", lo=0, tier=USER)
    lambda_cls: float = _setting(
        0.5, "weight of the class-logit term, binary KL on sigmoid outputs (0 disables it)", lo=0, tier=USER
    )
    lambda_box: float = _setting(
        0.5,
        "weight of the box term: KL over the DFL bins, or decoded distances without them (0 disables it)",
        lo=0,
        tier=USER,
    )
    temperature: float = _setting(2.0, "logit temperature of the class and box terms", lo=0.05, hi=100, tier=USER)
    trust: str = _setting(
        "quality",
        "quality: follow the teacher only as far as it detects the training objects better than the student "
        "(the factor 1 - Q_S / Q_T on every term, in results.csv as tsd/trust); off: always follow it",
        choices=("quality", "off"),
        tier=USER,
    )
    teacher_half: bool = _setting(
        False,
        "CUDA only: the teacher in float16 and channels-last (half its memory); ignored with a warning on CPU",
        tier=USER,
    )
    unlabeled_ratio: float = _setting(
        4.0,
        "with unlabeled=: pool images per labeled image the student trains on; each epoch then makes 1 + this many "
        "times Ultralytics' steps (0: the pool is not used)",
        lo=0,
        hi=16,
        tier=USER,
    )
    # the method's constants and ablation switches (docs/method.md)
    balance: str = _setting(
        "loss",
        "term scale: loss (each term rescaled by a running ratio of the detection loss to its own size, so that "
        "lambda is its size as a fraction of the detection loss) or off (raw terms)",
        choices=("loss", "off"),
    )
    weighting: str = _setting(
        "tsd",
        "anchor weights: tsd (task-significance regions), uniform (every anchor alike) or teacher_score (the "
        "teacher's class confidence, as Ultralytics' built-in and FGD-style methods)",
        choices=("tsd", "uniform", "teacher_score"),
    )
    importance: str = _setting(
        "both", "tasks scored: both (Sr*Sc), cls (Sr=const) or reg (Sc=const)", choices=("both", "cls", "reg")
    )
    single_task_value: float = _setting(
        1.0, "constant used for the switched-off score when importance is cls or reg", lo=0
    )
    reg_score: str = _setting(
        "assigner",
        "regression positives: assigner (TaskAlignedAssigner) or iou (fixed threshold)",
        choices=("assigner", "iou"),
    )
    iou_pos: float = _setting(0.5, "IoU for a positive when reg_score=iou", lo=0, hi=1)
    iou_neg: float = _setting(0.4, "IoU above which a non-positive anchor scores mid instead of low", lo=0, hi=1)
    score_high: float = _setting(2.0, "score of a positive / top-and-right anchor", lo=0)
    score_mid: float = _setting(1.5, "score of a near-positive / top-or-right anchor", lo=0)
    score_low: float = _setting(0.4, "score of every other anchor", lo=0)
    top_frac: float = _setting(0.025, "fraction of an image's anchors that counts as top confidence", lo=1e-6, hi=1)
    key_thresh: float = _setting(3.0, "key area: teacher importance >= this", lo=0)
    weak_thresh: float = _setting(1.0, "weak area: teacher minus student importance >= this", lo=0)
    weak_mode: str = _setting(
        "diff",
        "weak area from I_T - I_S (diff), |I_T - I_S| (abs), or no weak area (off)",
        choices=("diff", "abs", "off"),
    )
    split: str = _setting(
        "three", "three (high/medium/low) or binary (key-or-weak vs rest) regions", choices=("three", "binary")
    )
    w_high: float = _setting(1.0, "weight of the high region (key and weak)", lo=0)
    w_mid: float = _setting(0.5, "weight of the medium region (key xor weak)", lo=0)
    w_low: float = _setting(0.05, "weight of the low region (everything else)", lo=0)
    continuous: bool = _setting(False, "multiply each anchor's weight by the teacher importance")
    box_r1: str = _setting(
        "l1", "box term when a model has no DFL bins: l1 on decoded distances or iou", choices=("l1", "iou")
    )
    one2one_mode: str = _setting(
        "positives",
        "YOLO26 student, teacher without a one-to-one head: distil the student's NMS-free branch on its own "
        "one-to-one positives only (positives), not at all (off), or on every anchor (all)",
        choices=("positives", "off", "all"),
    )
    unlabeled_conf: float = _setting(
        0.25,
        "unlabeled images: the teacher's detections (after NMS) at least this confident are their ground truth",
        lo=0,
        hi=1,
    )
    unlabeled_det: float = _setting(
        1.0,
        "unlabeled images: weight of the student's detection loss against the teacher's detections there (what "
        "pseudo-labeling trains on; 0: the pool teaches through the terms only)",
        lo=0,
        hi=10,
    )
    unlabeled_mix: str = _setting(
        "steps",
        "unlabeled images: in batches of their own between the labeled ones, each an optimizer step (steps), or "
        "appended to every labeled batch (append)",
        choices=("steps", "append"),
    )
    untrusted_every: int = _setting(
        8,
        "trust=quality: after an epoch with the trust factor 0 on every step, the teacher runs on one step in this "
        "many only (at most once an epoch) until those steps find the student behind again (1: every step)",
        lo=1,
        whole=True,
    )

    def __post_init__(self) -> None:
        """Validate types, ranges and choices, naming the offending key."""
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if f.type == "bool":
                if not isinstance(value, bool):
                    raise UsageError(f"TSD setting '{f.name}' must be True or False, got {value!r}")
                continue
            if f.type == "str":
                if value not in meta["choices"]:
                    null = " (YAML reads none/null as empty)" if value is None else ""
                    raise UsageError(
                        f"TSD setting '{f.name}={value}'{null} is not one of {', '.join(meta['choices'])}"
                        f"{did_you_mean(str(value), meta['choices'])}"
                    )
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageError(f"TSD setting '{f.name}' must be a finite number, got {value!r}")
            if meta["whole"] and value != int(value):
                raise UsageError(f"TSD setting '{f.name}' must be a whole number, got {value!r}")
            setattr(self, f.name, int(value) if meta["whole"] else float(value))
            lo, hi = meta["lo"], meta["hi"]
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
                raise UsageError(f"TSD setting '{f.name}={value}' is out of range {rng}")

    @property
    def distils(self) -> bool:
        """Whether any distillation term has a non-zero weight."""
        return any(w > 0 for w in (self.lambda_feat, self.lambda_cls, self.lambda_box))

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a plain dict (YAML- and pickle-safe, used in run args and DDP relaunch)."""
        return dataclasses.asdict(self)

    @classmethod
    def names(cls, tier: str | None = None) -> list[str]:
        """Setting names in declaration order, all or one tier's (``USER`` or ``METHOD``)."""
        return [f.name for f in dataclasses.fields(cls) if tier is None or f.metadata["tier"] == tier]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TSDConfig:
        """Build from a dict: a removed setting is dropped with a warning, an unknown one refused naming valid ones."""
        names = cls.names()
        values = drop_removed(values)
        unknown = sorted(set(values) - set(names))
        if unknown:
            hints = "".join(did_you_mean(k, names) for k in unknown)
            raise UsageError(
                f"Unknown TSD setting(s) {unknown}{hints}. Valid settings: {', '.join(names)} "
                f"(on the command line, prefix them with '{PREFIX}', e.g. {PREFIX}lambda_feat=2.0)."
            )
        return cls(**values)

    @classmethod
    def load(cls, source: str | Path | dict | TSDConfig | None = None, overrides: dict | None = None) -> TSDConfig:
        """Load settings from a YAML path, dict or config, then apply ``overrides``.

        Args:
            source (str | Path | dict | TSDConfig | None): YAML file, mapping or config; None uses the defaults.
            overrides (dict | None): Single settings that replace those of ``source``.

        Returns:
            (TSDConfig): The validated settings.
        """
        if isinstance(source, TSDConfig):
            values = source.to_dict()
        elif isinstance(source, dict):
            values = dict(source)
        elif source is None:
            values = {}
        else:
            path = Path(source)
            if not path.is_file():
                raise MissingFileError(
                    f"TSD settings file '{source}' not found (relative paths start from {Path.cwd()}); pass "
                    "tsd=path/to/tsd.yaml, or write the defaults to edit with 'yolo-tsd copy-cfg'"
                )
            try:
                values = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as e:
                raise UsageError(f"TSD settings file '{source}' is not valid YAML: {e}".replace("\n", " ")) from e
            if not isinstance(values, dict):
                raise UsageError(f"TSD settings file '{source}' must hold a mapping of key: value lines")
        return cls.from_dict({**values, **(overrides or {})})

    @classmethod
    def help_lines(cls, prefix: str = "", tier: str | None = None) -> list[str]:
        """One ``key: default # comment`` line per setting (all or one tier's), as in ``cfg/tsd.yaml``."""
        lines = []
        for f in dataclasses.fields(cls):
            if tier is None or f.metadata["tier"] == tier:
                default = yaml.safe_dump(f.default, default_flow_style=True).strip().removesuffix("...").strip()
                lines.append(f"{prefix}{f.name}: {default} # {f.metadata['doc']}")
        return lines


def drop_removed(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the settings removed in 0.2, warning once and naming each one that was found.

    A removed key that held another value than the behaviour kept is named with what the run now does instead.
    """
    found = {k: values[k] for k in REMOVED if k in values}
    if found:
        changed = [f"{k}={v} (now as {k}={REMOVED[k]})" for k, v in found.items() if v != REMOVED[k]]
        LOGGER.warning(
            f"{colorstr('tsd:')} ignoring settings removed in yolo_tsd 0.2 (measured without gain, "
            f"benchmarks/HISTORY.md): {', '.join(found)}"
            + (f"; these held other values than the kept behaviour: {', '.join(changed)}" if changed else "")
        )
    return {k: v for k, v in values.items() if k not in REMOVED}


METHOD_HEADER = "# The method's constants and ablation switches (docs/method.md): for studying the method, not tuning."


def default_yaml() -> str:
    """Render ``cfg/tsd.yaml`` from the dataclass: the user's settings, then the method's."""
    head = "# Task-significance distillation settings for yolo_tsd (generated from yolo_tsd.config.TSDConfig).\n"
    user, method = TSDConfig.help_lines(tier=USER), TSDConfig.help_lines(tier=METHOD)
    return head + "\n".join(user) + "\n\n" + METHOD_HEADER + "\n" + "\n".join(method) + "\n"


def markdown_table(tier: str = USER) -> str:
    """One tier's settings as a markdown table (README holds the user's, docs/method.md the method's)."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for line in TSDConfig.help_lines(tier=tier):
        key, rest = line.split(": ", 1)
        default, doc = rest.split(" # ", 1)
        rows.append(f"| `{key}` | {default} | {doc.replace('|', '&#124;')} |")
    return "\n".join(rows)


def replace_table(path: Path, table: str) -> None:
    """Replace the settings table of a markdown file (the one that starts with the table's header) with ``table``."""
    text = path.read_text()
    start = text.index("| setting | default | meaning |")
    end = text.index("\n\n", start)
    path.write_text(text[:start] + table + text[end:])


def regenerate(root: Path) -> None:
    """Rewrite ``cfg/tsd.yaml``, README's and docs/method.md's settings tables (after a change to ``TSDConfig``)."""
    (root / "cfg" / "tsd.yaml").write_text(default_yaml())
    replace_table(root / "README.md", markdown_table(USER))
    replace_table(root / "docs" / "method.md", markdown_table(METHOD))


if __name__ == "__main__":
    regenerate(Path(__file__).resolve().parents[1])
