"""The ``yolo-tsd`` command, in Ultralytics' ``key=value`` style (also ``python -m yolo_tsd`` and ``python train.py``).

Training, ``explain``, ``copy-cfg`` and ``help`` are the product's own. ``demo`` and ``bench`` come from the lab
(``yolo_tsd.bench``), which registers them as entry points of the group ``yolo_tsd.commands`` in ``pyproject.toml``:
the product finds them by that name and never imports the lab. A refused input ends with one line naming the problem
and the fix, and exit status 2; ``TSD_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
from collections.abc import Callable
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from ultralytics.utils import DEFAULT_CFG_DICT

from .config import METHOD, PREFIX, USER, TSDConfig
from .errors import UsageError, did_you_mean
from .ultralytics_internals import cli_pairs, cli_value

OWN_COMMANDS = ("train", "explain", "copy-cfg", "help")
PLUGIN_GROUP = "yolo_tsd.commands"  # entry points: name -> a function taking the command's remaining argv
DEBUG_ENV = "TSD_DEBUG"

USAGE = f"""yolo_tsd: task-significance distillation for Ultralytics YOLO

Usage (yolo-tsd, python -m yolo_tsd and python train.py are the same command):
  yolo-tsd model=yolov8n.yaml teacher=path/to/teacher.pt data=my.yaml epochs=100 imgsz=640 batch=16 device=0
  yolo-tsd resume=path/to/last.pt                            # continue an interrupted distillation run
  yolo-tsd explain teacher=t.pt model=best.pt source=img.jpg [imgsz=640 tsd=... out=runs/tsd_explain]
                                                             # significance pictures for any image
  yolo-tsd copy-cfg                                          # write the default settings to ./tsd_copy.yaml
  yolo-tsd demo [help | key=value ...]                       # the embedded demo: student alone vs distilled
  yolo-tsd bench [help | key=value ...]                      # the benchmark (python -m yolo_tsd.bench)
  yolo-tsd help [method]

Arguments:
  teacher=PATH        frozen Ultralytics detection checkpoint (.pt), same classes and head levels as the student;
                      never downloaded: a name such as yolov8x.pt must exist on disk
  tsd=PATH            distillation settings YAML, relative to the current folder (default: the built-in defaults,
                      identical to the file copy-cfg writes)
  unlabeled=PATH      images without labels (folder, .txt list or list; or unlabeled: in the data yaml), distilled
                      against the teacher's confident detections (docs/method.md section 9; not yet benchmarked)
  {PREFIX}<setting>=V      override one setting, e.g. {PREFIX}lambda_feat=2.0
  every other key     passed unchanged to Ultralytics' trainer, exactly as with `yolo train`
                      (model, data, epochs, imgsz, batch, device, amp, close_mosaic, resume, ...);
                      Ultralytics' own distill_model=/dis= cannot be combined with teacher=

Settings (as {PREFIX}<setting>=value; in a tsd= file without the prefix):
"""
METHOD_NOTE = (
    "\nThe method's constants and ablation switches are set the same way; they are for studying the method, not for "
    "tuning a run: 'yolo-tsd help method' lists them, docs/method.md explains them.\n"
)


def plugins() -> dict[str, metadata.EntryPoint]:
    """The commands other parts of the installed package register (the lab's ``demo`` and ``bench``)."""
    return {ep.name: ep for ep in metadata.entry_points(group=PLUGIN_GROUP)}


def commands() -> tuple[str, ...]:
    """Every command name: the product's own, then the registered ones."""
    return (*OWN_COMMANDS, *plugins())


def parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Split ``argv`` into a command and ``key=value`` overrides.

    Bare Ultralytics boolean keys (e.g. ``resume``) mean ``key=True``, as in the ``yolo`` command.

    Raises:
        UsageError: For a positional word that is neither a command nor a boolean key.
    """
    command, overrides, known = "train", {}, commands()
    for arg in cli_pairs(argv):
        if "=" in arg:
            key, value = cli_value(arg)
            overrides[key] = value
        elif arg in {"help", "-h", "--help"}:
            command = "help"
        elif arg in known:
            command = arg
        elif isinstance(DEFAULT_CFG_DICT.get(arg), bool):
            overrides[arg] = True
        else:
            raise UsageError(
                f"'{arg}' is not a command ({', '.join(known)}) nor a key=value pair{did_you_mean(arg, known)}. "
                "See 'yolo-tsd help'."
            )
    return command, overrides


def help_text(tier: str = USER) -> str:
    """The help: usage and the user's settings, or (``tier=METHOD``) the method's settings."""
    lines = "\n".join(f"  {line}" for line in TSDConfig.help_lines(PREFIX, tier)) + "\n"
    if tier == METHOD:
        return "The method's constants and ablation switches (docs/method.md), as tsd_<setting>=value:\n" + lines
    return USAGE + lines + METHOD_NOTE


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


def plugin(name: str) -> Callable[[list[str]], Any]:
    """The registered command ``name``, loaded."""
    found = plugins().get(name)
    if found is None:
        raise UsageError(
            f"'{name}' is registered when the package is installed (pip install -e . in the repository): "
            "it is not installed here"
        )
    return found.load()


def main(argv: list[str] | None = None) -> Any:
    """Run a command; a refused input raises ``UsageError`` (``entrypoint`` turns it into one line and status 2)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] not in OWN_COMMANDS and argv[0] in plugins():
        return plugin(argv[0])(argv[1:])
    if argv[:2] == ["help", "method"]:
        print(help_text(METHOD))
        return None
    command, overrides = parse(argv)
    if command == "help":
        print(help_text())
        return None
    if command == "copy-cfg":
        target = Path.cwd() / "tsd_copy.yaml"
        shutil.copyfile(default_cfg_file(), target)
        print(f"{target} written: edit it and pass tsd={target.name}")
        return target
    if command == "explain":
        from .visualize import explain

        paths = explain(**explain_args(overrides))
        print("\n".join(str(p) for p in paths))
        return paths
    from .training.trainer import TSDTrainer

    trainer = TSDTrainer(overrides=overrides)
    trainer.train()
    return trainer


def entrypoint(argv: list[str] | None = None) -> int:
    """The console command: ``main()``, with a refused input printed as one line and exit status 2."""
    return exit_status(lambda: main(argv))


def exit_status(command: Callable[[], Any]) -> int:
    """Run ``command``: 0, or 2 with a refused input printed as one line (the traceback with ``TSD_DEBUG=1``)."""
    try:
        command()
    except UsageError as e:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        message = " ".join(str(e).split())  # one line, whatever the message's own line breaks
        print(f"yolo-tsd: error: {message} (set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(entrypoint())
