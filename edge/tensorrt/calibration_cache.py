"""TensorRT's calibration cache, the text file its INT8 calibrators read and write:

    TRT-8502-EntropyCalibration2
    input: 3c010204
    /_conv_stem/Conv_output_0: 3d8e3a8f

Line 1 is `TRT-<NV_TENSORRT_VERSION>-<algorithm>`; TensorRT ignores a cache whose version or algorithm differs
from its own, so the header is stamped for the TensorRT that will read it (cache_header). Each other line is an
ONNX tensor name and its scale, amax / 127, as the big-endian hex of the float32 bit pattern.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgeError

ALGORITHM = "EntropyCalibration2"  # the calibrator edge's TensorRT backend loads a cache with (cache only, no images)
DEFAULT_TENSORRT = "8.5.2"  # JetPack 5.1: the TensorRT where implicit INT8 from a cache is the native route


@dataclass(frozen=True)
class CalibrationCache:
    tensorrt_version: int  # NV_TENSORRT_VERSION as written in the header
    algorithm: str
    scales: dict[str, float]  # tensor name -> amax / 127


def tensorrt_version_number(version: str) -> int:
    """NV_TENSORRT_VERSION: major*1000+minor*100+patch before TensorRT 10, major*10000+minor*100+patch from 10."""
    try:
        major, minor, patch = (int(part) for part in (version.split(".") + ["0", "0"])[:3])
    except ValueError:
        raise EdgeError(f"{version!r}: not a TensorRT version like 8.5.2") from None
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def cache_header(tensorrt_version: str = DEFAULT_TENSORRT, algorithm: str = ALGORITHM) -> str:
    """The first line, for a TensorRT that reads calibration caches: 8.5, 8.6 or 10.x (`edge build --implicit`);
    9.x never shipped for Jetsons and 11 has no calibrators."""
    number = tensorrt_version_number(tensorrt_version)
    if not (8500 <= number < 8700 or 100000 <= number < 110000):
        raise EdgeError(f"TensorRT {tensorrt_version}: only TensorRT 8.5, 8.6 and 10.x read a calibration cache "
                        "(model.int8.onnx, which every TensorRT builds from, needs none: keep the default)")
    return f"TRT-{number}-{algorithm}"


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text.rjust(8, "0")))[0]


def format_cache(scales: dict[str, float], tensorrt_version: str = DEFAULT_TENSORRT) -> str:
    lines = [cache_header(tensorrt_version)]
    lines += [f"{name}: {scale_to_hex(scale)}" for name, scale in scales.items()]
    return "\n".join(lines) + "\n"


def parse_cache(text: str, source: Path | str = "calibration cache") -> CalibrationCache:
    lines = [line for line in text.splitlines() if line.strip()]
    parts = lines[0].split("-", 2) if lines else []
    if len(parts) != 3 or parts[0] != "TRT" or not parts[1].isdigit():
        raise EdgeError(f"{source}: not a TensorRT calibration cache (first line should be like TRT-8502-{ALGORITHM})")
    scales = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(": ")
        try:
            scales[name] = hex_to_scale(value.strip())
        except (ValueError, struct.error):
            sep = ""
        if not sep or not name:
            raise EdgeError(f"{source}: line {number} is not `tensor: hex scale`: {line[:80]!r}")
    return CalibrationCache(int(parts[1]), parts[2], scales)


def read_cache(path: Path) -> CalibrationCache:
    try:
        return parse_cache(Path(path).read_text(encoding="ascii"), path)
    except FileNotFoundError:
        raise EdgeError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise EdgeError(f"{path}: not a TensorRT calibration cache (not ASCII text)") from None


def read_calibration_cache(path: Path, version: str) -> bytes:
    """The cache's bytes, after checking it is one this TensorRT will take .

    TensorRT skips a cache whose header names another version or algorithm and then wants to calibrate on the
    device; with no images here that would lose the INT8 scales, so a mismatch is refused up front.
    """
    data = path.read_bytes()
    try:
        cache = parse_cache(data.decode("ascii"), path)
    except UnicodeDecodeError:
        raise EdgeError(f"{path}: not a TensorRT calibration cache (not ASCII text)") from None
    if cache.algorithm != ALGORITHM:
        raise EdgeError(f"{path}: written for the {cache.algorithm} calibrator; edge's build reads {ALGORITHM}")
    if cache.tensorrt_version != tensorrt_version_number(version):
        raise EdgeError(f"{path}: stamped for TensorRT version code {cache.tensorrt_version}, this TensorRT {version} "
                        f"reads {tensorrt_version_number(version)}; re-run `edge calibrate` for TensorRT {version}")
    if not cache.scales:
        raise EdgeError(f"{path}: has no tensor scales")
    return data


def cache_calibrator(trt, cache: bytes):
    """An INT8 entropy calibrator that never calibrates on the device: it hands TensorRT the cache made on the
    workstation. If TensorRT asked for images anyway, get_batch has none to give, and the build fails."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 trampolines need the base initialised by name

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            return None

        def read_calibration_cache(self):
            return cache

        def write_calibration_cache(self, cache):
            return None

    return CacheCalibrator()
