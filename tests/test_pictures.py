"""The significance pictures: written during training and by `explain`, not blank, and focused on the objects."""

import cv2
import numpy as np
import torch
from helpers import build_model

from yolo_tsd.cli import main
from yolo_tsd.config import TSDConfig
from yolo_tsd.training.teacher import Teacher
from yolo_tsd.visualize import load_image, significance_maps


def not_blank(path):
    im = cv2.imread(str(path))
    return im is not None and im.shape[0] > 200 and im.std() > 20


def test_training_writes_pictures_at_first_and_last_epoch_and_the_loss_plot(run):
    pictures = sorted(p.name for p in run.save_dir.glob("tsd_epoch*.png"))
    assert pictures == ["tsd_epoch1_0.png", "tsd_epoch1_1.png", "tsd_epoch2_0.png", "tsd_epoch2_1.png"]
    assert all(not_blank(run.save_dir / p) for p in pictures)
    assert not_blank(run.save_dir / "tsd_losses.png")


def test_high_importance_lies_on_the_objects(data_yaml, teacher_pt):
    image = sorted((data_yaml.parent / "images" / "val").iterdir())[0]
    img, labels = load_image(image, 64)
    assert len(labels) > 0
    batch = {
        "img": img,
        "batch_idx": torch.zeros(len(labels)),
        "cls": torch.from_numpy(labels[:, :1]),
        "bboxes": torch.from_numpy(labels[:, 1:]),
    }
    student = build_model("yolov8n.yaml")
    maps = significance_maps(student, Teacher.load(teacher_pt), batch, TSDConfig())
    inside, outside = [], []
    for level in maps["imp_t"]:
        h, w = level.shape[1:]
        ys, xs = np.mgrid[0:h, 0:w]
        cx, cy = (xs + 0.5) / w, (ys + 0.5) / h
        mask = np.zeros((h, w), bool)
        for _, x, y, bw, bh in labels:
            mask |= (abs(cx - x) <= bw / 2) & (abs(cy - y) <= bh / 2)
        inside += level[0][mask].tolist()
        outside += level[0][~mask].tolist()
    assert np.mean(inside) > 2 * np.mean(outside), (np.mean(inside), np.mean(outside))


def test_explain_command_renders_any_image(data_yaml, teacher_pt, tmp_path):
    image = sorted((data_yaml.parent / "images" / "val").iterdir())[0]
    paths = main(
        ["explain", f"teacher={teacher_pt}", "model=yolov8n.yaml", f"source={image}", "imgsz=64", f"out={tmp_path}"]
    )
    assert [p.name for p in paths] == [f"tsd_explain_{image.stem}.png"] and not_blank(paths[0])
