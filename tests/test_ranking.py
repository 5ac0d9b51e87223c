"""The score-ranking diagnostic: how well a detector's scores order its own boxes by their fit."""

import json
import math

import numpy as np
import pytest

from yolo_tsd.bench.cli import main as bench_main
from yolo_tsd.bench.ranking import matched_pairs, rank_correlation
from yolo_tsd.errors import UsageError


def test_rank_correlation_of_ordered_reversed_and_too_few_values():
    iou = np.array([0.55, 0.7, 0.8, 0.95])
    assert rank_correlation(iou * 0.9, iou) == pytest.approx(1.0)  # scores that rank boxes by their fit
    assert rank_correlation(1 - iou, iou) == pytest.approx(-1.0)  # scores that rank them backwards
    assert math.isnan(rank_correlation(iou[:1], iou[:1]))


def test_matched_pairs_keep_detections_on_an_object_of_their_own_class():
    gt, gt_cls = np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([1])
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 6], [0, 0, 10, 10], [0, 0, 10, 3]], dtype=float)
    scores, classes = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 0, 1])
    s, iou = matched_pairs(boxes, scores, classes, gt, gt_cls)
    assert s.tolist() == [0.9, 0.8] and iou == pytest.approx([1.0, 0.6])  # wrong class and IoU 0.3 left out
    assert matched_pairs(boxes[:0], scores[:0], classes[:0], gt, gt_cls)[0].size == 0


def test_ranking_command_reads_every_finished_run(run, tmp_path):
    """``bench ranking`` validates each finished run's best.pt on its own data and writes ranking.md."""
    with pytest.raises(UsageError, match="project=PATH"):
        bench_main(["ranking", f"project={tmp_path}"])
    (tmp_path / "runs").mkdir()
    job = {"train": {"data": str(run.args.data), "imgsz": 64}}
    result = {"variant": "tsd", "seed": 0, "save_dir": str(run.save_dir), "job": job}
    (tmp_path / "runs" / "tsd-s0.json").write_text(json.dumps(result))
    bench_main(["ranking", f"project={tmp_path}"])
    table = (tmp_path / "ranking.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| tsd |"))
    values = [float(v) for v in row.split("|")[3:8]]
    assert all(0 <= v <= 1 for v in values[:3]) and values[4] >= 0  # AP50, AP75, AP90; matched per object
    (tmp_path / "runs" / "tsd-s1.json").write_text(
        json.dumps({**result, "seed": 1, "save_dir": str(tmp_path / "gone")})
    )
    with pytest.raises(UsageError, match="weights .* are gone"):
        bench_main(["ranking", f"project={tmp_path}"])
