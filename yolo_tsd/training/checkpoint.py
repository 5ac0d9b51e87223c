"""What a resumable ``last.pt`` carries beside Ultralytics' own checkpoint: the adapters and the running statistics.

Stored under ``CKPT_KEY`` as plain tensors, which plain Ultralytics ignores when it loads the file; removed when the run
ends (nothing resumes it then), so ``best.pt`` and a finished ``last.pt`` are exactly what Ultralytics writes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..ultralytics_internals import checkpoint_epoch, read_checkpoint

CKPT_KEY = "tsd"  # {"adapters": state dict, "running": running statistics, "epoch": int}
OLD_ADAPTERS_FILE = "tsd_adapters.pt"  # where yolo_tsd 0.1 kept the adapters, beside last.pt (read on resume)


def cpu_copies(tensors: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
    """Float32 CPU copies of a checkpoint's tensors (None stays None), detached from training."""
    return {k: None if v is None else v.detach().float().cpu().clone() for k, v in tensors.items()}


def add_state(last: Path, adapters: dict, running: dict, epoch: int) -> None:
    """Write the adapters' weights, the running statistics and their epoch into ``last`` under ``CKPT_KEY``."""
    ckpt = read_checkpoint(last)
    ckpt[CKPT_KEY] = {"adapters": cpu_copies(adapters), "running": cpu_copies(running), "epoch": epoch}
    torch.save(ckpt, last)


def remove_state(last: Path) -> None:
    """Remove ``CKPT_KEY`` from ``last`` if it holds one."""
    ckpt = read_checkpoint(last)
    if ckpt.pop(CKPT_KEY, None) is not None:
        torch.save(ckpt, last)


def read_state(checkpoint: Path) -> tuple[dict | None, Path, int | None]:
    """The state saved with ``checkpoint``, where it was found, and the checkpoint's own epoch (None if unknown).

    The state is the checkpoint's ``CKPT_KEY``, or the side file a yolo_tsd 0.1 run kept beside it.
    """
    ckpt = read_checkpoint(checkpoint) if checkpoint.is_file() else {}
    saved, source = ckpt.get(CKPT_KEY), checkpoint
    if saved is None and checkpoint.with_name(OLD_ADAPTERS_FILE).is_file():
        source = checkpoint.with_name(OLD_ADAPTERS_FILE)
        saved = torch.load(source, map_location="cpu")
    return saved, source, checkpoint_epoch(ckpt)
