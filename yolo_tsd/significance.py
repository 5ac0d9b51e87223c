"""Dual-task importance, key and weak areas, and the three-way anchor weights (pure tensor functions).

Shapes: ``B`` images, ``A`` anchors (all head levels concatenated, level-major as the Detect head orders them),
``C`` classes, ``G`` padded ground-truth boxes per image. Boxes are pixel ``xyxy``. Everything here runs without
gradient and in float32, whatever the surrounding autocast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import TSDConfig

HIGH, MID, LOW = 0, 1, 2  # region ids


@dataclass
class GroundTruth:
    """Padded ground truth of a batch, as Ultralytics' loss prepares it.

    Attributes:
        labels (torch.Tensor): (B, G) class ids.
        boxes (torch.Tensor): (B, G, 4) pixel xyxy boxes.
        mask (torch.Tensor): (B, G) True for real (non-padding) boxes.
    """

    labels: torch.Tensor
    boxes: torch.Tensor
    mask: torch.Tensor


@dataclass
class Assignment:
    """One model's label assignment (from its own predictions) and its overlap with the ground truth.

    Attributes:
        fg_mask (torch.Tensor): (B, A) True where the assigner made the anchor a positive.
        gt_idx (torch.Tensor): (B, A) index of the assigned ground truth (meaningful where ``fg_mask``).
    """

    fg_mask: torch.Tensor
    gt_idx: torch.Tensor


def pairwise_iou(boxes: torch.Tensor, gt: GroundTruth, eps: float = 1e-9) -> torch.Tensor:
    """IoU of every anchor box with every ground-truth box of its image, 0 for padding.

    Args:
        boxes (torch.Tensor): (B, A, 4) pixel xyxy.
        gt (GroundTruth): Padded ground truth.
        eps (float): Guards the division for empty boxes.

    Returns:
        (torch.Tensor): (B, A, G) IoU.
    """
    b = boxes.float().unsqueeze(2)  # B, A, 1, 4
    g = gt.boxes.float().unsqueeze(1)  # B, 1, G, 4
    wh = (torch.minimum(b[..., 2:], g[..., 2:]) - torch.maximum(b[..., :2], g[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    area_g = (g[..., 2] - g[..., 0]).clamp(min=0) * (g[..., 3] - g[..., 1]).clamp(min=0)
    iou = inter / (area_b + area_g - inter + eps)
    return iou * gt.mask.unsqueeze(1)


def score3(high: torch.Tensor, mid: torch.Tensor, cfg: TSDConfig) -> torch.Tensor:
    """Map boolean masks to ``score_high`` where ``high``, else ``score_mid`` where ``mid``, else ``score_low``."""
    out = torch.full(high.shape, cfg.score_low, device=high.device)
    out[mid] = cfg.score_mid
    out[high] = cfg.score_high
    return out


def regression_score(fg_mask: torch.Tensor, max_iou: torch.Tensor, cfg: TSDConfig) -> torch.Tensor:
    """Regression score ``Sr``: high for a positive, mid if its box overlaps a ground truth above ``iou_neg``.

    With ``reg_score='iou'`` a positive is any anchor whose box has IoU >= ``iou_pos`` with a ground truth
    (the fixed-threshold ablation) instead of the assigner's positive.

    Args:
        fg_mask (torch.Tensor): (B, A) assigner positives of this model.
        max_iou (torch.Tensor): (B, A) best IoU of this model's box with any ground truth.
        cfg (TSDConfig): Settings.

    Returns:
        (torch.Tensor): (B, A) scores.
    """
    positive = max_iou >= cfg.iou_pos if cfg.reg_score == "iou" else fg_mask
    return score3(positive, max_iou > cfg.iou_neg, cfg)


def top_confidence(conf: torch.Tensor, frac: float) -> torch.Tensor:
    """Mark the ``ceil(frac * A)`` most confident anchors of each image.

    Args:
        conf (torch.Tensor): (B, A) max class probability.
        frac (float): Fraction of anchors to mark.

    Returns:
        (torch.Tensor): (B, A) bool.
    """
    k = min(conf.shape[1], max(1, math.ceil(frac * conf.shape[1])))
    top = torch.zeros_like(conf, dtype=torch.bool)
    return top.scatter_(1, conf.topk(k, dim=1).indices, True)


def classification_score(
    logits: torch.Tensor, matched_cls: torch.Tensor, has_match: torch.Tensor, cfg: TSDConfig
) -> torch.Tensor:
    """Classification score ``Sc``: high if top-confidence and right class, mid if exactly one holds.

    Args:
        logits (torch.Tensor): (B, A, C) class logits.
        matched_cls (torch.Tensor): (B, A) class of the ground truth matched to each anchor.
        has_match (torch.Tensor): (B, A) whether the anchor has a matched ground truth at all.
        cfg (TSDConfig): Settings.

    Returns:
        (torch.Tensor): (B, A) scores.
    """
    conf, pred_cls = logits.float().sigmoid().max(-1)
    top = top_confidence(conf, cfg.top_frac)
    right = has_match & (pred_cls == matched_cls)
    return score3(top & right, top | right, cfg)


def importance(
    logits: torch.Tensor, boxes: torch.Tensor, assigned: Assignment, gt: GroundTruth, cfg: TSDConfig
) -> torch.Tensor:
    """Dual-task importance ``I = Sr * Sc`` of one model, from its own outputs and its own assignment.

    The ground truth matched to an anchor is the assigned one for a positive, else the one its box overlaps most.

    Args:
        logits (torch.Tensor): (B, A, C) class logits.
        boxes (torch.Tensor): (B, A, 4) decoded pixel xyxy boxes.
        assigned (Assignment): This model's assignment.
        gt (GroundTruth): Padded ground truth.
        cfg (TSDConfig): Settings; ``importance='cls'`` or ``'reg'`` replaces the other score by ``single_task_value``.

    Returns:
        (torch.Tensor): (B, A) importance.
    """
    if gt.boxes.shape[1] == 0:  # no ground truth in the whole batch
        max_iou = torch.zeros(boxes.shape[:2], device=boxes.device)
        matched_cls = torch.full_like(max_iou, -1, dtype=torch.long)
    else:
        max_iou, best = pairwise_iou(boxes, gt).max(-1)
        idx = torch.where(assigned.fg_mask, assigned.gt_idx, best)
        matched_cls = gt.labels.long().gather(1, idx)
    has_match = assigned.fg_mask | (max_iou > 0)
    ones = torch.full_like(max_iou, cfg.single_task_value)
    sr = regression_score(assigned.fg_mask, max_iou, cfg) if cfg.importance != "cls" else ones
    sc = classification_score(logits, matched_cls, has_match, cfg) if cfg.importance != "reg" else ones
    return sr * sc


def key_weak_areas(imp_t: torch.Tensor, imp_s: torch.Tensor, cfg: TSDConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Key area ``I_T >= key_thresh``, weak area ``I_T - I_S >= weak_thresh`` (``|.|`` for abs, empty for off).

    Returns:
        (tuple): Two (B, A) bool masks, key and weak.
    """
    key = imp_t >= cfg.key_thresh
    if cfg.weak_mode == "off":
        return key, torch.zeros_like(key)
    diff = imp_t - imp_s
    return key, (diff.abs() if cfg.weak_mode == "abs" else diff) >= cfg.weak_thresh


def regions(imp_t: torch.Tensor, imp_s: torch.Tensor, cfg: TSDConfig) -> torch.Tensor:
    """Split anchors into high / medium / low regions from the key area K and the weak area W.

    ``K = I_T >= key_thresh``; ``W = I_T - I_S >= weak_thresh`` (``|.|`` with ``weak_mode='abs'``, empty with
    ``'off'``). Three-way: high = K and W, medium = K xor W, low = rest. Binary: high = K or W, low = rest.

    Returns:
        (torch.Tensor): (B, A) region ids (``HIGH``, ``MID``, ``LOW``).
    """
    key, weak = key_weak_areas(imp_t, imp_s, cfg)
    region = torch.full(key.shape, LOW, dtype=torch.long, device=key.device)
    if cfg.split == "binary":
        region[key | weak] = HIGH
    else:
        region[key ^ weak] = MID
        region[key & weak] = HIGH
    return region


def anchor_weights(
    region: torch.Tensor, level: torch.Tensor, n_levels: int, imp_t: torch.Tensor, cfg: TSDConfig
) -> torch.Tensor:
    """Per-anchor weight ``w_region / |region|``, the size counted per image and head level.

    Args:
        region (torch.Tensor): (B, A) region ids.
        level (torch.Tensor): (A,) head level of each anchor.
        n_levels (int): Number of head levels (given, not read from ``level``: no device-to-host sync).
        imp_t (torch.Tensor): (B, A) teacher importance (used when ``continuous``).
        cfg (TSDConfig): Settings.

    Returns:
        (torch.Tensor): (B, A) non-negative weights.
    """
    w = torch.tensor([cfg.w_high, cfg.w_mid, cfg.w_low], device=region.device)[region]
    bucket = level.view(1, -1) * 3 + region  # (B, A): one bucket per level and region
    counts = torch.zeros(region.shape[0], n_levels * 3, device=region.device)
    counts.scatter_add_(1, bucket, torch.ones_like(w))
    w = w / counts.gather(1, bucket)
    return w * imp_t if cfg.continuous else w
