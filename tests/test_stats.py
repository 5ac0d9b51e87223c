"""The run's running statistics: the balance's term sizes, the trust factor, their epoch counts and their state."""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from yolo_tsd.config import TSDConfig
from yolo_tsd.training.stats import MOMENTUM, RunningStats


def test_trust_is_reported_per_epoch_over_every_step_and_survives_a_resume():
    running = RunningStats(TSDConfig())
    raw = torch.ones(3)
    running.update(torch.ones(()), raw, torch.tensor([0.8, 0.2]))  # trust 0.75
    running.update(torch.ones(()), raw, None)  # a step without the quality keeps the last factor
    assert running.epoch_trust() == pytest.approx(0.75)  # the mean over both steps, for the results row
    assert running.take_trust_sum() == pytest.approx(1.5)  # the pace's read at the next epoch's start ...
    assert math.isnan(running.epoch_trust()) and running.take_trust_sum() is None  # ... starts the count anew
    resumed = RunningStats(TSDConfig())
    resumed.load_state_dict(running.state_dict(), torch.device("cpu"))
    assert torch.equal(resumed.qualities, running.qualities) and torch.equal(resumed.sizes, running.sizes)
    assert resumed.trust.item() == pytest.approx(running.trust.item())  # not a fresh start at full trust


def test_balance_factors_are_lambda_times_the_running_ratio_of_detection_loss_to_term():
    running = RunningStats(TSDConfig(lambda_feat=1.0, lambda_cls=0.5, lambda_box=0.25))
    first = running.update(torch.tensor(2.0), torch.tensor([4.0, 1.0, 8.0]), None)
    assert first.tolist() == pytest.approx([1.0 * 2 / 4, 0.5 * 2 / 1, 0.25 * 2 / 8])  # the first step: its own sizes
    second = running.update(torch.tensor(2.0), torch.tensor([2.0, 1.0, 8.0]), None)
    feat = MOMENTUM * 4.0 + (1 - MOMENTUM) * 2.0  # the running size, not the step's
    assert second[0].item() == pytest.approx(2.0 / feat)
    off = RunningStats(TSDConfig(balance="off", lambda_cls=0.5))
    assert off.update(torch.tensor(2.0), torch.tensor([4.0, 1.0, 8.0]), None).tolist() == [1.0, 0.5, 0.5]
    assert off.sizes is None


class Copies(TorchDispatchMode):
    """Counts the tensor copies that change device or dtype (``aten._to_copy``): on a GPU, host-to-device copies."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten._to_copy.default
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("trust", ["off", "quality"])
def test_the_trust_factor_is_moved_to_the_terms_device_once_not_at_every_step(trust):
    """The factor starts as a CPU tensor; a step's terms live on the training device.

    Stand-in here for another device: float64 terms, so that moving the factor is a copy this CPU test can count (as a
    host-to-device copy is on a GPU).
    """
    running = RunningStats(TSDConfig(trust=trust))
    raw, quality = torch.ones(3, dtype=torch.float64), torch.tensor([0.8, 0.2], dtype=torch.float64)
    running.update(torch.ones((), dtype=torch.float64), raw, quality if trust == "quality" else None)  # first step
    running.take_trust_sum()  # an epoch boundary: the count restarts where it lives
    with Copies() as copies:
        for _ in range(3):
            running.update(torch.ones((), dtype=torch.float64), raw, quality if trust == "quality" else None)
    assert copies.count == 0 and running.trust.dtype == torch.float64
