"""A deterministic YOLO-format detection dataset of drawn shapes on textured backgrounds.

Five classes with different geometry (not only colour), sizes from a few pixels to half the image, varied aspect
ratios, overlaps and occlusion, on smooth-noise backgrounds with clutter lines. Every image depends only on
``(seed, split, index)``, so the same call gives the same bytes on every machine.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import yaml

CLASSES = ("ellipse", "rectangle", "triangle", "cross", "ring")
VERSION = 2  # bump when the generator's output changes: it is part of the cache folder name


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted texture: a base colour with smooth noise, a gradient, grain and a few thin clutter lines."""
    base = rng.uniform(60, 200, 3).astype(np.float32)
    low = rng.normal(0, 25, (4 + rng.integers(0, 5), 4 + rng.integers(0, 5), 3)).astype(np.float32)
    img = base + cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(-25, 25, size, dtype=np.float32)
    img += ramp[None, :, None] if rng.random() < 0.5 else ramp[:, None, None]
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(1, 5)):
        p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        color = tuple(int(c) for c in np.clip(base + rng.normal(0, 50, 3), 0, 255))
        cv2.line(img, tuple(int(v) for v in p1), tuple(int(v) for v in p2), color, 1)
    return img


def draw(img: np.ndarray, cls: int, box: tuple[int, int, int, int], color: tuple, rng: np.random.Generator) -> None:
    """Draw shape ``cls`` filling the pixel box ``(x1, y1, x2, y2)``."""
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) // 2, (y1 + y2) // 2, x2 - x1, y2 - y1
    t = max(1, min(w, h) // 5)
    if CLASSES[cls] == "ellipse":
        cv2.ellipse(img, (cx, cy), (w // 2, h // 2), 0, 0, 360, color, -1)
    elif CLASSES[cls] == "rectangle":
        cv2.rectangle(img, (x1, y1), (x2, y2), color, -1)
    elif CLASSES[cls] == "triangle":
        pts = np.array([[x1, y2], [x2, y2], [int(x1 + w * rng.uniform(0.2, 0.8)), y1]], np.int32)
        cv2.fillPoly(img, [pts], color)
    elif CLASSES[cls] == "cross":
        cv2.rectangle(img, (cx - t, y1), (cx + t, y2), color, -1)
        cv2.rectangle(img, (x1, cy - t), (x2, cy + t), color, -1)
    else:  # ring
        cv2.ellipse(img, (cx, cy), (w // 2, h // 2), 0, 0, 360, color, max(2, t))


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two pixel xyxy boxes."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def sample_image(rng: np.random.Generator, size: int, max_objects: int = 6) -> tuple[np.ndarray, list[list[float]]]:
    """One image and its YOLO labels ``[cls, xc, yc, w, h]`` (normalised)."""
    img = background(rng, size)
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(10):
            scale = math.exp(rng.uniform(math.log(0.06), math.log(0.5))) * size  # log-uniform: many small objects
            aspect = math.exp(rng.uniform(-0.7, 0.7))
            w, h = max(6, int(scale * math.sqrt(aspect))), max(6, int(scale / math.sqrt(aspect)))
            w, h = min(w, size - 2), min(h, size - 2)
            x1, y1 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            box = np.array([x1, y1, x1 + w, y1 + h])
            if all(overlap(box, b) < 0.4 for b in boxes):  # overlaps allowed, full occlusion not
                break
        else:
            continue
        cls = int(rng.integers(0, len(CLASSES)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if np.abs(np.array(color) - img[box[1] : box[3], box[0] : box[2]].mean((0, 1))).max() < 60:
            color = tuple(255 - c for c in color)  # keep every object visible against its background
        draw(img, cls, tuple(int(v) for v in box), color, rng)
        boxes.append(box)
        labels.append([cls, (box[0] + box[2]) / 2 / size, (box[1] + box[3]) / 2 / size, w / size, h / size])
    return img, labels


def make_dataset(root: str | Path, n_train: int = 256, n_val: int = 64, imgsz: int = 160, seed: int = 0) -> Path:
    """Write the dataset under ``root`` (once; reused when complete) and return its data yaml.

    Args:
        root (str | Path): Parent folder; the dataset goes into a sub-folder named after its parameters.
        n_train (int): Training images.
        n_val (int): Validation images.
        imgsz (int): Square image size in pixels.
        seed (int): Seed; the dataset is a pure function of the arguments.

    Returns:
        (Path): The data yaml, usable as ``data=`` for Ultralytics.
    """
    folder = Path(root) / f"shapes-v{VERSION}-{n_train}-{n_val}-{imgsz}-s{seed}"
    data_yaml = folder / "data.yaml"
    if data_yaml.is_file():  # written last: its presence means the dataset is complete
        return data_yaml
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, n, offset in (("train", n_train, 0), ("val", n_val, 10**6)):
        (tmp / "images" / split).mkdir(parents=True)
        (tmp / "labels" / split).mkdir(parents=True)
        for i in range(n):
            img, labels = sample_image(np.random.default_rng([seed, offset + i]), imgsz)
            cv2.imwrite(str(tmp / "images" / split / f"{i:05d}.png"), img)
            lines = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in labels]
            (tmp / "labels" / split / f"{i:05d}.txt").write_text("\n".join(lines) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    spec = {
        "path": str(folder.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(CLASSES)),
    }
    data_yaml.write_text(yaml.safe_dump(spec, sort_keys=False))
    return data_yaml
