"""A diagnostic for distilled students: does a detector's score rank its own boxes by how well they fit.

YOLOv8 trains each class score toward the IoU of the model's own box (the task-aligned target), and NMS and mAP at
high IoU thresholds rely on that ranking. A distilled student can lose some of it (measured in fine-tuning: stronger
terms raised mAP50 and lowered mAP50-95, with more boxes per object left after NMS). ``score_ranking`` measures it on
a dataset's validation split: AP at IoU 0.5 / 0.75 / 0.9, and over the detections that overlap an object of their
class by IoU >= 0.5, the rank correlation of score and IoU.

    python -m yolo_tsd.bench ranking project=PATH     # every finished run of a benchmark folder
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two 1-D arrays (ties ranked by order; NaN for fewer than 2 values)."""
    if len(a) < 2:
        return float("nan")
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def matched_pairs(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, gt_boxes: np.ndarray, gt_classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(score, IoU) of each detection whose best IoU with an object of its own class is >= 0.5.

    Args:
        boxes (np.ndarray): (N, 4) detected xyxy boxes.
        scores (np.ndarray): (N,) their scores.
        classes (np.ndarray): (N,) their classes.
        gt_boxes (np.ndarray): (M, 4) objects' xyxy boxes, in the same units.
        gt_classes (np.ndarray): (M,) their classes.
    """
    from .one2one import iou_matrix

    if not len(boxes) or not len(gt_boxes):
        return np.zeros(0), np.zeros(0)
    iou = iou_matrix(boxes, gt_boxes) * (classes[:, None] == gt_classes[None, :])
    best = iou.max(1)
    keep = best >= 0.5
    return scores[keep], best[keep]


def score_ranking(weights: str | Path, data: str | Path, imgsz: int, device: str = "cpu") -> dict[str, float]:
    """AP at three IoU thresholds and the score-IoU rank correlation of ``weights`` on ``data``'s validation split.

    Predictions use Ultralytics' validation settings (conf 0.001, NMS IoU 0.7), so the detections are those mAP counts;
    the validation split is read as Ultralytics reads a source (a folder, a ``.txt`` list of images, or a list).

    Returns:
        (dict): ``AP50``, ``AP75``, ``AP90``, ``score_iou_rank`` and ``matched_per_object`` (detections overlapping an
        object by >= 0.5, per object: above 1 means duplicates survive NMS).
    """
    from ultralytics import YOLO

    from ..ultralytics_internals import label_file, split_source

    model = YOLO(str(weights))
    metrics = model.val(data=str(data), imgsz=imgsz, plots=False, device=device, verbose=False, save_json=False)
    ap = metrics.box.all_ap.mean(0)  # per IoU threshold 0.5, 0.55, ..., 0.95
    val = split_source(data)
    scores, ious, objects = [], [], 0
    for res in model.predict(val, imgsz=imgsz, conf=0.001, iou=0.7, device=device, stream=True, verbose=False):
        label = label_file(res.path)
        rows = np.loadtxt(label, ndmin=2) if label.is_file() and label.stat().st_size else np.zeros((0, 5))
        h, w = res.orig_shape
        xc, yc, bw, bh = (rows[:, i] for i in range(1, 5))
        gt = np.stack([(xc - bw / 2) * w, (yc - bh / 2) * h, (xc + bw / 2) * w, (yc + bh / 2) * h], 1)
        det = res.boxes
        s, i = matched_pairs(det.xyxy.numpy(), det.conf.numpy(), det.cls.numpy(), gt, rows[:, 0])
        scores.append(s)
        ious.append(i)
        objects += len(rows)
    s, i = np.concatenate(scores or [np.zeros(0)]), np.concatenate(ious or [np.zeros(0)])
    return {
        "AP50": float(ap[0]),
        "AP75": float(ap[5]),
        "AP90": float(ap[8]),
        "score_iou_rank": rank_correlation(s, i),
        "matched_per_object": len(s) / max(objects, 1),
    }
