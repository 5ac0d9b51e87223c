"""The baseline users run today for images without labels: the teacher labels them, the student trains on both.

``pseudo_dataset`` writes the pool's images with the teacher's detections as YOLO labels (Ultralytics' own
``predict`` at ``PSEUDO_CONF``, or the benchmark's ``pseudo_conf=``), and a data yaml whose training split is the
labeled images plus those; plain Ultralytics then trains on it (``pseudo``), or this method does (``tsd_pseudo``).
Written once per pool, teacher and confidence.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import yaml

PSEUDO_CONF = 0.25  # Ultralytics predict's default: the teacher's boxes at least this confident (after NMS) are labels


def file_digest(path: Path) -> str:
    """First 10 hex digits of a file's SHA-1: a pseudo-labeled set belongs to the exact teacher that labeled it."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:10]


def pseudo_dataset(
    data: str | Path,
    pool: str | Path,
    teacher: str | Path,
    root: Path,
    imgsz: int,
    device: str = "cpu",
    conf: float = PSEUDO_CONF,
) -> Path:
    """A data yaml: ``data``'s classes and validation split, its training images plus ``pool`` labeled by ``teacher``.

    Args:
        data (str | Path): The labeled dataset's yaml.
        pool (str | Path): Folder of unlabeled images.
        teacher (str | Path): The teacher checkpoint that labels them.
        root (Path): Where the pseudo-labeled set is written (a sub-folder named after pool, teacher and confidence).
        imgsz (int): Inference size (the training size).
        device (str): Where the teacher predicts.
        conf (float): The least confidence of a detection kept as a label.
    """
    from ultralytics import YOLO

    from ..ultralytics_internals import split_source
    from .data import build_folder

    pool, teacher = Path(pool), Path(teacher)
    folder = root / f"pseudo-{pool.parent.name}-{file_digest(teacher)}-c{conf}"
    data_yaml = folder / "data.yaml"
    if data_yaml.is_file():  # written last: its presence means the set is complete
        return data_yaml

    def fill(tmp: Path) -> int:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        boxes = 0
        predict = YOLO(str(teacher)).predict
        for r in predict(str(pool), imgsz=imgsz, conf=conf, device=device, stream=True, verbose=False):
            name = Path(r.path)
            shutil.copyfile(name, tmp / "images" / name.name)  # a copy: Ultralytics finds labels by the image's path
            found = zip(r.boxes.cls.tolist(), r.boxes.xywhn.tolist())
            rows = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, (x, y, w, h) in found]
            boxes += len(rows)
            (tmp / "labels" / f"{name.stem}.txt").write_text("".join(f"{row}\n" for row in rows))
        return boxes

    boxes = build_folder(folder, fill)
    spec = yaml.safe_load(Path(data).read_text())
    train = split_source(data, "train")
    spec = {
        "path": str(folder.resolve()),
        # the pseudo-labeled images first: Ultralytics caches a split's labels beside its first label folder, so the
        # labeled dataset's own cache is left alone
        "train": [str((folder / "images").resolve()), *(train if isinstance(train, list) else [train])],
        "val": split_source(data, "val"),
        "names": spec["names"],
        "pseudo_boxes": boxes,
    }
    data_yaml.write_text(yaml.safe_dump(spec, sort_keys=False))
    return data_yaml
