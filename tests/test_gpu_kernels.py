"""The fused kernel without a GPU: its CUDA source compiled by nvcc for the GPUs edge targets, and the same source
compiled for the CPU (tests/kernel_on_cpu.py) held to the CPU reference (edge.preprocess); then the host side of
a launch. tests/test_gpu.py holds the kernel to the same reference on a GPU.

Tolerance: one pixel level after normalisation, i.e. 1/255 of the normalised range (|k| per level). The
reference rounds the resized image to uint8 and the kernel does not; the difference stays under 0.81 levels.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess

import numpy as np
import pytest

from edge.errors import EdgeError
from edge.gpu import kernels
from edge.gpu.kernels import ARGUMENT_FORMAT, FusedPreprocess, channel_constants, geometry
from edge.preprocess import Preprocess

from kernel_on_cpu import SPECS, compile_for_cpu, reference, run_kernel_on_cpu, tolerance

FRAME_SIZES = [(1, 1), (7, 9), (20, 20), (37, 100), (61, 45), (24, 24), (120, 67)]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    return compile_for_cpu(tmp_path_factory.mktemp("kernel"))


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("frame_size", FRAME_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_kernel_matches_the_cpu_reference_and_writes_every_element(kernel, name, frame_size):
    spec = SPECS[name]
    rng = np.random.default_rng()  # fresh frames every run
    frames = rng.integers(0, 256, (2, *frame_size, 3), dtype=np.uint8)
    got = run_kernel_on_cpu(kernel, frames, spec)
    assert not np.isnan(got).any(), "an output element was not written"
    expected = reference(frames, spec)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= tolerance(spec)


def test_kernel_on_a_1080p_frame_like_the_benchmark(kernel):
    spec = Preprocess(size=(224, 224), resize="shorter", resize_size=256, color="rgb", mean=(127.0,) * 3,
                      scale=1 / 128)
    frame = np.random.default_rng().integers(0, 256, (1, 1080, 1920, 3), dtype=np.uint8)
    difference = np.abs(run_kernel_on_cpu(kernel, frame, spec) - reference(frame, spec)).max()
    assert difference <= tolerance(spec)
    assert difference > 0  # the two really are different code paths (float vs uint8 intermediate)


@pytest.mark.parametrize("name", ["shorter-rgb-scale", "stretch-oblong-nhwc", "stretch-size-gray"])
def test_float16_output_is_the_float32_output_rounded_to_nearest_even(kernel, name):
    spec = SPECS[name]
    frames = np.random.default_rng().integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    half = run_kernel_on_cpu(kernel, frames, spec, np.float16)
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, run_kernel_on_cpu(kernel, frames, spec).astype(np.float16))


# Jetson Orin (JetPack 6), the H100 of the GPU test machine, Jetson Thor (JetPack 7); Xavier's sm_72 needs the
# CUDA 11.4 of JetPack 5, which CUDA 13's nvcc no longer targets.
ARCHITECTURES = ["sm_87", "sm_90", "sm_110"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_kernel_compiles_for_edge_gpus_without_local_memory(tmp_path, arch):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("needs nvcc (the CUDA toolkit) to compile the kernel")
    source = tmp_path / "kernel.cu"
    source.write_text(kernels.SOURCE)
    # The options kernel_function gives pycuda's SourceModule, which adds --cubin and -arch.
    result = subprocess.run([nvcc, "--cubin", "-arch", arch, *kernels.NVCC_OPTIONS, "-Xptxas", "-v",
                             "-o", str(tmp_path / "kernel.cubin"), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\b0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads", result.stderr), result.stderr


def test_geometry_follows_resized_shape_and_crop_origins():
    spec = Preprocess(size=(224, 224), resize="shorter", resize_size=256)
    g = geometry(spec, 1080, 1920)
    assert (g.resized_height, g.resized_width) == (256, 455)
    assert (g.crop_top, g.crop_left) == spec.crop_origins(256, 455)[0] == (16, 116)
    assert (g.out_height, g.out_width) == (224, 224)
    assert g.scale_x == np.float32(1920 / 455)
    assert kernels.grid(g, 3) == (7, 28, 3)


def test_channel_constants_fold_std_into_a_multiplier_and_pad_gray():
    mean, k = channel_constants(Preprocess(size=(8, 8), mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 8.0)))
    assert mean.tolist() == [1, 2, 3] and k.tolist() == [0.5, 0.25, 0.125]
    mean, k = channel_constants(Preprocess(size=(8, 8), color="gray", mean=(5.0,), scale=0.5))
    assert mean.tolist() == [5, 0, 0] and k.tolist() == [0.5, 1, 1]


def test_argument_format_matches_the_kernel_signature():
    signature = kernels.SOURCE.split("preprocess_frames(")[1].split(")")[0]
    assert len(signature.split(",")) == len(ARGUMENT_FORMAT)


def test_launch_marshals_every_argument_the_kernel_takes(monkeypatch):
    """The host side of a launch, up to the driver call: one packable value per kernel argument."""
    calls = []

    class Recorder:
        def prepared_async_call(self, grid, block, stream, *args):
            calls.append((grid, block, stream, args))

    monkeypatch.setattr(kernels, "kernel_function", lambda: Recorder())
    spec = SPECS["stretch-oblong-nhwc"]
    FusedPreprocess(spec, np.float16).launch(0x1000, 480, 640, 2, 0x2000, stream="s")
    (grid, block, stream, args), = calls
    struct.pack("=" + ARGUMENT_FORMAT.replace("P", "Q"), *args)  # raises if a value has the wrong type
    g = geometry(spec, 480, 640)
    assert grid == kernels.grid(g, 2) and block == kernels.BLOCK and stream == "s"
    assert args[0] == 0x1000 and args[1] == 480 * 640 * 3 and args[2] == 640 * 3
    assert args[7:11] == (g.crop_top, g.crop_left, 16, 24)
    assert args[12] == 0  # no mean image: a null pointer
    assert args[-3:] == (1, 1, 0x2000)  # nhwc, half, the output


def test_fused_preprocess_rejects_other_output_types():
    with pytest.raises(ValueError):
        FusedPreprocess(SPECS["stretch-bgr-nchw"], np.uint8)


def test_the_kernel_keeps_a_bounded_number_of_frame_sizes():
    from edge.gpu.kernels import SIZES_KEPT

    kernel = FusedPreprocess(Preprocess(size=(8, 8), resize="shorter", resize_size=9))
    for side in range(10, 10 + 3 * SIZES_KEPT):
        geometry, _ = kernel._prepared(side, side + 1)
        assert geometry.frame_height == side
    assert len(kernel._per_size) == SIZES_KEPT
    assert next(reversed(kernel._per_size)) == (10 + 3 * SIZES_KEPT - 1, 10 + 3 * SIZES_KEPT)


def test_nvcc_is_found_in_cuda_bin_when_path_lacks_it(tmp_path, monkeypatch):
    """A systemd service's PATH leaves out /usr/local/cuda/bin, where JetPack installs nvcc."""
    nvcc = tmp_path / "nvcc"
    nvcc.write_text("#!/bin/sh\n")
    nvcc.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(kernels, "CUDA_BIN", str(tmp_path))
    assert kernels.nvcc_path() == str(nvcc)
    nvcc.unlink()
    with pytest.raises(EdgeError, match="neither on PATH nor in") as error:
        kernels.nvcc_path()
    assert "\n" not in str(error.value)
