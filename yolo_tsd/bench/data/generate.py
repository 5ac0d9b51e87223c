"""Generated YOLO-format datasets: deterministic, offline, the same bytes on every machine.

Every image depends only on ``(kind, seed, split, index)``. Kinds: ``shapes`` (the demo: five flat shape classes on
smooth backgrounds) and ``scenes`` (eleven textured classes in cluttered, unevenly lit photograph-like scenes). A pool
(``make_pool``) holds more images of a dataset's kind and seed without labels, from indices no split uses.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from .masks import SCENE_OBJECTS, SHAPES
from .samplers import scenes_image, shapes_image


@dataclass(frozen=True)
class Kind:
    """A dataset generator: its version (part of the folder name: bump it when the output changes), classes, sampler."""

    version: int
    classes: tuple[str, ...]
    sample: Callable[[np.random.Generator, int], tuple[np.ndarray, list[list[float]]]]


KINDS = {
    "shapes": Kind(3, tuple(SHAPES), shapes_image),  # v3: numpy-only rendering (v2 drew with OpenCV)
    "scenes": Kind(2, tuple(SCENE_OBJECTS), scenes_image),  # v2: larger objects, less clutter (v1: students ~1 %)
}
CLASSES = KINDS["shapes"].classes
OFFSETS = {"train": 0, "val": 10**6, "pool": 2 * 10**6}  # image i of a split is drawn with the seed [seed, offset + i]


def write_images(folder: Path, gen: Kind, seed: int, split: str, n: int, imgsz: int, labels: Path | None) -> None:
    """Draw images ``0..n-1`` of a split into ``folder`` as PNG (lossless), with YOLO label files into ``labels``."""
    folder.mkdir(parents=True)
    if labels is not None:
        labels.mkdir(parents=True)
    for i in range(n):
        img, boxes = gen.sample(np.random.default_rng([seed, OFFSETS[split] + i]), imgsz)
        cv2.imwrite(str(folder / f"{i:05d}.png"), img[..., ::-1])  # RGB -> BGR
        if labels is not None:
            lines = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in boxes]
            (labels / f"{i:05d}.txt").write_text("\n".join(lines) + "\n")


def build_folder(folder: Path, fill: Callable[[Path], Any]) -> Any:
    """Build ``folder`` in a ``.partial`` sibling with ``fill`` (its result returned), then put it in place whole.

    An interrupted build leaves only the ``.partial`` folder, removed by the next try; the caller marks completion by a
    file written last.
    """
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    result = fill(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return result


def make_dataset(
    root: str | Path, n_train: int = 256, n_val: int = 64, imgsz: int = 160, seed: int = 0, kind: str = "shapes"
) -> Path:
    """Write the dataset under ``root`` (once; reused when complete) and return its data yaml.

    Args:
        root (str | Path): Parent folder; the dataset goes into a sub-folder named after its parameters.
        n_train (int): Training images.
        n_val (int): Validation images.
        imgsz (int): Square image size in pixels.
        seed (int): Seed; the dataset is a pure function of the arguments.
        kind (str): ``shapes`` or ``scenes``.

    Returns:
        (Path): The data yaml, usable as ``data=`` for Ultralytics.
    """
    gen = KINDS[kind]
    folder = Path(root) / f"{kind}-v{gen.version}-{n_train}-{n_val}-{imgsz}-s{seed}"
    data_yaml = folder / "data.yaml"
    if data_yaml.is_file():  # written last: its presence means the dataset is complete
        return data_yaml

    def fill(tmp: Path) -> None:
        for split, n in (("train", n_train), ("val", n_val)):
            write_images(tmp / "images" / split, gen, seed, split, n, imgsz, tmp / "labels" / split)

    build_folder(folder, fill)
    spec = {
        "path": str(folder.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(gen.classes)),
    }
    data_yaml.write_text(yaml.safe_dump(spec, sort_keys=False))
    return data_yaml


def make_pool(root: str | Path, n: int, imgsz: int = 160, seed: int = 0, kind: str = "shapes") -> Path:
    """Write ``n`` unlabeled images of a dataset's kind and seed under ``root`` (once) and return their folder.

    They come from the same generator as that dataset's splits (the same scene statistics, other draws), without label
    files: what a user's camera stream is to their labeled set.
    """
    gen = KINDS[kind]
    folder = Path(root) / f"{kind}-v{gen.version}-pool{n}-{imgsz}-s{seed}"
    images, done = folder / "images", folder / "complete"
    if done.is_file():  # written last
        return images

    def fill(tmp: Path) -> None:
        write_images(tmp / "images", gen, seed, "pool", n, imgsz, None)
        (tmp / "complete").write_text(f"{n}\n")

    build_folder(folder, fill)
    return images
