"""The TensorRT runner (edge/tensorrt/runner.py) without TensorRT: the API by version, the device interface's
bookkeeping, and the one line when TensorRT is missing. Runs on an engine are in test_tensorrt_build.py."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from edge import Model
from edge.errors import EdgeError
from edge.tensorrt.runner import runtime_api
from edge.tensorrt.version import uses_bindings


@pytest.mark.parametrize("version, bindings",
                         [("8.5.2.2", True), ("8.6.1", True), ("10.3.0", False), ("11.0.0", False)])
def test_runtime_api_by_version(version, bindings):
    assert uses_bindings(version) is bindings
    stub_trt = types.SimpleNamespace(__version__=version)
    stub_engine = types.SimpleNamespace(num_bindings=0)  # just enough for the adapter's constructor
    api = runtime_api(stub_trt, stub_engine, context=None)
    assert type(api).__name__ == ("_BindingApi" if bindings else "_TensorApi")


def test_tensorrt_backend_without_tensorrt_says_so(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EdgeError, match="^TensorRT is not installed here"):
        Model.load(tiny, backend="tensorrt", precision="fp16")


def test_the_tensorrt_runner_offers_the_device_interface_and_host_backends_do_not():
    """The TensorRT runner's run_device bookkeeping (no GPU): which pointer goes to which tensor, and when the batch
    is set; device_engine takes it (as the torch backend) and leaves a host backend to the CPU path."""
    from types import SimpleNamespace

    from edge.gpu.pipeline import device_engine
    from edge.tensorrt.runner import IOTensor, TensorRTBackend

    calls = []

    class Engine(TensorRTBackend):  # the runner without TensorRT: set_batch and execute stood in for
        input_name, output_name = "image", "prob"
        tensors = [IOTensor("image", (-1, 3, 8, 8), np.dtype(np.float16), "input"),
                   IOTensor("prob", (-1, 5), np.dtype(np.float32), "output")]

        def __init__(self):
            self.scratch = {}

        def set_batch(self, n):
            calls.append(("set_batch", n))
            return {"image": (n, 3, 8, 8), "prob": (n, 5)}

        def execute(self, addresses, stream_handle):
            calls.append(("execute", addresses, stream_handle))

    engine = device_engine(Engine())
    assert isinstance(engine, TensorRTBackend) and engine.input_dtype == np.float16
    assert engine.output_shape(4) == (4, 5)
    stream = SimpleNamespace(handle=77)
    engine.run_device(0x10, 0x20, 2, stream)
    engine.run_device(0x30, 0x40, 2, stream)
    assert calls == [("set_batch", 4), ("set_batch", 2), ("execute", {"image": 0x10, "prob": 0x20}, 77),
                     ("execute", {"image": 0x30, "prob": 0x40}, 77)]

    Engine.tensors = [Engine.tensors[0], IOTensor("prob", (-1, 5), np.dtype(np.float16), "output")]
    with pytest.raises(EdgeError, match="reads a float32 output"):
        device_engine(Engine())
    assert device_engine(SimpleNamespace(run=lambda batch: batch)) is None  # a host backend (ONNX Runtime)
    torch_like = SimpleNamespace(run_device=lambda *args: None, input_dtype=np.dtype(np.float32))
    assert device_engine(torch_like) is torch_like


def test_tensorrt_runner_sets_the_batch_again_after_output_shape_changed_it():
    """output_shape(n) goes through set_batch(n), which sets the execution context's input shape: a run of the
    batch the adapter last ran must set its batch again, or the engine runs n frames into buffers sized for fewer."""
    from edge.tensorrt.runner import IOTensor, TensorRTBackend

    context_batch = []

    class Engine(TensorRTBackend):  # the runner without TensorRT: set_batch and execute stood in for
        input_name, output_name = "image", "prob"
        tensors = [IOTensor("image", (-1, 3, 8, 8), np.dtype(np.float32), "input"),
                   IOTensor("prob", (-1, 5), np.dtype(np.float32), "output")]

        def set_batch(self, n):
            context_batch.append(n)
            return {"image": (n, 3, 8, 8), "prob": (n, 5)}

        def __init__(self):
            self.scratch = {}

        def execute(self, addresses, stream_handle):
            assert context_batch[-1] == batch, f"the engine runs a batch of {context_batch[-1]}, not {batch}"

    engine = Engine()
    stream = SimpleNamespace(handle=77)
    batch = 2
    engine.run_device(0x10, 0x20, batch, stream)
    assert engine.output_shape(4) == (4, 5)  # a second pipeline on the same engine, sized for its full batch
    engine.run_device(0x10, 0x20, batch, stream)
