"""`edge info`: what this machine offers edge, each unusable part with the reason (TensorRT and the CUDA driver are
probed by edge/tensorrt/version.py, which the build and the runner use too)."""

from __future__ import annotations

import os
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


# /proc/cpuinfo flags that decide how a CPU can compute int8 products: x86 AVX2 multiplies uint8 x int8 pairs into
# saturating 16-bit sums (vpmaddubsw); the VNNI instructions (AVX-512 VNNI, AVX-VNNI) and ARM's dot product
# (asimddp) sum four products straight into 32 bits.
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimddp")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


def cpu_int8_flags(cpuinfo: str) -> tuple[str, list[str]]:
    """(model name, the INT8_FLAGS it has) from the text of Linux's /proc/cpuinfo; an ARM CPU has no model
    name there, so the machine's architecture stands in for it."""
    name = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    flags = {f for line in re.findall(r"^(?:flags|Features)\s*:(.*)$", cpuinfo, re.MULTILINE) for f in line.split()}
    return name.group(1).strip() if name else platform.machine(), [f for f in INT8_FLAGS if f in flags]


def int8_path(flags: list[str]) -> str:
    """Which INT8 path edge takes on a CPU with these flags, and why its own int8 kernels are not it."""
    path = ("Q/DQ emulated in float32 (ONNX Runtime's int8 kernels off): every INT8 figure is what TensorRT "
            "computes, the same on any CPU")
    if "avx2" in flags and not set(VNNI_FLAGS) & set(flags):
        return path + "; ONNX Runtime's own int8 kernels would saturate 16-bit sums on this CPU (AVX2, no VNNI)"
    return path


def cpu() -> tuple[str, list[str]]:
    """This CPU's model name and INT8_FLAGS (the architecture and none where there is no /proc/cpuinfo)."""
    try:
        return cpu_int8_flags(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return cpu_int8_flags("")


def cpu_line() -> str:
    """This CPU and what it offers int8 inference, in one line: `edge info`, and every benchmark's machine line."""
    name, flags = cpu()
    offers = ", ".join(flags) or "none of " + ", ".join(INT8_FLAGS)
    return f"{name} ({platform.machine()}, {os.cpu_count()} cores), int8 instructions: {offers}"


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
        "cpu": cpu_line(),
        "int8 path": int8_path(cpu()[1]),
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
