"""Every dependency of yolo_tsd on Ultralytics' private or undocumented behaviour, in one place.

The rest of the package talks to Ultralytics through its public API (``DetectionTrainer``'s public methods, callbacks,
``load_checkpoint``, the loss and assigner objects) and through the named helpers below. When Ultralytics changes one
of these, this is the file to update, and ``check_version`` is what tells a user their version is outside the range
the project was tested with.

What is private here, and why we need it:

- ``v8DetectionLoss.get_assigned_targets_and_loss`` returns a positional tuple; ``assign`` gives it names and also
  captures the padded ground truth that the loss's ``preprocess`` built, so nothing pads it a second time.
- ``E2ELoss`` keeps its branches as ``one2many``/``one2one`` and their weights as ``o2m``/``o2o``: ``branches``.
- A Detect head returns raw training outputs when its own ``training`` flag is set: ``raw_outputs`` flips it on an
  eval-mode model so that BatchNorm statistics stay frozen.
- ``BaseModel.fuse`` calls ``Detect.fuse``, which drops the one-to-many branch of end-to-end heads:
  ``fuse_keep_branches`` shadows it for one call.
- ``unwrap_model`` sees through any module with a ``module`` attribute (meant for DDP and DataParallel): the
  distillation module uses that, so Ultralytics' EMA, NaN recovery, class weights and criterion updates reach the
  student (``STUDENT_ATTR``).
- ``BaseTrainer._handle_nan_recovery`` is the only hook into the NaN recovery: ``NanRecoveryHook``.
- The layout of the optimizer state in a checkpoint (``param_groups`` tagged ``param_group``): ``merge_param_groups``
  upgrades the state of runs written by yolo_tsd 0.1 (adapters in two extra groups).
- Ultralytics' built-in distillation keeps its teacher in ``DistillationModel.teacher_model``: ``builtin_teacher``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import ultralytics
from ultralytics.nn.modules.head import Detect
from ultralytics.utils import LOGGER

TESTED_FROM, TESTED_BELOW = "8.4.190", "8.5"  # the range in pyproject.toml: [from, below)
ALLOW_ENV = "YOLO_TSD_ALLOW_ULTRALYTICS"  # set to 1 to run (with a warning) on an untested Ultralytics version
STUDENT_ATTR = "module"  # the attribute name Ultralytics' unwrap_model() follows


def version_tuple(version: str) -> tuple[int, ...]:
    """``'8.4.190'`` -> ``(8, 4, 190)``; non-numeric suffixes (``'8.4.190.dev0'``, ``'rc1'``) are ignored."""
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
        if digits.group() != piece:  # '0rc1': the number ends the release part
            break
    return tuple(parts)


def check_version(version: str | None = None) -> None:
    """Refuse an Ultralytics version outside the tested range, unless ``YOLO_TSD_ALLOW_ULTRALYTICS=1`` is set.

    Args:
        version (str, optional): The version to check; the installed one by default.

    Raises:
        RuntimeError: Outside ``[TESTED_FROM, TESTED_BELOW)`` without the override, naming both fixes.
    """
    version = version or ultralytics.__version__
    if version_tuple(TESTED_FROM) <= version_tuple(version) < version_tuple(TESTED_BELOW):
        return
    message = (
        f"ultralytics {version} is outside the range yolo_tsd is tested with (>={TESTED_FROM},<{TESTED_BELOW}); "
        "it relies on Ultralytics internals that change between releases (see yolo_tsd/ultralytics_internals.py)."
    )
    if os.environ.get(ALLOW_ENV) == "1":
        LOGGER.warning(f"{message} Continuing because {ALLOW_ENV}=1.")
        return
    raise RuntimeError(
        f"{message} Install a tested version: pip install 'ultralytics>={TESTED_FROM},<{TESTED_BELOW}', "
        f"or set {ALLOW_ENV}=1 to try anyway."
    )


@dataclass(frozen=True)
class Assigned:
    """One head branch's Ultralytics loss and label assignment, with names instead of tuple positions.

    Attributes:
        fg_mask (torch.Tensor): (B, A) assigner positives.
        gt_idx (torch.Tensor): (B, A) index of the assigned ground truth (meaningful where ``fg_mask``).
        anchors (torch.Tensor): (A, 2) anchor centres in grid units.
        strides (torch.Tensor): (A, 1) stride of each anchor.
        gt_labels (torch.Tensor): (B, G) padded ground-truth classes, as the loss built them.
        gt_boxes (torch.Tensor): (B, G, 4) padded pixel xyxy ground-truth boxes.
        gt_mask (torch.Tensor): (B, G) True for real (non-padding) boxes.
        loss (torch.Tensor): (3,) the branch's gain-scaled detection loss, not multiplied by the batch size.
        items (dict): The branch's detached loss items by name.
    """

    fg_mask: torch.Tensor
    gt_idx: torch.Tensor
    anchors: torch.Tensor
    strides: torch.Tensor
    gt_labels: torch.Tensor
    gt_boxes: torch.Tensor
    gt_mask: torch.Tensor
    loss: torch.Tensor
    items: dict


def assign(criterion: Any, preds: dict, batch: dict) -> Assigned:
    """Run Ultralytics' detection loss on one branch and return its assignment and the padded ground truth it used.

    The ground truth is padded by the loss's ``preprocess`` (which reads the per-image box count on the host); it is
    captured from that call instead of being built a second time.
    """
    captured = {}
    original = criterion.preprocess

    def recording_preprocess(*args: Any, **kwargs: Any) -> torch.Tensor:
        captured["targets"] = original(*args, **kwargs)
        return captured["targets"]

    criterion.preprocess = recording_preprocess  # instance attribute: shadows the method for this call only
    try:
        (fg_mask, gt_idx, _, anchors, strides), loss, items = criterion.get_assigned_targets_and_loss(preds, batch)
    finally:
        del criterion.preprocess
    labels, boxes = captured["targets"].split((1, 4), 2)
    return Assigned(
        fg_mask=fg_mask.bool(),
        gt_idx=gt_idx,
        anchors=anchors,
        strides=strides,
        gt_labels=labels.squeeze(-1).long(),
        gt_boxes=boxes,
        gt_mask=boxes.sum(2) > 0,  # the same test as the loss's mask_gt
        loss=loss,
        items=items,
    )


@dataclass(frozen=True)
class Branch:
    """One head branch of the student's Ultralytics loss.

    Attributes:
        name (str | None): Key of the branch in the head's training output (None for a single-branch head).
        criterion (Any): The branch's ``v8DetectionLoss``.
        gain (float): Ultralytics' weight of the branch in the total loss (its end-to-end schedule).
    """

    name: str | None
    criterion: Any
    gain: float


ONE2MANY, ONE2ONE = "one2many", "one2one"


def branches(criterion: Any) -> list[Branch]:
    """The branches of a student's Ultralytics criterion: one for YOLOv8/11, one-to-many then one-to-one for E2ELoss."""
    if hasattr(criterion, ONE2MANY) and hasattr(criterion, ONE2ONE):
        return [Branch(ONE2MANY, criterion.one2many, criterion.o2m), Branch(ONE2ONE, criterion.one2one, criterion.o2o)]
    return [Branch(None, criterion, 1.0)]


def is_end2end(outputs: dict) -> bool:
    """Whether raw head outputs come from an end-to-end head (one-to-many and one-to-one branches)."""
    return ONE2ONE in outputs


def head(model: torch.nn.Module) -> Detect:
    """The Detect head of an Ultralytics detection model."""
    return model.model[-1]


def head_channels(model: torch.nn.Module) -> list[int]:
    """Widths of the neck features that feed the Detect head, one per level."""
    return [branch[0].conv.in_channels for branch in head(model).cv2]


@torch.no_grad()
def raw_outputs(model: torch.nn.Module, images: torch.Tensor) -> dict:
    """Run an eval-mode detection model and return its head's raw training-format outputs, without gradient.

    Only the head's own ``training`` flag is flipped: it then skips decoding and NMS, while every BatchNorm stays in
    eval mode (running statistics, untouched).
    """
    model.eval()
    detect = head(model)
    detect.training = True
    try:
        return model(images)
    finally:
        detect.training = False


def fuse_keep_branches(model: torch.nn.Module) -> torch.nn.Module:
    """Fold BatchNorm into the convolutions with Ultralytics' ``fuse()``, keeping every head branch.

    Ultralytics' inference fusion also calls ``Detect.fuse``, which drops the one-to-many branch of end-to-end heads
    that the distillation reads; an instance attribute shadows it for this call.
    """
    detect = head(model)
    detect.fuse = lambda: None
    try:
        model.fuse(verbose=False)
    finally:
        del detect.fuse
    return model


def builtin_teacher(model: torch.nn.Module) -> torch.nn.Module | None:
    """The teacher of Ultralytics' built-in distillation (``DistillationModel.teacher_model``), if ``model`` is one."""
    return getattr(model, "teacher_model", None)


class NanRecoveryHook:
    """Mixin for a trainer: after Ultralytics' NaN recovery reloaded the student and optimizer, call ``after_recovery``.

    Ultralytics restores ``last.pt``'s EMA weights into the (unwrapped) student and the optimizer state, and knows
    nothing of other training-time modules; the trainer restores those in ``after_recovery``.
    """

    def _handle_nan_recovery(self, epoch: int) -> bool:
        """Ultralytics' recovery, then ``after_recovery()`` when it reloaded ``last.pt``."""
        recovered = super()._handle_nan_recovery(epoch)
        if recovered:
            self.after_recovery()
        return recovered

    def after_recovery(self) -> None:
        """Restore what Ultralytics' recovery does not know about (override)."""


def merge_param_groups(saved: dict, optimizer: torch.optim.Optimizer) -> bool:
    """Upgrade an optimizer state written by yolo_tsd 0.1 to the current layout, in place.

    yolo_tsd 0.1 appended the adapters to Ultralytics' optimizer as two extra groups (tagged ``weight`` and ``bias``);
    they are now ordinary members of Ultralytics' ``weight`` and ``bias`` groups, after the student's parameters. The
    saved groups are merged the same way so that ``optimizer.load_state_dict`` maps every saved state to its parameter.

    Args:
        saved (dict): ``ckpt["optimizer"]``, modified in place.
        optimizer (torch.optim.Optimizer): The optimizer the state will be loaded into.

    Returns:
        (bool): True if the state was in the old layout and has been merged.
    """
    groups, current = saved["param_groups"], optimizer.param_groups
    if len(groups) != len(current) + 2 or [g.get("param_group") for g in groups[-2:]] != ["weight", "bias"]:
        return False
    extra = groups[-2:]
    merged = [dict(g, params=list(g["params"])) for g in groups[:-2]]
    for group in extra:
        target = next(g for g in merged if g.get("param_group") == group["param_group"])
        target["params"] += group["params"]
    if [len(g["params"]) for g in merged] != [len(g["params"]) for g in current]:
        return False
    saved["param_groups"] = merged
    return True
