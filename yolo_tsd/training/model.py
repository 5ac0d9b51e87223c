"""``TSDModel``: the one training-time module of the distillation (student + adapters, the teacher referenced).

Ultralytics trains whatever ``trainer.model`` is: DDP wraps it (gradient averaging, the initial broadcast), the
optimizer, gradient clipping and AMP unscaling take its parameters, ``model(batch)`` returns the loss. Putting the
adapters into this module, next to the student, gives them all of that. The student stays reachable as
``module`` — the attribute Ultralytics' ``unwrap_model`` follows through DDP — so the EMA, checkpoints, NaN
recovery, class weights and the end-to-end criterion schedule see the plain student, exactly as without
distillation. The teacher is referenced, never registered: it is not a parameter, not moved, copied, saved or
trained with the module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import TSDConfig
from ..method.losses import FeatureAdapters
from ..ultralytics_internals import STUDENT_ATTR, criterion_of, dfl_bins, head_channels
from .criterion import DistillStep, TSDLoss
from .stats import RunningStats
from .teacher import Teacher
from .timing import StepTimer
from .unlabeled import UNLABELED_KEY


class SharedRef:
    """Holds an object by reference: deep copies share it, pickles drop it (the teacher never travels with a copy)."""

    def __init__(self, obj: Any = None):
        """Reference ``obj``."""
        self.obj = obj

    def __deepcopy__(self, memo: dict) -> SharedRef:
        """Share, never copy."""
        return self

    def __getstate__(self) -> dict:
        """Pickle empty."""
        return {"obj": None}


def memory_format(module: nn.Module) -> torch.memory_format:
    """``channels_last`` if the module's 4-D weights are stored that way (Ultralytics does so on CUDA), else default."""
    weight = next((p for p in module.parameters() if p.dim() == 4), None)
    channels_last = weight is not None and weight.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last and not weight.is_contiguous() else torch.contiguous_format


def gradient_split(loss: torch.Tensor, student: nn.Module) -> torch.Tensor:
    """Norms of the detection and distillation gradients on the student's parameters, and their dot product.

    Two extra backward passes through the retained graph (the training step's own backward follows); the result stays
    on the device, read once per epoch. ``loss`` is the step's loss vector: detection terms first, then the three TSD
    terms.
    """
    params = [p for p in student.parameters() if p.requires_grad]
    parts = []
    for part in (loss[:-3].sum(), loss[-3:].sum()):
        grads = torch.autograd.grad(part, params, retain_graph=True, allow_unused=True)
        parts.append(torch.cat([g.flatten() for g in grads if g is not None]))
    det, tsd = parts
    return torch.stack([det.norm(), tsd.norm(), det @ tsd])


def gradient_summary(stats: list[torch.Tensor]) -> dict[str, float]:
    """An epoch's gradient split, as means over its probes (NaN where there was none).

    ``tsd/grad_share`` is the distillation norm over the sum of both norms, ``tsd/grad_cos`` their cosine.
    """
    if not stats:
        return {"tsd/grad_share": float("nan"), "tsd/grad_cos": float("nan")}
    s = torch.stack(stats).double().cpu()
    share = s[:, 1] / (s[:, 0] + s[:, 1]).clamp(min=1e-12)
    cos = s[:, 2] / (s[:, 0] * s[:, 1]).clamp(min=1e-12)
    return {"tsd/grad_share": round(float(share.mean()), 4), "tsd/grad_cos": round(float(cos.mean()), 4)}


class TSDModel(nn.Module):
    """The student wrapped for distillation: ``model(batch)`` is the distillation loss, ``model(images)`` the student.

    Args:
        student (nn.Module): The Ultralytics ``DetectionModel`` being trained (registered as ``module``).
        teacher (Teacher): The frozen teacher (referenced only).
        cfg (TSDConfig): Settings.

    Attributes:
        adapters (FeatureAdapters): Student-to-teacher feature adapters, on the student's device and memory format.
        stats (RunningStats): The run's running term sizes, qualities, trust factor and teacher pace.
        teacher_due (bool): Whether this step runs the teacher (set each step by the trainer: False on most steps of an
            epoch that follows one without any trust, ``untrusted_every``); a step without it is Ultralytics' loss. A
            batch of pool images alone always runs it.
        timer (StepTimer): Per-part step timing, off unless the benchmark starts it.
    """

    def __init__(self, student: nn.Module, teacher: Teacher, cfg: TSDConfig):
        """Build the adapters beside the student."""
        super().__init__()
        setattr(self, STUDENT_ATTR, student)
        weight = next(student.parameters())
        self.adapters = FeatureAdapters(head_channels(student), head_channels(teacher.model)).to(
            device=weight.device, memory_format=memory_format(student)
        )
        self.teacher_ref = SharedRef(teacher)
        self.cfg = cfg
        self.stats = RunningStats(cfg)
        self.teacher_due = True
        self.timer = StepTimer()
        self.probe = False  # set for a few steps per epoch: record how the gradient splits between the losses
        self.gradient_stats: list[torch.Tensor] = []  # (detection norm, distillation norm, dot product) per probe
        self.terms = TSDLoss(self.adapters, (dfl_bins(student), dfl_bins(teacher.model)), cfg, self.timer)

    @property
    def student(self) -> nn.Module:
        """The student ``DetectionModel``."""
        return getattr(self, STUDENT_ATTR)

    @property
    def teacher(self) -> Teacher:
        """The frozen teacher (None in an unpickled copy)."""
        return self.teacher_ref.obj

    @property
    def stride(self) -> torch.Tensor:
        """The student's strides (Ultralytics reads them from the trained model)."""
        return self.student.stride

    def forward(self, x: torch.Tensor | dict, *args: Any, **kwargs: Any) -> Any:
        """The loss for a training batch (a dict), else the student's forward."""
        if isinstance(x, dict):
            return self.loss(x)
        return self.student(x, *args, **kwargs)

    def loss(self, batch: dict, preds: Any = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Ultralytics' ``(loss, items)`` for a batch: the detection loss plus the distillation terms."""
        step = self.step(batch, preds)
        return step.loss, step.items

    def step(self, batch: dict, preds: Any = None) -> DistillStep:
        """Run teacher and student on the batch and return loss, items and the significance of each head branch.

        The teacher runs first, under ``no_grad``: its temporary activations are freed before the student's
        activations (kept for the backward pass) exist, so the step's peak holds only the teacher's outputs.
        """
        images, device = batch["img"], batch["img"].device
        t_preds = None
        pool_only = batch.get(UNLABELED_KEY, 0) == len(images)  # pool images teach nothing without the teacher
        if self.cfg.distils and (self.teacher_due or pool_only):
            if self.teacher is None:
                raise RuntimeError("this TSDModel was unpickled without its teacher; build a new one to distil")
            with self.timer("teacher", device):
                t_preds = self.teacher(images)
        if preds is None:
            preds = self.student(images)
        step = self.terms.compute(self.criterion, preds, batch, t_preds, self.stats)
        if self.probe and step.significance and step.loss.requires_grad:
            self.gradient_stats.append(gradient_split(step.loss, self.student).float())
        return step

    @property
    def criterion(self) -> Any:
        """The student's own Ultralytics criterion (built on first use, as the student's ``loss()`` does)."""
        return criterion_of(self.student)
