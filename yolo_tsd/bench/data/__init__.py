"""The embedded datasets: deterministic, generated on the spot, no download."""

from .generate import CLASSES, KINDS, make_dataset, make_pool

__all__ = ["CLASSES", "KINDS", "make_dataset", "make_pool"]
