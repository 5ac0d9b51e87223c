"""Test helpers: tiny random-weight YOLO models and synthetic batches. No downloads."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path

import torch
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel

from yolo_tsd.bench.data import CLASSES
from yolo_tsd.config import TSDConfig
from yolo_tsd.training.model import TSDModel
from yolo_tsd.training.teacher import Teacher

NC = len(CLASSES)
NAMES = dict(enumerate(CLASSES))
# For tests of the terms' mechanics with random-weight models: a random teacher detects no better than the student, so
# the release default trust=quality would set every term to 0. A test that needs the terms on asks for this.
TERMS_ON = {"trust": "off"}


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
    """Overrides for a short distillation run on the generated data (CPU, 64 px, no plots unless asked), at the
    release's distillation defaults."""
    base = dict(model="yolov8n.yaml", data=str(data), epochs=2, imgsz=64, batch=8, device="cpu", workers=0)
    return {**base, "project": str(project), "plots": False, "teacher": str(teacher), **extra}


def distiller(teacher_cfg="yolov8s.yaml", student_cfg="yolov8n.yaml", nc=NC, **settings):
    """A training-mode student, a random-weight teacher (another architecture and seed) and their ``TSDModel``, at the
    release defaults unless ``settings`` say otherwise (``TERMS_ON`` for tests that need non-zero terms)."""
    student = build_model(student_cfg, nc=nc, seed=0).train()
    teacher = Teacher(build_model(teacher_cfg, nc=nc, seed=1))
    torch.manual_seed(0)  # adapters: the same initial weights whatever ran before
    return student, teacher, TSDModel(student, teacher, TSDConfig(**settings))


def fit(model: torch.nn.Module, batch: dict, steps: int = 40, lr: float = 2e-3) -> torch.nn.Module:
    """``model`` trained on one batch with Ultralytics' loss, its BatchNorm statistics those of the batch exactly, so
    that in eval mode (as a teacher) it detects that batch's objects far better than an untrained model."""
    model.train()
    criterion = model.init_criterion()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss, _ = criterion(model(batch["img"]), batch)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: after one pass, the batch's own statistics
    with torch.no_grad():
        model(batch["img"])
    return model.eval()


def fit_to_training_data(model: torch.nn.Module, data_yaml: Path, imgsz: int = 64, steps: int = 150) -> torch.nn.Module:
    """``model`` trained on a generated dataset's training split through Ultralytics' own augmentation (mosaic and
    all, as a distillation run sees the images), so that in eval mode, as a teacher, it detects the training batches
    far better than an untrained student (measured: object quality about 5e-3 against 1e-10; 36 s on 2 cores)."""
    import random

    import numpy as np
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    images = str(Path(data_yaml).parent / "images" / "train")
    dataset = build_yolo_dataset(get_cfg(overrides={"imgsz": imgsz}), images, 16, check_det_dataset(str(data_yaml)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True, collate_fn=dataset.collate_fn)
    model.train()
    criterion = model.init_criterion()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    done = 0
    while done < steps:
        for batch in loader:
            batch = {**batch, "img": batch["img"].float() / 255}
            loss, _ = criterion(model(batch["img"]), batch)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return model.eval()


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
