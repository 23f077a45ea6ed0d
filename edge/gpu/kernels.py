"""The fused preprocessing kernel: one launch turns uint8 HWC BGR frames into the engine's input.

Per output element it does what edge/preprocess.py does in five steps (resize, centre crop, colour, values,
layout), without the intermediate images:

    resized pixel (ry, rx) = output pixel (y, x) + crop origin
    source point  sy = (ry + 0.5) * frame_height / resized_height - 0.5      (OpenCV INTER_LINEAR: half-pixel
                  y0 = floor(sy), fy = sy - y0; clamped to the frame's edges  centres, edge pixels repeated)
    pixel         bilinear mix of the four neighbours, per BGR channel, in float32
    colour        BGR kept, swapped to RGB, or gray = rint(0.114 B + 0.587 G + 0.299 R) (cvtColor's weights)
    value         (pixel - mean_image[c, y, x] - mean[c]) * k[c]   with k = scale, or 1 / std
    layout        NCHW or NHWC, float32 or float16 (round to nearest even)

The CPU reference rounds the resized image to uint8 before the value step; the kernel keeps the float, so the two
differ by less than one pixel level (0.8 at most on random frames; gray, rounded like cvtColor, by one at most).
It is compiled with --fmad=false: without fused multiply-adds every step rounds once, in float32, so the same
source compiled for the CPU (tests/kernel_on_cpu.py, held to the CPU reference in tests/test_gpu_kernels.py)
computes the same numbers as on the GPU.

Compilation: pycuda's SourceModule runs nvcc once for this source, these options and the device's architecture,
and keeps the cubin in its on-disk cache (keyed by the source text, which has no #include, the options with the
architecture, and `nvcc --version`), so later processes skip the compile but still run nvcc for that version.
So nvcc must be found on every start: on PATH, else in /usr/local/cuda/bin, where JetPack installs it and which a
systemd service's PATH leaves out. Within one process the loaded function is kept per device (its PCI bus id) in
`_FUNCTIONS`; edge always works in the device's primary context (the one the CUDA runtime, TensorRT and PyTorch
use), so one device means one context.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import EdgeError, first_line
from ..preprocess import Preprocess

COLOR_CODES = {"bgr": 0, "rgb": 1, "gray": 2}
BLOCK = (32, 8, 1)

SOURCE = r"""
// The two source pixels and the weight of the second, along one axis, for resized index i (OpenCV INTER_LINEAR:
// half-pixel centres, edge pixels repeated)
__device__ __forceinline__ void source_pixels(int i, float scale, int size, int* i0, int* i1, float* weight)
{
    const float s = (i + 0.5f) * scale - 0.5f;
    int lo = (int)floorf(s);
    float w = s - lo;
    if (lo < 0) { lo = 0; w = 0.f; }
    if (lo >= size - 1) { lo = size - 1; w = 0.f; }
    *i0 = lo;
    *i1 = min(lo + 1, size - 1);
    *weight = w;
}

extern "C" __global__ void preprocess_frames(
    const unsigned char* __restrict__ frames, long long frame_stride, int row_pitch,
    int frame_height, int frame_width, float scale_y, float scale_x,
    int crop_top, int crop_left, int out_height, int out_width, int color,
    const float* __restrict__ mean_image,
    float mean0, float mean1, float mean2, float k0, float k1, float k2,
    int nhwc, int half, void* __restrict__ out)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int n = blockIdx.z;
    if (x >= out_width || y >= out_height) return;

    int y0, y1, x0, x1;
    float fy, fx;
    source_pixels(y + crop_top, scale_y, frame_height, &y0, &y1, &fy);
    source_pixels(x + crop_left, scale_x, frame_width, &x0, &x1, &fx);

    const unsigned char* frame = frames + n * frame_stride;
    const unsigned char* row0 = frame + (long long)y0 * row_pitch;
    const unsigned char* row1 = frame + (long long)y1 * row_pitch;
    float bgr[3];
    for (int c = 0; c < 3; ++c) {
        float top = row0[x0 * 3 + c] * (1.f - fx) + row0[x1 * 3 + c] * fx;
        float bottom = row1[x0 * 3 + c] * (1.f - fx) + row1[x1 * 3 + c] * fx;
        bgr[c] = top * (1.f - fy) + bottom * fy;
    }

    float pixel[3];
    int channels = 3;
    if (color == 2) {
        channels = 1;
        pixel[0] = rintf(0.114f * bgr[0] + 0.587f * bgr[1] + 0.299f * bgr[2]);
    } else if (color == 1) {
        pixel[0] = bgr[2]; pixel[1] = bgr[1]; pixel[2] = bgr[0];
    } else {
        pixel[0] = bgr[0]; pixel[1] = bgr[1]; pixel[2] = bgr[2];
    }

    const float mean[3] = {mean0, mean1, mean2};
    const float k[3] = {k0, k1, k2};
    const long long plane = (long long)out_height * out_width;
    for (int c = 0; c < channels; ++c) {
        float value = pixel[c];
        if (mean_image) value -= mean_image[c * plane + (long long)y * out_width + x];
        value = (value - mean[c]) * k[c];
        long long index = nhwc ? (((long long)n * out_height + y) * out_width + x) * channels + c
                               : ((long long)n * channels + c) * plane + (long long)y * out_width + x;
        if (half) {
            unsigned short h;
            asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(value));
            ((unsigned short*)out)[index] = h;
        } else {
            ((float*)out)[index] = value;
        }
    }
}
"""

NVCC_OPTIONS = ["-O3", "--fmad=false"]  # see "It is compiled with --fmad=false" above

# pycuda's prepared-call format, one letter per kernel argument above (P pointer, q long long, i int, f float).
ARGUMENT_FORMAT = "PqiiiffiiiiiPffffffiiP"


@dataclass(frozen=True)
class Geometry:
    """Where each output pixel comes from, for frames of one size: the kernel's integer and scale arguments."""

    frame_height: int
    frame_width: int
    resized_height: int
    resized_width: int
    crop_top: int
    crop_left: int
    out_height: int
    out_width: int

    @property
    def scale_y(self) -> np.float32:
        return np.float32(self.frame_height / self.resized_height)

    @property
    def scale_x(self) -> np.float32:
        return np.float32(self.frame_width / self.resized_width)


def geometry(spec: Preprocess, frame_height: int, frame_width: int) -> Geometry:
    """The resize and centre crop of the CPU reference, for one frame size."""
    resized_height, resized_width = spec.resized_shape(frame_height, frame_width)
    ((crop_top, crop_left),) = spec.crop_origins(resized_height, resized_width)
    return Geometry(frame_height, frame_width, resized_height, resized_width, crop_top, crop_left, *spec.size)


def channel_constants(spec: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """(mean, k) as three float32 each, padded for one gray channel: value = (pixel - mean) * k."""
    mean = np.zeros(3, np.float32)
    k = np.ones(3, np.float32)
    mean[: spec.channels] = spec.mean
    if spec.std is not None:
        k[: spec.channels] = 1.0 / np.asarray(spec.std, np.float64)
    else:
        k[: spec.channels] = spec.scale
    return mean, k


def cropped_mean_image(spec: Preprocess, g: Geometry) -> np.ndarray | None:
    """The mean image as the CPU reference uses it for this frame size: resized with the frame, then cropped.

    (C, out_height, out_width) float32, uploaded once per frame size; None without a mean image.
    """
    if spec.mean_image is None:
        return None
    mean = spec.mean_image.transpose(1, 2, 0).astype(np.float32)
    if mean.shape[:2] != (g.resized_height, g.resized_width):
        mean = cv2.resize(mean, (g.resized_width, g.resized_height), interpolation=cv2.INTER_LINEAR)
    mean = mean.reshape(g.resized_height, g.resized_width, spec.channels)
    window = mean[g.crop_top : g.crop_top + g.out_height, g.crop_left : g.crop_left + g.out_width]
    return np.ascontiguousarray(window.transpose(2, 0, 1))


def output_shape(spec: Preprocess, batch: int) -> tuple[int, int, int, int]:
    height, width = spec.size
    if spec.layout == "nchw":
        return batch, spec.channels, height, width
    return batch, height, width, spec.channels


def grid(g: Geometry, batch: int) -> tuple[int, int, int]:
    return (-(-g.out_width // BLOCK[0]), -(-g.out_height // BLOCK[1]), batch)


CUDA_BIN = "/usr/local/cuda/bin"


def nvcc_path() -> str:
    nvcc = shutil.which("nvcc") or shutil.which("nvcc", path=CUDA_BIN)
    if nvcc is None:
        raise EdgeError(f"the GPU path compiles its preprocessing kernel with nvcc, which is neither on PATH nor in "
                        f"{CUDA_BIN}: install the CUDA toolkit (on a Jetson: sudo apt install nvidia-jetpack)")
    return nvcc


_FUNCTIONS: dict = {}  # PCI bus id of the device -> (module, the prepared kernel)


def kernel_function():
    """The kernel for the current context's device: compiled and loaded on first use, then reused."""
    import pycuda.driver as cuda
    from pycuda.compiler import SourceModule

    key = cuda.Context.get_device().pci_bus_id()
    if key not in _FUNCTIONS:
        try:
            module = SourceModule(SOURCE, nvcc=nvcc_path(), no_extern_c=True, options=NVCC_OPTIONS)
        except cuda.CompileError as e:
            raise EdgeError(f"nvcc cannot compile the preprocessing kernel: {first_line(e)}") from None
        function = module.get_function("preprocess_frames")
        function.prepare(ARGUMENT_FORMAT)
        _FUNCTIONS[key] = (module, function)  # the module owns the function's code: keep it alive
    return _FUNCTIONS[key][1]


SIZES_KEPT = 8  # frame sizes whose geometry and device mean image are kept: a camera has one


class FusedPreprocess:
    """Launches the kernel for one Preprocess spec; keeps the geometry and mean image per frame size."""

    def __init__(self, spec: Preprocess, dtype=np.float32):
        self.spec = spec
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float16):
            raise ValueError(f"the kernel writes float32 or float16, not {self.dtype}")
        self.mean, self.k = channel_constants(spec)
        self._per_size: dict[tuple[int, int], tuple[Geometry, object]] = {}

    def _prepared(self, frame_height: int, frame_width: int):
        key = (frame_height, frame_width)
        if key not in self._per_size:
            g = geometry(self.spec, frame_height, frame_width)
            mean_image = cropped_mean_image(self.spec, g)
            device_mean = None
            if mean_image is not None:
                import pycuda.driver as cuda

                device_mean = cuda.to_device(mean_image)
            if len(self._per_size) == SIZES_KEPT:  # a folder of many image sizes must not grow GPU memory
                del self._per_size[next(iter(self._per_size))]  # the oldest; freeing waits for kernels using it
            self._per_size[key] = (g, device_mean)
        return self._per_size[key]

    def launch(self, frames_pointer: int, frame_height: int, frame_width: int, batch: int, out_pointer: int,
               stream) -> None:
        """Queue the kernel on `stream`: `batch` packed uint8 HxWx3 frames at frames_pointer -> out_pointer."""
        g, device_mean = self._prepared(frame_height, frame_width)
        row_pitch = frame_width * 3
        kernel_function().prepared_async_call(
            grid(g, batch), BLOCK, stream,
            int(frames_pointer), row_pitch * frame_height, row_pitch, g.frame_height, g.frame_width,
            g.scale_y, g.scale_x, g.crop_top, g.crop_left, g.out_height, g.out_width,
            COLOR_CODES[self.spec.color], int(device_mean) if device_mean is not None else 0,
            *(float(v) for v in self.mean), *(float(v) for v in self.k),
            int(self.spec.layout == "nhwc"), int(self.dtype == np.float16), int(out_pointer),
        )
