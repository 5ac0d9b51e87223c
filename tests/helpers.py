"""Test helpers: tiny random-weight YOLO models and synthetic batches. No downloads."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path

import torch
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel

from yolo_tsd.config import TSDConfig
from yolo_tsd.data import CLASSES
from yolo_tsd.model import TSDModel
from yolo_tsd.teacher import Teacher

NC = len(CLASSES)
NAMES = dict(enumerate(CLASSES))


def build_model(cfg: str = "yolov8n.yaml", nc: int = NC, seed: int = 0) -> DetectionModel:
    """A random-weight detection model with Ultralytics' default hyperparameters attached, as the trainer does."""
    torch.manual_seed(seed)
    model = DetectionModel(cfg, nc=nc, verbose=False)
    model.args = get_cfg()
    model.names = {i: NAMES.get(i, f"class{i}") for i in range(nc)}
    return model


def save_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """Write ``model`` the way Ultralytics' trainer does (EMA in half precision, train args)."""
    torch.save({"epoch": -1, "model": None, "ema": deepcopy(model).half(), "train_args": {}}, path)
    return path


def make_batch(bs: int = 2, imgsz: int = 64, seed: int = 0, boxes_per_image: int = 3) -> dict:
    """A preprocessed batch with ``boxes_per_image`` random ground-truth boxes per image."""
    g = torch.Generator().manual_seed(seed)
    n = bs * boxes_per_image
    xy = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=g) * 0.3 + 0.1
    return {
        "img": torch.rand(bs, 3, imgsz, imgsz, generator=g),
        "batch_idx": torch.arange(bs).repeat_interleave(boxes_per_image).float(),
        "cls": torch.randint(0, NC, (n, 1), generator=g).float(),
        "bboxes": torch.cat([xy, wh], 1),
    }


def tiny_run(data, teacher, project, **extra) -> dict:
    """Overrides for a short distillation run on the generated data (CPU, 64 px, no plots unless asked).

    The trust factor is off unless asked for: the test teachers are barely trained, so trusted as they are they would
    switch the terms off and the machinery under test (terms, adapters, resume) would not run with real values.
    """
    base = dict(model="yolov8n.yaml", data=str(data), epochs=2, imgsz=64, batch=8, device="cpu", workers=0)
    return {**base, "project": str(project), "plots": False, "teacher": str(teacher), "tsd_trust": "off", **extra}


def distiller(teacher_cfg="yolov8s.yaml", student_cfg="yolov8n.yaml", nc=NC, **settings):
    """A training-mode student, a random-weight teacher (another architecture and seed) and their ``TSDModel``.

    The trust factor is off unless a test asks for it: a random teacher is no better than the student, so with
    ``trust=quality`` every term would be 0 and the term mechanics under test would not show.
    """
    settings = {"trust": "off", **settings}
    student = build_model(student_cfg, nc=nc, seed=0).train()
    teacher = Teacher(build_model(teacher_cfg, nc=nc, seed=1))
    torch.manual_seed(0)  # adapters: the same initial weights whatever ran before
    return student, teacher, TSDModel(student, teacher, TSDConfig(**settings))


@contextmanager
def logged_messages():
    """Collect the messages of Ultralytics' logger (which yolo_tsd logs through) while the block runs."""
    from ultralytics.utils import LOGGER

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        yield messages
    finally:
        LOGGER.removeHandler(handler)
