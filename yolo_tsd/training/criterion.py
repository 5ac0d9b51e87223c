"""Where the TSD terms meet Ultralytics' own detection loss.

``TSDLoss.compute`` takes the student's raw head outputs, the teacher's outputs on the same batch, the student's
Ultralytics criterion and the run's ``RunningStats``. It runs Ultralytics' loss per head branch (which also gives the
student's label assignment and the padded ground truth), assesses each branch's significance, and adds the
significance-weighted feature, class-logit and box-distribution terms as named loss items, scaled by the factors the
running statistics give. It keeps no state of its own and returns the significance it used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from ultralytics.utils.tal import dist2bbox

from ..config import TSDConfig
from ..method import losses
from ..method.significance import (
    Assignment,
    GroundTruth,
    Significance,
    assess,
    concat_significance,
    distillation_weights,
    mean_quality,
    object_quality,
)
from ..ultralytics_internals import (
    Assigned,
    Branch,
    HeadOutput,
    alignment_exponents,
    anchor_grid,
    assign,
    assign_predictions,
    branch_output,
    branches,
    dense_output,
    detections_as_labels,
    slice_outputs,
    teacher_output,
    training_outputs,
)
from .stats import RunningStats
from .timing import StepTimer
from .unlabeled import UNLABELED_KEY


@dataclass(frozen=True)
class Part:
    """Images ``start:stop`` of a batch and the label assignment their significance uses."""

    start: int
    stop: int
    assigned: Assigned


# <= 10 characters each (the progress table stays aligned); "loss" in the name puts them in Ultralytics' results.png
LOSS_NAMES = ("dfeat_loss", "dcls_loss", "dbox_loss")


@dataclass
class DistillStep:
    """The outcome of one step's loss.

    Attributes:
        loss (torch.Tensor): Detection terms then the three TSD terms, the detection part times the batch size and the
            TSD part too (Ultralytics' convention: the trainer sums it).
        items (dict): Detached loss items by name, Ultralytics' then ``LOSS_NAMES``.
        significance (dict): ``Significance`` per distilled head branch (``detect``, or ``one2many``/``one2one``).
    """

    loss: torch.Tensor
    items: dict[str, torch.Tensor]
    significance: dict[str, Significance] = field(default_factory=dict)


class TSDLoss:
    """Ultralytics' detection loss plus task-significance distillation.

    Args:
        adapters (losses.FeatureAdapters): Student-to-teacher feature adapters (trained, never saved in the student).
        bins (tuple[int, int]): DFL bins of the student's and the teacher's heads.
        cfg (TSDConfig): Settings.
        timer (StepTimer, optional): Shared with the distillation module, for the benchmark.
    """

    def __init__(
        self, adapters: losses.FeatureAdapters, bins: tuple[int, int], cfg: TSDConfig, timer: StepTimer | None = None
    ):
        """Keep what every step needs."""
        self.adapters, self.bins, self.cfg = adapters, bins, cfg
        self.timer = timer or StepTimer()

    def compute(
        self, det: Any, preds: Any, batch: dict, t_preds: dict | None, stats: RunningStats | None
    ) -> DistillStep:
        """Loss, named items and significance of one step.

        Args:
            det (Any): The student's Ultralytics criterion (``v8DetectionLoss`` or ``E2ELoss``).
            preds (Any): The student's raw head outputs.
            batch (dict): The preprocessed batch.
            t_preds (dict | None): The teacher's raw head outputs on the same images; None when not distilling.
            stats (RunningStats | None): The run's running statistics, updated here; None when not distilling.

        Returns:
            (DistillStep): Without the teacher's outputs (or with every weight at 0) exactly Ultralytics' loss, the
            TSD items at 0.
        """
        preds = training_outputs(preds)
        n, pool = batch["img"].shape[0], batch.get(UNLABELED_KEY, 0)
        bs = n - pool  # the labeled images come first; only they have a detection loss
        labeled = slice_outputs(preds, 0, bs) if pool else preds
        if t_preds is None or stats is None or not self.cfg.distils:
            loss, items = det(labeled, batch)
            zeros = torch.zeros(len(LOSS_NAMES), device=loss.device)
            return DistillStep(torch.cat([loss, zeros]), {**items, **dict(zip(LOSS_NAMES, zeros))})

        device = batch["img"].device
        det_loss, pool_det, terms, significance, quality, pseudo = (
            0.0,
            0.0,
            torch.zeros(len(LOSS_NAMES), device=device),
            {},
            None,
            None,
        )
        for i, branch in enumerate(branches(det)):
            s = branch_output(preds, branch.name)
            t, same_kind = teacher_output(t_preds, branch.name)
            parts = []
            if bs:  # the labeled images: Ultralytics' assignment and loss
                assigned = assign(branch.criterion, branch_output(labeled, branch.name).raw, batch)
                det_loss = det_loss + assigned.loss * (bs * branch.gain)
                parts.append(Part(0, bs, assigned))
            if pool:  # the pool images: assigned against the teacher's confident detections
                pseudo = pseudo if pseudo is not None else self.pseudo_labels(t_preds, branch.criterion, s, bs, batch)
                parts.append(Part(bs, n, assign(branch.criterion, slice_outputs(s.raw, bs, n), pseudo)))
                pool_det = pool_det + parts[-1].assigned.loss * (pool * branch.gain)
            with self.timer("terms", device):
                feat_here = i == 0 and self.cfg.lambda_feat > 0  # the neck is shared: its term is counted once
                adapted = self.adapters(s.neck_features) if feat_here else None  # under the ambient autocast
                with torch.autocast(device.type, enabled=False):  # significance and terms in float32
                    trusting = i == 0 and bs > 0  # the qualities are the labeled images'
                    sig, values = self.branch_terms(branch, s, t, parts, adapted, same_kind, trusting=trusting)
            if sig is not None:
                significance[branch.name or "detect"] = sig
                quality = sig.quality if sig.quality is not None else quality  # set on the dense branch only
            terms = terms + torch.stack([values[0], values[1] * branch.gain, values[2] * branch.gain])
        if bs:
            weights = stats.update(det_loss.detach().sum() / bs, terms.detach(), quality)
        else:  # a batch of pool images alone (unlabeled_mix=steps): the balance of the labeled steps
            weights = stats.current_weights(terms)
            det_loss = torch.zeros_like(pool_det)  # its detection loss, if any, is added below
        terms = terms * weights * stats.trust
        items = {**parts[0].assigned.items, **dict(zip(LOSS_NAMES, terms.detach()))}  # the last branch's, labeled first
        if pool and self.cfg.unlabeled_det > 0:  # after the balance: it measures the labeled detection loss only
            det_loss = det_loss + self.cfg.unlabeled_det * pool_det
        return DistillStep(torch.cat([det_loss, terms * (bs or n)]), items, significance)

    def pseudo_labels(self, t_preds: dict, criterion: Any, s: HeadOutput, start: int, batch: dict) -> dict:
        """The pool images' ground truth: the teacher's confident detections after NMS, as a batch's labels.

        Decoded from the teacher's dense branch on the anchors of the student's branch ``s`` (docs/method.md §9).
        """
        t = dense_output(t_preds)
        rt = self.bins[1]
        anchors, strides = anchor_grid(criterion, s.raw)
        with torch.no_grad():
            dist = losses.expected_distance(t.box_logits[start:], rt)
            boxes = dist2bbox(dist, anchors, xywh=False) * strides
            probs = t.logits[start:].float().sigmoid()
            return detections_as_labels(probs, boxes, tuple(batch["img"].shape[2:]), self.cfg.unlabeled_conf)

    def branch_terms(
        self,
        branch: Branch,
        s: HeadOutput,
        t: HeadOutput,
        parts: list[Part],
        adapted: list | None,
        same_kind: bool,
        trusting: bool = False,
    ) -> tuple[Significance | None, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Significance and the weighted (feature, class, box) terms of one branch, before the lambdas.

        ``parts``: the labeled images with Ultralytics' assignment, then the pool images (if any) with theirs against
        the teacher's detections. ``trusting``: this branch's significance also carries both models' object quality
        on the labeled images (``trust=quality``).
        ``adapted`` holds the adapted student features for the branch that carries the feature term, else None.
        ``same_kind`` is False for a one-to-one (NMS-free) student branch taught by a teacher without one: its
        anchors then follow ``one2one_mode`` (only the student's one-to-one positives, none, or all).
        """
        cfg, zero, assigned = self.cfg, parts[0].assigned.loss.new_zeros(()), parts[0].assigned
        if not same_kind and cfg.one2one_mode == "off":
            return None, (zero, zero, zero)
        trusting = trusting and cfg.trust == "quality"
        if len(parts) == 1:
            sig, fg_mask = self.significance(branch, s, t, assigned, quality=trusting), assigned.fg_mask
        else:
            sig = concat_significance(
                [
                    self.significance(branch, s.images(p), t.images(p), p.assigned, trusting and j == 0)
                    for j, p in enumerate(parts)
                ]
            )
            fg_mask = torch.cat([p.assigned.fg_mask for p in parts])
        weight = distillation_weights(sig, t.logits, cfg)
        if not (same_kind or cfg.one2one_mode == "all"):
            weight = weight * fg_mask
        (rs, rt) = self.bins
        feat = cls = box = zero
        if adapted is not None:
            feat = losses.weighted_mean(losses.feature_distance(adapted, t.neck_features), weight)
        if cfg.lambda_cls > 0:
            cls = losses.weighted_mean(losses.binary_kl(s.logits, t.logits, cfg.temperature), weight)
        if cfg.lambda_box > 0:
            if rs == rt > 1:
                s_bins, t_bins = losses.split_bins(s.box_logits, rs), losses.split_bins(t.box_logits, rt)
                d = losses.dfl_kl(s_bins, t_bins, cfg.temperature)
            else:
                ds, dt = losses.expected_distance(s.box_logits, rs), losses.expected_distance(t.box_logits, rt)
                iou = cfg.box_r1 == "iou"
                d = losses.box_iou_distance(ds, dt, assigned.anchors) if iou else losses.distance_l1(ds, dt)
            box = losses.weighted_mean(d, weight)
        return sig, (feat, cls, box)

    @torch.no_grad()
    def significance(
        self, branch: Branch, s: HeadOutput, t: HeadOutput, assigned: Assigned, quality: bool = False
    ) -> Significance:
        """Both models' dual-task importance on one branch, each from its own outputs and its own assignment.

        With ``quality``, also both models' mean ``object_quality`` on the batch (the assigner's alignment metric).
        The student's assignment is the one Ultralytics' loss just made; the teacher's comes from the same branch's
        assigner run on the teacher's predictions (or, with ``reg_score=iou``, from neither: max-IoU matching).
        """
        cfg, (rs, rt) = self.cfg, self.bins
        gt = GroundTruth(assigned.gt_labels, assigned.gt_boxes, assigned.gt_mask)
        anchors, strides = assigned.anchors, assigned.strides
        s_logits, t_logits = s.logits.detach(), t.logits
        s_boxes = dist2bbox(losses.expected_distance(s.box_logits.detach(), rs), anchors, xywh=False) * strides
        t_boxes = dist2bbox(losses.expected_distance(t.box_logits, rt), anchors, xywh=False) * strides
        s_assigned = Assignment(assigned.fg_mask, assigned.gt_idx)
        if cfg.reg_score == "iou":  # fixed-IoU ablation: no assigner anywhere, max-IoU matching for both models
            s_assigned = t_assigned = Assignment(torch.zeros_like(assigned.fg_mask), assigned.gt_idx)
        else:
            fg, idx = assign_predictions(
                branch.criterion, t_logits.float().sigmoid(), t_boxes, anchors * strides, assigned
            )
            t_assigned = Assignment(fg, idx)
        sig = assess(t_logits, t_boxes, t_assigned, s_logits, s_boxes, s_assigned, gt, cfg)
        if quality:
            alpha, beta = alignment_exponents(branch.criterion)
            sig.quality = torch.stack(
                [
                    mean_quality(object_quality(z, b, anchors * strides, gt, alpha, beta), gt)
                    for z, b in ((t_logits, t_boxes), (s_logits, s_boxes))
                ]
            )
        return sig
