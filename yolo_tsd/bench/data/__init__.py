"""The embedded datasets: deterministic, generated on the spot, no download."""

from .generate import CLASSES, KINDS, build_folder, make_dataset, make_pool

__all__ = ["CLASSES", "KINDS", "build_folder", "make_dataset", "make_pool"]
