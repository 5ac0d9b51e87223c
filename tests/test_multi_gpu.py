"""Multi-GPU: the relaunch Ultralytics does, and DDP gradient synchronisation (2 CPU processes over gloo)."""

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import build_model, fit, make_batch
from ultralytics.utils.dist import generate_ddp_file

from yolo_tsd import TSDTrainer
from yolo_tsd.config import TSDConfig
from yolo_tsd.training import stats
from yolo_tsd.training.model import TSDModel
from yolo_tsd.training.teacher import Teacher

REPORT = """
from types import SimpleNamespace
from yolo_tsd.training.callbacks import update_pace
n_pace = sum(cb is update_pace for cb in trainer.callbacks["on_train_epoch_start"])
running = SimpleNamespace(pace=1, take_trust_sum=lambda: 0.0)  # an epoch at trust 0: the teacher then rests
trainer.epoch, trainer.tsd_model, trainer.train_loader = 1, SimpleNamespace(stats=running), range(3)
trainer.run_callbacks("on_train_epoch_start")  # what the worker does at each epoch start
print("REBUILT", json.dumps({"teacher": trainer.teacher.path, "tsd": trainer.tsd.to_dict(),
      "args_teacher": trainer.args.teacher, "epochs": trainer.args.epochs, "n_pace": n_pace,
      "pace": running.pace, "pool": len(trainer.pool.files)}))"""


def test_ddp_relaunch_rebuilds_the_same_teacher_settings_and_pool(data_yaml, teacher_pt, pool, tmp_path):
    trainer = TSDTrainer(
        overrides=dict(
            model="yolov8n.yaml",
            data=str(data_yaml),
            epochs=7,
            imgsz=64,
            device="cpu",
            project=str(tmp_path),
            teacher=str(teacher_pt),
            tsd_lambda_cls=0.3,
            tsd_weak_mode="abs",
            unlabeled=str(pool),
        )
    )
    file = Path(generate_ddp_file(trainer))  # what Ultralytics writes for its torch.distributed.run workers
    state_size = file.with_suffix(".pt").stat().st_size
    try:
        script = file.read_text().replace("trainer.train()", REPORT)
        assert script != file.read_text()
        out = subprocess.run([sys.executable, "-c", "import json\n" + script], capture_output=True, text=True)
    finally:
        file.unlink()
        file.with_suffix(".pt").unlink()
    assert out.returncode == 0, out.stderr[-3000:]
    rebuilt = json.loads(out.stdout.split("REBUILT", 1)[1])
    assert rebuilt["teacher"] == rebuilt["args_teacher"] == str(teacher_pt)
    assert rebuilt["tsd"] == trainer.tsd.to_dict() and rebuilt["tsd"]["lambda_cls"] == 0.3
    assert rebuilt["epochs"] == 7
    assert rebuilt["n_pace"] == 1 and rebuilt["pace"] == 3  # the pace callback runs once, on the worker's trainer
    assert rebuilt["pool"] == 8  # the unlabeled pool too (each worker then reads its own share)
    assert state_size < 1_000_000  # the pickled relaunch state carries no trainer, hence no teacher weights


def rank_batch(rank):
    return make_batch(bs=2, imgsz=64, seed=10 + rank)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A teacher fitted to rank 0's batch only: on rank 1's it is no better than the student, so rank 1 alone would
    not trust it; with both ranks' qualities averaged (one process with the whole batch), it is trusted."""
    path = tmp_path_factory.mktemp("ddp") / "teacher.pt"
    torch.save(fit(build_model("yolov8s.yaml", seed=1), rank_batch(0)).state_dict(), path)
    return path


def build(teacher_file, adapter_seed=2):
    """Student, teacher and their TSDModel at the release defaults, the adapters initialised from ``adapter_seed``."""
    student = build_model("yolov8n.yaml", seed=0).train()
    teacher_model = build_model("yolov8s.yaml", seed=1)
    teacher_model.load_state_dict(torch.load(teacher_file))
    torch.manual_seed(adapter_seed)
    return TSDModel(student, Teacher(teacher_model), TSDConfig())


def grads(tsd, batch):
    """Single-process loss and gradients (student, adapters) on one batch."""
    tsd.zero_grad()
    loss, _ = tsd(batch)
    loss.sum().backward()
    return loss.detach(), grad_list(tsd.student), grad_list(tsd.adapters)


def grad_list(module):
    return [p.grad.clone() for p in module.parameters() if p.requires_grad]


@contextmanager
def ddp_process(rank, world, port, teacher_file):
    """One of ``world`` gloo processes: its TSDModel, the model wrapped as Ultralytics wraps it, and its own batch."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        tsd = build(teacher_file, adapter_seed=100 + rank)  # ranks are seeded differently, as in Ultralytics
        ddp = torch.nn.parallel.DistributedDataParallel(tsd, find_unused_parameters=True)
        yield tsd, ddp, rank_batch(rank)
    finally:
        dist.destroy_process_group()


def worker(rank, world, port, out, teacher_file):
    with ddp_process(rank, world, port, teacher_file) as (tsd, ddp, batch):
        loss, _ = ddp(batch)
        loss.sum().backward()
        result = {"loss": loss.detach(), "student": grad_list(tsd.student), "adapters": grad_list(tsd.adapters)}
        running = tsd.stats
        torch.save(
            {**result, "sizes": running.sizes, "qualities": running.qualities, "trust": running.trust},
            f"{out}/rank{rank}.pt",
        )


def test_ddp_wraps_the_module_broadcasts_and_averages_the_adapters_and_statistics(tmp_path, monkeypatch, teacher_file):
    port = 29500 + os.getpid() % 1000
    mp.spawn(worker, args=(2, port, str(tmp_path), teacher_file), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # Each rank alone, as a fresh module (rank 0's adapters, which DDP's initial broadcast gave every rank): first its
    # own step statistics (detection loss, raw term sizes, both models' quality), then the step again with the mean of
    # both ranks' statistics where the collective would put it
    batches = [rank_batch(r) for r in range(2)]
    seen, alone = [], []
    monkeypatch.setattr(stats, "mean_over_ranks", lambda v: seen.append(v.detach().clone()) or v)
    for b in batches:
        tsd = build(teacher_file, adapter_seed=100)
        tsd(b)
        alone.append(tsd.stats.trust.item())
    averaged = (seen[0] + seen[1]) / 2
    monkeypatch.setattr(stats, "mean_over_ranks", lambda v: averaged)
    singles = [grads(build(teacher_file, adapter_seed=100), b) for b in batches]
    for key in ("sizes", "qualities", "trust"):  # one running balance and one trust factor on every rank
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    assert torch.allclose(ranks[0]["sizes"], averaged[:4], rtol=1e-5)
    assert torch.allclose(ranks[0]["qualities"], averaged[4:], rtol=1e-5)
    assert not torch.allclose(seen[0], seen[1])  # the ranks' own statistics differed
    # rank 1 alone would not follow the teacher; as one process with both ranks' objects, every rank does
    assert alone[0] > 0.5 and alone[1] == 0 and ranks[0]["trust"] > 0.5
    for r in range(2):
        assert torch.allclose(ranks[r]["loss"], singles[r][0], rtol=1e-5, atol=1e-6)  # same loss as 1 process
    for part, idx in (("student", 1), ("adapters", 2)):
        for g0, g1, s0, s1 in zip(ranks[0][part], ranks[1][part], singles[0][idx], singles[1][idx]):
            assert torch.allclose(g0, g1)  # synchronised across ranks
            assert torch.allclose(g0, (s0 + s1) / 2, rtol=1e-4, atol=1e-6)  # = the mean of the per-rank gradients


def resting_worker(rank, world, port, out, teacher_file):
    """A step without the teacher (the adapters unused), then a distilling step, under DDP as Ultralytics wraps it."""
    with ddp_process(rank, world, port, teacher_file) as (tsd, ddp, batch):
        result = {}
        for due in (False, True):
            tsd.teacher_due = due
            ddp.zero_grad()
            loss, _ = ddp(batch)
            loss.sum().backward()
            adapters = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in tsd.adapters.parameters()]
            result[due] = {"loss": loss.detach(), "student": grad_list(tsd.student), "adapters": adapters}
        torch.save(result, f"{out}/rank{rank}.pt")


def test_ddp_steps_without_the_teacher_leave_the_adapters_out_and_stay_synchronised(tmp_path, teacher_file):
    port = 29500 + (os.getpid() + 500) % 1000
    mp.spawn(resting_worker, args=(2, port, str(tmp_path), teacher_file), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r in range(2):
        assert torch.all(ranks[r][False]["loss"][-3:] == 0) and torch.all(ranks[r][True]["loss"][-3:] > 0)
        assert all(torch.all(g == 0) for g in ranks[r][False]["adapters"])  # unused: no gradient (None or 0)
        assert any(torch.any(g != 0) for g in ranks[r][True]["adapters"])
    for due in (False, True):
        for part in ("student", "adapters"):
            assert all(torch.allclose(g0, g1) for g0, g1 in zip(ranks[0][due][part], ranks[1][due][part]))
