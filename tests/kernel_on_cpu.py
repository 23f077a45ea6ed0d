"""The fused kernel's own CUDA source, compiled for the CPU with g++ and run there, for tests without a GPU.

The kernel (edge/gpu/kernels.py SOURCE) is plain C++ apart from CUDA's thread indices and one PTX instruction.
A short prelude supplies the indices as globals that a loop over the grid sets before each call, and the PTX
float -> half conversion is replaced by the compiler's _Float16 conversion (both IEEE round to nearest even).
Compiled with -ffp-contract=off, like the kernel's --fmad=false, every float operation rounds once as on the GPU.

The launch goes through the product's own host code, FusedPreprocess.launch, with two stand-ins for pycuda in
which device memory is host memory: `kernel_function()` returns the compiled loop, and `pycuda.driver.to_device`
(used for the mean image) keeps a host copy and hands out its address. So the geometry, the argument packing and
the kernel's index math all run here as they would on a GPU.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edge.gpu import kernels
from edge.preprocess import Preprocess, preprocess

PRELUDE = r"""
#include <math.h>
#include <algorithm>
#include <cstring>
using std::min;
struct Index { unsigned x, y, z; };
static Index blockIdx, threadIdx, blockDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
static inline unsigned short float_to_half_rn(float value) {
    _Float16 half = (_Float16)value;
    unsigned short bits;
    memcpy(&bits, &half, sizeof bits);
    return bits;
}
"""
PTX_HALF = 'asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(value));'
CTYPES = {"P": ctypes.c_void_p, "q": ctypes.c_longlong, "i": ctypes.c_int, "f": ctypes.c_float}


def kernel_parameters() -> list[str]:
    signature = kernels.SOURCE.split("preprocess_frames(")[1].split(")")[0]
    return [parameter.split()[-1].lstrip("*") for parameter in signature.split(",")]


def cpu_source() -> str:
    assert kernels.SOURCE.count(PTX_HALF) == 1, "the kernel's float16 store changed: update PTX_HALF here"
    names = ", ".join(kernel_parameters())
    signature = kernels.SOURCE.split("preprocess_frames(")[1].split(")")[0]
    launch = f"""
extern "C" void launch(unsigned grid_x, unsigned grid_y, unsigned grid_z, unsigned block_x, unsigned block_y,
                       {signature}) {{
    blockDim = Index{{block_x, block_y, 1}};
    for (blockIdx.z = 0; blockIdx.z < grid_z; ++blockIdx.z)
      for (blockIdx.y = 0; blockIdx.y < grid_y; ++blockIdx.y)
        for (blockIdx.x = 0; blockIdx.x < grid_x; ++blockIdx.x)
          for (threadIdx.y = 0; threadIdx.y < block_y; ++threadIdx.y)
            for (threadIdx.x = 0; threadIdx.x < block_x; ++threadIdx.x)
              preprocess_frames({names});
}}
"""
    return PRELUDE + kernels.SOURCE.replace(PTX_HALF, "h = float_to_half_rn(value);") + launch


def compile_for_cpu(folder: Path) -> ctypes.CDLL:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("needs g++ to compile the kernel's source for the CPU")
    source, library = folder / "kernel_on_cpu.cpp", folder / "kernel_on_cpu.so"
    source.write_text(cpu_source())
    subprocess.run([compiler, "-O2", "-std=c++17", "-ffp-contract=off", "-fPIC", "-shared", "-o", str(library),
                    str(source)], check=True)
    lib = ctypes.CDLL(str(library))
    lib.launch.restype = None
    lib.launch.argtypes = [ctypes.c_uint] * 5 + [CTYPES[letter] for letter in kernels.ARGUMENT_FORMAT]
    return lib


class CompiledKernel:
    """What kernel_function() returns on a GPU, for the CPU: prepared_async_call runs the whole grid at once."""

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib

    def prepared_async_call(self, grid, block, stream, *args):
        self.lib.launch(*grid, *block[:2], *args)


class HostAllocation:
    """pycuda.driver.to_device's result where the 'device' is the host: int() is the copy's address."""

    def __init__(self, array: np.ndarray):
        self.array = np.ascontiguousarray(array).copy()

    def __int__(self) -> int:
        return self.array.ctypes.data


def run_kernel_on_cpu(lib: ctypes.CDLL, frames: np.ndarray, spec: Preprocess, dtype=np.float32) -> np.ndarray:
    """The kernel's output for uint8 (N, H, W, 3) BGR frames, launched on a NaN-filled output."""
    frames = np.ascontiguousarray(frames)
    out = np.full(kernels.output_shape(spec, len(frames)), np.nan, dtype=dtype)
    driver = types.SimpleNamespace(to_device=HostAllocation)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels, "kernel_function", lambda: CompiledKernel(lib))
        patch.setitem(sys.modules, "pycuda", types.SimpleNamespace(driver=driver))
        patch.setitem(sys.modules, "pycuda.driver", driver)
        kernel = kernels.FusedPreprocess(spec, dtype)
        kernel.launch(frames.ctypes.data, frames.shape[1], frames.shape[2], len(frames), out.ctypes.data, None)
    return out


def reference(frames: np.ndarray, spec: Preprocess) -> np.ndarray:
    return np.stack([preprocess(frame, spec) for frame in frames])


def tolerance(spec: Preprocess) -> float:
    """One pixel level after normalisation: the reference rounds the resized image to uint8, the kernel does not."""
    _, k = kernels.channel_constants(spec)
    return float(np.abs(k[: spec.channels]).max()) * 1.0001


SPECS = {
    "stretch-bgr-nchw": Preprocess(size=(24, 24), mean=(104.0, 117.0, 123.0)),
    "shorter-rgb-scale": Preprocess(size=(20, 20), resize="shorter", resize_size=27, color="rgb",
                                    mean=(127.0, 127.0, 127.0), scale=1 / 128),
    "shorter-default-std": Preprocess(size=(16, 16), resize="shorter", color="rgb", mean=(123.7, 116.3, 103.5),
                                      std=(58.4, 57.1, 57.4)),
    "stretch-oblong-nhwc": Preprocess(size=(16, 24), color="rgb", mean=(1.0, 2.0, 3.0), scale=0.02, layout="nhwc"),
    "stretch-size-gray": Preprocess(size=(28, 28), resize="stretch", resize_size=32, color="gray", mean=(33.0,),
                                    scale=0.0125),
    "mean-image": Preprocess(size=(18, 18), resize_size=21,
                             mean_image=np.random.default_rng(5).uniform(90, 140, (3, 25, 25)).astype(np.float32)),
}
