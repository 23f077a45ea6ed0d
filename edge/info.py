"""`edge info`: what this machine offers edge, each unusable part with the reason (TensorRT and the CUDA driver are
probed by edge/tensorrt/version.py, which the build and the runner use too)."""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path

from . import __version__
from .precision.calibrate import calibration_unsupported
from .telemetry import availability
from .tensorrt.version import cuda_summary, tensorrt_summary


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
        "cuda": cuda_summary(),
        "pycuda": _module("pycuda"),
        "tensorrt": tensorrt_summary(),
        "jetson-stats": ("yes ({})" if usable else "no ({})").format(telemetry),
    }
