"""The benchmark's variants: the same student with no, the built-in, or this method's distillation (and its ablations).

A variant may carry its own settings after colons (``tsd:lambda_feat=0.5``, ``builtin:dis=2``), to tune or compare in
one table.
"""

from __future__ import annotations

from typing import Any

from ..config import PREFIX, TSDConfig
from ..errors import UsageError
from ..ultralytics_internals import cli_scalar

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
    "tsd_pool": {},  # this method with the regime's unlabeled pool mixed into its batches (unlabeled=)
    "pseudo": None,  # plain training on the labeled images plus the pool labeled by the teacher (what users do today)
    "tsd_pseudo": {},  # this method on the same labeled + pseudo-labeled images
}
POOL_USE = {"tsd_pool": "unlabeled", "pseudo": "pseudo", "tsd_pseudo": "pseudo"}  # how a variant uses the pool
BUILTIN_DIS = 3.0  # the built-in's weight when dis= is not given: tuned on shapes_tune (0.5, 1.5, 3, 6, 12)


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``tsd:lambda_feat=0.5:weak_mode=abs`` into the variant ``tsd`` and its own settings.

    This method's variants take ``TSDConfig`` keys (returned with the ``tsd_`` prefix), ``builtin`` takes ``dis``,
    ``plain`` nothing. Values are read as on the command line (``0.5`` a number, ``off`` a word).
    """
    base, *pairs = spec.split(":")
    if base not in VARIANTS:
        raise UsageError(f"unknown variant {base!r} in {spec!r}; choose from {', '.join(VARIANTS)}")
    settings = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not value:
            raise UsageError(f"variant {spec!r}: {pair!r} is not key=value (e.g. builtin:dis=2, tsd:lambda_feat=0.5)")
        settings[key] = cli_scalar(value)
    if base in ("plain", "pseudo") and settings:
        raise UsageError(f"variant {spec!r}: plain training takes no settings")
    if base == "builtin":
        if set(settings) - {"dis"}:
            raise UsageError(f"variant {spec!r}: the built-in distillation takes only dis=")
        return base, settings
    TSDConfig.load(None, {**{k[len(PREFIX) :]: v for k, v in (VARIANTS[base] or {}).items()}, **settings})  # check
    return base, {PREFIX + k: v for k, v in settings.items()}


def resolved_settings(tsd: dict[str, Any]) -> dict[str, Any]:
    """Every TSDConfig value a variant trains with: the defaults, a ``tsd=`` file, then the ``tsd_*`` settings."""
    singles = {k[len(PREFIX) :]: v for k, v in tsd.items() if k.startswith(PREFIX)}
    return TSDConfig.load(tsd.get("tsd"), singles).to_dict()
