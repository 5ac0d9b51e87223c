"""The running statistics of a distillation run: term sizes, both models' quality, the trust factor, the teacher's pace.

One ``RunningStats`` per run, owned by the training module (``TSDModel.stats``). The loss updates it once per step
that ran the teacher and reads the factors it gives; the callbacks and the trainer read and reset it between epochs;
the trainer saves and restores its state with a resumable checkpoint. Every per-step value stays on the device (no
host synchronisation); the DDP processes average each step's values in one collective, so every rank holds the same
statistics, as one process with the whole batch would.
"""

from __future__ import annotations

import torch

from ..config import TSDConfig

MOMENTUM = 0.98  # running sizes and qualities: about the last 50 steps


def running_mean(mean: torch.Tensor | None, value: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """``value`` on the first step, then the exponential running mean with ``MOMENTUM`` (on the device).

    ``steps``: training steps this value stands for (the teacher ran on one step in ``steps``): the mean forgets as
    much as over that many steps, so its memory is the same number of training steps however often it is updated.
    """
    momentum = MOMENTUM**steps
    return value if mean is None else mean * momentum + value * (1 - momentum)


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """``value`` averaged over the DDP processes during training; unchanged in one process and outside training.

    Validation runs on rank 0 alone (no gradient): a collective there would wait forever.
    """
    dist = torch.distributed
    if not (torch.is_grad_enabled() and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return value
    value = value.detach().clone()
    dist.all_reduce(value)  # a sum (AVG is not available on every backend)
    return value / dist.get_world_size()


class RunningStats:
    """Running term sizes (``balance=loss``), qualities and trust factor (``trust=quality``), and the teacher's pace.

    Args:
        cfg (TSDConfig): Settings.

    Attributes:
        sizes (torch.Tensor | None): Running (detection loss per image, feature, class, box term) sizes.
        qualities (torch.Tensor | None): Running (teacher, student) mean object quality.
        trust (torch.Tensor): The trust factor in force (a device tensor after the first step; 1 with ``trust=off``).
        trust_total (torch.Tensor): (sum of the factor, steps) since the last ``take_trust_sum()``.
        pace (int): The teacher runs on one training step in this many (set by the pace callback each epoch).
    """

    def __init__(self, cfg: TSDConfig):
        """Start empty: full trust, the teacher on every step."""
        self.cfg = cfg
        self.sizes: torch.Tensor | None = None
        self.qualities: torch.Tensor | None = None
        self.trust = torch.ones(())
        self.trust_total = torch.zeros(2)
        self.pace = 1

    def update(self, det: torch.Tensor, raw: torch.Tensor, quality: torch.Tensor | None) -> torch.Tensor:
        """Fold in one step's detection loss per image, raw term sizes and (teacher, student) quality; term factors.

        The three values are averaged over the DDP processes in one collective, then folded into the running means.

        Returns:
            (torch.Tensor): (3,) the factor on each term: its lambda, times (``balance=loss``) the running ratio of
            the detection loss to the term. The trust factor (``trust``) applies on top.
        """
        step = mean_over_ranks(torch.cat([det.view(1), raw] + ([] if quality is None else [quality.to(raw)])))
        if quality is not None:
            self.track_trust(step[4:])
        self.trust = self.trust.to(raw)  # moved once: later steps find it on the device
        self.trust_total = self.trust_total.to(raw) + torch.stack([self.trust, raw.new_ones(())])
        return self.term_weights(step[:4])

    def current_weights(self, like: torch.Tensor) -> torch.Tensor:
        """The term factors in force, without a new step's sizes (a batch of pool images has no detection loss).

        The balance keeps the running sizes of the labeled steps; before any (never, in training: the first batch is
        labeled) the factors are the lambdas. No collective: every rank makes the same kind of step at the same time.
        """
        self.trust = self.trust.to(like)
        return self.weights(like)

    def term_weights(self, sizes: torch.Tensor) -> torch.Tensor:
        """The factor on each term from this step's (detection loss per image, feature, class, box term) sizes.

        With the balance, a term of weight lambda is lambda times the detection loss in size, averaged over the last
        ~``1 / (1 - MOMENTUM)`` steps, whatever its own units (feature scale, classes, image size, batch).
        """
        if self.cfg.balance == "loss":
            self.sizes = running_mean(self.sizes, sizes, self.pace)
        return self.weights(sizes[1:])

    def weights(self, like: torch.Tensor) -> torch.Tensor:
        """(3,) each term's lambda, times (``balance=loss``, once sizes exist) the running detection-to-term ratio."""
        cfg = self.cfg
        factor = torch.ones_like(like)
        if cfg.balance == "loss" and self.sizes is not None:
            factor = self.sizes[0] / self.sizes[1:].clamp(min=1e-8)
        return torch.stack([factor[0] * cfg.lambda_feat, factor[1] * cfg.lambda_cls, factor[2] * cfg.lambda_box])

    def track_trust(self, quality: torch.Tensor) -> None:
        """Update the trust factor from this step's (teacher, student) object quality.

        With running means ``Q_T`` and ``Q_S`` of both models' mean ``object_quality``, the factor is
        ``clamp((Q_T - Q_S) / Q_T, 0, 1)``: near 1 while the student is far behind, falling to 0 as it catches up, and
        0 for a teacher no better than the student.
        """
        self.qualities = running_mean(self.qualities, quality, self.pace)
        q_t, q_s = self.qualities.unbind()
        self.trust = ((q_t - q_s) / q_t.clamp(min=1e-8)).clamp(0, 1)

    def epoch_trust(self) -> float:
        """The mean trust factor over this epoch's distilling steps (NaN if none), for the epoch's results row.

        Read on rank 0 only (one host synchronisation); the count goes on until ``take_trust_sum()``.
        """
        total = self.trust_total.cpu()
        return float(total[0] / total[1]) if total[1] > 0 else float("nan")

    def take_trust_sum(self) -> float | None:
        """The sum of the trust factor over the distilling steps since the last call (None if none), then start anew.

        The factors are >= 0, so a sum of 0 means the factor was 0 on every step. Taken at each epoch's start on every
        rank (one host synchronisation); the ranks hold the same factor, so they agree.
        """
        total, self.trust_total = self.trust_total.cpu(), torch.zeros_like(self.trust_total)
        return float(total[0]) if total[1] > 0 else None

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        """The running sizes and qualities (None before the first step), saved with a resumable checkpoint."""
        return {"sizes": self.sizes, "qualities": self.qualities}

    def load_state_dict(self, state: dict[str, torch.Tensor | None], device: torch.device) -> None:
        """Continue with the running sizes and qualities a checkpoint had (and the trust they give), replacing these.

        Used on resume and after Ultralytics' NaN recovery, which redoes the epoch: its trust statistics start anew.
        """
        self.trust_total = torch.zeros(2, device=device)
        if state.get("sizes") is not None:
            self.sizes = state["sizes"].to(device)
        if state.get("qualities") is not None:
            self.qualities = None  # the first running_mean takes the value as it is
            self.track_trust(state["qualities"].to(device))
