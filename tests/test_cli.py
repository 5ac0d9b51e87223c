"""CLI parsing, help, and every refusal before training starts (fast, clear, no run folder left behind)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import build_model, save_checkpoint
from ultralytics.nn.tasks import ClassificationModel

from yolo_tsd import TSDTrainer
from yolo_tsd.cli import help_text, parse
from yolo_tsd.config import TSDConfig

ROOT = Path(__file__).resolve().parents[1]


def test_parse_keys_commands_and_bare_booleans():
    assert parse(["model=yolov8n.yaml", "teacher=t.pt", "epochs=3", "tsd_split=binary"]) == (
        "train",
        {"model": "yolov8n.yaml", "teacher": "t.pt", "epochs": 3, "tsd_split": "binary"},
    )
    assert parse(["demo", "epochs=2"]) == ("demo", {"epochs": 2})
    assert parse(["help"])[0] == "help"
    assert parse(["resume=last.pt"])[1] == {"resume": "last.pt"}
    assert parse(["resume"])[1] == {"resume": True}
    with pytest.raises(SyntaxError, match="'bogus' is not a command"):
        parse(["bogus"])


def test_help_lists_every_setting_and_the_contract():
    text = help_text()
    for name in TSDConfig().to_dict():
        assert f"  {name}: " in text, name
    for word in ("teacher=", "tsd=", "demo", "resume=", "distill_model"):
        assert word in text
    out = subprocess.run([sys.executable, "train.py", "help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "lambda_feat" in out.stdout


def refuse(tmp_path, match, **overrides):
    """Assert that the trainer refuses these arguments fast, with ``match`` in the message, leaving no run folder."""
    project = tmp_path / "runs"
    args = {"model": "yolov8n.yaml", "epochs": 1, "imgsz": 64, "device": "cpu", "project": str(project), **overrides}
    t0 = time.time()
    with pytest.raises((ValueError, FileNotFoundError, TypeError, SyntaxError)) as e:
        TSDTrainer(overrides=args)
    assert time.time() - t0 < 30
    assert e.match(match), str(e.value)
    assert not project.exists() or not any(project.iterdir()), list(project.rglob("*"))
    return str(e.value)


def test_offline_teacher_name_fails_fast_with_where_to_put_it(tmp_path, data_yaml):
    msg = refuse(tmp_path, r"teacher=yolov8x\.pt: no such file", teacher="yolov8x.pt", data=str(data_yaml))
    assert "never downloads" in msg and "teacher=/path/to/yolov8x.pt" in msg


def test_offline_student_weights_fail_fast(tmp_path, data_yaml, teacher_pt):
    refuse(
        tmp_path, r"model=yolov8n\.pt: no such file", model="yolov8n.pt", teacher=str(teacher_pt), data=str(data_yaml)
    )


def test_missing_teacher_argument(tmp_path, data_yaml):
    refuse(tmp_path, "teacher= is required", data=str(data_yaml))


def test_builtin_distillation_cannot_be_combined(tmp_path, data_yaml, teacher_pt):
    refuse(tmp_path, "never both", teacher=str(teacher_pt), distill_model=str(teacher_pt), data=str(data_yaml))
    refuse(tmp_path, "never both", teacher=str(teacher_pt), dis=2.0, data=str(data_yaml))


def test_bad_settings(tmp_path, data_yaml, teacher_pt):
    refuse(tmp_path, "Unknown TSD setting.*lambda_fet", teacher=str(teacher_pt), tsd_lambda_fet=1, data=str(data_yaml))
    refuse(tmp_path, "w_low=-1.*out of range", teacher=str(teacher_pt), tsd_w_low=-1, data=str(data_yaml))
    refuse(tmp_path, "settings file", teacher=str(teacher_pt), tsd=str(tmp_path / "no.yaml"), data=str(data_yaml))


def test_unknown_ultralytics_key(tmp_path, data_yaml, teacher_pt):
    refuse(tmp_path, "epochz", teacher=str(teacher_pt), epochz=3, data=str(data_yaml))


def test_corrupt_and_non_detection_teachers(tmp_path, data_yaml):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    refuse(tmp_path, "could not be loaded as an Ultralytics checkpoint", teacher=str(junk), data=str(data_yaml))
    cls = ClassificationModel("yolov8n-cls.yaml", nc=5, verbose=False)
    cls_pt = tmp_path / "cls.pt"
    torch.save({"ema": cls, "train_args": {}}, cls_pt)
    refuse(tmp_path, "not a detection model", teacher=str(cls_pt), data=str(data_yaml))


def test_teacher_with_other_classes_lists_both(tmp_path, data_yaml):
    other = save_checkpoint(build_model("yolov8n.yaml", nc=3), tmp_path / "three.pt")
    msg = refuse(tmp_path, "different classes", teacher=str(other), data=str(data_yaml))
    assert "teacher 3" in msg and "data 5" in msg and "ellipse" in msg


def test_teacher_with_other_head_levels(tmp_path, data_yaml):
    p2 = save_checkpoint(build_model("yolov8n-p2.yaml"), tmp_path / "p2.pt")
    trainer = TSDTrainer(
        overrides={
            "model": "yolov8n.yaml",
            "data": str(data_yaml),
            "teacher": str(p2),
            "epochs": 1,
            "imgsz": 64,
            "device": "cpu",
            "project": str(tmp_path / "runs"),
            "plots": False,
        }
    )
    with pytest.raises(ValueError, match=r"different head levels: teacher strides \[4.0, 8.0, 16.0, 32.0\]"):
        trainer.train()
    assert not trainer.save_dir.exists()


def test_missing_data_yaml(tmp_path, teacher_pt):
    refuse(tmp_path, "missing.yaml", teacher=str(teacher_pt), data=str(tmp_path / "missing.yaml"))
