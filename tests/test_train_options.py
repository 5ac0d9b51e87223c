"""Ultralytics training options keep working through the distillation trainer (a short real run each)."""

import csv
import shutil
from types import SimpleNamespace

import pytest
import yaml
from helpers import tiny_run
from ultralytics.utils.torch_utils import unwrap_model

from yolo_tsd import TSDConfig, TSDTrainer
from yolo_tsd.trainer import FEW_STEPS, few_steps_warning


@pytest.fixture(scope="module")
def data_with_backgrounds(data_yaml, tmp_path_factory):
    """The generated data with a quarter of the training images unlabelled (background images)."""
    root = tmp_path_factory.mktemp("bg") / "data"
    shutil.copytree(data_yaml.parent, root)
    for label in sorted((root / "labels" / "train").glob("*.txt"))[::4]:
        label.unlink()
    for cache in root.rglob("*.cache"):
        cache.unlink()
    spec = yaml.safe_load(data_yaml.read_text())
    (root / "data.yaml").write_text(yaml.safe_dump({**spec, "path": str(root)}))
    return root / "data.yaml"


OPTIONS = {
    "multi_scale": {"multi_scale": 0.5},
    "close_mosaic": {"close_mosaic": 1},
    "freeze": {"freeze": 10},
    "fraction": {"fraction": 0.5},
    "cache_ram": {"cache": "ram"},
    "rect_train": {"rect": True},
    "sgd_cos_lr": {"optimizer": "SGD", "cos_lr": True},
    "no_val": {"val": False},
}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_option_trains_with_finite_distillation_terms(option, data_with_backgrounds, teacher_pt, tmp_path):
    trainer = TSDTrainer(
        overrides=tiny_run(data_with_backgrounds, teacher_pt, tmp_path, name=option, **OPTIONS[option])
    )
    trainer.train()
    rows = list(csv.DictReader((trainer.save_dir / "results.csv").open()))
    assert len(rows) == 2
    for r in rows:
        for k in ("train/dfeat_loss", "train/dcls_loss", "train/dbox_loss", "train/box_loss"):
            assert float(r[k]) >= 0 and float(r[k]) < 1e3, (k, r[k])
        assert float(r["train/dfeat_loss"]) > 0
    assert (trainer.wdir / "best.pt").is_file()
    if option == "freeze":
        frozen = [p for n, p in unwrap_model(trainer.model).named_parameters() if n.startswith("model.0.")]
        assert frozen and not any(p.requires_grad for p in frozen)
        assert all(p.requires_grad for p in trainer.tsd_model.adapters.parameters())
    if option == "fraction":
        assert len(trainer.train_loader.dataset) == 8


def test_schedule_warmup_and_stop_for_close_mosaic(data_yaml, teacher_pt, tmp_path):
    trainer = TSDTrainer(
        overrides=tiny_run(
            data_yaml, teacher_pt, tmp_path, epochs=3, close_mosaic=1, tsd_close_mosaic_stop=True, tsd_warmup_epochs=1
        )
    )
    scales = []
    trainer.add_callback("on_train_epoch_end", lambda t: scales.append(t.tsd_model.scale))
    trainer.train()
    assert scales == [0.5, 1.0, 0.0]
    rows = list(csv.DictReader((trainer.save_dir / "results.csv").open()))
    assert float(rows[1]["train/dcls_loss"]) > 0 and float(rows[2]["train/dcls_loss"]) == 0
    assert float(rows[2]["train/box_loss"]) > 0  # detection training goes on


@pytest.mark.parametrize(
    "settings, close_mosaic, expected",
    [
        ({"final_scale": 0}, 0, [1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]),  # as Ultralytics' lr with lrf=0
        ({"final_scale": 0.5}, 0, [1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55]),
        ({"warmup_epochs": 1, "final_scale": 0}, 0, [0.5, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]),
        ({"final_scale": 0, "close_mosaic_stop": True}, 2, [1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0, 0]),
        ({}, 0, [1] * 10),  # the default: constant
    ],
)
def test_schedule_per_epoch(settings, close_mosaic, expected):
    trainer = SimpleNamespace(tsd=TSDConfig(**settings), args=SimpleNamespace(close_mosaic=close_mosaic), epochs=10)
    assert [TSDTrainer.schedule_scale(trainer, e) for e in range(10)] == pytest.approx(expected)


def test_a_run_with_few_optimizer_steps_is_told_how_to_get_more():
    text = few_steps_warning(38, epochs=20, batch=16, accumulate=4)  # the scenes regime: 600 images, nbs=64
    assert "about 190 optimizer steps" in text and "one optimizer step per 4 batches of 16" in text and "nbs=16" in text
    one_per_batch = few_steps_warning(10, epochs=5, batch=48, accumulate=1)  # nbs=64 rounds to 1 batch: already
    assert "more epochs" in one_per_batch and "nbs=" not in one_per_batch
    assert few_steps_warning(FEW_STEPS, epochs=1, batch=16, accumulate=1) is None
