"""Shared fixtures: generated data and a random-weight teacher checkpoint. No downloads."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import build_model, fit_to_training_data, save_checkpoint, tiny_run
from ultralytics.models.yolo.detect import DetectionTrainer

from yolo_tsd import TSDTrainer
from yolo_tsd.bench.data import make_dataset


@pytest.fixture(scope="session")
def data_yaml(tmp_path_factory) -> Path:
    """A small generated dataset (the embedded demo generator)."""
    return make_dataset(tmp_path_factory.mktemp("data"), n_train=16, n_val=8, imgsz=64)


@pytest.fixture(scope="session")
def teacher_pt(data_yaml, tmp_path_factory) -> Path:
    """A yolov8s teacher trained on the generated training images: it detects them far better than an untrained
    student, so distillation runs at the release defaults (trust=quality) with the terms on."""
    teacher = fit_to_training_data(build_model("yolov8s.yaml", seed=1), data_yaml)
    return save_checkpoint(teacher, tmp_path_factory.mktemp("teacher") / "teacher.pt")


@pytest.fixture(scope="session")
def random_teacher_pt(tmp_path_factory) -> Path:
    """A random-weight yolov8s teacher checkpoint with the demo class names (no better than an untrained student)."""
    return save_checkpoint(build_model("yolov8s.yaml", seed=1), tmp_path_factory.mktemp("teacher") / "random.pt")


@pytest.fixture(scope="session")
def run(data_yaml, teacher_pt, tmp_path_factory):
    """A finished 2-epoch distillation run on the generated data (plots on, close_mosaic in epoch 2)."""
    project = tmp_path_factory.mktemp("runs")
    overrides = tiny_run(data_yaml, teacher_pt, project, name="tsd", plots=True, tsd_lambda_feat=0.5, close_mosaic=1)
    trainer = TSDTrainer(overrides=overrides)
    trainer.train()
    return trainer


@pytest.fixture(scope="session")
def plain_run(data_yaml, tmp_path_factory):
    """The same 2-epoch run with Ultralytics' plain trainer (no distillation), for comparisons."""
    overrides = tiny_run(data_yaml, "unused", tmp_path_factory.mktemp("plain"), name="plain")
    del overrides["teacher"]  # Ultralytics' own trainer does not take it
    trainer = DetectionTrainer(overrides=overrides)
    trainer.train()
    return trainer


@pytest.fixture(scope="session")
def pool(data_yaml, tmp_path_factory) -> Path:
    """An unlabeled pool: the generated validation images, without their labels."""
    import shutil

    folder = tmp_path_factory.mktemp("pool") / "images"
    shutil.copytree(data_yaml.parent / "images" / "val", folder)
    return folder
