"""Distil a YOLO teacher into a YOLO student: ``python train.py help`` explains every argument."""

from yolo_tsd.cli import main

if __name__ == "__main__":
    main()
