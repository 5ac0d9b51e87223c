"""The unlabeled pool: images without labels, appended to every labeled batch (docs/method.md §9).

The pool's images go through Ultralytics' own training augmentation in a loader of their own (the same workers, rank
and batch size times ``unlabeled_ratio``), drawn in a reshuffled order without ever being loaded whole; an epoch stays
one pass over the labeled images. A batch with pool images carries their count under ``UNLABELED_KEY``: the images
after the labeled ones, without labels.
"""

from __future__ import annotations

from typing import Any

import torch
from ultralytics.utils import LOGGER, colorstr

from ..ultralytics_internals import checked_images, close_mosaic, pool_loader

UNLABELED_KEY = "unlabeled"  # in a batch: how many of its last images come from the pool


class UnlabeledPool:
    """Pool images for every training batch.

    Args:
        files (tuple[str, ...]): The pool's image files.
        ratio (float): Pool images per labeled image of a batch (rounded per batch; at least 1 when above 0).
    """

    def __init__(self, files: tuple[str, ...], ratio: float):
        """Keep the files; they are checked, and the loader made, with the training loader (``open``)."""
        self.files, self.ratio = list(files), ratio
        self.shapes: dict[str, tuple[int, int]] | None = None
        self.loader: Any = None
        self.batches: Any = None
        self.mosaic_closed = False

    def open(self, args: Any, data: dict, batch: int, stride: int, rank: int, device: Any) -> None:
        """Build the pool's loader for labeled batches of ``batch`` images (again after a batch-size change).

        The images are checked once; corrupt or unreadable ones are left out with one warning that counts them.
        """
        if self.shapes is None:
            self.shapes, bad = checked_images(self.files)
            if bad:
                total = len(self.files)
                LOGGER.warning(
                    f"{colorstr('tsd:')} {bad} of {total} unlabeled images are corrupt or unreadable: left out"
                )
            if not self.shapes:
                raise RuntimeError(f"none of the {len(self.files)} unlabeled images can be read")
        self.loader = pool_loader(args, self.shapes, data, self.count(batch), stride, rank, device)
        self.batches = None
        self.mosaic_closed = False

    def count(self, labeled: int) -> int:
        """Pool images appended to a batch of ``labeled`` images."""
        return max(1, round(self.ratio * labeled)) if self.ratio > 0 else 0

    def next_images(self, n: int) -> torch.Tensor:
        """``n`` augmented pool images (uint8, as Ultralytics' loader gives them), starting a new pass when one ends."""
        for _ in range(2):
            if self.batches is None:
                self.batches = iter(self.loader)
            try:
                return next(self.batches)["img"][:n]
            except StopIteration:
                self.batches = None
        raise RuntimeError("the unlabeled pool's loader yields no images")

    def append(self, batch: dict) -> dict:
        """The batch with pool images after its labeled ones (their labels none), and their count under the key."""
        n = self.count(len(batch["img"]))
        images = self.next_images(n)
        if images.shape[2:] != batch["img"].shape[2:]:
            raise RuntimeError(
                f"pool images of {tuple(images.shape[2:])} beside labeled {tuple(batch['img'].shape[2:])}"
            )
        return {**batch, "img": torch.cat([batch["img"], images]), UNLABELED_KEY: len(images)}

    def close_mosaic(self, args: Any) -> None:
        """Stop mosaic for the pool too, from the epoch Ultralytics stops it for the labeled images."""
        if self.loader is not None and not self.mosaic_closed:
            close_mosaic(self.loader, args)
            self.batches = None
            self.mosaic_closed = True
