"""Image samplers of the generated datasets: ``shapes`` (the demo) and ``scenes`` (photograph-like, 11 classes).

Each sampler maps ``(rng, size)`` to an RGB uint8 image and its YOLO labels ``[cls, xc, yc, w, h]``. Rendering is
numpy arithmetic only (``render.py``), so a dataset is the same bytes on every machine and library version.
"""

from __future__ import annotations

import math

import numpy as np

from .masks import SCENE_OBJECTS, SHAPES, Mask
from .render import blend, box_blur, coverage, sample_grid, to_uint8, upsample, value_noise


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two pixel xyxy boxes."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def place_boxes(rng: np.random.Generator, size: int, count: int, smallest: float, largest: float) -> list[np.ndarray]:
    """Up to ``count`` pixel boxes, log-uniform sizes, varied aspect ratios, pairwise IoU below 0.4."""
    boxes = []
    for _ in range(count):
        for _attempt in range(10):
            scale = math.exp(rng.uniform(math.log(smallest), math.log(largest))) * size
            aspect = math.exp(rng.uniform(-0.7, 0.7))
            w, h = max(6, int(scale * math.sqrt(aspect))), max(6, int(scale / math.sqrt(aspect)))
            w, h = min(w, size - 2), min(h, size - 2)
            x1, y1 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            box = np.array([x1, y1, x1 + w, y1 + h])
            if all(overlap(box, b) < 0.4 for b in boxes):
                boxes.append(box)
                break
    return boxes


def silhouette(mask: Mask, box: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Anti-aliased coverage of ``mask`` stretched over the pixel box, and the integer region it covers."""
    x1, y1, x2, y2 = (float(v) for v in box)
    xs, ys, region = sample_grid(x1, y1, x2, y2)
    u = (xs - (x1 + x2) / 2) / ((x2 - x1) / 2)
    v = (ys - (y1 + y2) / 2) / ((y2 - y1) / 2)
    return coverage(mask(u, v)), region


def segment(img: np.ndarray, p1: np.ndarray, p2: np.ndarray, width: float, color: np.ndarray) -> None:
    """An anti-aliased straight stroke of ``width`` pixels from ``p1`` to ``p2`` (x, y)."""
    lo, hi = np.minimum(p1, p2) - width, np.maximum(p1, p2) + width
    xs, ys, region = sample_grid(lo[0], lo[1], hi[0], hi[1])
    d = p2 - p1
    t = np.clip(((xs - p1[0]) * d[0] + (ys - p1[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
    dx, dy = xs - (p1[0] + t * d[0]), ys - (p1[1] + t * d[1])
    alpha = coverage(dx * dx + dy * dy <= (width / 2) ** 2)
    blend(img, alpha, np.broadcast_to(color, (*alpha.shape, 3)), region)


def contrasting(rng: np.random.Generator, img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A random colour that differs from the mean colour under ``box`` by at least 60 in some channel."""
    color = rng.integers(0, 256, 3).astype(np.float64)
    under = img[box[1] : box[3], box[0] : box[2]].reshape(-1, 3).mean(0)
    return 255.0 - color if np.abs(color - under).max() < 60 else color


def shapes_image(rng: np.random.Generator, size: int, max_objects: int = 6) -> tuple[np.ndarray, list[list[float]]]:
    """Five flat-coloured shape classes on muted smooth-noise backgrounds with a few clutter lines."""
    base = rng.uniform(60, 200, 3)
    img = base + 25.0 * value_noise(rng, size, octaves=3)
    ramp = np.linspace(-25.0, 25.0, size)
    img += ramp[None, :, None] if rng.random() < 0.5 else ramp[:, None, None]
    img += rng.normal(0, 6, img.shape)
    img = np.clip(img, 0, 255)
    for _ in range(int(rng.integers(1, 5))):
        segment(
            img, rng.uniform(0, size, 2), rng.uniform(0, size, 2), 1.0, np.clip(base + rng.normal(0, 50, 3), 0, 255)
        )
    names = list(SHAPES)
    labels = []
    for box in place_boxes(rng, size, int(rng.integers(1, max_objects + 1)), 0.06, 0.5):
        cls = int(rng.integers(0, len(names)))
        color = contrasting(rng, img, box)
        alpha, region = silhouette(SHAPES[names[cls]], box)
        blend(img, alpha, np.broadcast_to(color, (*alpha.shape, 3)), region)
        labels.append(yolo_label(cls, box, size))
    return to_uint8(img), labels


def texture(rng: np.random.Generator, h: int, w: int, color: np.ndarray) -> np.ndarray:
    """An object's surface: flat, a gradient, stripes, checks or mottled noise around ``color``."""
    kind = int(rng.integers(0, 5))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == 0:
        pattern = np.zeros((h, w))
    elif kind == 1:
        pattern = (xs / max(w - 1, 1) - 0.5) * rng.uniform(-1, 1) + (ys / max(h - 1, 1) - 0.5) * rng.uniform(-1, 1)
    elif kind in (2, 3):
        period = rng.uniform(3, 9)
        stripes = np.floor(xs / period) + (np.floor(ys / period) if kind == 3 else 0)
        pattern = (stripes - 2 * np.floor(stripes / 2) - 0.5) * 0.8
    else:
        pattern = upsample(rng.uniform(-0.5, 0.5, (4, 4)), h, w)
    shade = rng.uniform(30, 80) * pattern[..., None] + rng.normal(0, 4, (h, w, 3))
    return np.clip(color + shade, 0, 255)


def scene_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A photograph-like backdrop: a horizon between two tones, textured noise, soft blobs and uneven lighting."""
    ys = np.arange(size, dtype=np.float64)[:, None, None]
    horizon = rng.uniform(0.2, 0.8) * size
    sky, ground = rng.uniform(40, 220, 3), rng.uniform(30, 200, 3)
    t = np.clip((ys - horizon) / (size * rng.uniform(0.05, 0.3)) + 0.5, 0, 1)
    img = np.broadcast_to(sky * (1 - t) + ground * t, (size, size, 3)) + rng.uniform(20, 45) * value_noise(rng, size)
    for _ in range(int(rng.integers(3, 9))):  # soft blobs: trees, rocks, furniture
        r = rng.uniform(0.08, 0.35) * size
        c = rng.uniform(0, size, 2)
        box = np.array([c[0] - r, c[1] - r * rng.uniform(0.5, 1.5), c[0] + r, c[1] + r])
        alpha, region = silhouette(SCENE_OBJECTS["disc"], box)
        fill = rng.uniform(20, 230, 3)
        blend(
            img,
            box_blur(alpha[..., None], 2)[..., 0] * rng.uniform(0.4, 0.9),
            np.broadcast_to(fill, (*alpha.shape, 3)),
            region,
        )
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) / size - 0.5
    light = 1.0 - rng.uniform(0.2, 0.8) * (xs * xs + ys * ys) + rng.uniform(-0.2, 0.2) * xs
    return np.clip(img * light[..., None], 0, 255)


def clutter(rng: np.random.Generator, img: np.ndarray, count: int) -> None:
    """Distractors that are no class: strokes, small blotches and partial arcs."""
    size = img.shape[0]
    for _ in range(count):
        kind = int(rng.integers(0, 3))
        color = rng.uniform(0, 255, 3)
        if kind == 0:
            p1 = rng.uniform(0, size, 2)
            segment(img, p1, p1 + rng.normal(0, size / 4, 2), rng.uniform(1, 3), color)
        elif kind == 1:
            s = rng.uniform(0.03, 0.12) * size
            c = rng.uniform(0, size, 2)
            box = np.array([c[0] - s, c[1] - s, c[0] + s, c[1] + s])
            blotch = upsample(rng.uniform(-1, 1, (4, 4)), 8, 8)
            alpha, region = silhouette(lambda u, v, b=blotch: _blotch(u, v, b), box)
            blend(img, alpha, np.broadcast_to(color, (*alpha.shape, 3)), region)
        else:
            s = rng.uniform(0.05, 0.2) * size
            c = rng.uniform(0, size, 2)
            box = np.array([c[0] - s, c[1] - s, c[0] + s, c[1] + s])
            cut = rng.uniform(-0.5, 0.5, 2)
            alpha, region = silhouette(lambda u, v, k=cut: _arc(u, v, k), box)
            blend(img, alpha, np.broadcast_to(color, (*alpha.shape, 3)), region)


def _blotch(u: np.ndarray, v: np.ndarray, field: np.ndarray) -> np.ndarray:
    """An irregular blob: a disc whose radius follows a coarse random field."""
    iu = np.clip(((u + 1) * 3.5).astype(int), 0, 7)
    iv = np.clip(((v + 1) * 3.5).astype(int), 0, 7)
    return u * u + v * v <= 0.55 + 0.35 * field[iv, iu]


def _arc(u: np.ndarray, v: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """A thin ring cut by a half-plane: part of a circle, never a whole class silhouette."""
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.7) & (u * cut[0] + v * cut[1] > 0.1)


def scenes_image(rng: np.random.Generator, size: int, max_objects: int = 8) -> tuple[np.ndarray, list[list[float]]]:
    """Eleven textured object classes in cluttered, unevenly lit photograph-like scenes, partly occluded."""
    img = scene_background(rng, size)
    clutter(rng, img, int(rng.integers(1, 6)))  # behind the objects
    names = list(SCENE_OBJECTS)
    labels = []
    for box in place_boxes(rng, size, int(rng.integers(1, max_objects + 1)), 0.08, 0.5):
        cls = int(rng.integers(0, len(names)))
        alpha, region = silhouette(SCENE_OBJECTS[names[cls]], box)
        if rng.random() < 0.5:  # a soft shadow, offset down and right
            shift = max(1, int((box[2] - box[0]) * 0.08))
            shadow_box = (region[0] + shift, region[1] + shift, region[2] + shift, region[3] + shift)
            blend(img, box_blur(alpha[..., None], 1)[..., 0] * 0.45, np.zeros((*alpha.shape, 3)), shadow_box)
        fill = texture(rng, *alpha.shape, contrasting(rng, img, box))
        blend(img, alpha, fill, region)
        labels.append(yolo_label(cls, box, size))
    clutter(rng, img, int(rng.integers(0, 4)))  # in front: partial occlusion
    img = box_blur(img, int(rng.integers(0, 2)))
    img = img * rng.uniform(0.75, 1.2) + rng.uniform(-20, 20) + rng.normal(0, rng.uniform(2, 8), img.shape)
    return to_uint8(img), labels


def yolo_label(cls: int, box: np.ndarray, size: int) -> list[float]:
    """``[cls, xc, yc, w, h]`` normalised to the image size."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [cls, (x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size]
