"""YOLOv8, YOLO11 and YOLO26 teachers and students in every combination (tiny random-weight models)."""

import itertools
import pickle

import pytest
import torch
from helpers import TERMS_ON, build_model, distiller, make_batch, tiny_run

from yolo_tsd.training.criterion import LOSS_NAMES

TEACHERS = ["yolov8s.yaml", "yolo11s.yaml", "yolo26s.yaml"]
STUDENTS = ["yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml"]


@pytest.mark.parametrize("teacher_cfg, student_cfg", list(itertools.product(TEACHERS, STUDENTS)))
def test_pair_distils_learns_and_saves_a_plain_student(teacher_cfg, student_cfg):
    student, _, tsd = distiller(teacher_cfg, student_cfg, **TERMS_ON)
    batch = make_batch(bs=2, imgsz=64)
    opt = torch.optim.Adam([p for p in tsd.parameters() if p.requires_grad], lr=1e-3)  # student and adapters
    history = []
    for _ in range(6):
        loss, items = tsd(batch)  # what Ultralytics' trainer calls
        assert torch.isfinite(loss).all() and all(items[k] > 0 for k in LOSS_NAMES), items
        history.append(sum(items[k].item() for k in LOSS_NAMES))
        opt.zero_grad()
        loss[3:].sum().backward()  # the distillation terms: their gradient must move the student towards the teacher
        opt.step()
    assert history[-1] < history[0], history
    saved = pickle.loads(pickle.dumps(student))  # what a checkpoint stores
    assert not isinstance(getattr(saved, "criterion", None), type(tsd.terms))
    assert set(saved.state_dict()) == set(build_model(student_cfg).state_dict())


def test_yolo26_student_trains_with_a_dfl_teacher_and_saves_plain(data_yaml, tmp_path):
    from helpers import save_checkpoint

    from yolo_tsd import TSDTrainer

    teacher = save_checkpoint(build_model("yolo11s.yaml", seed=1), tmp_path / "yolo11s.pt")
    # a random teacher is not trusted (trust=quality would set the terms to 0): the terms on, to see them train
    trainer = TSDTrainer(overrides=tiny_run(data_yaml, teacher, tmp_path, model="yolo26n.yaml", tsd_trust="off"))
    trainer.train()
    assert "l1_loss" in trainer.loss_names and set(LOSS_NAMES) <= set(trainer.loss_names)
    assert all(float(trainer.tloss[k]) > 0 for k in LOSS_NAMES)
    ckpt = torch.load(trainer.wdir / "best.pt", weights_only=False)
    assert set(ckpt["model"].state_dict()) == set(build_model("yolo26n.yaml").state_dict())
    assert getattr(ckpt["model"], "criterion", None) is None
