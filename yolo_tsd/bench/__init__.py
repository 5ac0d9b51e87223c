"""The lab: what measures the method, apart from what a user runs.

The benchmark runner and its regimes, the demo, the step-overhead and scale checks, the score-ranking and NMS-free
diagnostics, the statistics of a summary, and the generated datasets they all train on (``data/``). It imports the
product (``yolo_tsd``); the product never imports it: the ``yolo-tsd`` command finds ``demo`` and ``bench`` through
the entry points ``pyproject.toml`` registers.
"""
