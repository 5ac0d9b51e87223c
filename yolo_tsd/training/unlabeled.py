"""The unlabeled pool: images without labels, trained on between or beside the labeled ones (docs/method.md §9).

The pool's images go through Ultralytics' own training augmentation in a loader of their own (the same workers and
rank), drawn in a reshuffled order without ever being loaded whole; an epoch stays one pass over the labeled images.
With ``unlabeled_mix=steps`` the training loader (``PoolSteps``) yields ``unlabeled_ratio`` batches of pool images per
labeled batch, each its own optimizer step; with ``append`` every labeled batch gets ``unlabeled_ratio`` pool images per
labeled image after its own. A batch with pool images carries their count under ``UNLABELED_KEY``: its last images
(all of them in a pool batch), without labels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from ultralytics.utils import LOGGER, colorstr

from ..ultralytics_internals import checked_images, close_mosaic, pool_loader

UNLABELED_KEY = "unlabeled"  # in a batch: how many of its last images come from the pool


class UnlabeledPool:
    """Pool images for every training batch.

    Args:
        files (tuple[str, ...]): The pool's image files.
        ratio (float): Pool images per labeled image (``append``: rounded per batch, at least 1 when above 0;
            ``steps``: pool batches per labeled batch, spread evenly over the epoch).
        mix (str): ``steps`` (batches of their own) or ``append`` (appended to the labeled batches).
    """

    def __init__(self, files: tuple[str, ...], ratio: float, mix: str = "steps"):
        """Keep the files; they are checked, and the loader made, with the training loader (``open``)."""
        self.files, self.ratio, self.mix = list(files), ratio, mix
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
        size = batch if self.mix == "steps" else self.count(batch)
        self.loader = pool_loader(args, self.shapes, data, size, stride, rank, device)
        self.batches = None
        self.mosaic_closed = False

    def count(self, labeled: int) -> int:
        """Pool images appended to a batch of ``labeled`` images."""
        return max(1, round(self.ratio * labeled)) if self.ratio > 0 else 0

    def steps_after(self, k: int) -> int:
        """``steps``: how many pool batches follow the ``k``-th labeled batch of an epoch (counted from 1)."""
        return math.floor(k * self.ratio + 0.5) - math.floor((k - 1) * self.ratio + 0.5)

    def steps_in(self, labeled: int) -> int:
        """``steps``: pool batches in an epoch of ``labeled`` batches (the sum of ``steps_after``, which telescopes)."""
        return math.floor(labeled * self.ratio + 0.5)

    def next_batch(self) -> dict:
        """The next batch of augmented pool images (uint8, as Ultralytics' loader gives them, no labels).

        A new pass over the pool starts when one ends. The batch carries its image count under ``UNLABELED_KEY``.
        """
        for _ in range(2):
            if self.batches is None:
                self.batches = iter(self.loader)
            try:
                batch = next(self.batches)
                return {**batch, UNLABELED_KEY: len(batch["img"])}
            except StopIteration:
                self.batches = None
        raise RuntimeError("the unlabeled pool's loader yields no images")

    def append(self, batch: dict) -> dict:
        """The batch with pool images after its labeled ones (their labels none), and their count under the key."""
        n = self.count(len(batch["img"]))
        images = self.next_batch()["img"][:n]
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


class PoolSteps:
    """The training loader for ``unlabeled_mix=steps``: each labeled batch, then the pool batches due after it.

    Everything Ultralytics reads from its training loader besides the batches and their number (``dataset``,
    ``sampler``, ``reset``, ``batch_size``, workers, ...) is the labeled loader's: mosaic closing, the DDP epoch seed
    and the image counts keep their meaning.

    Args:
        loader (Any): Ultralytics' training loader of the labeled images.
        pool (UnlabeledPool): The opened pool.
    """

    def __init__(self, loader: Any, pool: UnlabeledPool):
        """Wrap the labeled loader."""
        self.loader, self.pool = loader, pool

    def __len__(self) -> int:
        """Batches per epoch: the labeled ones and the pool's."""
        n = len(self.loader)
        return n + self.pool.steps_in(n)

    def __iter__(self) -> Iterator[dict]:
        """The labeled batches in Ultralytics' order, each followed by the pool batches due after it."""
        for k, batch in enumerate(self.loader, 1):
            yield batch
            for _ in range(self.pool.steps_after(k)):
                yield self.pool.next_batch()

    def __getattr__(self, name: str) -> Any:
        """The labeled loader's attribute."""
        if name in {"loader", "pool"}:  # not set yet (a copy being built): never recurse
            raise AttributeError(name)
        return getattr(self.loader, name)
