"""Offline-first input checks: find files without downloading, and refuse what would download, at once."""

from __future__ import annotations

from pathlib import Path

from ultralytics.utils import DATASETS_DIR, SETTINGS, YAML
from ultralytics.utils.checks import check_file

ASSETS_HINT = "https://github.com/ultralytics/assets/releases"


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
        FileNotFoundError: If the file is on neither place.
    """
    path = Path(name).expanduser()
    for candidate in (path, Path(SETTINGS["weights_dir"]) / path.name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{role}={name}: no such file at {path.resolve()} (nor in Ultralytics' weights_dir {SETTINGS['weights_dir']}). "
        f"yolo_tsd never downloads weights. Fetch '{path.name}' on a machine with internet (e.g. from {ASSETS_HINT}) "
        f"or train one, then pass {role}=/path/to/{path.name}."
    )


def check_data(data: str | Path) -> None:
    """Refuse a missing data yaml, or one whose images are absent and would be downloaded, before any run folder exists.

    Args:
        data (str | Path): The ``data=`` argument (a path or a dataset yaml name that Ultralytics ships).

    Raises:
        FileNotFoundError: With the path and the fix.
    """
    if not str(data).endswith((".yaml", ".yml")):
        return  # classification folders, zips, URLs: Ultralytics' own handling
    try:
        yaml_file = Path(check_file(str(data)))
    except Exception as e:
        raise FileNotFoundError(f"data={data}: no such dataset yaml. Pass data=path/to/data.yaml ({e})") from e
    spec = YAML.load(yaml_file)
    root = Path(spec.get("path") or yaml_file.parent)
    if not root.exists() and not root.is_absolute():
        root = (DATASETS_DIR / root).resolve()  # where Ultralytics looks, as in check_det_dataset
    val = [spec.get("val")] if isinstance(spec.get("val"), str) else spec.get("val") or []
    missing = [str(root / v) for v in val if not (root / v).exists() and not Path(v).exists()]
    if missing and spec.get("download"):
        raise FileNotFoundError(
            f"data={data}: the images are not on disk ({missing[0]}) and Ultralytics would download them. "
            f"yolo_tsd does not download: fetch the dataset where you have internet, put it under {root}, "
            "or point path: in the yaml at your copy."
        )
