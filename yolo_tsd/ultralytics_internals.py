"""Every dependency of yolo_tsd on Ultralytics' private or undocumented behaviour, in one place, with named fields.

The rest of the package (the lab included) talks to Ultralytics through its public API only: ``YOLO``, the task
trainers and their public methods and attributes, callbacks, ``DetectionModel``, the default configuration, the
logger, and the tensor functions of ``ultralytics.utils`` (``PUBLIC_IMPORTS``). Everything else goes through a named
helper below; ``tests/test_layout.py`` parses the package and fails when any other module uses a name of
``PRIVATE_ATTRIBUTES`` or ``PRIVATE_KEYS``, or imports from Ultralytics outside ``PUBLIC_IMPORTS``. When Ultralytics
changes one of these, this is the file to update, and ``check_version`` tells a user their version is outside the
range the project was tested with.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from copy import copy
from dataclasses import dataclass
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

import numpy as np
import torch
import ultralytics
from ultralytics.cfg import cfg2dict, check_dict_alignment, get_cfg, get_save_dir, smart_value
from ultralytics.cfg import merge_equals_args as _merge_equals_args
from ultralytics.cfg import parse_key_value_pair as _parse_key_value_pair
from ultralytics.data import YOLODataset, build_dataloader
from ultralytics.data.utils import IMG_FORMATS, check_det_dataset, check_image, img2label_paths
from ultralytics.nn.modules.head import Detect
from ultralytics.nn.tasks import guess_model_task, load_checkpoint, yaml_model_load
from ultralytics.utils import (
    DATASETS_DIR,
    DEFAULT_CFG_DICT,
    LOGGER,
    NUM_THREADS,
    SETTINGS,
    IterableSimpleNamespace,
    colorstr,
)
from ultralytics.utils.checks import check_model_file_from_stem
from ultralytics.utils.files import get_latest_run
from ultralytics.utils.nms import non_max_suppression
from ultralytics.utils.ops import xyxy2xywh
from ultralytics.utils.tal import make_anchors
from ultralytics.utils.torch_utils import unwrap_model

TESTED_FROM, TESTED_BELOW = "8.4.190", "8.5"  # the range in pyproject.toml: [from, below)
ALLOW_ENV = "YOLO_TSD_ALLOW_ULTRALYTICS"  # set to 1 to run (with a warning) on an untested Ultralytics version
STUDENT_ATTR = "module"  # the attribute Ultralytics' unwrap_model() follows (meant for DDP): the wrapped student
ONE2MANY, ONE2ONE = "one2many", "one2one"  # the branches of an end-to-end head's training output
# what the rest of the package may import from Ultralytics directly: its documented, public API
PUBLIC_IMPORTS = {
    "ultralytics": {"YOLO"},
    "ultralytics.models.yolo.detect": {"DetectionTrainer"},
    "ultralytics.nn.tasks": {"DetectionModel"},
    "ultralytics.utils": {"DEFAULT_CFG", "DEFAULT_CFG_DICT", "LOGGER", "RANK", "YAML", "colorstr"},
    "ultralytics.utils.metrics": {"bbox_iou"},
    "ultralytics.utils.ops": {"xywh2xyxy"},
    "ultralytics.utils.tal": {"dist2bbox"},
}
# undocumented attributes and methods of Ultralytics objects, and keys of its dicts, that only this module may touch
PRIVATE_ATTRIBUTES = (
    "get_assigned_targets_and_loss", "preprocess", "assigner", "alpha", "beta", "o2m", "o2o", ONE2MANY, ONE2ONE,
    "reg_max", "cv2", "init_criterion", "teacher_model", "collate_fn", "test_loader", "end2end", "_handle_nan_recovery",
)  # fmt: skip
PRIVATE_KEYS = ("scores", "feats", ONE2MANY, ONE2ONE, "optimizer", "param_groups", "train_args", "train_metrics")


def version_tuple(version: str) -> tuple[int, ...]:
    """``'8.4.190'`` -> ``(8, 4, 190)``; non-numeric suffixes (``'8.4.190.dev0'``, ``'rc1'``) are ignored."""
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
        if digits.group() != piece:  # '0rc1': the number ends the release part
            break
    return tuple(parts)


def check_version(version: str | None = None) -> None:
    """Refuse an Ultralytics version outside the tested range, unless ``YOLO_TSD_ALLOW_ULTRALYTICS=1`` is set.

    Raises:
        RuntimeError: Outside ``[TESTED_FROM, TESTED_BELOW)`` without the override, naming both fixes.
    """
    version = version or ultralytics.__version__
    if version_tuple(TESTED_FROM) <= version_tuple(version) < version_tuple(TESTED_BELOW):
        return
    message = (
        f"ultralytics {version} is outside the range yolo_tsd is tested with (>={TESTED_FROM},<{TESTED_BELOW}); "
        "it relies on Ultralytics internals that change between releases (see yolo_tsd/ultralytics_internals.py)."
    )
    if os.environ.get(ALLOW_ENV) == "1":
        LOGGER.warning(f"{message} Continuing because {ALLOW_ENV}=1.")
        return
    raise RuntimeError(
        f"{message} Install a tested version: pip install 'ultralytics>={TESTED_FROM},<{TESTED_BELOW}', "
        f"or set {ALLOW_ENV}=1 to try anyway."
    )


# --- the loss and its label assignment -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assigned:
    """One head branch's Ultralytics loss and label assignment, with names instead of tuple positions.

    Attributes:
        fg_mask (torch.Tensor): (B, A) assigner positives.
        gt_idx (torch.Tensor): (B, A) index of the assigned ground truth (meaningful where ``fg_mask``).
        anchors (torch.Tensor): (A, 2) anchor centres in grid units.
        strides (torch.Tensor): (A, 1) stride of each anchor.
        gt_labels (torch.Tensor): (B, G) padded ground-truth classes, as the loss built them.
        gt_boxes (torch.Tensor): (B, G, 4) padded pixel xyxy ground-truth boxes.
        gt_mask (torch.Tensor): (B, G) True for real (non-padding) boxes.
        loss (torch.Tensor): (3,) the branch's gain-scaled detection loss, not multiplied by the batch size.
        items (dict): The branch's detached loss items by name.
    """

    fg_mask: torch.Tensor
    gt_idx: torch.Tensor
    anchors: torch.Tensor
    strides: torch.Tensor
    gt_labels: torch.Tensor
    gt_boxes: torch.Tensor
    gt_mask: torch.Tensor
    loss: torch.Tensor
    items: dict


def assign(criterion: Any, preds: dict, batch: dict) -> Assigned:
    """Run Ultralytics' detection loss on one branch; its assignment and the padded ground truth it built.

    The ground truth is padded by the loss's ``preprocess`` (which reads the per-image box count on the host); it is
    captured from that call instead of being built a second time.
    """
    captured = {}
    original = criterion.preprocess

    def recording_preprocess(*args: Any, **kwargs: Any) -> torch.Tensor:
        captured["targets"] = original(*args, **kwargs)
        return captured["targets"]

    criterion.preprocess = recording_preprocess  # instance attribute: shadows the method for this call only
    try:
        (fg_mask, gt_idx, _, anchors, strides), loss, items = criterion.get_assigned_targets_and_loss(preds, batch)
    finally:
        del criterion.preprocess
    labels, boxes = captured["targets"].split((1, 4), 2)
    return Assigned(
        fg_mask=fg_mask.bool(),
        gt_idx=gt_idx,
        anchors=anchors,
        strides=strides,
        gt_labels=labels.squeeze(-1).long(),
        gt_boxes=boxes,
        gt_mask=boxes.sum(2) > 0,  # the same test as the loss's mask_gt
        loss=loss,
        items=items,
    )


def anchor_grid(criterion: Any, preds: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, 2) anchor centres in grid units and (A, 1) their strides for a branch's outputs, as its loss makes them."""
    return make_anchors(preds["feats"], criterion.stride, 0.5)


def assign_predictions(
    criterion: Any, probs: torch.Tensor, boxes: torch.Tensor, points: torch.Tensor, assigned: Assigned
) -> tuple[torch.Tensor, torch.Tensor]:
    """The branch's label assigner run on other predictions (the teacher's) against ``assigned``'s ground truth.

    Args:
        criterion (Any): The branch's ``v8DetectionLoss``.
        probs (torch.Tensor): (B, A, C) class probabilities.
        boxes (torch.Tensor): (B, A, 4) pixel xyxy boxes.
        points (torch.Tensor): (A, 2) anchor centres in pixels.
        assigned (Assigned): The student's assignment, for its padded ground truth.

    Returns:
        (tuple): (B, A) bool positives and (B, A) index of the assigned ground truth.
    """
    gt_labels, gt_mask = assigned.gt_labels.unsqueeze(-1).float(), assigned.gt_mask.unsqueeze(-1).float()
    _, _, _, fg, idx = criterion.assigner(probs, boxes, points, gt_labels, assigned.gt_boxes, gt_mask)
    return fg.bool(), idx


def alignment_exponents(criterion: Any) -> tuple[float, float]:
    """The assigner's ``(alpha, beta)``: its alignment metric is ``p ** alpha * IoU ** beta``."""
    return criterion.assigner.alpha, criterion.assigner.beta


@dataclass(frozen=True)
class Branch:
    """One head branch of the student's Ultralytics loss.

    Attributes:
        name (str | None): Key of the branch in the head's training output (None for a single-branch head).
        criterion (Any): The branch's ``v8DetectionLoss``.
        gain (float): Ultralytics' weight of the branch in the total loss (its end-to-end schedule).
    """

    name: str | None
    criterion: Any
    gain: float


def branches(criterion: Any) -> list[Branch]:
    """The branches of a student's criterion: one for YOLOv8/11, one-to-many then one-to-one for ``E2ELoss``."""
    if hasattr(criterion, ONE2MANY) and hasattr(criterion, ONE2ONE):
        return [Branch(ONE2MANY, criterion.one2many, criterion.o2m), Branch(ONE2ONE, criterion.one2one, criterion.o2o)]
    return [Branch(None, criterion, 1.0)]


def criterion_of(model: torch.nn.Module) -> Any:
    """A detection model's own Ultralytics criterion, built on first use as its ``loss()`` does."""
    if getattr(model, "criterion", None) is None:
        model.criterion = model.init_criterion()
    return model.criterion


def with_default_args(model: torch.nn.Module) -> torch.nn.Module:
    """Give a loaded model the hyperparameters its criterion reads (``model.args``), Ultralytics' defaults filled in."""
    args = getattr(model, "args", None) or {}
    args = args if isinstance(args, dict) else vars(args)
    model.args = IterableSimpleNamespace(**{**DEFAULT_CFG_DICT, **args})
    return model


# --- the head and its raw outputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadOutput:
    """One head branch's raw training outputs, with names for the keys of Ultralytics' dict.

    Attributes:
        raw (dict): The branch's output as Ultralytics' loss takes it.
    """

    raw: dict

    @property
    def logits(self) -> torch.Tensor:
        """(B, A, C) class logits (a view)."""
        return self.raw["scores"].permute(0, 2, 1)

    @property
    def box_logits(self) -> torch.Tensor:
        """(B, 4 * R, A) box outputs: DFL bin logits (``R`` bins per side), or distances when ``R = 1``."""
        return self.raw["boxes"]

    def images(self, part: Any) -> HeadOutput:
        """The outputs of images ``part.start:part.stop`` of the batch."""
        return HeadOutput(slice_outputs(self.raw, part.start, part.stop))

    @property
    def neck_features(self) -> list[torch.Tensor]:
        """The neck features that feed the head, one (B, C_l, H_l, W_l) per level."""
        return self.raw["feats"]


def slice_outputs(preds: Any, start: int, stop: int) -> Any:
    """The raw head outputs of images ``start:stop`` of the batch (every tensor cut along its first dimension)."""
    if isinstance(preds, torch.Tensor):
        return preds[start:stop]
    if isinstance(preds, dict):
        return {k: slice_outputs(v, start, stop) for k, v in preds.items()}
    return [slice_outputs(v, start, stop) for v in preds]


def training_outputs(preds: Any) -> dict:
    """A head's raw training outputs, also from an eval-mode call (which returns ``(decoded, raw)``)."""
    return preds[1] if isinstance(preds, tuple) else preds


def branch_output(preds: dict, name: str | None) -> HeadOutput:
    """The raw outputs of the student branch ``name`` (None: a single-branch head)."""
    return HeadOutput(preds[name] if name else preds)


def dense_output(preds: dict) -> HeadOutput:
    """The dense branch of any head: its only one, or the one-to-many branch of an end-to-end head."""
    return HeadOutput(preds[ONE2MANY] if ONE2MANY in preds else preds)


def teacher_output(t_preds: dict, name: str | None) -> tuple[HeadOutput, bool]:
    """The teacher outputs that teach the student branch ``name``, and whether they are the same kind of branch.

    A one-to-one student branch learns from the teacher's one-to-one branch when it has one; every other student
    branch learns from the teacher's dense (one-to-many, or only) branch.
    """
    if ONE2ONE not in t_preds:
        return HeadOutput(t_preds), name != ONE2ONE
    return (HeadOutput(t_preds[ONE2ONE]), True) if name == ONE2ONE else (HeadOutput(t_preds[ONE2MANY]), True)


def head(model: torch.nn.Module) -> Detect:
    """The Detect head of an Ultralytics detection model."""
    return model.model[-1]


def is_detect_head(model: torch.nn.Module) -> bool:
    """Whether the model's head is a plain ``Detect`` (not a segment, pose, OBB or classify head)."""
    return type(head(model)) is Detect


def head_channels(model: torch.nn.Module) -> list[int]:
    """Widths of the neck features that feed the Detect head, one per level."""
    return [branch[0].conv.in_channels for branch in head(model).cv2]


def head_strides(model: torch.nn.Module) -> list[float]:
    """The head's strides, one per level (e.g. ``[8, 16, 32]`` for P3-P5)."""
    return head(model).stride.tolist()


def dfl_bins(model: torch.nn.Module) -> int:
    """DFL bins per box side of the head (``reg_max``: 16 for YOLOv8/11, 1 for YOLO26, which has no DFL)."""
    return head(model).reg_max


@torch.no_grad()
def raw_outputs(model: torch.nn.Module, images: torch.Tensor) -> dict:
    """Run an eval-mode detection model and return its head's raw training-format outputs, without gradient.

    Only the head's own ``training`` flag is flipped: it then skips decoding and NMS, while every BatchNorm stays in
    eval mode (running statistics, untouched).
    """
    model.eval()
    detect = head(model)
    detect.training = True
    try:
        return model(images)
    finally:
        detect.training = False


def fuse_keep_branches(model: torch.nn.Module) -> torch.nn.Module:
    """Fold BatchNorm into the convolutions with Ultralytics' ``fuse()``, keeping every head branch.

    ``BaseModel.fuse`` also calls ``Detect.fuse``, which drops the one-to-many branch of end-to-end heads that the
    distillation reads; an instance attribute shadows it for this call.
    """
    detect = head(model)
    detect.fuse = lambda: None
    try:
        model.fuse(verbose=False)
    finally:
        del detect.fuse
    return model


def set_end2end(model: torch.nn.Module) -> torch.nn.Module:
    """Make an end-to-end (YOLO26) model predict with its NMS-free one-to-one head."""
    model.end2end = True
    return model


# --- checkpoints, weights and data files -----------------------------------------------------------------------------


def load_model(path: str | Path) -> torch.nn.Module:
    """The model of an Ultralytics ``.pt`` checkpoint (its EMA weights when saved by training), on the CPU."""
    return load_checkpoint(str(path), device="cpu")[0]


def read_checkpoint(path: str | Path) -> dict:
    """An Ultralytics checkpoint's dict (``epoch``, ``model``/``ema``, ``optimizer``, ``train_args``, ...)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def checkpoint_epoch(ckpt: dict) -> int | None:
    """The last finished epoch (0-based) of a checkpoint's dict, None if it records none."""
    return ckpt.get("epoch")


def checkpoint_train_args(path: str | Path) -> dict:
    """The training arguments a checkpoint was saved with (empty if none were recorded)."""
    return read_checkpoint(path).get("train_args") or {}


def checkpoint_map(path: str | Path) -> float | None:
    """The box mAP50-95 recorded in a checkpoint by its training run's last validation (None if not recorded)."""
    return (read_checkpoint(path).get("train_metrics") or {}).get("metrics/mAP50-95(B)")


def latest_run() -> Path | None:
    """The newest ``last.pt`` under the current folder, as Ultralytics' bare ``resume`` finds it (None if none)."""
    found = get_latest_run()
    return Path(found) if found else None


def model_file(model: str) -> str:
    """The file name Ultralytics makes of a ``model=`` value (``yolov8n`` -> ``yolov8n.pt``)."""
    return str(check_model_file_from_stem(model))


def model_task(model: str | Path) -> str | None:
    """The task of a ``model=`` value (``detect``, ``segment``, ``pose``, ``obb``, ...), None if it cannot be read here.

    From a checkpoint's model, or from the head of a model YAML (Ultralytics' own files included), as Ultralytics
    guesses it.
    """
    try:
        if str(model).endswith(".pt"):
            ckpt = read_checkpoint(model)
            return guess_model_task(ckpt.get("ema") or ckpt.get("model"))
        return guess_model_task(yaml_model_load(model))
    except Exception:  # a file Ultralytics will refuse in its own words
        return None


def weights_dir() -> Path:
    """Ultralytics' ``weights_dir`` setting, where it keeps downloaded weights."""
    return Path(SETTINGS["weights_dir"])


def dataset_root(spec: dict, yaml_file: Path) -> Path:
    """A data yaml's root as Ultralytics resolves it: ``path:`` (else the yaml's folder), or under its datasets dir."""
    root = Path(spec.get("path") or yaml_file.parent)
    if not root.is_absolute() and not root.exists():
        root = (DATASETS_DIR / root).resolve()
    return root


def split_source(data: str | Path, split: str = "val") -> Any:
    """A detection data yaml's images of a split as Ultralytics resolves them (absolute folder, .txt list or list)."""
    return check_det_dataset(str(data))[split]


def label_file(image: str | Path) -> Path:
    """The YOLO label file of an image, found the Ultralytics way (``images/`` -> ``labels/``, ``.txt``)."""
    return Path(img2label_paths([str(image)])[0])


def detections_as_labels(
    probs: torch.Tensor, boxes: torch.Tensor, imgsz: tuple[int, int], conf: float, iou: float = 0.7, max_det: int = 300
) -> dict:
    """A model's detections after Ultralytics' NMS, as the labels of a batch (``batch_idx``, ``cls``, ``bboxes``).

    Args:
        probs (torch.Tensor): (B, A, C) class probabilities.
        boxes (torch.Tensor): (B, A, 4) pixel xyxy boxes.
        imgsz (tuple[int, int]): (height, width) of the images, to normalise the boxes as a dataset's labels are.
        conf (float): Keep detections whose class probability is at least this.
        iou (float): NMS IoU threshold (Ultralytics' validation default 0.7).
        max_det (int): At most this many detections per image.

    Returns:
        (dict): ``batch_idx`` (N,), ``cls`` (N, 1) and ``bboxes`` (N, 4) normalised xywh, on the inputs' device.
    """
    prediction = torch.cat([xyxy2xywh(boxes.float()), probs.float()], -1).transpose(1, 2)  # (B, 4 + C, A), xywh
    kept = non_max_suppression(prediction, conf_thres=conf, iou_thres=iou, max_det=max_det)
    h, w = imgsz
    scale = boxes.new_tensor([w, h, w, h], dtype=torch.float32)
    return {
        "batch_idx": torch.cat([torch.full((len(d),), i, device=boxes.device) for i, d in enumerate(kept)]).float(),
        "cls": torch.cat([d[:, 5:6] for d in kept]),
        "bboxes": torch.cat([xyxy2xywh(d[:, :4]) / scale for d in kept]),
    }


def image_files(source: str | Path | list) -> list[str]:
    """The image files of a source, read as Ultralytics reads a dataset split.

    Folders are searched recursively, a ``.txt`` file lists one path a line (``./`` relative to the list), a list may
    hold either; missing paths are skipped.
    """
    found = []
    for item in source if isinstance(source, (list, tuple)) else [source]:
        path = Path(item)
        if path.is_dir():
            found += [str(p) for p in path.rglob("*.*")]
        elif path.is_file() and path.suffix == ".txt":
            lines = path.read_text(encoding="utf-8-sig").strip().splitlines()
            found += [str(path.parent / x[2:]) if x.startswith("./") else x for x in lines]
        elif path.is_file():
            found.append(str(path))
    return sorted(f for f in found if f.rpartition(".")[-1].lower() in IMG_FORMATS)


def checked_images(files: list[str]) -> tuple[dict[str, tuple[int, int]], int]:
    """The readable images among ``files`` with their (height, width), and how many were corrupt or unreadable.

    Ultralytics' own image check (a corrupt JPEG's end is repaired, as for labeled images), on its thread count.
    """

    def check(file: str) -> tuple[int, int] | None:
        try:
            return check_image(file)[1]
        except Exception:
            return None

    with ThreadPool(NUM_THREADS) as threads:
        shapes = threads.map(check, files)
    good = {f: s for f, s in zip(files, shapes) if s is not None}
    return good, len(files) - len(good)


class PoolDataset(YOLODataset):
    """Ultralytics' detection dataset over images without labels, all of them background.

    Its augmentation, loading and collation are unchanged; its label scan, which refuses a training split without any
    label, is replaced.
    """

    def __init__(self, *args: Any, shapes: dict[str, tuple[int, int]], **kwargs: Any):
        """Take the images' (height, width) from the check already done (``checked_images``)."""
        self.shapes_known = shapes
        super().__init__(*args, **kwargs)

    def get_labels(self) -> list[dict]:
        """One empty label per image."""
        empty = {"cls": np.zeros((0, 1), np.float32), "bboxes": np.zeros((0, 4), np.float32), "segments": []}
        return [
            {"im_file": f, "shape": self.shapes_known.get(f, (0, 0)), **copy(empty), "keypoints": None,
             "normalized": True, "bbox_format": "xywh"}
            for f in self.im_files
        ]  # fmt: skip


def pool_loader(
    args: Any, shapes: dict[str, tuple[int, int]], data: dict, batch: int, stride: int, rank: int, device: Any
) -> Any:
    """An endless loader of unlabeled images through Ultralytics' training augmentation (mosaic and all).

    Each rank reads its own share. The files reach the dataset as a ``.txt`` list (its way to take a list of images)
    in the temporary folder.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="yolo_tsd_pool_", delete=False) as listing:
        listing.write("\n".join(shapes) + "\n")
    dataset = PoolDataset(
        img_path=listing.name, imgsz=args.imgsz, batch_size=batch, augment=True, hyp=args, rect=False,
        cache=args.cache or None, single_cls=args.single_cls or False, stride=stride, pad=0.0,
        prefix=colorstr("unlabeled: "), task=args.task, classes=None, data=data, fraction=1.0, shapes=shapes,
    )  # fmt: skip
    return build_dataloader(dataset, batch=batch, workers=args.workers, shuffle=True, rank=rank, device=device)


def close_mosaic(loader: Any, args: Any) -> None:
    """Stop mosaic in a training loader's dataset and restart its iterator, as Ultralytics does for its own loader."""
    if hasattr(loader.dataset, "close_mosaic"):
        loader.dataset.close_mosaic(hyp=copy(args))
    loader.reset()


# --- the trainer ------------------------------------------------------------------------------------------------------


def check_train_args(cfg: Any, overrides: dict) -> Path:
    """Ultralytics' own checks of the training arguments (deprecated keys, types, ranges); the run folder it would use.

    Raises:
        TypeError | ValueError | SyntaxError: As Ultralytics raises them.
    """
    check_dict_alignment(cfg2dict(cfg), overrides)
    return Path(get_save_dir(get_cfg(cfg, overrides)))


@contextmanager
def hidden_args(args: Any, keys: tuple[str, ...]) -> Iterator[None]:
    """Remove ``keys`` from a trainer's ``args`` for the block.

    Ultralytics' validators copy the trainer's arguments and refuse the ones they do not know.
    """
    saved = {k: getattr(args, k) for k in keys if hasattr(args, k)}
    for k in saved:
        delattr(args, k)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(args, k, v)


def optimizer_view(student: torch.nn.Module, extra: torch.nn.Module) -> torch.nn.Module:
    """A module for Ultralytics' ``build_optimizer`` holding the student's layers and ``extra`` (the adapters).

    ``build_optimizer`` groups the parameters of ``unwrap_model(model)``, which for the training module is the student
    alone; the stand-in holds both (the student's layers under ``model``, the name its head lookup expects) and has no
    ``module`` attribute to unwrap.
    """
    view = torch.nn.Module()
    view.model, view.adapters = unwrap_model(student).model, extra
    return view


def upgrade_optimizer_state(ckpt: dict, optimizer: torch.optim.Optimizer) -> bool:
    """Make a checkpoint's optimizer state fit ``optimizer``: True if it fits (maybe after the upgrade below).

    yolo_tsd 0.1 appended the adapters to Ultralytics' optimizer as two extra groups (tagged ``weight`` and ``bias``);
    they are now ordinary members of Ultralytics' ``weight`` and ``bias`` groups, after the student's parameters. The
    saved groups are merged the same way so that ``optimizer.load_state_dict`` maps every saved state to its parameter.
    A state that fits neither way is removed from ``ckpt`` (the optimizer then starts anew) and False returned.
    """
    saved = ckpt.get("optimizer")
    if saved is None:
        return True
    groups, current = saved["param_groups"], optimizer.param_groups
    if len(groups) == len(current):
        return True
    if len(groups) == len(current) + 2 and [g.get("param_group") for g in groups[-2:]] == ["weight", "bias"]:
        merged = [dict(g, params=list(g["params"])) for g in groups[:-2]]
        for group in groups[-2:]:
            target = next(g for g in merged if g.get("param_group") == group["param_group"])
            target["params"] += group["params"]
        if [len(g["params"]) for g in merged] == [len(g["params"]) for g in current]:
            saved["param_groups"] = merged
            return True
    ckpt["optimizer"] = None
    return False


class NanRecoveryHook:
    """Mixin for a trainer: after Ultralytics' NaN recovery reloaded the student and optimizer, call ``after_recovery``.

    Ultralytics restores ``last.pt``'s EMA weights into the (unwrapped) student and the optimizer state, and knows
    nothing of other training-time modules; the trainer restores those in ``after_recovery``.
    """

    def _handle_nan_recovery(self, epoch: int) -> bool:
        """Ultralytics' recovery, then ``after_recovery()`` when it reloaded ``last.pt``."""
        recovered = super()._handle_nan_recovery(epoch)
        if recovered:
            self.after_recovery()
        return recovered

    def after_recovery(self) -> None:
        """Restore what Ultralytics' recovery does not know about (override)."""


def validation_images(trainer: Any, n: int) -> dict:
    """The first ``n`` validation images and their labels as one collated batch.

    Read directly from the validation dataset: the validator's loader and its iterator stay untouched.
    """
    dataset = trainer.test_loader.dataset
    return dataset.collate_fn([dataset[i] for i in range(min(n, len(dataset)))])


def builtin_teacher(model: torch.nn.Module) -> torch.nn.Module | None:
    """The teacher of Ultralytics' built-in distillation (``DistillationModel.teacher_model``), if ``model`` is one."""
    return getattr(unwrap_model(model), "teacher_model", None)


def builtin_distiller(teacher: str | Path, student: torch.nn.Module) -> torch.nn.Module:
    """Ultralytics' built-in distillation module around ``student`` (its teacher loaded from ``teacher``)."""
    from ultralytics.nn.distill_model import DistillationModel

    return DistillationModel(teacher_model=str(teacher), student_model=student)


# --- the command line -------------------------------------------------------------------------------------------------


def cli_pairs(argv: list[str]) -> list[str]:
    """Ultralytics' joining of ``key = value`` pieces of a command line into ``key=value`` words."""
    return _merge_equals_args(list(argv))


def cli_value(pair: str) -> tuple[str, Any]:
    """A ``key=value`` word as Ultralytics' ``yolo`` command reads it (numbers, booleans, None, tuples)."""
    return _parse_key_value_pair(pair)


def cli_scalar(text: str) -> Any:
    """A value as Ultralytics reads one on its command line (``0.5`` a number, ``off`` a word)."""
    return smart_value(text)


def training_threads() -> int:
    """The CPU threads Ultralytics trains with (``min(8, cores - 1)``)."""
    return NUM_THREADS
