"""Ultralytics training options keep working through the distillation trainer (a short real run each)."""

import csv
import shutil

import pytest
import yaml
from helpers import tiny_run
from ultralytics.utils.torch_utils import unwrap_model

from yolo_tsd import TSDTrainer
from yolo_tsd.training.trainer import FEW_STEPS, few_steps_warning


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


def test_a_run_with_few_optimizer_steps_is_told_how_to_get_more():
    text = few_steps_warning(38, epochs=20, batch=16, accumulate=4)  # the scenes regime: 600 images, nbs=64
    assert "about 190 optimizer steps" in text and "one optimizer step per 4 batches of 16" in text and "nbs=16" in text
    one_per_batch = few_steps_warning(10, epochs=5, batch=48, accumulate=1)  # nbs=64 rounds to 1 batch: already
    assert "more epochs" in one_per_batch and "nbs=" not in one_per_batch
    assert few_steps_warning(FEW_STEPS, epochs=1, batch=16, accumulate=1) is None
