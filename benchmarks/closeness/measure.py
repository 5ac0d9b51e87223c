"""How close is each student to the teacher, per distillation term, on training and on held-back images (issue 27.4).

Inference only: every image set is run once through the teacher and once through each student checkpoint (eval mode,
float32, no augmentation, batches of 32, one thread, no gradient). Per anchor it computes the two output terms the
distillation trains on, at the training temperature (2.0):

- class term: ``binary_kl(student_logits, teacher_logits, 2.0)`` (B, A), summed over the 5 classes;
- box term:   ``dfl_kl(split_bins(s_box, 16), split_bins(t_box, 16), 2.0)`` (B, A), averaged over the 4 sides;

and reports their mean over every anchor of every image, and over the teacher's confident anchors (teacher max class
probability, at temperature 1, >= 0.25). The feature term is not measurable: its 1x1 adapters live in the trainer and
are not saved with the student.

Image sets: the 256 labeled training images, the 64 val images, the first 256 images of the unlabeled pool
``shapes-v3-pool1024-128-s1`` (which the ``tsd_pool*``, ``pseudo`` and ``tsd_pseudo`` runs trained on, so it is
held back only for ``plain`` and ``tsd``), and the first 256 images of ``shapes-v3-pool1024-128-s0`` (same generator,
other seed: held back from every run; checked to share no image with the others).

Usage:
    .venv/bin/python benchmarks/closeness/measure.py            # prints the markdown tables
    .venv/bin/python benchmarks/closeness/measure.py --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from yolo_tsd.method.losses import binary_kl, dfl_kl, split_bins
from yolo_tsd.ultralytics_internals import dense_output, dfl_bins, head, load_model, raw_outputs

TAU, CONF, BATCH, IMGSZ = 2.0, 0.25, 32, 128
CACHE = Path("/root/.cache/yolo_tsd")
TEACHER = CACHE / "teachers/yolov8s-e30-b8-n8-i128-scenes-v2-600-100-128-s5-e20-b8-n8-i128-shapes-v3-256-64-128-s1.pt"
DATA = CACHE / "data/shapes-v3-256-64-128-s1"
SETS = {
    "train": (DATA / "images/train", None),
    "val": (DATA / "images/val", None),
    "pool": (CACHE / "data/shapes-v3-pool1024-128-s1/images", 256),
    "pool_s0": (CACHE / "data/shapes-v3-pool1024-128-s0/images", 256),
}
START = CACHE / "pretrained/yolov8n-e30-b8-n8-i128-scenes-v2-600-100-128-s5.pt"
BENCH = Path("/work/bench")
RUNS = [
    "plain-s0", "plain-s1", "tsd-s0", "tsd_pool-s0", "tsd_pool-s1", "tsd_pool:unlabeled_det=1-s0",
    "tsd_pool:unlabeled_det=1-s1", "pseudo-s0", "pseudo-s1", "tsd_pseudo-s0", "tsd_pseudo-s1",
]  # fmt: skip
CHECKPOINTS = [("start", START, None)]
CHECKPOINTS += [(r, BENCH / "pool_ft_tune/train" / r / "weights/last.pt", BENCH / "pool_ft_tune/runs" / f"{r}.json")
                for r in RUNS]  # fmt: skip
CHECKPOINTS += [
    (
        f"e50 {r}",
        BENCH / "pool_ft_tune_e50/train" / r / "weights/last.pt",
        BENCH / "pool_ft_tune_e50/runs" / f"{r}.json",
    )
    for r in ("plain-s0", "tsd_pool:unlabeled_det=1-s0")
]
MATCHED = [2, 3, 4]  # triangle, cross, ring: the target classes whose rows cls_remap copies from the scenes head


def read_images(folder: Path, limit: int | None) -> torch.Tensor:
    """(N, 3, 128, 128) float RGB in [0, 1], as Ultralytics feeds a model (the images are 128 px already)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})[:limit]
    arrays = []
    for f in files:
        im = cv2.imread(str(f))
        if im.shape[:2] != (IMGSZ, IMGSZ):
            im = cv2.resize(im, (IMGSZ, IMGSZ), interpolation=cv2.INTER_LINEAR)
        arrays.append(im[..., ::-1])  # BGR -> RGB
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays))).permute(0, 3, 1, 2).float() / 255


def outputs(model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, A, C) class logits and (N, 4*R, A) box logits, in batches."""
    logits, boxes = [], []
    with torch.no_grad():
        for i in range(0, len(images), BATCH):
            out = dense_output(raw_outputs(model, images[i : i + BATCH]))
            logits.append(out.logits.float().clone())
            boxes.append(out.box_logits.float().clone())
    return torch.cat(logits), torch.cat(boxes)


def terms(s: tuple, t: tuple, conf: torch.Tensor, reg_max: int) -> dict:
    """Means of the class and box terms over all anchors and over the teacher's confident ones."""
    (sl, sb), (tl, tb) = s, t
    box = dfl_kl(split_bins(sb, reg_max), split_bins(tb, reg_max), TAU)
    row = {"box_all": box.mean().item(), "box_conf": box[conf].mean().item()}
    if sl.shape[-1] == tl.shape[-1]:
        cls = binary_kl(sl, tl, TAU)
        row |= {"cls_all": cls.mean().item(), "cls_conf": cls[conf].mean().item()}
    else:  # the start: its class head has the scenes classes; its class term over 5 classes has no meaning
        row |= {"cls_all": float("nan"), "cls_conf": float("nan")}
    # class term restricted to the 3 name-matched classes (comparable between the start and every fine-tune)
    cls3 = binary_kl(sl[..., MATCHED], tl[..., MATCHED], TAU)  # same indices in the scenes head (names checked)
    row |= {"cls3_all": cls3.mean().item(), "cls3_conf": cls3[conf].mean().item()}
    return row


def fmt(v: float) -> str:
    """A table cell: four decimals, n/a for NaN."""
    return "n/a" if v != v else f"{v:.4f}"


def main() -> None:
    """Measure every checkpoint on every image set and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()

    images = {name: read_images(folder, limit) for name, (folder, limit) in SETS.items()}
    digests = {n: {hashlib.md5(x.numpy().tobytes()).hexdigest() for x in ims} for n, ims in images.items()}
    names = list(digests)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not digests[a] & digests[b], f"{a} and {b} share images"

    teacher = load_model(TEACHER).float().eval()
    reg_max = dfl_bins(teacher)
    matched_names = [teacher.names[i] for i in MATCHED]
    t_out = {n: outputs(teacher, ims) for n, ims in images.items()}
    conf = {n: o[0].sigmoid().amax(-1) >= CONF for n, o in t_out.items()}
    stats = {
        n: {"images": len(images[n]), "anchors": int(c.numel()), "confident": int(c.sum())} for n, c in conf.items()
    }
    # sanity: the teacher against itself gives 0 for both terms
    self_check = terms(t_out["val"], t_out["val"], conf["val"], reg_max)
    assert max(abs(v) for v in self_check.values()) < 1e-5, self_check
    del teacher

    results = []
    for label, path, run_json in CHECKPOINTS:
        model = load_model(path).float().eval()
        assert dfl_bins(model) == reg_max
        assert [model.names[i] for i in MATCHED] == matched_names, model.names
        row = {"checkpoint": label, "path": str(path), "nc": head(model).nc}
        row["mAP50-95"] = json.loads(run_json.read_text())["mAP50-95"] if run_json else None
        for n, ims in images.items():
            row[n] = terms(outputs(model, ims), t_out[n], conf[n], reg_max)
        results.append(row)
        del model
        print(f"# {label}: done at {time.time() - t0:.0f} s", flush=True)

    cols = list(SETS)
    lines = [
        "| checkpoint | mAP50-95 | " + " | ".join(f"{n} cls all / conf | {n} box all / conf" for n in cols) + " |",
        "|---|---|" + "---|---|" * len(cols),
    ]
    for r in results:
        m = "n/a" if r["mAP50-95"] is None else f"{r['mAP50-95']:.3f}"
        cells = []
        for n in cols:
            d = r[n]
            cells += [f"{fmt(d['cls_all'])} / {fmt(d['cls_conf'])}", f"{fmt(d['box_all'])} / {fmt(d['box_conf'])}"]
        lines.append(f"| {r['checkpoint']} | {m} | " + " | ".join(cells) + " |")
    print("\nClass KL (5 classes) and box KL (DFL), tau=2, mean over all anchors / over teacher-confident anchors\n")
    print("\n".join(lines))

    lines = ["| checkpoint | " + " | ".join(f"{n} cls3 all / conf" for n in cols) + " |", "|---|" + "---|" * len(cols)]
    for r in results:
        lines.append(f"| {r['checkpoint']} | " + " | ".join(
            f"{fmt(r[n]['cls3_all'])} / {fmt(r[n]['cls3_conf'])}" for n in cols) + " |")  # fmt: skip
    print("\nClass KL over the 3 name-matched classes (triangle, cross, ring) only\n")
    print("\n".join(lines))
    print("\nanchors per set:", json.dumps(stats))
    print(f"total {time.time() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"sets": stats, "results": results}, indent=1))


if __name__ == "__main__":
    main()
