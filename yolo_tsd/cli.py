"""Command line in Ultralytics' ``key=value`` style: ``python train.py [help | demo] key=value ...``."""

from __future__ import annotations

import sys
from typing import Any

from ultralytics.cfg import merge_equals_args, parse_key_value_pair
from ultralytics.utils import DEFAULT_CFG_DICT

from .config import PREFIX, TSDConfig

USAGE = f"""yolo_tsd: task-significance distillation for Ultralytics YOLO

Usage:
  python train.py model=yolov8n.yaml teacher=path/to/teacher.pt data=my.yaml epochs=100 imgsz=640 batch=16 device=0
  python train.py demo [epochs=15 teacher=path/to/teacher.pt ...]   # embedded demo: student alone vs distilled
  python train.py resume=path/to/last.pt                           # continue an interrupted distillation run
  python train.py explain teacher=t.pt model=best.pt source=img.jpg [imgsz=640 tsd=... out=runs/tsd_explain]
                                                                   # significance pictures for any image
  python train.py help

Arguments:
  teacher=PATH        frozen Ultralytics detection checkpoint (.pt), same classes and head levels as the student;
                      never downloaded: a name such as yolov8x.pt must exist on disk
  tsd=PATH            distillation settings YAML (default: the built-in defaults, identical to cfg/tsd.yaml)
  {PREFIX}<setting>=V      override one setting, e.g. {PREFIX}lambda_feat=2.0 {PREFIX}split=binary
  every other key     passed unchanged to Ultralytics' trainer, exactly as with `yolo train`
                      (model, data, epochs, imgsz, batch, device, amp, close_mosaic, resume, ...);
                      Ultralytics' own distill_model=/dis= cannot be combined with teacher=

Demo keys and their defaults (any Ultralytics key also applies to both demo students):
  {{demo}}

Distillation settings (cfg/tsd.yaml):
"""


def parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Split ``argv`` into a command (``train``, ``demo`` or ``help``) and ``key=value`` overrides.

    Bare Ultralytics boolean keys (e.g. ``resume``) mean ``key=True``, as in the ``yolo`` command.

    Raises:
        SyntaxError: For a positional word that is neither a command nor a boolean key.
    """
    command, overrides = "train", {}
    for arg in merge_equals_args(list(argv)):
        if "=" in arg:
            key, value = parse_key_value_pair(arg)
            overrides[key] = value
        elif arg in {"help", "-h", "--help"}:
            command = "help"
        elif arg in {"demo", "explain"}:
            command = arg
        elif isinstance(DEFAULT_CFG_DICT.get(arg), bool):
            overrides[arg] = True
        else:
            raise SyntaxError(
                f"'{arg}' is not a command (help, demo, explain) nor a key=value pair. See 'python train.py help'."
            )
    return command, overrides


def help_text() -> str:
    """The full help: usage and every distillation setting with its default and meaning."""
    from .demo import DEFAULTS

    demo = " ".join(f"{k}={v}" for k, v in DEFAULTS.items())
    return USAGE.replace("{demo}", demo) + "\n".join(f"  {line}" for line in TSDConfig.help_lines()) + "\n"


def main(argv: list[str] | None = None) -> Any:
    """Entry point of ``train.py``."""
    command, overrides = parse(sys.argv[1:] if argv is None else argv)
    if command == "help":
        print(help_text())
        return None
    if command == "demo":
        from .demo import run_demo

        return run_demo(**overrides)
    if command == "explain":
        from .visualize import explain

        paths = explain(**overrides)
        print("\n".join(str(p) for p in paths))
        return paths
    from .trainer import TSDTrainer

    trainer = TSDTrainer(overrides=overrides)
    trainer.train()
    return trainer
