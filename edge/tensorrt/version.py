"""Which TensorRT is here, and what edge does with it: the version policy, and this machine's GPU.

    11.x      strongly typed networks from model.onnx / model.fp16.onnx / model.int8.onnx; no precision flags and no
              calibrator (11 removed both): the precision is in the graph.
    10.x      the same by default; `implicit=True` (edge build --implicit) instead parses model.onnx and sets the
              FP16/INT8 builder flags, with an entropy calibrator that only reads calibration.cache.
    8.5, 8.6  explicit-batch networks from model.onnx with the FP16/INT8 flags and the same calibrator.

Engines run through the binding API on 8.x, the name-based tensor API on 10/11 (docs/tensorrt.md lists every
call and the versions that have it). `edge info` reports what this module finds (tensorrt_summary).
"""

from __future__ import annotations

import ctypes
import re

from ..errors import EdgeError, first_line
from ..folder import FP32, PRECISIONS

STRONGLY_TYPED = "strongly-typed"  # precision comes from the ONNX graph's types (model.fp16.onnx, model.int8.onnx)
IMPLICIT = "implicit"  # precision from FP16/INT8 builder flags; INT8 scales from calibration.cache
WHERE_TO_BUILD = "build engines on the Jetson (or GPU machine) that will run them"


def check_supported(version: str) -> int:
    """The major version, when edge knows how to build with this TensorRT."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if not match:
        raise EdgeError(f"cannot read the TensorRT version {version!r}")
    major, minor = int(match[1]), int(match[2])
    if (major, minor) in ((8, 5), (8, 6)) or major in (10, 11):
        return major
    raise EdgeError(f"TensorRT {version} is not supported: edge builds and runs engines with TensorRT 8.5, 8.6, 10.x "
                    "and 11.x")


def build_path(version: str, implicit: bool = False) -> str:
    """STRONGLY_TYPED or IMPLICIT: how this TensorRT builds, given whether the user asked for --implicit."""
    major = check_supported(version)
    if major == 8:
        return IMPLICIT  # 8.x has no strongly typed networks (they arrived in 9.1)
    if not implicit:
        return STRONGLY_TYPED
    if major == 10:
        return IMPLICIT
    raise EdgeError(f"--implicit needs TensorRT 8.5 to 10.x: TensorRT {version} removed the FP16/INT8 builder flags "
                    "and calibrators; build without --implicit (from "
                    f"{' / '.join(p.onnx for p in PRECISIONS.values() if p != FP32)})")


def uses_bindings(version: str) -> bool:
    """8.x runs engines through the binding API; 10 removed it for the name-based tensor API."""
    return check_supported(version) == 8


def import_tensorrt():
    try:
        import tensorrt
    except Exception as e:  # a broken install raises more than ImportError
        raise EdgeError(f"TensorRT is not installed here (import tensorrt failed: {described(e)}); "
                        f"{WHERE_TO_BUILD}") from None
    return tensorrt


def _libcuda():
    """The CUDA driver, asked directly: neither pycuda nor TensorRT is needed to know whether a GPU is there."""
    return ctypes.CDLL("libcuda.so.1")


def cuda_summary() -> str:
    """For `edge info`: the CUDA driver's API version and its devices, or why there are none."""
    try:
        cuda = _libcuda()
    except OSError:
        return "no (libcuda.so.1 not found: no NVIDIA driver)"
    count, version = ctypes.c_int(0), ctypes.c_int(0)
    if cuda.cuInit(0) != 0:
        return "no (the NVIDIA driver is there but cuInit failed: no usable GPU)"
    cuda.cuDriverGetVersion(ctypes.byref(version))
    cuda.cuDeviceGetCount(ctypes.byref(count))
    return f"yes (driver API {version.value // 1000}.{version.value % 1000 // 10}, {count.value} device(s))"


def gpu_identity() -> tuple[str, str]:
    """(device name, compute capability "major.minor") of CUDA device 0, asked of the driver directly."""
    try:
        cuda = _libcuda()
    except OSError:
        raise EdgeError(f"no NVIDIA driver here (libcuda.so.1 not found); {WHERE_TO_BUILD}") from None
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        raise EdgeError(f"no usable GPU here (the CUDA driver found no device); {WHERE_TO_BUILD}")
    cuda.cuDeviceGetName(name, len(name), device)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
    return name.value.decode(errors="replace"), f"{major.value}.{minor.value}"


def tensorrt_summary() -> str:
    """For `edge info`: the TensorRT version and the build path it takes, or why there is none."""
    try:
        trt = import_tensorrt()
        version = trt.__version__
        path = build_path(version)
    except EdgeError as e:
        return f"no ({e})"
    graphs = f"strongly typed from {' / '.join(p.onnx for p in PRECISIONS.values())}"
    if path == IMPLICIT:
        how = "implicit precision: model.onnx with FP16/INT8 builder flags, INT8 scales from calibration.cache"
    elif check_supported(version) == 10:
        how = f"{graphs} (--implicit: builder flags and calibration.cache)"
    else:
        how = graphs
    try:
        import polygraphy  # noqa: F401
    except ImportError:
        how += "; polygraphy is missing, which `edge build` needs (pip install polygraphy)"
    return f"yes ({version}: {how})"


def described(e: BaseException) -> str:
    """`ModuleNotFoundError: No module named 'tensorrt'`: the type says as much as the message here."""
    return f"{type(e).__name__}: {first_line(e)}" if str(e).strip() else type(e).__name__
