"""Where the TSD terms meet Ultralytics' own detection loss.

``TSDLoss`` is installed as the student's ``criterion`` for training only. It reuses the student's Ultralytics loss
for the detection terms and for the student's label assignment, runs the teacher on the same batch, and adds the
significance-weighted feature, class-logit and box-distribution terms as named loss items.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any

import torch
from ultralytics.utils.tal import dist2bbox

from . import losses, significance
from .config import TSDConfig
from .significance import Assignment, GroundTruth
from .teacher import Teacher

# <= 10 characters each (the progress table stays aligned); "loss" in the name puts them in Ultralytics' results.png
LOSS_NAMES = ("dfeat_loss", "dcls_loss", "dbox_loss")


def ground_truth(det: Any, batch: dict, feats: list[torch.Tensor]) -> GroundTruth:
    """Pad the batch's labels into pixel xyxy boxes exactly as Ultralytics' loss does."""
    imgsz = torch.tensor(feats[0].shape[2:], device=det.device, dtype=torch.float32) * det.stride[0]
    targets = torch.cat((batch["batch_idx"].view(-1, 1), batch["cls"].view(-1, 1), batch["bboxes"]), 1)
    targets = det.preprocess(targets.to(det.device).float(), feats[0].shape[0], scale_tensor=imgsz[[1, 0, 1, 0]])
    labels, boxes = targets.split((1, 4), 2)
    return GroundTruth(labels=labels.squeeze(-1).long(), boxes=boxes, mask=boxes.sum(2) > 0)


def anchor_levels(feats: list[torch.Tensor]) -> torch.Tensor:
    """Head level of each anchor, in the Detect head's anchor order -> (A,)."""
    return torch.cat([torch.full((f.shape[2] * f.shape[3],), i, device=f.device) for i, f in enumerate(feats)])


def synced_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device's queued work is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class TSDLoss:
    """Ultralytics' detection loss plus task-significance distillation.

    Args:
        student (torch.nn.Module): The (de-paralleled) student ``DetectionModel``.
        teacher (Teacher): The frozen teacher.
        adapters (losses.FeatureAdapters): Student-to-teacher feature adapters (trained, never saved in the student).
        cfg (TSDConfig): Settings.
        det (Any, optional): The student's Ultralytics criterion to wrap; built with ``init_criterion()`` if None.

    Attributes:
        scale (float): Schedule factor on every distillation term, set by the trainer each epoch.
        last (dict): Detached significance tensors of the last step (``imp_t``, ``imp_s``, ``region``, ``weight``).
    """

    def __init__(
        self,
        student: torch.nn.Module,
        teacher: Teacher,
        adapters: losses.FeatureAdapters,
        cfg: TSDConfig,
        det: Any = None,
    ):
        """Wrap the student's detection loss."""
        self.det = det if det is not None else student.init_criterion()
        self.teacher, self.adapters, self.cfg = teacher, adapters, cfg
        self.reg_max = (student.model[-1].reg_max, teacher.head.reg_max)
        self.scale = 1.0
        self.last: dict[str, torch.Tensor] = {}
        self.timings: dict[str, float] | None = None  # set to {} to accumulate seconds per part (benchmark)

    def __deepcopy__(self, memo: dict) -> None:
        """Copies of the student (EMA, checkpoints) never carry the teacher: they get no criterion, build their own."""
        return None

    def __reduce__(self) -> tuple:
        """Pickle as None, for the same reason: a pickled student stays a plain Ultralytics model."""
        return type(None), ()

    def update(self) -> None:
        """Forward Ultralytics' per-epoch criterion update (the end-to-end one-to-many/one-to-one schedule)."""
        if hasattr(self.det, "update"):
            self.det.update()

    @property
    def active(self) -> bool:
        """Whether this step distils at all."""
        return self.scale > 0 and self.cfg.distils

    def __call__(self, preds: Any, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the loss vector (detection terms then TSD terms, times batch size) and the named loss items."""
        preds = preds[1] if isinstance(preds, tuple) else preds
        bs = batch["img"].shape[0]
        if not self.active:  # exactly Ultralytics' loss, with the TSD items at 0 so the table keeps its columns
            loss, items = self.det(preds, batch)
            zeros = torch.zeros(len(LOSS_NAMES), device=loss.device)
            return torch.cat([loss, zeros]), {**items, **dict(zip(LOSS_NAMES, zeros))}

        with self.timed("teacher", batch["img"].device):
            t_preds = self.teacher(batch["img"])
        if "one2many" in preds:  # end-to-end head: Ultralytics' E2ELoss weighting of the two branches
            branches = [("one2many", self.det.one2many, self.det.o2m), ("one2one", self.det.one2one, self.det.o2o)]
        else:
            branches = [(None, self.det, 1.0)]
        det_loss, terms = 0.0, torch.zeros(len(LOSS_NAMES), device=batch["img"].device)
        for i, (name, crit, gain) in enumerate(branches):
            s = preds[name] if name else preds
            t = t_preds.get(name, t_preds.get("one2many")) if "one2many" in t_preds else t_preds
            assigned, loss, items = crit.get_assigned_targets_and_loss(s, batch)
            det_loss = det_loss + loss * (bs * gain)
            with self.timed("terms", batch["img"].device):
                adapted = self.adapters(s["feats"]) if i == 0 and self.cfg.lambda_feat > 0 else None  # ambient AMP
                with torch.autocast(batch["img"].device.type, enabled=False):  # significance and terms in fp32
                    feat, cls, box = self.branch_terms(crit, s, t, assigned, batch, adapted)
            terms = terms + torch.stack([feat, cls * gain, box * gain])  # features are shared: feat counted once
        terms = terms * self.scale
        return torch.cat([det_loss, terms * bs]), {**items, **dict(zip(LOSS_NAMES, terms.detach()))}

    @contextmanager
    def timed(self, part: str, device: torch.device):
        """Add the wall time of the block to ``timings[part]`` when profiling (device synchronised), else nothing."""
        if self.timings is None:
            yield
            return
        t0 = synced_clock(device)
        yield
        self.timings[part] = self.timings.get(part, 0.0) + synced_clock(device) - t0

    def branch_terms(
        self, crit: Any, s: dict, t: dict, assigned: tuple, batch: dict, adapted: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """Weighted (feature, class, box) terms of one head branch -> (3,) tensor, already multiplied by the lambdas.

        ``adapted`` holds the adapted student features for the branch that carries the feature term, else None.
        """
        cfg = self.cfg
        fg_mask, gt_idx, _, anchors, strides = assigned
        weight = self.weights(crit, s, t, Assignment(fg_mask, gt_idx), batch, anchors, strides)
        (rs, rt), zero = self.reg_max, weight.new_zeros(())

        feat = zero
        if adapted is not None:
            feat = losses.weighted_mean(losses.feature_distance(adapted, t["feats"]), weight)
        cls = zero
        if cfg.lambda_cls > 0:
            kl = losses.binary_kl(s["scores"].permute(0, 2, 1), t["scores"].permute(0, 2, 1), cfg.temperature)
            cls = losses.weighted_mean(kl, weight)
        box = zero
        if cfg.lambda_box > 0:
            if rs == rt > 1:
                d = losses.dfl_kl(losses.split_bins(s["boxes"], rs), losses.split_bins(t["boxes"], rt), cfg.temperature)
            else:
                ds, dt = losses.expected_distance(s["boxes"], rs), losses.expected_distance(t["boxes"], rt)
                d = losses.box_iou_distance(ds, dt, anchors) if cfg.box_r1 == "iou" else losses.distance_l1(ds, dt)
            box = losses.weighted_mean(d, weight)
        return torch.stack([feat * cfg.lambda_feat, cls * cfg.lambda_cls, box * cfg.lambda_box])

    @torch.no_grad()
    def weights(
        self,
        crit: Any,
        s: dict,
        t: dict,
        s_assigned: Assignment,
        batch: dict,
        anchors: torch.Tensor,
        strides: torch.Tensor,
    ) -> torch.Tensor:
        """Per-anchor distillation weights from both models' dual-task importance -> (B, A)."""
        cfg, (rs, rt) = self.cfg, self.reg_max
        gt = ground_truth(crit, batch, s["feats"])
        s_logits, t_logits = s["scores"].permute(0, 2, 1).float(), t["scores"].permute(0, 2, 1).float()
        s_boxes = dist2bbox(losses.expected_distance(s["boxes"], rs), anchors, xywh=False) * strides
        t_boxes = dist2bbox(losses.expected_distance(t["boxes"], rt), anchors, xywh=False) * strides
        if cfg.reg_score == "iou":  # fixed-IoU ablation: no assigner anywhere, max-IoU matching for both models
            s_assigned = Assignment(torch.zeros_like(s_assigned.fg_mask), s_assigned.gt_idx)
            t_assigned = s_assigned
        else:
            _, _, _, fg, idx = crit.assigner(
                t_logits.sigmoid(),
                t_boxes,
                anchors * strides,
                gt.labels.unsqueeze(-1).float(),
                gt.boxes,
                gt.mask.unsqueeze(-1).float(),
            )
            t_assigned = Assignment(fg.bool(), idx)
        imp_t = significance.importance(t_logits, t_boxes, t_assigned, gt, cfg)
        imp_s = significance.importance(s_logits, s_boxes, s_assigned, gt, cfg)
        region = significance.regions(imp_t, imp_s, cfg)
        weight = significance.anchor_weights(region, anchor_levels(s["feats"]), len(s["feats"]), imp_t, cfg)
        self.last = {"imp_t": imp_t, "imp_s": imp_s, "region": region, "weight": weight}
        return weight
