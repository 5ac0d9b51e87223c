"""yolo_tsd: task-significance distillation for Ultralytics YOLO detectors."""

from __future__ import annotations

__version__ = "0.1.0"

from .config import TSDConfig
from .trainer import TSDTrainer

__all__ = ["TSDConfig", "TSDTrainer", "__version__"]
