"""Dual-task importance, key and weak areas, and the three-way anchor weights (pure tensor functions).

Shapes: ``B`` images, ``A`` anchors (all head levels concatenated, level-major as the Detect head orders them),
``C`` classes, ``G`` padded ground-truth boxes per image. Boxes are pixel ``xyxy``. Everything here runs without
gradient and in float32, whatever the surrounding autocast.

Built for GPU-scale batches: no function reads a value back to the host (no ``item``, no boolean-mask indexing, no
tensors built from Python lists), and the anchor-by-ground-truth IoU is computed in chunks, so the extra memory is
O(B·A) plus one chunk of at most ``CHUNK_ELEMENTS`` pairs, whatever the batch size and box count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import TSDConfig

HIGH, MID, LOW = 0, 1, 2  # region ids
CHUNK_ELEMENTS = 1 << 23  # anchor x ground-truth pairs per IoU chunk (a few 32 MB float32 temporaries)


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
    """One model's label assignment (from its own predictions).

    Attributes:
        fg_mask (torch.Tensor): (B, A) True where the assigner made the anchor a positive.
        gt_idx (torch.Tensor): (B, A) index of the assigned ground truth (meaningful where ``fg_mask``).
    """

    fg_mask: torch.Tensor
    gt_idx: torch.Tensor


@dataclass
class Significance:
    """Where and how much one head branch is distilled in one step (every tensor (B, A), detached).

    Attributes:
        imp_t (torch.Tensor): Teacher importance ``Sr * Sc``.
        imp_s (torch.Tensor): Student importance.
        key (torch.Tensor): Key area (bool).
        weak (torch.Tensor): Weak area (bool).
        region (torch.Tensor): Region ids (``HIGH``, ``MID``, ``LOW``).
        weight (torch.Tensor): Per-anchor distillation weight.
        quality (torch.Tensor | None): (2,) teacher's and student's mean ``object_quality`` on the batch, where the
            trust factor needs it.
    """

    imp_t: torch.Tensor
    imp_s: torch.Tensor
    key: torch.Tensor
    weak: torch.Tensor
    region: torch.Tensor
    weight: torch.Tensor
    quality: torch.Tensor | None = None


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
    iw = (torch.minimum(b[..., 2], g[..., 2]) - torch.maximum(b[..., 0], g[..., 0])).clamp_(min=0)
    ih = (torch.minimum(b[..., 3], g[..., 3]) - torch.maximum(b[..., 1], g[..., 1])).clamp_(min=0)
    inter = iw.mul_(ih)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    area_g = (g[..., 2] - g[..., 0]).clamp(min=0) * (g[..., 3] - g[..., 1]).clamp(min=0)
    union = (area_b + area_g).sub_(inter).add_(eps)
    return inter.div_(union).mul_(gt.mask.unsqueeze(1))


def anchor_chunk(boxes: torch.Tensor, gt: GroundTruth, chunk: int) -> int:
    """Anchors per chunk so that a chunk holds at most ``chunk`` (image, anchor, box) triples (from shapes only)."""
    return max(1, chunk // max(1, boxes.shape[0] * gt.boxes.shape[1]))


def max_iou(boxes: torch.Tensor, gt: GroundTruth, chunk: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Best IoU of each anchor box with its image's ground truth, and that box's index, in chunks of anchors.

    Args:
        boxes (torch.Tensor): (B, A, 4) pixel xyxy.
        gt (GroundTruth): Padded ground truth with G >= 1 columns.
        chunk (int): At most this many (image, anchor, box) triples per chunk (sizes come from shapes: no host sync).

    Returns:
        (tuple): (B, A) best IoU and (B, A) index of that ground truth.
    """
    a = boxes.shape[1]
    step = anchor_chunk(boxes, gt, chunk)
    parts = [pairwise_iou(boxes[:, i : i + step], gt).max(-1) for i in range(0, a, step)]
    return torch.cat([p.values for p in parts], 1), torch.cat([p.indices for p in parts], 1)


def object_quality(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    anchor_points: torch.Tensor,
    gt: GroundTruth,
    alpha: float,
    beta: float,
    chunk: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """How well one model detects each ground-truth object: its best alignment over the anchors inside the box.

    The alignment is the label assigner's own, ``p ** alpha * IoU ** beta`` (``p`` the probability of the object's
    class, ``IoU`` of the anchor's box with the object): both tasks at once, and the same targets for any model, so
    two models' values compare (a model's Ultralytics loss does not: its targets follow its own predictions, and an
    untrained model's loss is small).

    Args:
        logits (torch.Tensor): (B, A, C) class logits.
        boxes (torch.Tensor): (B, A, 4) pixel xyxy.
        anchor_points (torch.Tensor): (A, 2) anchor centres in pixels.
        gt (GroundTruth): Padded ground truth.
        alpha (float): Class exponent (the assigner's ``alpha``).
        beta (float): IoU exponent (the assigner's ``beta``).
        chunk (int): At most this many (image, anchor, box) triples per chunk.

    Returns:
        (torch.Tensor): (B, G) quality in [0, 1], 0 for padding.
    """
    a = boxes.shape[1]
    step = anchor_chunk(boxes, gt, chunk)
    labels = gt.labels.clamp(min=0).unsqueeze(1)  # B, 1, G
    g = gt.boxes.unsqueeze(1)  # B, 1, G, 4
    best = boxes.new_zeros(gt.labels.shape, dtype=torch.float32)
    for i in range(0, a, step):
        iou = pairwise_iou(boxes[:, i : i + step], gt)  # B, a, G
        xy = anchor_points[i : i + step].view(1, -1, 1, 2)
        inside = ((xy > g[..., :2]) & (xy < g[..., 2:])).all(-1)
        # the class probability of each object only: gathered before the float32 cast, no (B, a, C) copy
        p = logits[:, i : i + step].gather(2, labels.expand(-1, iou.shape[1], -1)).float().sigmoid()
        best = torch.maximum(best, (p.pow(alpha) * iou.pow(beta) * inside).amax(1))
    return best


def mean_quality(quality: torch.Tensor, gt: GroundTruth) -> torch.Tensor:
    """Mean ``object_quality`` over the real ground-truth objects (0 when there is none), on the device."""
    return (quality * gt.mask).sum() / gt.mask.sum().clamp(min=1)


def score3(high: torch.Tensor, mid: torch.Tensor, cfg: TSDConfig) -> torch.Tensor:
    """Map boolean masks to ``score_high`` where ``high``, else ``score_mid`` where ``mid``, else ``score_low``."""
    low = torch.full(high.shape, cfg.score_low, device=high.device)
    return torch.where(high, cfg.score_high, torch.where(mid, cfg.score_mid, low))


def regression_score(fg_mask: torch.Tensor, best_iou: torch.Tensor, cfg: TSDConfig) -> torch.Tensor:
    """Regression score ``Sr``: high for a positive, mid if its box overlaps a ground truth above ``iou_neg``.

    With ``reg_score='iou'`` a positive is any anchor whose box has IoU >= ``iou_pos`` with a ground truth
    (the fixed-threshold ablation) instead of the assigner's positive.

    Args:
        fg_mask (torch.Tensor): (B, A) assigner positives of this model.
        best_iou (torch.Tensor): (B, A) best IoU of this model's box with any ground truth.
        cfg (TSDConfig): Settings.

    Returns:
        (torch.Tensor): (B, A) scores.
    """
    positive = best_iou >= cfg.iou_pos if cfg.reg_score == "iou" else fg_mask
    return score3(positive, best_iou > cfg.iou_neg, cfg)


def top_confidence(conf: torch.Tensor, frac: float) -> torch.Tensor:
    """Mark the ``ceil(frac * A)`` most confident anchors of each image.

    Args:
        conf (torch.Tensor): (B, A) max class probability (or any monotonic function of it, e.g. the max logit).
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
    best_logit, pred_cls = logits.max(-1)  # sigmoid is monotonic: ranking logits ranks probabilities, no (B, A, C) copy
    top = top_confidence(best_logit.float(), cfg.top_frac)
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
    if gt.boxes.shape[1] == 0:  # no ground truth in the whole batch (a shape: known on the host)
        best_iou = torch.zeros(boxes.shape[:2], device=boxes.device)
        matched_cls = torch.full_like(best_iou, -1, dtype=torch.long)
    else:
        best_iou, best = max_iou(boxes, gt)
        idx = torch.where(assigned.fg_mask, assigned.gt_idx, best)
        matched_cls = gt.labels.long().gather(1, idx)
    has_match = assigned.fg_mask | (best_iou > 0)
    ones = torch.full_like(best_iou, cfg.single_task_value)
    sr = regression_score(assigned.fg_mask, best_iou, cfg) if cfg.importance != "cls" else ones
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


def regions(key: torch.Tensor, weak: torch.Tensor, cfg: TSDConfig) -> torch.Tensor:
    """Split anchors into high / medium / low regions from the key area K and the weak area W.

    Three-way: high = K and W, medium = K xor W, low = rest. Binary: high = K or W, low = rest.

    Returns:
        (torch.Tensor): (B, A) region ids (``HIGH``, ``MID``, ``LOW``).
    """
    low = torch.full(key.shape, LOW, dtype=torch.long, device=key.device)
    if cfg.split == "binary":
        return torch.where(key | weak, HIGH, low)
    return torch.where(key & weak, HIGH, torch.where(key ^ weak, MID, low))


def anchor_weights(region: torch.Tensor, imp_t: torch.Tensor, cfg: TSDConfig) -> torch.Tensor:
    """Per-anchor weight: ``w_high``, ``w_mid`` or ``w_low`` by region (times the teacher importance if ``continuous``).

    Args:
        region (torch.Tensor): (B, A) region ids.
        imp_t (torch.Tensor): (B, A) teacher importance (used when ``continuous``).
        cfg (TSDConfig): Settings.

    Returns:
        (torch.Tensor): (B, A) non-negative weights.
    """
    low = torch.full(region.shape, cfg.w_low, device=region.device)
    w = torch.where(region == HIGH, cfg.w_high, torch.where(region == MID, cfg.w_mid, low))
    return w * imp_t if cfg.continuous else w


def assess(
    t_logits: torch.Tensor,
    t_boxes: torch.Tensor,
    t_assigned: Assignment,
    s_logits: torch.Tensor,
    s_boxes: torch.Tensor,
    s_assigned: Assignment,
    gt: GroundTruth,
    cfg: TSDConfig,
) -> Significance:
    """Both models' importance, the key and weak areas, regions and per-anchor weights of one head branch.

    Args:
        t_logits (torch.Tensor): (B, A, C) teacher class logits.
        t_boxes (torch.Tensor): (B, A, 4) teacher boxes, pixel xyxy.
        t_assigned (Assignment): The teacher's assignment, from its own predictions.
        s_logits (torch.Tensor): (B, A, C) student class logits.
        s_boxes (torch.Tensor): (B, A, 4) student boxes, pixel xyxy.
        s_assigned (Assignment): The student's assignment, from its own predictions.
        gt (GroundTruth): Padded ground truth.
        cfg (TSDConfig): Settings.

    Returns:
        (Significance): Everything the terms and the pictures need.
    """
    imp_t = importance(t_logits, t_boxes, t_assigned, gt, cfg)
    imp_s = importance(s_logits, s_boxes, s_assigned, gt, cfg)
    key, weak = key_weak_areas(imp_t, imp_s, cfg)
    region = regions(key, weak, cfg)
    weight = anchor_weights(region, imp_t, cfg)
    return Significance(imp_t=imp_t, imp_s=imp_s, key=key, weak=weak, region=region, weight=weight)


def concat_significance(parts: list[Significance]) -> Significance:
    """The significance of a batch from that of its parts, images concatenated in order.

    The quality is the first part's: the labeled images', where the pool images follow them.
    """
    fields = ("imp_t", "imp_s", "key", "weak", "region", "weight")
    return Significance(**{f: torch.cat([getattr(p, f) for p in parts]) for f in fields}, quality=parts[0].quality)


def distillation_weights(sig: Significance, t_logits: torch.Tensor, cfg: TSDConfig) -> torch.Tensor:
    """The per-anchor weights the terms use: the significance's, or a comparison's (``weighting`` setting).

    ``uniform`` weighs every anchor alike; ``teacher_score`` weighs each by the teacher's best class probability (the
    built-in distillation's and FGD-style choice). Both keep the same terms: only *where* they act changes.
    """
    if cfg.weighting == "uniform":
        return torch.ones_like(sig.weight)
    if cfg.weighting == "teacher_score":
        return t_logits.float().amax(-1).sigmoid()
    return sig.weight
