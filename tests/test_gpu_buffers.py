"""The GPU path's host-side choices, which need no GPU: memory modes, the automatic choice, and the errors."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from edge.errors import EdgeError
from edge.gpu import MEMORY_MODES, cuda_available, default_memory_mode, parse_memory_modes
from edge.gpu.buffers import HostBuffer


def test_the_device_decides_the_default_mode():
    assert default_memory_mode(integrated=True, can_map_host_memory=True) == "mapped"  # a Jetson: zero-copy
    assert default_memory_mode(integrated=False, can_map_host_memory=True) == "pinned"  # a discrete GPU
    assert default_memory_mode(integrated=True, can_map_host_memory=False) == "pinned"


def test_parse_memory_modes():
    assert parse_memory_modes(None, True, True) == ["mapped"]
    assert parse_memory_modes("auto", False, True) == ["pinned"]
    assert parse_memory_modes("pageable, pinned,mapped,pinned", False, True) == list(MEMORY_MODES)
    with pytest.raises(EdgeError, match="memory mode must be one of pageable, pinned, mapped, not 'zero'"):
        parse_memory_modes("pinned,zero", False, True)
    with pytest.raises(EdgeError, match="cannot map host memory"):
        parse_memory_modes("mapped", False, False)


def test_pageable_host_buffer_is_plain_numpy():
    buffer = HostBuffer((2, 4, 3), np.uint8, "pageable")
    assert buffer.array.shape == (2, 4, 3) and buffer.device_pointer is None
    with pytest.raises(EdgeError, match="memory mode must be one of"):
        HostBuffer((1,), np.uint8, "zero-copy")


def test_importing_the_gpu_package_does_not_import_pycuda():
    code = ("import sys, edge.gpu, edge.gpu.buffers, edge.gpu.kernels, edge.gpu.pipeline, edge.profiler, "
            "edge.telemetry; assert 'pycuda' not in sys.modules and 'jtop' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_pycuda_the_gpu_path_says_why():
    usable, reason = cuda_available()
    if usable:
        pytest.skip("this machine has CUDA and pycuda")
    assert reason
    from edge.gpu.buffers import GpuContext

    with pytest.raises(EdgeError):
        GpuContext()


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


def test_prepared_call_format_has_each_kernel_parameters_c_type():
    """pycuda's prepared_async_call packs the arguments with pycuda._pvt_struct in native mode (CPython's struct
    rules: each value aligned to its size, as the C ABI lays out a kernel's parameters), so the buffer matches the
    kernel's parameters exactly when each letter is its parameter's type; a wrong letter shifts all that follow."""
    from edge.gpu.kernels import ARGUMENT_FORMAT, SOURCE

    letters = {"int": "i", "long long": "q", "float": "f"}
    signature = SOURCE.split("preprocess_frames(")[1].split(")")[0]
    expected = ""
    for parameter in signature.split(","):
        *type_words, _ = parameter.replace("__restrict__", "").split()
        expected += "P" if "*" in parameter else letters[" ".join(type_words)]
    assert expected == ARGUMENT_FORMAT


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
