"""Interrupt a distillation run after epoch 1 of 3, resume it, and check it finishes with everything restored."""

import csv

import pytest
import torch
from helpers import tiny_run

from yolo_tsd import TSDTrainer
from yolo_tsd.trainer import ADAPTERS_FILE


class Interrupt(Exception):
    pass


def stop_after_first_epoch(trainer):
    if trainer.epoch == 0:
        raise Interrupt


@pytest.mark.parametrize("form", ["path", "ultralytics"])
def test_resume_restores_teacher_settings_adapters_and_finishes(form, data_yaml, teacher_pt, tmp_path):
    overrides = tiny_run(data_yaml, teacher_pt, tmp_path, epochs=3, name="run", tsd_lambda_cls=0.7, tsd_split="binary")
    first = TSDTrainer(overrides=overrides)
    first.add_callback("on_fit_epoch_end", stop_after_first_epoch)
    with pytest.raises(Interrupt):
        first.train()
    last = first.wdir / "last.pt"
    saved = torch.load(first.wdir / ADAPTERS_FILE)
    assert saved["epoch"] == 0

    resume = {"resume": str(last)} if form == "path" else {"resume": True, "model": str(last)}
    second = TSDTrainer(overrides=resume)
    restored = {}
    second.add_callback(
        "on_train_start", lambda t: restored.update({k: v.clone() for k, v in t.adapters.state_dict().items()})
    )
    second.train()

    assert second.save_dir == first.save_dir and second.start_epoch == 1
    assert second.teacher.path == str(teacher_pt)
    assert second.tsd.lambda_cls == 0.7 and second.tsd.split == "binary"
    assert all(torch.equal(restored[k], v) for k, v in saved["adapters"].items())
    assert any(not torch.equal(second.adapters.state_dict()[k], v) for k, v in saved["adapters"].items())  # trained on
    rows = list(csv.DictReader((first.save_dir / "results.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(float(r["train/dcls_loss"]) > 0 for r in rows)
