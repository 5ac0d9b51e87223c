"""A short real distillation run on generated data, and what it leaves behind."""

import csv
import subprocess
import sys

import torch
from helpers import build_model

from yolo_tsd.training.checkpoint import CKPT_KEY
from yolo_tsd.training.teacher import Teacher


def test_results_have_every_term_next_to_ultralytics_losses(run):
    rows = list(csv.DictReader((run.save_dir / "results.csv").open()))
    assert len(rows) == 2
    for key in (
        "train/box_loss",
        "train/cls_loss",
        "train/dfl_loss",
        "train/dfeat_loss",
        "train/dcls_loss",
        "train/dbox_loss",
        "metrics/mAP50-95(B)",
    ):
        assert key in rows[0], key
    assert all(float(r["train/dcls_loss"]) > 0 and float(r["train/dfeat_loss"]) > 0 for r in rows)


def test_settings_and_teacher_are_recorded_for_relaunch_and_resume(run, teacher_pt):
    assert run.args.teacher == str(teacher_pt) and run.args.tsd["lambda_feat"] == 0.5
    saved = (run.save_dir / "args.yaml").read_text()
    assert "teacher:" in saved and "lambda_feat: 0.5" in saved


def test_checkpoints_hold_the_student_only(run, plain_run):
    student_keys = set(build_model("yolov8n.yaml").state_dict())
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run.wdir / name, weights_only=False)
        plain = torch.load(plain_run.wdir / name, weights_only=False)
        assert set(ckpt) == set(plain) and CKPT_KEY not in ckpt  # the same keys as a plain Ultralytics run's file
        assert type(ckpt["model"]) is type(plain["model"])
        model = ckpt["model"]  # Ultralytics' strip_optimizer moved the EMA here at the end of training
        assert ckpt["ema"] is None and ckpt["optimizer"] is None
        assert set(model.state_dict()) == student_keys, name
        assert getattr(model, "criterion", None) is None
        tensors = sum(v.numel() for v in model.state_dict().values())
        assert tensors == sum(v.numel() for v in build_model("yolov8n.yaml").state_dict().values())


def test_teacher_stayed_frozen(run, teacher_pt):
    original = Teacher.load(teacher_pt).model.state_dict()  # loaded and BatchNorm-folded the same way, untrained
    live = run.teacher.model.state_dict()
    assert live.keys() == original.keys() and all(torch.equal(live[k].cpu(), v) for k, v in original.items())
    assert not run.teacher.model.training and not any(p.requires_grad for p in run.teacher.model.parameters())
    assert not any(
        p is q for g in run.optimizer.param_groups for p in g["params"] for q in run.teacher.model.parameters()
    )
    assert not any(p is q for p in run.ema.ema.parameters() for q in run.teacher.model.parameters())


def test_adapters_are_trained_by_the_optimizer_and_absent_from_the_ema(run):
    in_optimizer = {id(p) for g in run.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_optimizer for p in run.tsd_model.adapters.parameters())
    assert set(run.ema.ema.state_dict()) == set(build_model("yolov8n.yaml").state_dict())
    assert len(run.optimizer.param_groups) == 3  # Ultralytics' own groups: weight, bn, bias


YOLO_CLI = "from ultralytics.cfg import entrypoint; entrypoint()"  # the `yolo` command, through this interpreter
PLAIN_LOAD = """
import sys
from ultralytics import YOLO
m = YOLO(sys.argv[1])
r = m.predict(sys.argv[2], imgsz=64, verbose=False)
assert not any(k.startswith("yolo_tsd") for k in sys.modules), "yolo_tsd was imported"
print("OK", type(m.model).__name__, len(r))
"""


def test_best_pt_loads_in_plain_ultralytics_and_exports_to_onnx(run, data_yaml, tmp_path):
    best = run.wdir / "best.pt"
    image = next((data_yaml.parent / "images" / "val").iterdir())
    out = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(best), str(image)], capture_output=True, text=True)
    assert out.returncode == 0 and "OK DetectionModel 1" in out.stdout, out.stderr[-2000:]
    export = subprocess.run(
        [sys.executable, "-c", YOLO_CLI, "export", f"model={best}", "format=onnx", "imgsz=64"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert export.returncode == 0, export.stdout[-2000:] + export.stderr[-2000:]
    assert best.with_suffix(".onnx").stat().st_size > 1_000_000


def test_ultralytics_plots_include_the_new_columns(run, monkeypatch):
    import matplotlib.axes
    from ultralytics.utils import plotting

    plotted = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda self, t, *a, **k: plotted.append(t))
    plotting.plot_results(file=run.save_dir / "results.csv")
    assert {"train/dfeat_loss", "train/dcls_loss", "train/dbox_loss", "train/box_loss"} <= set(plotted), plotted
    assert (run.save_dir / "results.png").stat().st_size > 10_000
