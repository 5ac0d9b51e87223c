"""Offline-first input checks: find files without downloading, and refuse what would download or fail later, at once.

Every check runs before Ultralytics creates a run folder and raises a ``UsageError`` that names the problem and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ultralytics.utils import DEFAULT_CFG_DICT, YAML

from .errors import MissingFileError, UsageError, did_you_mean
from .ultralytics_internals import dataset_root, image_files, weights_dir

ASSETS_HINT = "https://github.com/ultralytics/assets/releases"
OUR_KEYS = ("teacher", "tsd", "unlabeled")  # besides tsd_<setting>


def resolve_weights(name: str | Path, role: str) -> Path:
    """Return the local file for ``name``; never download.

    Ultralytics would try to download a missing ``yolov8x.pt`` (with retries); offline that hangs for minutes. We look
    in the given path and Ultralytics' ``weights_dir`` only, and fail at once with where the file must be.

    Args:
        name (str | Path): Path or file name of a ``.pt`` checkpoint.
        role (str): The argument it came from (``teacher`` or ``model``), for the message.

    Returns:
        (Path): An existing file.

    Raises:
        UsageError: For a model YAML given as a teacher (it has no trained weights).
        MissingFileError: If the file is on neither place.
    """
    path = Path(name).expanduser()
    if role == "teacher" and path.suffix in {".yaml", ".yml"}:
        raise UsageError(
            f"teacher={name} is a model definition, not a trained model: a teacher must be a trained Ultralytics "
            "checkpoint (.pt), e.g. runs/detect/train/weights/best.pt. Train one first: yolo train model=... data=..."
        )
    for candidate in (path, weights_dir() / path.name):
        if candidate.is_file():
            return candidate
    raise MissingFileError(
        f"{role}={name}: no such file at {path.resolve()} (nor in Ultralytics' weights_dir {weights_dir()}). "
        f"yolo_tsd never downloads weights. Fetch '{path.name}' on a machine with internet (e.g. from {ASSETS_HINT}) "
        f"or train one, then pass {role}=/path/to/{path.name}."
    )


def check_keys(overrides: dict[str, Any], extra: tuple[str, ...] = ()) -> None:
    """Refuse an argument that neither Ultralytics nor yolo_tsd knows, with the closest valid spelling.

    Args:
        overrides (dict): The arguments, ``tsd_*`` settings already removed.
        extra (tuple): Further keys accepted besides Ultralytics' and ``teacher``/``tsd``.

    Raises:
        UsageError: Naming every unknown key.
    """
    valid = [*DEFAULT_CFG_DICT, *OUR_KEYS, *extra, "augmentations", "save_dir"]
    unknown = [k for k in overrides if k not in valid]
    if unknown:
        hints = "; ".join(f"'{k}'{did_you_mean(k, valid)}" for k in unknown)
        raise UsageError(
            f"unknown argument {hints}. Every 'yolo train' argument is accepted, plus teacher=, tsd= and "
            "tsd_<setting>= (see 'yolo-tsd help')."
        )


def check_data(data: str | Path | None) -> None:
    """Refuse a missing data yaml, or one whose images are absent (and would be downloaded), before any run folder.

    Args:
        data (str | Path | None): The ``data=`` argument.

    Raises:
        UsageError: No ``data=``, or a yaml that lists no ``train:``/``val:`` or whose images are not on disk.
        MissingFileError: The yaml itself is missing.
    """
    if not data:
        raise UsageError("data= is required: pass data=path/to/data.yaml (your dataset in Ultralytics' YOLO format)")
    if not str(data).endswith((".yaml", ".yml")):
        return  # classification folders, zips, URLs: Ultralytics' own handling
    yaml_file = Path(data).expanduser()
    if not yaml_file.is_file():
        raise MissingFileError(
            f"data={data}: no such dataset yaml at {yaml_file.resolve()}; pass data=path/to/data.yaml"
        )
    spec = YAML.load(yaml_file)
    if not isinstance(spec, dict) or not spec.get("train") or not spec.get("val"):
        raise UsageError(f"data={data} must list train: and val: image folders (Ultralytics' dataset yaml format)")
    root = dataset_root(spec, yaml_file)
    for split in ("train", "val"):
        entries = spec[split] if isinstance(spec[split], list) else [spec[split]]
        for entry in entries:
            if (root / entry).exists() or (str(entry).startswith("../") and (root / entry[3:]).exists()):
                continue
            if spec.get("download"):
                raise UsageError(
                    f"data={data}: the images are not on disk ({root / entry}) and Ultralytics would download them. "
                    f"yolo_tsd does not download: fetch the dataset where you have internet, put it under {root}, "
                    "or point path: in the yaml at your copy."
                )
            raise UsageError(
                f"data={data}: {split}: images not found at {root / entry}. Fix path: (now {spec.get('path')!r}) or "
                f"{split}: in the yaml so that they point at your images."
            )


def unlabeled_source(given: Any, data: str | Path | None) -> list[str] | None:
    """Where the unlabeled images are, as absolute paths; None when nothing names a pool.

    ``unlabeled=`` (relative to the current folder), else the data yaml's ``unlabeled:`` key (relative to the dataset's
    root, as ``train:`` is).
    """
    if given:
        return [str(Path(p).expanduser().resolve()) for p in (given if isinstance(given, (list, tuple)) else [given])]
    if not data or not str(data).endswith((".yaml", ".yml")) or not Path(data).is_file():
        return None
    spec = YAML.load(Path(data))
    entries = spec.get("unlabeled") if isinstance(spec, dict) else None
    if not entries:
        return None
    root = dataset_root(spec, Path(data))
    return [str((root / p).resolve()) for p in (entries if isinstance(entries, list) else [entries])]


def check_unlabeled(source: list[str], teacher: Any) -> list[str]:
    """The pool's image files, or a refusal naming the problem: a path that does not exist, no images, no teacher.

    Args:
        source (list[str]): The pool's folders, ``.txt`` lists or images (``unlabeled_source``).
        teacher (Any): The ``teacher=`` argument.

    Raises:
        UsageError: Without a teacher, with a missing path or without any image.
    """
    if not teacher:
        raise UsageError(
            f"unlabeled={source[0] if len(source) == 1 else source} needs teacher=path/to/teacher.pt: without a "
            "teacher nothing can be learned from images without labels"
        )
    missing = [p for p in source if not Path(p).exists()]
    if missing:
        raise MissingFileError(f"unlabeled={missing[0]}: no such folder, list or image; pass unlabeled=path/to/images")
    files = image_files(source)
    if not files:
        raise UsageError(
            f"unlabeled={source[0] if len(source) == 1 else source}: no images found (folders are searched "
            "recursively; a .txt file lists one image path a line)"
        )
    return files
