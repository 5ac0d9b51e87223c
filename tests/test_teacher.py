"""The teacher's cheaper forward: BatchNorm folded (same outputs, every head branch kept) and the CUDA half option."""

from copy import deepcopy

import pytest
import torch
from helpers import build_model

from yolo_tsd.training.teacher import Teacher
from yolo_tsd.ultralytics_internals import raw_outputs


def flat(outputs):
    """Every tensor of a nest of dicts/lists, in a fixed order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    items = [outputs[k] for k in sorted(outputs)] if isinstance(outputs, dict) else list(outputs)
    return [t for item in items for t in flat(item)]


def with_trained_bn(model):
    """Random BatchNorm statistics and affine parameters, so folding them is not a no-op."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml"])
def test_fused_teacher_gives_the_unfused_outputs_and_keeps_every_branch(cfg):
    model = with_trained_bn(build_model(cfg))
    x = torch.rand(2, 3, 64, 64)
    reference = raw_outputs(deepcopy(model), x)
    teacher = Teacher(model)
    out = teacher(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in teacher.model.modules())
    assert out.keys() == reference.keys()  # end-to-end heads keep their one-to-many branch
    pairs = list(zip(flat(out), flat(reference), strict=True))
    assert len(pairs) >= 3
    for a, b in pairs:
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_half_teacher_is_cuda_only_and_keeps_its_precision():
    model = with_trained_bn(build_model("yolov8n.yaml"))
    x = torch.rand(2, 3, 64, 64)
    teacher = Teacher(model).to("cpu", half=True)  # CPU: warned, stays float32
    assert not teacher.half and all(p.dtype == torch.float32 for p in teacher.model.parameters())
    reference = teacher(x)
    teacher.set_half()  # what .to("cuda", half=True) does; float16 convolutions also run on CPU
    assert all(p.dtype == torch.float16 for p in teacher.model.parameters())
    out = teacher(x)
    for a, b in zip(flat(out), flat(reference), strict=True):
        assert a.dtype == torch.float16  # no float32 copy of the pyramid: the terms cast what they need
        torch.testing.assert_close(a.float(), b, atol=0.05 * b.abs().max().item() + 1e-3, rtol=0.05)


def test_distillation_terms_accept_a_float16_teacher():
    from helpers import TERMS_ON, distiller, make_batch

    student, teacher, tsd = distiller(**TERMS_ON)
    batch = make_batch()
    preds = student(batch["img"])
    ref = tsd.step(batch, preds)
    teacher.set_half()
    half = tsd.step(batch, preds)
    assert half.significance["detect"].imp_t.dtype == torch.float32
    for k in ("dfeat_loss", "dcls_loss", "dbox_loss"):
        assert half.items[k].dtype == torch.float32
        torch.testing.assert_close(half.items[k], ref.items[k], rtol=0.05, atol=1e-3)
