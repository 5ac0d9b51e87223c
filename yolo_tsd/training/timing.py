"""Step timing for the benchmark: wall seconds per part of a training step, with the device synchronised."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch


def synced_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device's queued work is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class StepTimer:
    """Seconds per part of a step, for the benchmark; off (no device synchronisation) until ``start()``."""

    def __init__(self):
        """Start switched off."""
        self.seconds: dict[str, float] | None = None

    def start(self) -> None:
        """Begin a fresh step's accounting."""
        self.seconds = {}

    @contextmanager
    def __call__(self, part: str, device: torch.device):
        """Add the block's wall time to ``seconds[part]`` when on (device synchronised), else do nothing."""
        if self.seconds is None:
            yield
            return
        t0 = synced_clock(device)
        yield
        self.seconds[part] = self.seconds.get(part, 0.0) + synced_clock(device) - t0
