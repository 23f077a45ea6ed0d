"""The torch backend's ONNX -> PyTorch conversion (onnx2torch), checked on the CPU against ONNX Runtime.

The backend itself runs on CUDA only; what it runs is this conversion, so these tests hold it to ONNX Runtime on
every variant it accepts, and check that it refuses the ones it cannot convert before any GPU work.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tiny_models import tiny_classifier

try:
    import onnx2torch  # noqa: F401  (imports torch, and torchvision, which must match it)
    import torch
except (ImportError, RuntimeError) as e:  # RuntimeError: a torchvision built for another torch
    pytest.skip(f"needs PyTorch and onnx2torch (pip install 'edge[torch]'): {e}", allow_module_level=True)

from edge.backends import load_backend
from edge.backends.onnxruntime import OnnxRuntimeBackend
from edge.backends.torch import to_torch_module
from edge.errors import EdgeError
from edge.folder import PRECISIONS, Card
from edge.importer import PreprocessOptions, import_model
from edge.precision.calibrate import calibrate
from edge.precision.fp16 import make_fp16

# Largest |torch - onnxruntime| allowed, relative to the largest |output|. Measured on the CPU (torch 2.13): fp32
# agrees to about 1e-6; the fp16 graph to 7e-4 on EfficientNet-Lite0 and at most 1.3e-3 on the Caffe zoo nets
# (each side rounds its float16 intermediates in its own order).
TOLERANCE = {"fp32": 1e-5, "fp16": 3e-3}


def agreement(folder, precision: str, batch: int = 3) -> float:
    """Max |torch - onnxruntime| / max |onnxruntime| on a random batch, the model converted as the backend does."""
    card = Card.read(folder)
    path = folder / PRECISIONS[precision].onnx
    module, input_dtype = to_torch_module(path)
    batch = card.batch or batch
    inputs = np.random.default_rng(0).standard_normal((batch, *card.input_shape)).astype(input_dtype)
    expected = OnnxRuntimeBackend(path, card).run(inputs)
    with torch.inference_mode():
        got = module(torch.from_numpy(inputs)).float().numpy()
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max() / np.abs(expected).max())


TINY = {"logits": {}, "softmax": {"softmax": True}, "nhwc": {"nhwc": True}, "batch 1": {"batch": 1}}


@pytest.fixture(scope="module", params=list(TINY))
def tiny_folder(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("torch")
    kwargs = TINY[request.param]
    onnx_path = tiny_classifier(root / "tiny.onnx", classes=10, size=32, **kwargs)
    folder = import_model(onnx_path, name="tiny", repo=root / "engines",
                          options=PreprocessOptions(layout="nhwc" if kwargs.get("nhwc") else "nchw"))
    make_fp16(folder)
    return folder


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_conversion_agrees_with_onnxruntime_on_tiny_models(tiny_folder, precision):
    assert agreement(tiny_folder, precision) <= TOLERANCE[precision]


@pytest.mark.shared
def test_conversion_agrees_with_onnxruntime_on_efficientnet_lite0(shared, tmp_path):
    folder = import_model(shared / "models/efficientnet_lite0/model.onnx", name="effnet", repo=tmp_path)
    make_fp16(folder)
    for precision in ("fp32", "fp16"):
        assert agreement(folder, precision, batch=2) <= TOLERANCE[precision], precision


def test_int8_variant_is_refused_naming_the_file_and_the_nodes(tmp_path, onnxruntime_calibrates):
    folder = import_model(tiny_classifier(tmp_path / "tiny.onnx", size=32), name="tiny", repo=tmp_path / "engines")
    rng = np.random.default_rng(0)
    images = [tmp_path / f"{i}.png" for i in range(4)]
    for path in images:
        cv2.imwrite(str(path), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    calibrate(folder, images)
    # load_backend, not just to_torch_module: the backend refuses before it looks for a GPU.
    with pytest.raises(EdgeError) as refused:
        load_backend("torch", folder, Card.read(folder), "int8")
    message = str(refused.value)
    assert "\n" not in message
    assert str(folder / "model.int8.onnx") in message
    assert "DequantizeLinear, QuantizeLinear" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: the backend loads")
def test_backend_refuses_to_run_without_cuda(tmp_path):
    folder = import_model(tiny_classifier(tmp_path / "tiny.onnx"), name="tiny", repo=tmp_path / "engines")
    with pytest.raises(EdgeError, match="runs on a CUDA GPU"):
        load_backend("torch", folder, Card.read(folder), "fp32")
