"""`edge info`: what this machine offers edge, each unusable part with the reason."""

from __future__ import annotations

import ctypes
import platform
import re
import sys
from pathlib import Path


def _cuda() -> str:
    """The CUDA driver, asked directly: pycuda is not needed to know whether a GPU is there."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no (libcuda.so.1 not found: no NVIDIA driver)"
    count, version = ctypes.c_int(0), ctypes.c_int(0)
    if cuda.cuInit(0) != 0:
        return "no (the NVIDIA driver is there but cuInit failed: no usable GPU)"
    cuda.cuDriverGetVersion(ctypes.byref(version))
    cuda.cuDeviceGetCount(ctypes.byref(count))
    return f"yes (driver API {version.value // 1000}.{version.value % 1000 // 10}, {count.value} device(s))"


def _module(name: str, attribute: str = "__version__") -> str:
    try:
        module = __import__(name)
        return f"yes ({getattr(module, attribute, 'unknown version')})"
    except Exception as e:  # a broken install raises more than ImportError
        return f"no ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else name})"


def _opencv() -> str:
    import cv2

    build = cv2.getBuildInformation()
    gstreamer = re.search(r"GStreamer:\s*(\S+)", build)
    has_gstreamer = bool(gstreamer and gstreamer.group(1).upper().startswith("YES"))
    where = Path(cv2.__file__).parent
    return f"{cv2.__version__} at {where}, GStreamer {'yes' if has_gstreamer else 'no (csi:// needs JetPack’s OpenCV)'}"


def report() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime

    from . import __version__
    from .backends.tensorrt import tensorrt_summary
    from .precision.calibrate import calibration_unsupported
    from .telemetry import availability

    usable, telemetry = availability()
    cannot_calibrate = calibration_unsupported()

    return {
        "edge": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "machine": f"{platform.system()} {platform.machine()}",
        "numpy": numpy.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": f"{onnxruntime.__version__} ({', '.join(onnxruntime.get_available_providers())})",
        "calibrate": f"no ({cannot_calibrate})" if cannot_calibrate else "yes",
        "opencv": _opencv(),
        "cuda": _cuda(),
        "pycuda": _module("pycuda"),
        "tensorrt": tensorrt_summary(),
        "jetson-stats": ("yes ({})" if usable else "no ({})").format(telemetry),
    }
