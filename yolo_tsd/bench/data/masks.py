"""Object silhouettes as inside-tests on local coordinates (u, v) in [-1, 1] across the object's box.

Every test uses only +, -, *, comparisons and constants, so a rasterised silhouette is the same on every machine.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]
SQRT3 = 1.7320508075688772


def disc(u, v):
    """Unit disc."""
    return u * u + v * v <= 1.0


def square(u, v):
    """The whole box."""
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)


def triangle(u, v):
    """Triangle, apex up (v grows downwards in images)."""
    return (np.abs(u) <= (v + 1.0) / 2.0) & (v <= 1.0)


def cross(u, v):
    """Plus sign of bars 0.6 wide."""
    return (np.abs(u) <= 0.3) | (np.abs(v) <= 0.3)


def ring(u, v):
    """Annulus, inner radius 0.6."""
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.36)


def hexagram(u, v):
    """Six-pointed star: two overlapping triangles, apex up and apex down."""
    up = (np.abs(u) <= (v + 1.0) / 1.5) & (v <= 0.5)
    down = (np.abs(u) <= (1.0 - v) / 1.5) & (v >= -0.5)
    return up | down


def hexagon(u, v):
    """Regular hexagon, flat top."""
    return (np.abs(v) <= SQRT3 / 2.0) & (SQRT3 * np.abs(u) + np.abs(v) <= SQRT3)


def crescent(u, v):
    """Disc minus a disc shifted right."""
    return disc(u, v) & ((u - 0.45) * (u - 0.45) + v * v > 0.5625)


def arrow(u, v):
    """Arrow pointing right: a shaft and a head."""
    shaft = (np.abs(v) <= 0.28) & (u <= 0.15)
    head = (u > 0.15) & (np.abs(v) <= (1.0 - u) * 1.18)
    return (shaft | head) & (np.abs(u) <= 1.0)


def diamond(u, v):
    """Square turned 45 degrees."""
    return np.abs(u) + np.abs(v) <= 1.0


def ell(u, v):
    """An L: the box's left column and bottom row."""
    return square(u, v) & ((u <= -0.35) | (v >= 0.35))


SHAPES: dict[str, Mask] = {
    "ellipse": disc,
    "rectangle": square,
    "triangle": triangle,
    "cross": cross,
    "ring": ring,
}
SCENE_OBJECTS: dict[str, Mask] = {
    "disc": disc,
    "square": square,
    "triangle": triangle,
    "cross": cross,
    "ring": ring,
    "star": hexagram,
    "hexagon": hexagon,
    "crescent": crescent,
    "arrow": arrow,
    "diamond": diamond,
    "ell": ell,
}
