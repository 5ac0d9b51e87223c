"""The ``yolo-tsd`` command, in Ultralytics' ``key=value`` style (also ``python -m yolo_tsd`` and ``python train.py``).

A refused input ends with one line naming the problem and the fix, and exit status 2; ``TSD_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from ultralytics.cfg import merge_equals_args, parse_key_value_pair
from ultralytics.utils import DEFAULT_CFG_DICT

from .config import PREFIX, TSDConfig
from .errors import UsageError, did_you_mean

COMMANDS = ("train", "demo", "explain", "bench", "copy-cfg", "help")
DEBUG_ENV = "TSD_DEBUG"

USAGE = f"""yolo_tsd: task-significance distillation for Ultralytics YOLO

Usage (yolo-tsd, python -m yolo_tsd and python train.py are the same command):
  yolo-tsd model=yolov8n.yaml teacher=path/to/teacher.pt data=my.yaml epochs=100 imgsz=640 batch=16 device=0
  yolo-tsd demo [epochs=15 teacher=path/to/teacher.pt ...]    # embedded demo: student alone vs distilled
  yolo-tsd resume=path/to/last.pt                            # continue an interrupted distillation run
  yolo-tsd explain teacher=t.pt model=best.pt source=img.jpg [imgsz=640 tsd=... out=runs/tsd_explain]
                                                             # significance pictures for any image
  yolo-tsd bench [help | key=value ...]                      # the benchmark (python -m yolo_tsd.bench)
  yolo-tsd copy-cfg                                          # write the default settings to ./tsd_copy.yaml
  yolo-tsd help

Arguments:
  teacher=PATH        frozen Ultralytics detection checkpoint (.pt), same classes and head levels as the student;
                      never downloaded: a name such as yolov8x.pt must exist on disk
  tsd=PATH            distillation settings YAML, relative to the current folder (default: the built-in defaults,
                      identical to the file copy-cfg writes)
  {PREFIX}<setting>=V      override one setting, e.g. {PREFIX}lambda_feat=2.0 {PREFIX}split=binary
  every other key     passed unchanged to Ultralytics' trainer, exactly as with `yolo train`
                      (model, data, epochs, imgsz, batch, device, amp, close_mosaic, resume, ...);
                      Ultralytics' own distill_model=/dis= cannot be combined with teacher=

Demo keys and their defaults (any Ultralytics key also applies to both demo students):
  {{demo}}

Distillation settings (as {PREFIX}<setting>=value; in a tsd= file without the prefix):
"""


def parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Split ``argv`` into a command and ``key=value`` overrides.

    Bare Ultralytics boolean keys (e.g. ``resume``) mean ``key=True``, as in the ``yolo`` command.

    Raises:
        UsageError: For a positional word that is neither a command nor a boolean key.
    """
    command, overrides = "train", {}
    for arg in merge_equals_args(list(argv)):
        if "=" in arg:
            key, value = parse_key_value_pair(arg)
            overrides[key] = value
        elif arg in {"help", "-h", "--help"}:
            command = "help"
        elif arg in COMMANDS:
            command = arg
        elif isinstance(DEFAULT_CFG_DICT.get(arg), bool):
            overrides[arg] = True
        else:
            raise UsageError(
                f"'{arg}' is not a command ({', '.join(COMMANDS)}) nor a key=value pair{did_you_mean(arg, COMMANDS)}. "
                "See 'yolo-tsd help'."
            )
    return command, overrides


def help_text() -> str:
    """The full help: usage and every distillation setting with its default and meaning."""
    from .demo import DEFAULTS

    demo = " ".join(f"{k}={v}" for k, v in DEFAULTS.items())
    return USAGE.replace("{demo}", demo) + "\n".join(f"  {line}" for line in TSDConfig.help_lines(PREFIX)) + "\n"


def default_cfg_file() -> Path:
    """The default settings file shipped inside the package (the repository's ``cfg/tsd.yaml``)."""
    return Path(str(resources.files("yolo_tsd.cfg").joinpath("tsd.yaml")))


def explain_args(overrides: dict[str, Any]) -> dict[str, Any]:
    """Check ``explain``'s keys (``tsd_*`` settings are folded into ``tsd``) and return its keyword arguments."""
    from .visualize import explain

    accepted = list(inspect.signature(explain).parameters)
    singles = {k[len(PREFIX) :]: v for k, v in overrides.items() if k.startswith(PREFIX)}
    args = {k: v for k, v in overrides.items() if not k.startswith(PREFIX)}
    unknown = [k for k in args if k not in accepted]
    if unknown:
        hints = "; ".join(f"'{k}'{did_you_mean(k, accepted)}" for k in unknown)
        raise UsageError(f"explain does not take {hints}; it takes {', '.join(accepted)} and {PREFIX}<setting>=")
    missing = [k for k in ("teacher", "model", "source") if k not in args]
    if missing:
        raise UsageError(f"explain needs {', '.join(f'{k}=' for k in missing)} (see 'yolo-tsd help')")
    if singles:
        args["tsd"] = TSDConfig.load(args.get("tsd"), singles)
    return args


def main(argv: list[str] | None = None) -> Any:
    """Run a command; a refused input raises ``UsageError`` (``entrypoint`` turns it into one line and status 2)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from .bench import main as bench

        return bench(argv[1:])
    command, overrides = parse(argv)
    if command == "help":
        print(help_text())
        return None
    if command == "copy-cfg":
        target = Path.cwd() / "tsd_copy.yaml"
        shutil.copyfile(default_cfg_file(), target)
        print(f"{target} written: edit it and pass tsd={target.name}")
        return target
    if command == "demo":
        from .demo import run_demo

        return run_demo(**overrides)
    if command == "explain":
        from .visualize import explain

        paths = explain(**explain_args(overrides))
        print("\n".join(str(p) for p in paths))
        return paths
    from .trainer import TSDTrainer

    trainer = TSDTrainer(overrides=overrides)
    trainer.train()
    return trainer


def entrypoint(argv: list[str] | None = None) -> int:
    """The console command: ``main()``, with a refused input printed as one line and exit status 2."""
    try:
        main(argv)
    except UsageError as e:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        message = " ".join(str(e).split())  # one line, whatever the message's own line breaks
        print(f"yolo-tsd: error: {message} (set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(entrypoint())
