"""What an NMS-free (YOLO26) student does with its one-to-one head: its own mAP and how often it fires twice."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xyxy box in ``a`` (N, 4) with every box in ``b`` (M, 4) -> (N, M)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def duplicates(weights: str | Path, data: str | Path, imgsz: int, conf: float = 0.25, iou: float = 0.5) -> dict:
    """Per validation object, the one-to-one detections of its class above ``conf`` that overlap it by ``iou``.

    Returns:
        (dict): ``dup_per_object`` (mean detections beyond the first) and ``fired_per_object`` (mean detections).
    """
    from ..ultralytics_internals import load_model, set_end2end

    model = set_end2end(load_model(weights).float().eval())  # the NMS-free head
    images = sorted((Path(data).parent / "images" / "val").iterdir())
    counts = []
    for path in images:
        img = cv2.imread(str(path))[..., ::-1]
        h, w = img.shape[:2]
        x = torch.from_numpy(cv2.resize(img, (imgsz, imgsz)).copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            out = model(x)
        out = (out[0] if isinstance(out, (tuple, list)) else out)[0].numpy()
        dets = out[out[:, 4] > conf]
        label = path.parent.parent.parent / "labels" / "val" / f"{path.stem}.txt"
        rows = np.loadtxt(label, ndmin=2) if label.is_file() else np.zeros((0, 5))
        for cls, xc, yc, bw, bh in rows:
            gt = np.array([[xc - bw / 2, yc - bh / 2, xc + bw / 2, yc + bh / 2]]) * imgsz
            same = dets[dets[:, 5] == cls]
            counts.append(int((iou_matrix(gt, same[:, :4]) > iou).sum()) if len(same) else 0)
    counts = np.array(counts or [0])
    return {"dup_per_object": float(np.clip(counts - 1, 0, None).mean()), "fired_per_object": float(counts.mean())}


def one2one_stats(weights: str | Path, data: str | Path, imgsz: int) -> dict:
    """NMS-free mAP50-95 (Ultralytics' validator with ``nms=False``) and the duplicate counts of ``duplicates``."""
    from ultralytics import YOLO

    metrics = YOLO(str(weights)).val(data=str(data), imgsz=imgsz, nms=False, plots=False, device="cpu", verbose=False)
    return {"o2o_mAP50-95": float(metrics.box.map), **duplicates(weights, data, imgsz)}
