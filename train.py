"""Distil a YOLO teacher into a YOLO student: ``python train.py help`` lists every argument (same as yolo-tsd)."""

import sys

from yolo_tsd.cli import entrypoint

if __name__ == "__main__":
    sys.exit(entrypoint())
