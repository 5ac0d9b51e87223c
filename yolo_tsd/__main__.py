"""``python -m yolo_tsd``: the ``yolo-tsd`` command."""

import sys

from .cli import entrypoint

sys.exit(entrypoint())
