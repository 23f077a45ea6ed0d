"""TensorRT engine files in a model folder: their names, JSON sidecars, staleness, and crash-safe replacement.

No TensorRT here: this is the bookkeeping around it, so all of it is tested on machines without TensorRT.

An engine only runs on the GPU model and TensorRT version that built it, so both are in its name:

    engines/<model>/orin-sm87-trt10.3.0-fp16.plan     the serialized engine
    engines/<model>/orin-sm87-trt10.3.0-fp16.json     what it was built from and how (the sidecar)
    engines/<model>/orin-sm87-trt10.3.0.timing.cache  TensorRT's tactic timings, reused by the next build

The sidecar records the SHA-256 of every file the build read and of the engine itself; an engine is used only
when all of them still match (`why_stale` says why not), so a changed ONNX file, calibration cache or a
half-replaced engine is rebuilt, never silently run.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .files import atomic_write_bytes, atomic_write_text, sha256_file

ENGINE_SUFFIX = ".plan"
SIDECAR_SUFFIX = ".json"
TIMING_CACHE_SUFFIX = ".timing.cache"
STRONGLY_TYPED = "strongly-typed"  # precision comes from the ONNX graph's types (model.fp16.onnx, model.int8.onnx)
IMPLICIT = "implicit"  # precision from FP16/INT8 builder flags; INT8 scales from calibration.cache


@dataclass(frozen=True)
class Target:
    """Where an engine runs: the TensorRT version and the GPU."""

    tensorrt: str  # tensorrt.__version__, e.g. "10.3.0"
    gpu: str  # the CUDA device name, e.g. "Orin"
    compute_capability: str  # "8.7"

    @property
    def stem(self) -> str:
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu.lower()).strip("-") or "gpu"
        return f"{gpu}-sm{self.compute_capability.replace('.', '')}-trt{self.tensorrt}"


@dataclass(frozen=True)
class BuildSpec:
    """What a build reads and how it builds; every field is recorded in the sidecar and checked for staleness."""

    precision: str  # fp32, fp16, int8
    path: str  # STRONGLY_TYPED or IMPLICIT
    onnx: str  # the ONNX file in the model folder the network is parsed from
    calibration_cache: str | None  # read by the implicit INT8 build only
    dla_core: int | None  # None: the GPU
    workspace_mib: int | None  # None: TensorRT's default (the device's memory)
    batch_profile: tuple[int, int, int] | None  # (min, opt, max) batch when the input's batch is dynamic

    def flags(self) -> dict:
        flags = asdict(self)
        del flags["precision"], flags["onnx"], flags["calibration_cache"]
        flags["batch_profile"] = list(self.batch_profile) if self.batch_profile else None
        return flags


def engine_path(folder: Path, target: Target, precision: str) -> Path:
    return folder / f"{target.stem}-{precision}{ENGINE_SUFFIX}"


def sidecar_path(engine: Path) -> Path:
    return engine.with_suffix(SIDECAR_SUFFIX)


def timing_cache_path(folder: Path, target: Target) -> Path:
    return folder / f"{target.stem}{TIMING_CACHE_SUFFIX}"


def source_hashes(folder: Path, spec: BuildSpec) -> dict[str, str]:
    """SHA-256 of each file the build reads, by file name in the model folder."""
    names = [spec.onnx] + ([spec.calibration_cache] if spec.calibration_cache else [])
    return {name: sha256_file(folder / name) for name in names}


def make_sidecar(engine: Path, target: Target, spec: BuildSpec, sources: dict[str, str], engine_sha256: str,
                 build_seconds: float) -> dict:
    return {
        "engine": engine.name,
        "engine_sha256": engine_sha256,
        "tensorrt": target.tensorrt,
        "gpu": target.gpu,
        "compute_capability": target.compute_capability,
        "precision": spec.precision,
        "onnx": {"file": spec.onnx, "sha256": sources[spec.onnx]},
        "calibration_cache": ({"file": spec.calibration_cache, "sha256": sources[spec.calibration_cache]}
                              if spec.calibration_cache else None),
        "flags": spec.flags(),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(build_seconds, 1),
    }


def read_sidecar(engine: Path) -> dict | None:
    """The sidecar, or None when it is missing or unreadable (either way the engine cannot be trusted)."""
    try:
        data = json.loads(sidecar_path(engine).read_text(encoding="utf-8"))
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def why_stale(engine: Path, target: Target, spec: BuildSpec | None = None) -> str | None:
    """None when `engine` can be used on `target` (and, given `spec`, is what that build would make); else why not.

    Without `spec` (when loading an engine to run it) the flags it was built with are accepted as they are.
    """
    sidecar = read_sidecar(engine)
    if not engine.is_file():
        return "not built yet"
    if sidecar is None:
        return f"{sidecar_path(engine).name} is missing or unreadable"
    try:
        if sidecar["tensorrt"] != target.tensorrt:
            return f"built with TensorRT {sidecar['tensorrt']}, this machine has TensorRT {target.tensorrt}"
        if (sidecar["gpu"], sidecar["compute_capability"]) != (target.gpu, target.compute_capability):
            return (f"built for {sidecar['gpu']} (compute capability {sidecar['compute_capability']}), "
                    f"this GPU is {target.gpu} ({target.compute_capability})")
        recorded = {sidecar["onnx"]["file"]: sidecar["onnx"]["sha256"]}
        if sidecar["calibration_cache"]:
            recorded[sidecar["calibration_cache"]["file"]] = sidecar["calibration_cache"]["sha256"]
        if spec is not None:
            if sidecar["precision"] != spec.precision:
                return f"built for {sidecar['precision']}, asked for {spec.precision}"
            if sidecar["flags"] != spec.flags():
                return f"built with {_describe(sidecar['flags'])}, asked for {_describe(spec.flags())}"
            if sorted(recorded) != sorted([spec.onnx] + ([spec.calibration_cache] if spec.calibration_cache else [])):
                return f"built from {', '.join(sorted(recorded))}"
        for name, sha256 in recorded.items():
            if not (engine.parent / name).is_file():
                return f"{name}, which it was built from, is gone"
            if sha256_file(engine.parent / name) != sha256:
                return f"{name} changed since the build"
        if sha256_file(engine) != sidecar["engine_sha256"]:
            return f"{engine.name} does not match its sidecar (an interrupted replacement?)"
    except (KeyError, TypeError, AttributeError) as e:
        return f"{sidecar_path(engine).name} lacks {e}"
    return None


def _describe(flags: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in flags.items())


def install_engine(engine: Path, engine_bytes, sidecar: dict) -> None:
    """Put a new engine and its sidecar in place of the old ones, each written to a temporary file and renamed.

    Until the engine's rename, the previous engine and sidecar are untouched and still valid. Between the two
    renames (a few microseconds) the new engine sits beside the old sidecar; its SHA-256 then does not match and
    `why_stale` rejects the pair, so it is rebuilt rather than run.
    """
    atomic_write_bytes(engine, engine_bytes)
    atomic_write_text(sidecar_path(engine), json.dumps(sidecar, indent=2) + "\n")
