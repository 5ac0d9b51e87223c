"""The command line: parsing, help, the installed command, and every refusal (one line, exit 2, no run folder)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import build_model, save_checkpoint
from ultralytics.nn.tasks import ClassificationModel

from yolo_tsd.cli import default_cfg_file, entrypoint, help_text, parse
from yolo_tsd.config import PREFIX, TSDConfig, default_yaml
from yolo_tsd.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


def test_parse_keys_commands_and_bare_booleans():
    assert parse(["model=yolov8n.yaml", "teacher=t.pt", "epochs=3", "tsd_split=binary"]) == (
        "train",
        {"model": "yolov8n.yaml", "teacher": "t.pt", "epochs": 3, "tsd_split": "binary"},
    )
    assert parse(["demo", "epochs=2"]) == ("demo", {"epochs": 2})
    assert parse(["help"])[0] == "help" and parse(["copy-cfg"])[0] == "copy-cfg"
    assert parse(["resume=last.pt"])[1] == {"resume": "last.pt"}
    assert parse(["resume"])[1] == {"resume": True}
    with pytest.raises(UsageError, match="'bogus' is not a command"):
        parse(["bogus"])
    with pytest.raises(UsageError, match="did you mean 'demo'"):
        parse(["dmo"])


def test_help_lists_the_users_settings_and_help_method_the_methods():
    from yolo_tsd.config import METHOD, USER

    text = help_text()
    for name in TSDConfig.names(USER):
        assert text.count(f"  {PREFIX}{name}: ") == 1, name
    assert not any(f"  {PREFIX}{name}: " in text for name in TSDConfig.names(METHOD))  # not in the user's view
    for word in (
        "teacher=",
        "tsd=",
        "demo",
        "bench",
        "resume=",
        "distill_model",
        "copy-cfg",
        "yolo-tsd",
        "help method",
    ):
        assert word in text, word
    method = help_text(METHOD)
    assert all(f"  {PREFIX}{name}: " in method for name in TSDConfig.names(METHOD))


def test_the_lab_commands_are_found_through_their_entry_points_and_the_product_never_names_the_lab(capsys):
    from yolo_tsd.cli import plugins

    assert {"demo", "bench"} <= set(plugins())
    assert plugins()["bench"].value.startswith("yolo_tsd.bench.") and plugins()["demo"].value.startswith("yolo_tsd.")
    assert entrypoint(["demo", "help"]) == 0 and "teacher_epochs=" in capsys.readouterr().out
    assert entrypoint(["bench", "help"]) == 0 and "regime=" in capsys.readouterr().out
    assert entrypoint(["help", "method"]) == 0 and f"{PREFIX}key_thresh" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "train.py", "help"],
        [sys.executable, "-m", "yolo_tsd", "help"],
        [sys.executable, "-m", "yolo_tsd.cli", "help"],
        [str(Path(sys.executable).parent / "yolo-tsd"), "help"],
    ],
    ids=["train.py", "python -m yolo_tsd", "python -m yolo_tsd.cli", "yolo-tsd"],
)
def test_every_way_to_call_the_command(command, tmp_path):
    cwd = ROOT if command[1] == "train.py" else tmp_path  # the installed ways work from any folder
    out = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    assert out.returncode == 0 and f"{PREFIX}lambda_feat" in out.stdout, out.stderr[-2000:]


def test_default_settings_ship_with_the_package_and_copy_cfg_writes_them(tmp_path, monkeypatch):
    assert default_cfg_file().read_text() == default_yaml()
    monkeypatch.chdir(tmp_path)
    assert entrypoint(["copy-cfg"]) == 0
    copied = tmp_path / "tsd_copy.yaml"
    assert TSDConfig.load("tsd_copy.yaml") == TSDConfig() and copied.read_text() == default_yaml()


def refuse(capsys, tmp_path, match, argv):
    """The command refuses ``argv`` fast: exit status 2, one line on stderr with ``match``, no traceback, no run."""
    project = tmp_path / "runs"
    t0 = time.time()
    status = entrypoint([*argv, f"project={project}"] if "explain" not in argv else argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, err
    assert len(err) == 1 and err[0].startswith("yolo-tsd: error: ") and "Traceback" not in err[0], err
    assert match in err[0], err[0]
    assert time.time() - t0 < 60
    assert not project.exists() or not any(project.iterdir()), list(project.rglob("*"))
    return err[0]


def base(data_yaml, teacher_pt, **extra):
    args = {"model": "yolov8n.yaml", "data": str(data_yaml), "teacher": str(teacher_pt), "epochs": 1, "imgsz": 64}
    args.update(extra)
    return [f"{k}={v}" for k, v in args.items() if v is not None]


def test_missing_data_argument(capsys, tmp_path, teacher_pt):
    refuse(capsys, tmp_path, "data= is required", base("x", teacher_pt, data=None))


def test_missing_and_misplaced_data(capsys, tmp_path, data_yaml, teacher_pt):
    refuse(capsys, tmp_path, "no such dataset yaml", base(tmp_path / "missing.yaml", teacher_pt))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({**yaml.safe_load(data_yaml.read_text()), "path": str(tmp_path / "nowhere")}))
    refuse(capsys, tmp_path, "images not found", base(wrong, teacher_pt))
    no_names = tmp_path / "no_names.yaml"
    spec = yaml.safe_load(data_yaml.read_text())
    del spec["names"]
    no_names.write_text(yaml.safe_dump(spec))
    refuse(capsys, tmp_path, "'names' or 'nc' are required", base(no_names, teacher_pt))


def test_misspelt_and_mistyped_ultralytics_arguments(capsys, tmp_path, data_yaml, teacher_pt):
    refuse(capsys, tmp_path, "'epoch' (did you mean 'epochs'?)", [*base(data_yaml, teacher_pt), "epoch=3"])
    refuse(capsys, tmp_path, "epochs", base(data_yaml, teacher_pt, epochs="abc"))


def test_teacher_problems(capsys, tmp_path, data_yaml):
    msg = refuse(capsys, tmp_path, "teacher=yolov8x.pt: no such file", base(data_yaml, "yolov8x.pt"))
    assert "never downloads" in msg
    refuse(capsys, tmp_path, "a teacher must be a trained Ultralytics checkpoint", base(data_yaml, "yolov8n.yaml"))
    refuse(capsys, tmp_path, "teacher= is required", base(data_yaml, None, teacher=None))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    refuse(capsys, tmp_path, "could not be loaded as an Ultralytics checkpoint", base(data_yaml, junk))
    cls_pt = tmp_path / "cls.pt"
    torch.save({"ema": ClassificationModel("yolov8n-cls.yaml", nc=5, verbose=False), "train_args": {}}, cls_pt)
    refuse(capsys, tmp_path, "not a detection model", base(data_yaml, cls_pt))


def test_teacher_that_does_not_fit(capsys, tmp_path, data_yaml):
    other = save_checkpoint(build_model("yolov8n.yaml", nc=3), tmp_path / "three.pt")
    msg = refuse(capsys, tmp_path, "different classes", base(data_yaml, other))
    assert "teacher 3" in msg and "data 5" in msg and "ellipse" in msg
    p2 = save_checkpoint(build_model("yolov8n-p2.yaml"), tmp_path / "p2.pt")  # refused once the student is built
    refuse(capsys, tmp_path, "different head levels: teacher strides [4.0, 8.0, 16.0, 32.0]", base(data_yaml, p2))


@pytest.mark.parametrize("model", ["yolov8n-seg.yaml", "yolo11n-pose.yaml", "yolo26n-obb.yaml", "yolov8n-cls.yaml"])
def test_a_student_of_another_task_is_refused_before_training(capsys, tmp_path, data_yaml, teacher_pt, model):
    task = {"seg": "segment", "pose": "pose", "obb": "obb", "cls": "classify"}[model.split("-")[1].split(".")[0]]
    msg = refuse(capsys, tmp_path, f"model={model} is a {task} model", base(data_yaml, teacher_pt, model=model))
    assert "detection students only" in msg and "model=yolov8n.yaml" in msg


def test_a_seg_checkpoint_or_task_argument_is_refused_too(capsys, tmp_path, data_yaml, teacher_pt):
    from ultralytics.nn.tasks import SegmentationModel

    seg = tmp_path / "seg.pt"
    torch.save({"ema": SegmentationModel("yolov8n-seg.yaml", nc=5, verbose=False), "train_args": {}}, seg)
    refuse(capsys, tmp_path, "is a segment model", base(data_yaml, teacher_pt, model=seg))
    refuse(
        capsys,
        tmp_path,
        "task=pose: yolo_tsd distils detection students only",
        base(data_yaml, teacher_pt, task="pose"),
    )


def test_quantization_aware_training_is_refused_before_training(capsys, tmp_path, data_yaml, teacher_pt):
    msg = refuse(
        capsys,
        tmp_path,
        "quantize=8 (Ultralytics' quantization-aware training)",
        base(data_yaml, teacher_pt, quantize=8),
    )
    assert "does not work with distillation yet" in msg


def test_student_weights_offline(capsys, tmp_path, data_yaml, teacher_pt):
    refuse(capsys, tmp_path, "model=yolov8n.pt: no such file", base(data_yaml, teacher_pt, model="yolov8n.pt"))


def test_builtin_distillation_cannot_be_combined(capsys, tmp_path, data_yaml, teacher_pt):
    refuse(capsys, tmp_path, "never both", base(data_yaml, teacher_pt, distill_model=teacher_pt))
    refuse(capsys, tmp_path, "never both", base(data_yaml, teacher_pt, dis=2.0))


def test_bad_settings(capsys, tmp_path, data_yaml, teacher_pt):
    refuse(capsys, tmp_path, "did you mean 'lambda_feat'", [*base(data_yaml, teacher_pt), "tsd_lambda_fet=1"])
    refuse(capsys, tmp_path, "w_low=-1' is out of range", [*base(data_yaml, teacher_pt), "tsd_w_low=-1"])
    msg = refuse(
        capsys, tmp_path, "YAML reads none/null as empty", [*base(data_yaml, teacher_pt), "tsd_weak_mode=none"]
    )
    assert "diff, abs, off" in msg
    refuse(capsys, tmp_path, "settings file", base(data_yaml, teacher_pt, tsd=tmp_path / "no.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("lambda_feat: [1,\n")
    refuse(capsys, tmp_path, "is not valid YAML", base(data_yaml, teacher_pt, tsd=bad))


def test_bad_commands(capsys, tmp_path, data_yaml, teacher_pt):
    refuse(capsys, tmp_path, "'bogus' is not a command", ["bogus"])
    refuse(capsys, tmp_path, "resume=", [f"resume={tmp_path / 'nowhere' / 'last.pt'}"])
    refuse(
        capsys,
        tmp_path,
        "explain does not take 'device'",
        ["explain", f"teacher={teacher_pt}", "model=yolov8n.yaml", f"source={data_yaml}", "device=cpu"],
    )
    refuse(capsys, tmp_path, "explain needs source=", ["explain", f"teacher={teacher_pt}", "model=yolov8n.yaml"])
    refuse(capsys, tmp_path, "did you mean 'teacher_epochs'", ["demo", "teacher_epoch=2"])


def test_the_real_command_exits_2_without_traceback_and_debug_shows_it(tmp_path, teacher_pt):
    args = [sys.executable, "-m", "yolo_tsd", "model=yolov8n.yaml", f"teacher={teacher_pt}", f"project={tmp_path}"]
    out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "data= is required" in out.stderr, out.stderr
    assert not any(tmp_path.iterdir())
    debug = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "TSD_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "UsageError" in debug.stderr
