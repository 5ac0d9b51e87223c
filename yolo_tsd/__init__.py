"""yolo_tsd: task-significance distillation for Ultralytics YOLO detectors.

The product: ``method`` (the paper's rules and terms, pure tensor functions), ``training`` (how they run inside
Ultralytics: teacher, training module, loss, running statistics, trainer, callbacks), the settings, input checks,
command line and pictures, and ``ultralytics_internals`` (every private Ultralytics name). ``bench`` is the lab that
measures it: it imports the product, the product never imports it.
"""

from __future__ import annotations

__version__ = "0.2.0"

from .config import TSDConfig
from .training.trainer import TSDTrainer

__all__ = ["TSDConfig", "TSDTrainer", "__version__"]
