"""The README's main command at toy scale: data, teacher, both students, the table."""

import yaml

from yolo_tsd.bench.data import CLASSES, make_dataset
from yolo_tsd.cli import main


def test_dataset_is_deterministic_and_complete(tmp_path):
    a = make_dataset(tmp_path / "a", n_train=6, n_val=3, imgsz=64, seed=3)
    b = make_dataset(tmp_path / "b", n_train=6, n_val=3, imgsz=64, seed=3)
    spec = yaml.safe_load(a.read_text())
    assert spec["names"] == dict(enumerate(CLASSES)) and spec["train"] == "images/train"
    for split, n in (("train", 6), ("val", 3)):
        files = sorted((a.parent / "images" / split).iterdir())
        assert len(files) == n
        for f in files:
            assert f.read_bytes() == (b.parent / "images" / split / f.name).read_bytes()
            labels = (a.parent / "labels" / split / f.with_suffix(".txt").name).read_text().split("\n")
            rows = [list(map(float, line.split())) for line in labels if line]
            assert rows and all(0 <= r[0] < len(CLASSES) and all(0 < v <= 1 for v in r[1:]) for r in rows)
    assert not list(tmp_path.rglob("*.partial"))


def test_demo_command_trains_teacher_and_both_students(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_TSD_CACHE", str(tmp_path / "cache"))
    args = ["demo", "epochs=1", "teacher_epochs=1", "imgsz=64", "n_train=16", "n_val=8", f"project={tmp_path / 'runs'}"]
    rows = main(args)
    assert [r["variant"] for r in rows] == ["student alone", "student + TSD"]
    assert all(0 <= r["mAP50-95"] <= 1 and r["s/epoch"] > 0 for r in rows)
    table = (tmp_path / "runs" / "demo_results.md").read_text()
    assert "| student + TSD |" in table and "mAP50-95" in table
    assert len(list((tmp_path / "cache" / "teachers").glob("*.pt"))) == 1  # cached for the next demo
