"""The embedded demo dataset: deterministic, generated on the spot, no download."""

from .shapes import CLASSES, make_dataset

__all__ = ["CLASSES", "make_dataset"]
