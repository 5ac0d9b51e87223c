"""Exact, library-independent raster operations for the generated datasets (numpy arithmetic only).

The images of a generated dataset must be the same bytes on every machine. OpenCV's drawing and resizing differ
between its releases (measured: 31 of the 320 shapes-v2 images differ between opencv 4.10 and 5.0), and numpy's
transcendental functions may differ between CPU instruction sets, so everything here is built from additions,
multiplications, comparisons and floor on float64, whose results IEEE 754 fixes. Only PNG encoding (lossless) is left
to OpenCV.
"""

from __future__ import annotations

import numpy as np

SUPERSAMPLE = 3  # anti-aliasing: masks are evaluated on a 3x3 sub-pixel grid and averaged


def upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a (h, w, ...) grid to (height, width, ...), corners aligned."""
    h, w = grid.shape[:2]
    y = np.arange(height, dtype=np.float64) * ((h - 1) / max(height - 1, 1))
    x = np.arange(width, dtype=np.float64) * ((w - 1) / max(width - 1, 1))
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    if grid.ndim == 3:
        fy, fx = fy[..., None], fx[..., None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx
    bottom = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def value_noise(rng: np.random.Generator, size: int, octaves: int = 5, channels: int = 3) -> np.ndarray:
    """Multi-octave value noise in [-1, 1]: coarse-to-fine random grids, each half the amplitude of the last."""
    out = np.zeros((size, size, channels))
    total = 0.0
    for octave in range(octaves):
        cells = 2 + 2**octave
        amplitude = 0.5**octave
        out += amplitude * upsample(rng.uniform(-1, 1, (cells, cells, channels)), size, size)
        total += amplitude
    return out / total


def box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur of an (H, W, C) float image with edge clamping (exact sums of neighbours)."""
    if radius <= 0:
        return img
    k = 2 * radius + 1
    out = img
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis)
        n = out.shape[axis]
        hi = np.take(c, np.arange(k, k + n), axis=axis)
        lo = np.take(c, np.arange(0, n), axis=axis)
        out = (hi - lo) / k
    return out


def sample_grid(x1: float, y1: float, x2: float, y2: float) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Sub-pixel sample coordinates covering the pixel box ``[x1, x2) x [y1, y2)`` and its integer bounds."""
    ix1, iy1, ix2, iy2 = int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)), int(np.ceil(y2))
    s = SUPERSAMPLE
    xs = ix1 + (np.arange((ix2 - ix1) * s) + 0.5) / s
    ys = iy1 + (np.arange((iy2 - iy1) * s) + 0.5) / s
    return xs[None, :], ys[:, None], (ix1, iy1, ix2, iy2)


def coverage(inside: np.ndarray) -> np.ndarray:
    """Average a boolean sub-pixel mask over each pixel's ``SUPERSAMPLE`` x ``SUPERSAMPLE`` samples -> [0, 1]."""
    s = SUPERSAMPLE
    h, w = inside.shape[0] // s, inside.shape[1] // s
    return inside.reshape(h, s, w, s).mean((1, 3))


def blend(img: np.ndarray, alpha: np.ndarray, fill: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Composite ``fill`` (h, w, 3) over ``img`` in ``box`` with per-pixel ``alpha`` (h, w), clipped to the image."""
    x1, y1, x2, y2 = box
    H, W = img.shape[:2]
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, W), min(y2, H)
    if cx2 <= cx1 or cy2 <= cy1:
        return
    a = alpha[cy1 - y1 : cy2 - y1, cx1 - x1 : cx2 - x1, None]
    f = fill[cy1 - y1 : cy2 - y1, cx1 - x1 : cx2 - x1]
    img[cy1:cy2, cx1:cx2] = img[cy1:cy2, cx1:cx2] * (1 - a) + f * a


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round a float image in [0, 255] to uint8 (floor of x + 0.5, clipped)."""
    return np.clip(np.floor(img + 0.5), 0, 255).astype(np.uint8)
