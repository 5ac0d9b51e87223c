"""The one module that knows Ultralytics' private behaviour: its version check and named views of its internals."""

import pytest
import torch
from helpers import build_model, make_batch

from yolo_tsd.ultralytics_internals import (
    ALLOW_ENV,
    TESTED_BELOW,
    TESTED_FROM,
    assign,
    branches,
    check_version,
    version_tuple,
)


def test_version_parsing():
    assert version_tuple("8.4.190") == (8, 4, 190)
    assert version_tuple("8.5.0rc1") == (8, 5, 0)
    assert version_tuple("8.4.190.dev3") == (8, 4, 190)


def test_installed_version_is_in_the_tested_range():
    check_version()  # the installed one: CI would fail here first if pyproject.toml's range drifted


@pytest.mark.parametrize("version", ["8.4.189", TESTED_BELOW + ".0", "9.0.0", "8.3.99"])
def test_untested_versions_are_refused_with_both_fixes(version, monkeypatch):
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    with pytest.raises(RuntimeError, match=f"ultralytics {version} is outside") as e:
        check_version(version)
    assert f"ultralytics>={TESTED_FROM},<{TESTED_BELOW}" in str(e.value) and f"{ALLOW_ENV}=1" in str(e.value)
    monkeypatch.setenv(ALLOW_ENV, "1")
    check_version(version)  # the override turns the refusal into a warning


def test_pyproject_pins_the_same_range():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'"ultralytics>={TESTED_FROM},<{TESTED_BELOW}"' in text


def test_assign_names_ultralytics_tuple_and_captures_its_ground_truth():
    student = build_model("yolov8n.yaml").train()
    batch = make_batch(bs=2, boxes_per_image=3)
    preds = student(batch["img"])
    crit = student.init_criterion()
    a = assign(crit, preds, batch)
    (fg, idx, _, anchors, strides), loss, items = crit.get_assigned_targets_and_loss(preds, batch)
    assert torch.equal(a.fg_mask, fg.bool()) and torch.equal(a.gt_idx, idx)
    assert torch.equal(a.anchors, anchors) and torch.equal(a.strides, strides) and torch.equal(a.loss, loss)
    assert a.gt_boxes.shape == (2, 3, 4) and a.gt_mask.all() and a.gt_labels.dtype == torch.long
    assert "preprocess" not in vars(crit)  # the recording shadow is gone again
    assert set(a.items) == set(items)


def test_branches_of_plain_and_end_to_end_criteria():
    plain = build_model("yolov8n.yaml").init_criterion()
    assert [(b.name, b.gain) for b in branches(plain)] == [(None, 1.0)]
    e2e = build_model("yolo26n.yaml").init_criterion()
    got = branches(e2e)
    assert [b.name for b in got] == ["one2many", "one2one"] and got[0].criterion is e2e.one2many
    assert (got[0].gain, got[1].gain) == (e2e.o2m, e2e.o2o)
