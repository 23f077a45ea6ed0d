"""The GPU path's host-side choices, which need no GPU: memory modes, the automatic choice, and the errors."""

from __future__ import annotations

import subprocess
import sys

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


