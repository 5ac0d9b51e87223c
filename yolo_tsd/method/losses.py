"""Distillation terms as pure per-anchor functions, plus the 1x1 feature adapters.

Each ``*_distance`` returns a (B, A) tensor of per-anchor values; ``weighted_mean`` reduces it with the significance
weights. Teacher tensors are expected detached. All maths runs in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.utils.metrics import bbox_iou
from ultralytics.utils.tal import dist2bbox


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Return ``sum(w * v) / sum(w)``, or 0 (still in the graph) when every weight is 0."""
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)


def feature_distance(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Per-location MSE averaged over channels, levels concatenated in anchor order.

    Each level's inputs stay in their own precision (a float16 teacher pyramid is not copied to float32): the
    squared difference is computed in the promoted type, one level at a time, and only the (B, H*W) means are kept.

    Args:
        student (list[torch.Tensor]): Adapted student features, one (B, C_t, H, W) per level.
        teacher (list[torch.Tensor]): Teacher features, same shapes.

    Returns:
        (torch.Tensor): (B, A) float32 distances.
    """
    return torch.cat(
        [F.mse_loss(s, t, reduction="none").mean(1).flatten(1).float() for s, t in zip(student, teacher)], 1
    )


def binary_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Binary KL(sigmoid(z_T/tau) || sigmoid(z_S/tau)) summed over classes, times ``tau**2``.

    The head is trained with per-class BCE, so each class is its own Bernoulli variable. Computed as the cross
    entropy of the student against the teacher's probabilities minus the teacher's own entropy (no gradient), with
    PyTorch's fused BCE-with-logits: autograd keeps only the logits and the target, not the intermediates.

    Args:
        student_logits (torch.Tensor): (B, A, C).
        teacher_logits (torch.Tensor): (B, A, C).
        tau (float): Temperature.

    Returns:
        (torch.Tensor): (B, A) non-negative divergences.
    """
    zs = student_logits.float() / tau if tau != 1 else student_logits.float()
    with torch.no_grad():
        zt = teacher_logits.float() / tau
        pt = zt.sigmoid()
        entropy = F.binary_cross_entropy_with_logits(zt, pt, reduction="none").sum(-1)
    cross = F.binary_cross_entropy_with_logits(zs, pt, reduction="none").sum(-1)
    return (cross - entropy).clamp(min=0) * tau**2


def dfl_kl(student_bins: torch.Tensor, teacher_bins: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """KL(softmax(d_T/tau) || softmax(d_S/tau)) over the R DFL bins, averaged over the 4 sides, times ``tau**2``.

    Args:
        student_bins (torch.Tensor): (B, A, 4, R) box-distribution logits.
        teacher_bins (torch.Tensor): (B, A, 4, R).
        tau (float): Temperature.

    Returns:
        (torch.Tensor): (B, A) non-negative divergences.
    """
    log_ps = F.log_softmax(student_bins.float() / tau, -1)
    log_pt = F.log_softmax(teacher_bins.float() / tau, -1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1).clamp(min=0).mean(-1) * tau**2


def distance_l1(student_dist: torch.Tensor, teacher_dist: torch.Tensor) -> torch.Tensor:
    """L1 between decoded ltrb distances in grid units (stride-normalised), averaged over the 4 sides -> (B, A)."""
    return (student_dist.float() - teacher_dist.float()).abs().mean(-1)


def box_iou_distance(student_dist: torch.Tensor, teacher_dist: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """``1 - IoU`` of the boxes decoded from the ltrb distances around ``anchors`` (A, 2) -> (B, A)."""
    bs = dist2bbox(student_dist.float(), anchors, xywh=False)
    bt = dist2bbox(teacher_dist.float(), anchors, xywh=False)
    return 1.0 - bbox_iou(bs, bt, xywh=False).squeeze(-1)


def split_bins(raw_boxes: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Reshape the head's (B, 4*R, A) box output to (B, A, 4, R)."""
    b, _, a = raw_boxes.shape
    return raw_boxes.view(b, 4, reg_max, a).permute(0, 3, 1, 2)


def expected_distance(raw_boxes: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Decode the head's (B, 4*R, A) box output into (B, A, 4) ltrb distances in grid units.

    With DFL bins (``R > 1``) this is the expectation over the softmax of the bins; with ``R = 1`` it is the output.
    """
    if reg_max == 1:
        return raw_boxes.float().permute(0, 2, 1)
    proj = torch.arange(reg_max, device=raw_boxes.device, dtype=torch.float32)
    return split_bins(raw_boxes.float(), reg_max).softmax(-1) @ proj


class FeatureAdapters(nn.Module):
    """One 1x1 convolution per head level mapping student widths to teacher widths (identity where equal).

    Training-only: it lives beside the student, never inside it, so it is never part of a saved student.

    Args:
        student_channels (list[int]): Width of each student level.
        teacher_channels (list[int]): Width of each teacher level.
    """

    def __init__(self, student_channels: list[int], teacher_channels: list[int]):
        """Build the per-level adapters."""
        super().__init__()
        self.levels = nn.ModuleList(
            nn.Identity() if cs == ct else nn.Conv2d(cs, ct, 1) for cs, ct in zip(student_channels, teacher_channels)
        )

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Map each level's student feature map to the teacher's width."""
        return [m(f) for m, f in zip(self.levels, feats)]
