"""Interrupt a distillation run, resume it (also from a yolo_tsd 0.1 run), and recover from a NaN like Ultralytics."""

import csv
import subprocess
import sys

import pytest
import torch
from helpers import logged_messages, tiny_run

from yolo_tsd import TSDTrainer
from yolo_tsd.training.checkpoint import CKPT_KEY, OLD_ADAPTERS_FILE


class Interrupt(Exception):
    pass


def stop_after_first_epoch(trainer):
    if trainer.epoch == 0:
        raise Interrupt


def interrupted_run(data_yaml, teacher_pt, tmp_path):
    overrides = tiny_run(data_yaml, teacher_pt, tmp_path, epochs=3, name="run", tsd_lambda_cls=0.7, tsd_split="binary")
    first = TSDTrainer(overrides=overrides)
    first.add_callback("on_fit_epoch_end", stop_after_first_epoch)
    with pytest.raises(Interrupt), logged_messages() as messages:
        first.train()
    assert sum("about 1 optimizer step in all" in m for m in messages) == 1  # 3 epochs of 2 batches, nbs=64
    return first


def resume_and_record(resume):
    second = TSDTrainer(overrides=resume)
    restored = {}
    second.add_callback(
        "on_train_start",
        lambda t: restored.update(
            {k: v.clone() for k, v in t.tsd_model.adapters.state_dict().items()},
            running_sizes=t.tsd_model.stats.sizes.clone(),
        ),
    )
    second.train()
    return second, restored


PLAIN_LOAD = """
import sys, torch
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
assert not any(k.startswith("yolo_tsd") for k in sys.modules), "yolo_tsd was imported"
print("OK", sorted(ckpt["tsd"]["adapters"])[:1], type(ckpt["ema"]).__name__)
"""


@pytest.mark.parametrize("form", ["path", "ultralytics"])
def test_resume_restores_teacher_settings_adapters_and_finishes(form, data_yaml, teacher_pt, tmp_path):
    first = interrupted_run(data_yaml, teacher_pt, tmp_path)
    last = first.wdir / "last.pt"
    saved = torch.load(last, weights_only=False)[CKPT_KEY]
    assert saved["epoch"] == 0 and all(isinstance(v, torch.Tensor) for v in saved["adapters"].values())
    assert CKPT_KEY not in torch.load(first.wdir / "best.pt", weights_only=False)  # best.pt: the student only
    if form == "path":  # the mid-run last.pt is plain Ultralytics' to load, in a process without yolo_tsd
        out = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(last)], capture_output=True, text=True)
        assert out.returncode == 0 and "OK" in out.stdout and "DetectionModel" in out.stdout, out.stderr[-2000:]

    resume = {"resume": str(last)} if form == "path" else {"resume": True, "model": str(last)}
    with logged_messages() as messages:
        second, restored = resume_and_record(resume)
    assert not any("optimizer step" in m for m in messages)  # told when the run started, not again

    assert second.save_dir == first.save_dir and second.start_epoch == 1
    assert second.teacher.path == str(teacher_pt)
    assert second.tsd.lambda_cls == 0.7 and second.tsd.split == "binary"
    assert all(torch.equal(restored[k], v) for k, v in saved["adapters"].items())
    sizes = saved["running"]["sizes"]  # the balance goes on from the interrupted run's running term sizes
    assert sizes.shape == (4,) and (sizes > 0).all() and torch.equal(restored["running_sizes"], sizes)
    live = second.tsd_model.adapters.state_dict()
    assert any(not torch.equal(live[k].cpu(), v) for k, v in saved["adapters"].items())  # trained on
    rows = list(csv.DictReader((first.save_dir / "results.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(float(r["train/dcls_loss"]) > 0 for r in rows)
    assert CKPT_KEY not in torch.load(last, weights_only=False)  # the finished run's last.pt is the student's


def as_version_0_1(last, adapters_in_groups):
    """Rewrite a fresh last.pt the way yolo_tsd 0.1 left it: adapters in a side file and in two extra optimizer groups.

    Version 0.1 appended the adapters' weights and biases as two groups after Ultralytics' three (weight, bn, bias),
    copying the settings of Ultralytics' own weight and bias groups, and saved their values beside last.pt.
    """
    ckpt = torch.load(last, weights_only=False)
    tsd = ckpt.pop(CKPT_KEY)
    torch.save({"epoch": tsd["epoch"], "adapters": tsd["adapters"], "tsd": {}}, last.with_name(OLD_ADAPTERS_FILE))
    groups = ckpt["optimizer"]["param_groups"]
    moved = {}
    for group in groups:
        n = adapters_in_groups[group["param_group"]]
        if n:
            group["params"], moved[group["param_group"]] = group["params"][:-n], group["params"][-n:]
    for tag in ("weight", "bias"):
        template = next(g for g in groups if g["param_group"] == tag)
        groups.append({**template, "params": moved[tag]})
    torch.save(ckpt, last)
    return tsd


def test_resume_from_a_version_0_1_run_reads_its_side_file_and_optimizer_layout(data_yaml, teacher_pt, tmp_path):
    first = interrupted_run(data_yaml, teacher_pt, tmp_path)
    last = first.wdir / "last.pt"
    adapters = first.tsd_model.adapters
    counts = {"weight": sum(p.dim() > 1 for p in adapters.parameters()), "bn": 0}
    counts["bias"] = sum(p.dim() == 1 for p in adapters.parameters())
    momentum = {id(p): first.optimizer.state[p]["exp_avg"].clone() for p in adapters.parameters()}
    order = [id(p) for p in adapters.parameters()]
    saved = as_version_0_1(last, counts)
    assert len(torch.load(last, weights_only=False)["optimizer"]["param_groups"]) == 5

    second = TSDTrainer(overrides={"resume": str(last)})
    restored = {}

    def record(t):
        restored["adapters"] = {k: v.clone() for k, v in t.tsd_model.adapters.state_dict().items()}
        restored["momentum"] = [t.optimizer.state[p]["exp_avg"].clone() for p in t.tsd_model.adapters.parameters()]

    second.add_callback("on_train_start", record)
    second.train()
    assert all(torch.equal(restored["adapters"][k], v) for k, v in saved["adapters"].items())
    assert len(second.optimizer.param_groups) == 3
    for got, key in zip(restored["momentum"], order):  # each adapter's AdamW state found its parameter
        assert torch.allclose(got, momentum[key].to(got.dtype), atol=1e-3)


def test_nan_recovery_restores_the_adapters_with_the_student(data_yaml, teacher_pt, tmp_path):
    trainer = TSDTrainer(overrides=tiny_run(data_yaml, teacher_pt, tmp_path, epochs=3, name="nan"))
    events = {}

    def poison(t):
        if t.epoch == 1 and "poisoned" not in events:  # after epoch 1 was saved: corrupt the adapters and the loss
            events["poisoned"] = True
            events["saved"] = torch.load(t.last, weights_only=False)[CKPT_KEY]
            for p in t.tsd_model.adapters.parameters():
                p.data.fill_(float("nan"))
            t.loss = torch.tensor(float("nan"))

    recover = trainer.after_recovery

    def after_recovery():
        recover()
        events["restored"] = {k: v.clone() for k, v in trainer.tsd_model.adapters.state_dict().items()}

    trainer.after_recovery = after_recovery
    trainer.add_callback("on_train_epoch_end", poison)
    trainer.train()
    assert "restored" in events, "Ultralytics' NaN recovery did not run"
    assert all(torch.equal(events["restored"][k].cpu(), v) for k, v in events["saved"]["adapters"].items())
    assert all(torch.isfinite(p).all() for p in trainer.tsd_model.adapters.parameters())
