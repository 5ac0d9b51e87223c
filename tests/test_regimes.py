"""The benchmark regimes at toy scale: generated data, cached teachers and students, overhead, YOLO26 stats."""

import hashlib

import numpy as np
import pytest
import torch
import yaml

import yolo_tsd.bench.regimes as regimes
from yolo_tsd.bench.data import KINDS, make_dataset, make_pool
from yolo_tsd.bench.one2one import duplicates, iou_matrix
from yolo_tsd.bench.regimes import REGIMES, Regime, regime_inputs, trained_once

# The bytes of two small datasets: a change means the generator's output changed, so bump its version in
# yolo_tsd/data/generate.py (the cache folders are named after it) and re-measure the benchmark.
GOLDEN = {
    "shapes": "75c1cbd51907dc71",
    "scenes": "14cdff9594b78c60",
}


def digest(data_yaml):
    h = hashlib.sha256()
    for f in sorted(data_yaml.parent.rglob("*")):
        if f.suffix in (".png", ".txt"):
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("kind", ["shapes", "scenes"])
def test_generated_data_is_the_same_bytes_every_time_and_labelled(kind, tmp_path):
    a = make_dataset(tmp_path / "a", n_train=3, n_val=2, imgsz=96, seed=4, kind=kind)
    b = make_dataset(tmp_path / "b", n_train=3, n_val=2, imgsz=96, seed=4, kind=kind)
    assert digest(a) == digest(b)
    assert digest(a) == GOLDEN[kind], f"{kind} output changed: bump its version ({digest(a)})"
    spec = yaml.safe_load(a.read_text())
    assert list(spec["names"].values()) == list(KINDS[kind].classes)
    rows = [
        list(map(float, line.split()))
        for f in (a.parent / "labels").rglob("*.txt")
        for line in f.read_text().split("\n")
        if line
    ]
    assert rows and all(0 <= r[0] < len(KINDS[kind].classes) and all(0 < v <= 1 for v in r[1:]) for r in rows)


def test_a_pool_is_unlabeled_images_of_the_same_kind_that_no_split_holds(tmp_path):
    data = make_dataset(tmp_path, n_train=3, n_val=2, imgsz=64, seed=4)
    pool = make_pool(tmp_path, 5, imgsz=64, seed=4)
    again = make_pool(tmp_path, 5, imgsz=64, seed=4)  # reused, not redrawn
    files = sorted(pool.iterdir())
    assert again == pool and len(files) == 5 and not list(pool.parent.rglob("*.txt"))
    labeled = {f.read_bytes() for f in (data.parent / "images").rglob("*.png")}
    assert labeled.isdisjoint(f.read_bytes() for f in files)  # other draws than the train and val images
    assert cv2_shape(files[0]) == (64, 64, 3)
    assert all(r.pool_factor >= 4 for r in REGIMES.values())  # the issue's ≥ 4× the labeled set, every regime


def cv2_shape(path):
    import cv2

    return cv2.imread(str(path)).shape


def test_scenes_have_eleven_classes_and_several_objects_per_image(tmp_path):
    y = make_dataset(tmp_path, n_train=12, n_val=2, imgsz=128, seed=0, kind="scenes")
    counts = [len(f.read_text().split()) // 5 for f in (y.parent / "labels" / "train").iterdir()]
    assert len(KINDS["scenes"].classes) == 11 and np.mean(counts) >= 3


def test_every_regime_is_described_and_tuning_is_one_of_them():
    assert set(regimes.TUNING) <= set(REGIMES)
    text = regimes.describe()
    assert all(f"  {name} " in text for name in REGIMES) and "(tuning)" in text
    assert {r.data["kind"] for r in REGIMES.values()} >= {"shapes", "scenes"}
    assert any(r.pretrain for r in REGIMES.values()) and any(r.e2e for r in REGIMES.values())


@pytest.mark.parametrize(
    ("split", "report"), [("shapes_tune", "shapes"), ("scenes_tune", "scenes"), ("finetune_pt_tune", "finetune_pt")]
)
def test_a_tuning_split_is_its_report_regime_on_other_images(split, report):
    tune, rep = REGIMES[split], REGIMES[report]
    assert split in regimes.TUNING and report not in regimes.TUNING
    assert tune.data == {**rep.data, "seed": rep.data["seed"] + 1}
    assert (tune.student, tune.pretrain, tune.e2e) == (rep.student, rep.pretrain, rep.e2e)
    # the teacher is trained by the same recipe on the split's images, or is the report regime's own
    assert tune.teacher == rep.teacher or (tune.teacher_from == report and not tune.teacher)


TINY = {"imgsz": 64, "batch": 8, "nbs": 8, "epochs": 1, "workers": 0}


@pytest.fixture()
def tiny_regimes(monkeypatch):
    data = {"kind": "shapes", "n_train": 8, "n_val": 4, "imgsz": 64, "seed": 0}
    pre = {"data": {**data, "kind": "scenes", "seed": 3}, "train": {"model": "yolov8n.yaml", **TINY}}
    tiny = {
        "t": Regime("tiny", data, {"model": "yolov8s.yaml", **TINY}, {"model": "yolov8n.yaml", **TINY}),
        "ft": Regime(
            "tiny fine-tuning",
            data,
            {},
            {**TINY},
            pretrain=pre,
            teacher_from="t",
        ),
        "ftt": Regime(  # the teacher is fine-tuned from a checkpoint pretrained on the same other data
            "tiny fine-tuning of both",
            data,
            {**TINY},
            {**TINY},
            pretrain={**pre, "teacher": {"model": "yolov8s.yaml", **TINY}},
        ),
    }
    monkeypatch.setattr(regimes, "REGIMES", tiny)
    return tiny


def test_regime_inputs_train_once_and_share(tiny_regimes, tmp_path):
    common = {"device": "cpu", "project": str(tmp_path / "runs")}
    data, teacher, student = regime_inputs("t", tmp_path / "cache", common)
    assert teacher.is_file() and student["model"] == "yolov8n.yaml" and data.is_file()
    mtime = teacher.stat().st_mtime
    data2, teacher2, student2 = regime_inputs("ft", tmp_path / "cache", common)
    assert teacher2 == teacher and teacher.stat().st_mtime == mtime  # shared, not retrained
    assert student2["model"].endswith(".pt") and "scenes" in student2["model"]  # pretrained on the other dataset
    again = trained_once(
        tmp_path / "cache" / "teachers", {**common, "model": "yolov8s.yaml", **TINY, "data": str(data)}
    )
    assert again == teacher  # the demo asks with the same recipe and gets the same file
    _, teacher3, student3 = regime_inputs("ftt", tmp_path / "cache", common)
    assert student3 == student2  # the same pretrained student
    (pre_teacher,) = (tmp_path / "cache" / "pretrained").glob("yolov8s-*scenes*.pt")  # pretrained on the other data
    assert teacher3 != teacher and teacher3.stem.startswith(pre_teacher.stem)  # then fine-tuned from that file
    assert torch.load(pre_teacher, weights_only=False)["model"].nc == 11
    assert torch.load(teacher3, weights_only=False)["model"].nc == 5  # on the regime's classes


def test_another_teacher_replaces_the_regimes_own_and_is_checked_first(tiny_regimes, tmp_path, teacher_pt):
    """regime=R teacher=PATH: the regime's data and student with that teacher; the regime's own is never trained."""
    from helpers import build_model, save_checkpoint

    from yolo_tsd.errors import UsageError

    common = {"device": "cpu", "project": str(tmp_path / "runs")}
    cache = tmp_path / "cache"
    data, teacher, student = regime_inputs("t", cache, common, teacher=teacher_pt)
    assert teacher == teacher_pt and student["model"] == "yolov8n.yaml" and data.is_file()
    assert not (cache / "teachers").exists()  # the regime's teacher was neither trained nor looked up
    other = save_checkpoint(build_model("yolov8n.yaml", nc=3), tmp_path / "three_classes.pt")
    with pytest.raises(UsageError, match="different classes"):
        regime_inputs("ft", cache, common, teacher=other)
    assert not (cache / "pretrained").exists()  # refused before the student's pretraining, the long part


def test_overhead_times_each_method(tiny_regimes, tmp_path, monkeypatch):
    from yolo_tsd.bench.overhead import run_overhead

    monkeypatch.setenv("YOLO_TSD_CACHE", str(tmp_path / "cache"))
    result = run_overhead(regime="t", rounds=7)  # a median of 7 interleaved steps: robust to a busy machine
    assert set(result["median_s"]) == {"plain", "builtin", "tsd", "teacher_only"}
    assert all(v > 0 for v in result["median_s"].values())
    assert result["tsd_x_plain"] > 1 and 0 < result["teacher_share_of_tsd_step"] < 1


def test_iou_matrix_known_values():
    a = np.array([[0, 0, 10, 10.0]])
    b = np.array([[0, 0, 10, 10.0], [5, 0, 15, 10.0], [20, 20, 30, 30.0]])
    assert np.allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0]])


def test_one2one_duplicates_are_counted_per_object(tmp_path, data_yaml, monkeypatch):
    import torch

    class Fires:  # an NMS-free model that outputs every ground-truth box twice (and one stray box)
        end2end = False

        def __init__(self, boxes):
            self.boxes = boxes

        def float(self):
            return self

        def eval(self):
            return self

        def __call__(self, x):
            rows = [[*b, 0.9, c] for c, b in self.boxes] * 2 + [[0, 0, 1, 1, 0.9, 0]]
            return torch.tensor([rows], dtype=torch.float32)

    label = sorted((data_yaml.parent / "labels" / "val").iterdir())[0]
    gts = [
        (int(c), [(x - w / 2) * 64, (y - h / 2) * 64, (x + w / 2) * 64, (y + h / 2) * 64])
        for c, x, y, w, h in np.loadtxt(label, ndmin=2)
    ]
    import yolo_tsd.ultralytics_internals as internals

    monkeypatch.setattr(internals, "load_model", lambda *a, **k: Fires(gts))
    single = tmp_path / "one"
    (single / "images" / "val").mkdir(parents=True)
    (single / "labels" / "val").mkdir(parents=True)
    image = data_yaml.parent / "images" / "val" / f"{label.stem}.png"
    (single / "images" / "val" / image.name).write_bytes(image.read_bytes())
    (single / "labels" / "val" / label.name).write_bytes(label.read_bytes())
    stats = duplicates("model.pt", single / "data.yaml", 64)
    assert stats == {"dup_per_object": 1.0, "fired_per_object": 2.0}
