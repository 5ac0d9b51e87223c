"""``python -m yolo_tsd.bench``: the benchmark command."""

import sys

from .cli import entrypoint

sys.exit(entrypoint())
