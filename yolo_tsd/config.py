"""Distillation settings: one typed dataclass, loaded from ``cfg/tsd.yaml`` and ``tsd_*`` overrides.

The dataclass is the single source of truth: ``cfg/tsd.yaml`` is generated from it (``default_yaml()``)
and a test keeps the two identical, so every key in the file carries the comment printed by ``train.py help``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import MissingFileError, UsageError, did_you_mean

PREFIX = "tsd_"  # command-line prefix for single settings, e.g. tsd_lambda_feat=2.0


def _setting(
    default: Any, doc: str, lo: float | None = None, hi: float | None = None, choices: tuple = (), whole: bool = False
) -> Any:
    """Declare one setting: its comment, valid range (``lo``/``hi`` inclusive), allowed values, or ``whole`` numbers."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "choices": choices, "whole": whole}
    return field(default=default, metadata=meta)


@dataclass
class TSDConfig:
    """Task-significance distillation settings (see ``docs`` in README and the method specification).

    Examples:
        >>> cfg = TSDConfig.load("cfg/tsd.yaml", {"lambda_feat": 2.0})
        >>> cfg.lambda_feat
        2.0
    """

    # loss weights
    lambda_feat: float = _setting(1.0, "weight of the neck-feature term (0 disables it)", lo=0)
    lambda_cls: float = _setting(0.5, "weight of the class-logit term, binary KL on sigmoid outputs", lo=0)
    lambda_box: float = _setting(0.5, "weight of the box-distribution term (DFL-bin KL, or decoded distances)", lo=0)
    balance: str = _setting(
        "loss",
        "term scale: loss (each term rescaled by a running ratio of the detection loss to its own size, so that "
        "lambda is its size as a fraction of the detection loss, whatever the data, model or classes) or off (raw)",
        choices=("loss", "off"),
    )
    trust: str = _setting(
        "quality",
        "follow the teacher only as far as it is better: quality (every term times clamp((Q_T - Q_S) / (trust_margin "
        "* Q_T), 0, 1), Q the running mean over ground-truth objects of each model's best class-and-box alignment on "
        "the training batches, so a teacher no better than the student is not followed) or off",
        choices=("quality", "off"),
    )
    trust_margin: float = _setting(
        1.0,
        "trust=quality: full trust while the student's quality is at least this fraction of the teacher's below it "
        "(1: the factor is 1 - Q_S / Q_T)",
        lo=1e-3,
        hi=1,
    )
    feat_norm: str = _setting(
        "off",
        "neck features compared after standardising each channel over the batch (channel, as PKD: independent of "
        "the teacher's feature scale) or as they are (off)",
        choices=("channel", "off"),
    )
    weighting: str = _setting(
        "tsd",
        "anchor weights: tsd (task-significance regions), uniform (every anchor alike) or teacher_score (the "
        "teacher's class confidence, as Ultralytics' built-in and FGD-style methods)",
        choices=("tsd", "uniform", "teacher_score"),
    )
    temperature: float = _setting(2.0, "logit temperature tau for the class and DFL-bin terms", lo=0.05, hi=100)
    box_anchors: str = _setting(
        "all",
        "where the box term acts: objects (anchors the teacher's or the student's label assigner makes positive, the "
        "only places a box is learned; the significance weights still apply) or all (every anchor, weighted)",
        choices=("objects", "all"),
    )
    box_r1: str = _setting(
        "l1", "box term when a model has no DFL bins: l1 on decoded distances or iou", choices=("l1", "iou")
    )
    one2one_mode: str = _setting(
        "positives",
        "YOLO26 student, teacher without a one-to-one head: distil the student's NMS-free branch on its own "
        "one-to-one positives only (positives), not at all (off), or on every anchor (all)",
        choices=("positives", "off", "all"),
    )
    # dual-task importance
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
    # learning condition and selective decoupling
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
    region_norm: str = _setting(
        "off",
        "size (each region's weight divided by its anchor count per image and level, so a region's total is its "
        "weight) or off (the weight is per anchor, so the many low-weight background anchors still count together)",
        choices=("size", "off"),
    )
    continuous: bool = _setting(False, "multiply each anchor's weight by the teacher importance")
    # schedule
    warmup_epochs: float = _setting(
        0.0,
        "ramp the distillation terms linearly from 0 over this many epochs (Ultralytics' own warmup_epochs ramps the "
        "learning rate)",
        lo=0,
    )
    final_scale: float = _setting(
        1.0,
        "decay the distillation terms linearly over the run toward this fraction of their start, as Ultralytics' lrf "
        "does the learning rate, so the student ends nearer its labels alone (1: constant)",
        lo=0,
        hi=1,
    )
    close_mosaic_stop: bool = _setting(False, "stop distilling in Ultralytics' final close_mosaic epochs")
    # cost
    teacher_half: bool = _setting(
        False,
        "CUDA only: teacher weights in float16 and channels-last (they never train): half the teacher's memory, no "
        "per-step weight casts under AMP; ignored with a warning on CPU",
    )
    untrusted_every: int = _setting(
        8,
        "trust=quality: after an epoch in which the trust factor was 0 on every step (the student already detects as "
        "well as the teacher), run the teacher on one step in this many only (at most once an epoch); those steps keep "
        "measuring both models' quality and distil whenever the factor is above 0, and then the teacher is back on "
        "every step from the next epoch (1: the teacher runs every step)",
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
    def from_dict(cls, values: dict[str, Any]) -> TSDConfig:
        """Build from a dict, raising on unknown keys with the list of valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]
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
    def help_lines(cls, prefix: str = "") -> list[str]:
        """Return one ``key: default  # comment`` line per setting, as in ``cfg/tsd.yaml`` (keys with ``prefix``)."""
        lines = []
        for f in dataclasses.fields(cls):
            default = yaml.safe_dump(f.default, default_flow_style=True).strip().removesuffix("...").strip()
            lines.append(f"{prefix}{f.name}: {default} # {f.metadata['doc']}")
        return lines


def default_yaml() -> str:
    """Render ``cfg/tsd.yaml`` from the dataclass defaults and comments."""
    head = "# Task-significance distillation settings for yolo_tsd (generated from yolo_tsd.config.TSDConfig).\n"
    return head + "\n".join(TSDConfig.help_lines()) + "\n"


def markdown_table() -> str:
    """The settings as README's markdown table (a test keeps README's copy identical)."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for line in TSDConfig.help_lines():
        key, rest = line.split(": ", 1)
        default, doc = rest.split(" # ", 1)
        rows.append(f"| `{key}` | {default} | {doc.replace('|', '&#124;')} |")
    return "\n".join(rows)


def regenerate(root: Path) -> None:
    """Rewrite ``cfg/tsd.yaml`` and README's settings table from the dataclass (after a change to ``TSDConfig``)."""
    (root / "cfg" / "tsd.yaml").write_text(default_yaml())
    readme = root / "README.md"
    text = readme.read_text()
    start = text.index("| setting | default | meaning |")
    end = text.index("\n\n", start)
    readme.write_text(text[:start] + markdown_table() + text[end:])


if __name__ == "__main__":
    regenerate(Path(__file__).resolve().parents[1])
