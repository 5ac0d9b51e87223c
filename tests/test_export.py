"""The distilled student exports with Ultralytics like any YOLO model, and the exports compute the same outputs."""

import importlib.util

import numpy as np
import pytest
import torch
from helpers import tiny_run
from ultralytics import YOLO

from yolo_tsd import TSDTrainer


def pytorch_outputs(weights, x):
    model = YOLO(weights).model.float().eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return (out[0] if isinstance(out, (tuple, list)) else out).numpy()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)


def test_onnx_outputs_match_pytorch(run, image):
    import onnxruntime as ort

    path = YOLO(run.wdir / "best.pt").export(format="onnx", imgsz=64, simplify=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: image})[0]
    ref = pytorch_outputs(run.wdir / "best.pt", image)
    assert onnx_out.shape == ref.shape == (1, 4 + 5, 8 * 8 + 4 * 4 + 2 * 2)
    np.testing.assert_allclose(onnx_out, ref, rtol=1e-3, atol=1e-3)


def test_torchscript_outputs_match_pytorch(run, image):
    path = YOLO(run.wdir / "best.pt").export(format="torchscript", imgsz=64)
    ts = torch.jit.load(path)
    with torch.no_grad():
        out = ts(torch.from_numpy(image))
    np.testing.assert_allclose(out.numpy(), pytorch_outputs(run.wdir / "best.pt", image), rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_openvino_outputs_match_pytorch(run, image):
    import openvino as ov

    folder = YOLO(run.wdir / "best.pt").export(format="openvino", imgsz=64)
    compiled = ov.Core().compile_model(next(p for p in __import__("pathlib").Path(folder).glob("*.xml")), "CPU")
    out = compiled(image)[0]
    np.testing.assert_allclose(out, pytorch_outputs(run.wdir / "best.pt", image), rtol=1e-2, atol=1e-2)


def test_export_of_a_last_pt_saved_mid_run(data_yaml, teacher_pt, tmp_path, image):
    class Stop(Exception):
        pass

    def stop(trainer):
        raise Stop

    trainer = TSDTrainer(overrides=tiny_run(data_yaml, teacher_pt, tmp_path, epochs=3))
    trainer.add_callback("on_fit_epoch_end", stop)
    with pytest.raises(Stop):
        trainer.train()
    last = trainer.wdir / "last.pt"
    assert torch.load(last, weights_only=False)["optimizer"] is not None  # really a mid-run checkpoint
    path = YOLO(last).export(format="onnx", imgsz=64, simplify=False)
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: image})[0]
    np.testing.assert_allclose(out, pytorch_outputs(last, image), rtol=1e-3, atol=1e-3)
