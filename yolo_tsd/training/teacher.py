"""The frozen teacher: find its file without downloading, load it with Ultralytics, check it fits the student, run it.

Loading a ``.pt`` file unpickles Python objects, which can run code: only pass checkpoints you trust.
"""

from __future__ import annotations

from pathlib import Path

import torch
from ultralytics.utils import LOGGER

from ..checks import resolve_weights
from ..errors import UsageError
from ..ultralytics_internals import (
    fuse_keep_branches,
    head,
    head_strides,
    is_detect_head,
    load_model,
    raw_outputs,
)


def names_list(names: dict | list) -> list[str]:
    """Class names as a list in id order."""
    return [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)


class Teacher:
    """A frozen Ultralytics detection model that returns raw head outputs and neck features without gradient.

    Args:
        model (torch.nn.Module): An Ultralytics ``DetectionModel`` with a plain ``Detect`` head.
        path (str): Where it was loaded from (kept for relaunch and resume).

    Examples:
        >>> teacher = Teacher.load("runs/detect/train/weights/best.pt")
        >>> preds = teacher(images)  # {"boxes", "scores", "feats"} (end-to-end heads: {"one2many", "one2one"})
    """

    def __init__(self, model: torch.nn.Module, path: str = ""):
        """Freeze ``model`` and keep it in eval mode."""
        if not is_detect_head(model):
            raise UsageError(
                f"teacher={path or type(model).__name__} is not a detection model: its head is "
                f"{type(head(model)).__name__}, not Detect. Pass a checkpoint trained with task=detect."
            )
        self.model = fuse_keep_branches(model.float().eval())
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.path = path
        self.half = False

    @classmethod
    def load(cls, path: str | Path) -> Teacher:
        """Load a teacher checkpoint with Ultralytics' own loader, with a clear error for a bad file."""
        file = resolve_weights(path, "teacher")
        try:
            model = load_model(file.resolve())  # absolute: no re-download by name
        except Exception as e:
            raise UsageError(
                f"teacher={path} could not be loaded as an Ultralytics checkpoint ({type(e).__name__}: {e}). "
                "Pass a .pt file written by Ultralytics training, e.g. runs/detect/train/weights/best.pt."
            ) from e
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "model"):
            raise UsageError(f"teacher={path} holds no Ultralytics model; pass weights/best.pt of a detection run")
        return cls(model, str(file.resolve()))  # absolute: valid for resume from another folder

    @property
    def names(self) -> list[str]:
        """Class names in id order."""
        return names_list(self.model.names)

    def to(self, device: torch.device | str, half: bool = False) -> Teacher:
        """Move to ``device``; ``half`` runs it in float16 and channels-last, on CUDA only (float32 on CPU, warned)."""
        device = torch.device(device)
        if half and device.type != "cuda":
            LOGGER.warning(f"tsd_teacher_half=True needs a CUDA device; the teacher runs in float32 on {device}")
        self.model.to(device)
        if half and device.type == "cuda":
            self.set_half()
        return self

    def set_half(self) -> None:
        """Store the weights in float16, channels-last; inputs are converted, outputs stay float16 (the terms cast)."""
        self.model.half().to(memory_format=torch.channels_last)
        self.half = True

    def check_names(self, names: dict | list) -> None:
        """Raise a ``ValueError`` listing both if the teacher's classes differ from the dataset's ``names``."""
        data_names = names_list(names)
        if self.names != data_names:
            raise UsageError(
                f"teacher and data have different classes: teacher {len(self.names)} {self.names} vs data "
                f"{len(data_names)} {data_names}. Use a teacher trained on the same data yaml (same names, same order)."
            )

    def check_student(self, student: torch.nn.Module) -> None:
        """Raise a ``ValueError`` if the student's head levels (strides) differ from the teacher's."""
        ts, ss = head_strides(self.model), head_strides(student)
        if ts != ss:
            raise UsageError(
                f"teacher and student have different head levels: teacher strides {ts} vs student strides {ss}. "
                "Pick a teacher and student with the same levels (e.g. both P3-P5)."
            )

    def __call__(self, images: torch.Tensor) -> dict:
        """Run on a preprocessed batch; returns the head's training-format outputs (no decoding, no NMS).

        The outputs keep the teacher's precision: a float16 teacher's feature pyramid is not copied to float32 here
        (at batch 64 and 640 px a yolov8x pyramid is ~0.5 GB); each term casts what it needs.
        """
        if self.half:
            images = images.half().contiguous(memory_format=torch.channels_last)
        return raw_outputs(self.model, images)
