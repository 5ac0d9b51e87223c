"""Where the TSD terms meet Ultralytics' own detection loss.

``TSDLoss.compute`` takes the student's raw head outputs, the teacher's outputs on the same batch and the student's
Ultralytics criterion. It runs Ultralytics' loss per head branch (which also gives the student's label assignment and
the padded ground truth), assesses each branch's significance, and adds the significance-weighted feature,
class-logit and box-distribution terms as named loss items. It returns the significance it used instead of keeping it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from ultralytics.utils.tal import dist2bbox

from . import losses
from .config import TSDConfig
from .significance import (
    Assignment,
    GroundTruth,
    Significance,
    assess,
    distillation_weights,
    mean_quality,
    object_quality,
)
from .timing import StepTimer
from .ultralytics_internals import ONE2MANY, ONE2ONE, Assigned, Branch, assign, branches, is_end2end

# <= 10 characters each (the progress table stays aligned); "loss" in the name puts them in Ultralytics' results.png
LOSS_NAMES = ("dfeat_loss", "dcls_loss", "dbox_loss")
BALANCE_MOMENTUM = 0.98  # running sizes for balance=loss and qualities for trust=quality: about the last 50 steps


def running_mean(mean: torch.Tensor | None, value: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """``value`` on the first step, then the exponential running mean with ``BALANCE_MOMENTUM`` (on the device).

    ``steps``: training steps this value stands for (the teacher ran on one step in ``steps``): the mean forgets as
    much as over that many steps, so its memory is the same number of training steps however often it is updated.
    """
    momentum = BALANCE_MOMENTUM**steps
    return value if mean is None else mean * momentum + value * (1 - momentum)


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """``value`` averaged over the DDP processes during training; unchanged in one process and outside training.

    Every rank then holds the same running sizes and trust, as one process with the whole batch would. Validation runs
    on rank 0 alone (no gradient): a collective there would wait forever.
    """
    dist = torch.distributed
    if not (torch.is_grad_enabled() and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return value
    value = value.detach().clone()
    dist.all_reduce(value)  # a sum (AVG is not available on every backend)
    return value / dist.get_world_size()


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


def teacher_branch(t_preds: dict, name: str | None) -> tuple[dict, bool]:
    """The teacher outputs that teach the student branch ``name``, and whether they are the same kind of branch.

    A one-to-one student branch learns from the teacher's one-to-one branch when it has one; every other student
    branch learns from the teacher's dense (one-to-many, or only) branch.
    """
    if not is_end2end(t_preds):
        return t_preds, name != ONE2ONE
    return (t_preds[ONE2ONE], True) if name == ONE2ONE else (t_preds[ONE2MANY], True)


class TSDLoss:
    """Ultralytics' detection loss plus task-significance distillation.

    Args:
        adapters (losses.FeatureAdapters): Student-to-teacher feature adapters (trained, never saved in the student).
        reg_max (tuple[int, int]): DFL bins of the student's and the teacher's heads.
        cfg (TSDConfig): Settings.
        timer (StepTimer, optional): Shared with the distillation module, for the benchmark.
    """

    def __init__(
        self, adapters: losses.FeatureAdapters, reg_max: tuple[int, int], cfg: TSDConfig, timer: StepTimer | None = None
    ):
        """Keep what every step needs."""
        self.adapters, self.reg_max, self.cfg = adapters, reg_max, cfg
        self.timer = timer or StepTimer()
        self.sizes: torch.Tensor | None = None  # running (detection, feature, class, box) sizes for balance=loss
        self.qualities: torch.Tensor | None = None  # running (teacher, student) object quality for trust=quality
        self.trust = torch.ones(())  # the last step's trust factor (a device tensor)
        self.trust_total = torch.zeros(2)  # (sum of the trust factor, steps) since the last take_trust_sum()
        self.pace = 1  # the teacher runs on one training step in this many (set by the trainer each epoch)

    def compute(self, det: Any, preds: Any, batch: dict, t_preds: dict | None, scale: float = 1.0) -> DistillStep:
        """Loss, named items and significance of one step.

        Args:
            det (Any): The student's Ultralytics criterion (``v8DetectionLoss`` or ``E2ELoss``).
            preds (Any): The student's raw head outputs.
            batch (dict): The preprocessed batch.
            t_preds (dict | None): The teacher's raw head outputs on the same images; None when not distilling.
            scale (float): Schedule factor on every distillation term.

        Returns:
            (DistillStep): With every weight (or ``scale``) at 0 it is exactly Ultralytics' loss, TSD items at 0.
        """
        preds = preds[1] if isinstance(preds, tuple) else preds
        if t_preds is None or scale == 0 or not self.cfg.distils:
            loss, items = det(preds, batch)
            zeros = torch.zeros(len(LOSS_NAMES), device=loss.device)
            return DistillStep(torch.cat([loss, zeros]), {**items, **dict(zip(LOSS_NAMES, zeros))})

        device, bs = batch["img"].device, batch["img"].shape[0]
        det_loss, terms, significance, quality = 0.0, torch.zeros(len(LOSS_NAMES), device=device), {}, None
        for i, branch in enumerate(branches(det)):
            s = preds[branch.name] if branch.name else preds
            t, same_kind = teacher_branch(t_preds, branch.name)
            assigned = assign(branch.criterion, s, batch)
            det_loss = det_loss + assigned.loss * (bs * branch.gain)
            with self.timer("terms", device):
                feat_here = i == 0 and self.cfg.lambda_feat > 0  # the neck is shared: its term is counted once
                adapted = self.adapters(s["feats"]) if feat_here else None  # under the ambient autocast
                with torch.autocast(device.type, enabled=False):  # significance and terms in float32
                    sig, values = self.branch_terms(branch, s, t, assigned, adapted, same_kind, trusting=i == 0)
            if sig is not None:
                significance[branch.name or "detect"] = sig
                quality = sig.quality if sig.quality is not None else quality  # set on the dense branch only
            terms = terms + torch.stack([values[0], values[1] * branch.gain, values[2] * branch.gain])
        weights = self.update_running(det_loss.detach().sum() / bs, terms.detach(), quality)
        terms = terms * weights * (self.trust * scale)
        items = {**assigned.items, **dict(zip(LOSS_NAMES, terms.detach()))}  # Ultralytics': the last branch's items
        return DistillStep(torch.cat([det_loss, terms * bs]), items, significance)

    def update_running(self, det: torch.Tensor, raw: torch.Tensor, quality: torch.Tensor | None) -> torch.Tensor:
        """Update the running sizes (``balance=loss``) and qualities (``trust=quality``); the factor on each term.

        This step's detection loss per image, raw term sizes and (teacher, student) object quality are averaged over
        the DDP processes in one collective, then folded into the running means. Everything stays on the device: no
        host synchronisation.
        """
        step = mean_over_ranks(torch.cat([det.view(1), raw] + ([] if quality is None else [quality.to(raw)])))
        if quality is not None:
            self.track_trust(step[4:])
        trust = self.trust.to(raw)
        self.trust_total = self.trust_total.to(raw) + torch.stack([trust, raw.new_ones(())])
        return self.term_weights(step[:4])

    def term_weights(self, sizes: torch.Tensor) -> torch.Tensor:
        """The factor on each term: its lambda, times (``balance=loss``) the running ratio of detection loss to term.

        ``sizes``: this step's (detection loss per image, feature, class, box term). With the balance, a term of
        weight lambda is lambda times the detection loss in size, averaged over the last ~``1 / (1 -
        BALANCE_MOMENTUM)`` steps, whatever its own units (feature scale, classes, image size, batch).
        """
        cfg, factor = self.cfg, torch.ones_like(sizes[1:])
        if cfg.balance == "loss":
            self.sizes = running_mean(self.sizes, sizes, self.pace)
            factor = self.sizes[0] / self.sizes[1:].clamp(min=1e-8)
        return torch.stack([factor[0] * cfg.lambda_feat, factor[1] * cfg.lambda_cls, factor[2] * cfg.lambda_box])

    def track_trust(self, quality: torch.Tensor) -> None:
        """Update the trust factor from this step's (teacher, student) object quality (``trust=quality``).

        With running means ``Q_T`` and ``Q_S`` of both models' mean ``object_quality`` (momentum as the balance's),
        the factor is ``clamp((Q_T - Q_S) / (trust_margin * Q_T), 0, 1)``: 1 while the student is at least
        ``trust_margin`` (a fraction of the teacher's quality) behind, falling to 0 as it catches up, and 0 for a
        teacher no better than the student.
        """
        self.qualities = running_mean(self.qualities, quality, self.pace)
        q_t, q_s = self.qualities.unbind()
        self.trust = ((q_t - q_s) / (self.cfg.trust_margin * q_t).clamp(min=1e-8)).clamp(0, 1)

    def epoch_trust(self) -> float:
        """The mean trust factor over this epoch's distilling steps (NaN if none): every step that ran the teacher.

        Read for the epoch's results row, on rank 0 only (one host synchronisation); the count goes on until
        ``take_trust_sum()``.
        """
        total = self.trust_total.cpu()
        return float(total[0] / total[1]) if total[1] > 0 else float("nan")

    def take_trust_sum(self) -> float | None:
        """The sum of the trust factor over the distilling steps since the last call (None if none), then start anew.

        The factors are >= 0, so a sum of 0 means the factor was 0 on every step. Taken at each epoch's start on every
        rank (one host synchronisation); the ranks hold the same factor, so they agree.
        """
        total, self.trust_total = self.trust_total.cpu(), torch.zeros(2)
        return float(total[0]) if total[1] > 0 else None

    def running_state(self) -> dict[str, torch.Tensor | None]:
        """The running sizes and qualities (None before the first step), saved with a resumable checkpoint."""
        return {"sizes": self.sizes, "qualities": self.qualities}

    def load_running_state(self, state: dict[str, torch.Tensor | None], device: torch.device) -> None:
        """Continue with the running sizes and qualities a checkpoint had (and the trust they give), replacing these.

        Used on resume and after Ultralytics' NaN recovery, which redoes the epoch: its trust statistics start anew.
        """
        self.trust_total = torch.zeros(2)
        if state.get("sizes") is not None:
            self.sizes = state["sizes"].to(device)
        if state.get("qualities") is not None:
            self.qualities = None  # the first running_mean takes the value as it is
            self.track_trust(state["qualities"].to(device))

    def __call__(self, det: Any, preds: Any, batch: dict, t_preds: dict | None, scale: float = 1.0):
        """``compute()`` as Ultralytics' ``(loss, items)`` pair."""
        step = self.compute(det, preds, batch, t_preds, scale)
        return step.loss, step.items

    def branch_terms(
        self,
        branch: Branch,
        s: dict,
        t: dict,
        assigned: Assigned,
        adapted: list | None,
        same_kind: bool,
        trusting: bool = False,
    ) -> tuple[Significance | None, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Significance and the weighted (feature, class, box) terms of one branch, before the lambdas.

        ``trusting``: this branch's significance also carries both models' object quality (``trust=quality``).

        ``adapted`` holds the adapted student features for the branch that carries the feature term, else None.
        ``same_kind`` is False for a one-to-one (NMS-free) student branch taught by a teacher without one: its
        anchors then follow ``one2one_mode`` (only the student's one-to-one positives, none, or all).
        """
        cfg, zero = self.cfg, assigned.loss.new_zeros(())
        if not same_kind and cfg.one2one_mode == "off":
            return None, (zero, zero, zero)
        sig = self.significance(branch, s, t, assigned, quality=trusting and cfg.trust == "quality")
        weight = distillation_weights(sig, t["scores"].permute(0, 2, 1), cfg)
        if not (same_kind or cfg.one2one_mode == "all"):
            weight = weight * assigned.fg_mask
        (rs, rt) = self.reg_max
        feat = cls = box = zero
        if adapted is not None:
            t_feats = t["feats"]
            if cfg.feat_norm == "channel":
                adapted, t_feats = [losses.standardize(f) for f in adapted], [losses.standardize(f) for f in t_feats]
            feat = losses.weighted_mean(losses.feature_distance(adapted, t_feats), weight)
        if cfg.lambda_cls > 0:
            kl = losses.binary_kl(s["scores"].permute(0, 2, 1), t["scores"].permute(0, 2, 1), cfg.temperature)
            cls = losses.weighted_mean(kl, weight)
        if cfg.lambda_box > 0:
            if rs == rt > 1:
                d = losses.dfl_kl(losses.split_bins(s["boxes"], rs), losses.split_bins(t["boxes"], rt), cfg.temperature)
            else:
                ds, dt = losses.expected_distance(s["boxes"], rs), losses.expected_distance(t["boxes"], rt)
                iou = cfg.box_r1 == "iou"
                d = losses.box_iou_distance(ds, dt, assigned.anchors) if iou else losses.distance_l1(ds, dt)
            box = losses.weighted_mean(d, weight * sig.objects if cfg.box_anchors == "objects" else weight)
        return sig, (feat, cls, box)

    @torch.no_grad()
    def significance(self, branch: Branch, s: dict, t: dict, assigned: Assigned, quality: bool = False) -> Significance:
        """Both models' dual-task importance on one branch, each from its own outputs and its own assignment.

        With ``quality``, also both models' mean ``object_quality`` on the batch (the assigner's alignment metric).

        The student's assignment is the one Ultralytics' loss just made; the teacher's comes from the same branch's
        assigner run on the teacher's predictions (or, with ``reg_score=iou``, from neither: max-IoU matching).
        """
        cfg, (rs, rt) = self.cfg, self.reg_max
        gt = GroundTruth(assigned.gt_labels, assigned.gt_boxes, assigned.gt_mask)
        anchors, strides = assigned.anchors, assigned.strides
        s_logits, t_logits = s["scores"].detach().permute(0, 2, 1), t["scores"].permute(0, 2, 1)
        s_boxes = dist2bbox(losses.expected_distance(s["boxes"].detach(), rs), anchors, xywh=False) * strides
        t_boxes = dist2bbox(losses.expected_distance(t["boxes"], rt), anchors, xywh=False) * strides
        s_assigned = Assignment(assigned.fg_mask, assigned.gt_idx)
        if cfg.reg_score == "iou":  # fixed-IoU ablation: no assigner anywhere, max-IoU matching for both models
            s_assigned = t_assigned = Assignment(torch.zeros_like(assigned.fg_mask), assigned.gt_idx)
        else:
            _, _, _, fg, idx = branch.criterion.assigner(
                t_logits.float().sigmoid(),
                t_boxes,
                anchors * strides,
                gt.labels.unsqueeze(-1).float(),
                gt.boxes,
                gt.mask.unsqueeze(-1).float(),
            )
            t_assigned = Assignment(fg.bool(), idx)
        sizes = [f.shape[2] * f.shape[3] for f in s["feats"]]
        sig = assess(t_logits, t_boxes, t_assigned, s_logits, s_boxes, s_assigned, gt, sizes, cfg)
        sig.objects = t_assigned.fg_mask | assigned.fg_mask  # the student's own loss assigns even with reg_score=iou
        if quality:
            a = branch.criterion.assigner
            sig.quality = torch.stack(
                [
                    mean_quality(object_quality(z, b, anchors * strides, gt, a.alpha, a.beta), gt)
                    for z, b in ((t_logits, t_boxes), (s_logits, s_boxes))
                ]
            )
        return sig
