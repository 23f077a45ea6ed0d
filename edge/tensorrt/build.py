"""`edge build`: a TensorRT engine from a model folder, built through Polygraphy's loaders, and the files around it.

An engine only runs on the GPU model and TensorRT version that built it, so both are in its name:

    engines/<model>/orin-sm87-trt10.3.0-fp16.plan     the serialized engine
    engines/<model>/orin-sm87-trt10.3.0-fp16.json     what it was built from and how (the sidecar)
    engines/<model>/orin-sm87-trt10.3.0.timing.cache  TensorRT's tactic timings, reused by the next build

The sidecar records the SHA-256 of every file the build read and of the engine itself; an engine is used only
when all of them still match (`why_stale` says why not), so a changed ONNX file, calibration cache or a
half-replaced engine is rebuilt, never silently run. What a build reads comes from the precision table
(edge/folder.py, PRECISIONS) and the version policy (version.py). Everything but `build_engine` works without
TensorRT, so it is tested on any machine; tensorrt and polygraphy are imported only inside the build.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import io
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import EdgeError
from ..files import atomic_write_bytes, atomic_write_text, model_lock, remove_stale, sha256_file
from ..folder import CALIBRATION_CACHE, FP32, PRECISIONS, Card, load_checked_onnx, missing_file_hint, precision_named
from .calibration_cache import cache_calibrator, read_calibration_cache
from .version import IMPLICIT, STRONGLY_TYPED, build_path, described, gpu_identity, import_tensorrt

DYNAMIC_BATCH_PROFILE = (1, 1, 16)  # (min, opt, max) for a graph that takes any batch: one camera frame is the
#                                     common case, 10 crops the largest (--oversample); run() splits bigger batches
ENGINE_SUFFIX = ".plan"
SIDECAR_SUFFIX = ".json"
TIMING_CACHE_SUFFIX = ".timing.cache"


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


def other_engines(folder: Path, precision: str, engine: Path) -> str:
    others = sorted(p.name for p in folder.glob(f"*-{precision}{ENGINE_SUFFIX}") if p != engine)
    return f" (here only for another GPU or TensorRT version: {', '.join(others)})" if others else ""


def build_spec(folder: Path, card: Card, version: str, precision: str, dla: int | None = None,
               workspace_mib: int | None = None, implicit: bool = False) -> BuildSpec:
    """What to build on this TensorRT; refuses (one line) what cannot be built, before anything is written."""
    variant = precision_named(precision)
    path = build_path(version, implicit)
    if path == STRONGLY_TYPED:
        onnx, cache = variant.onnx, None
    else:
        onnx, cache = FP32.onnx, (CALIBRATION_CACHE if variant.reads_calibration_cache else None)
    for name in filter(None, (onnx, cache)):
        if not (folder / name).is_file():
            raise EdgeError(f"{folder / name}: missing; the {precision} build reads it: "
                            f"{missing_file_hint(folder, name)}")
    if dla is not None and dla < 0:
        raise EdgeError(f"--dla takes a DLA core number (0, 1, ...), not {dla}")
    if dla is not None and not variant.dla:
        takes = " or ".join(p.name for p in PRECISIONS.values() if p.dla)
        raise EdgeError(f"--dla needs --precision {takes}: the DLA has no {precision.upper()}")
    if dla is not None and path == STRONGLY_TYPED:
        # Before TensorRT 11.4.1 the DLA takes its precision from builder flags, and never from Q/DQ nodes.
        raise EdgeError(f"--dla on TensorRT {version} needs --implicit: the DLA takes FP16/INT8 from builder flags "
                        "and calibration.cache, not from the typed ONNX variants")
    if workspace_mib is not None and workspace_mib <= 0:
        raise EdgeError(f"--workspace takes a size in MiB, not {workspace_mib}")
    profile = None
    if not card.batch:  # the graph takes any batch: TensorRT needs the range; the DLA only takes a fixed one
        profile = (1, 1, 1) if dla is not None else DYNAMIC_BATCH_PROFILE
    return BuildSpec(precision=precision, path=path, onnx=onnx, calibration_cache=cache, dla_core=dla,
                     workspace_mib=workspace_mib, batch_profile=profile)


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def build_engine(folder: Path, precision: str, dla: int | None = None, workspace_mib: int | None = None,
                 implicit: bool = False) -> Path:
    """The engine for this GPU and TensorRT, built from `folder` unless an up-to-date one is there; its path.

    Says on stderr whether it reused, built or rebuilt (and why). A build that fails or is killed leaves the
    previous engine and sidecar as they were.
    """
    trt = import_tensorrt()
    try:
        import polygraphy  # noqa: F401
    except ImportError as e:
        raise EdgeError(f"polygraphy is not installed here ({described(e)}); `edge build` uses NVIDIA's Polygraphy "
                        "to drive TensorRT: pip install polygraphy") from None
    with model_lock(folder, "edge build"):  # a calibrate or import swapping the folder meanwhile would lose the engine
        card = Card.read(folder)
        load_checked_onnx(folder, card)  # a graph that is not the card's is refused now, not after minutes of building
        spec = build_spec(folder, card, trt.__version__, precision, dla, workspace_mib, implicit)
        cache = (read_calibration_cache(folder / spec.calibration_cache, trt.__version__) if spec.calibration_cache
                 else None)
        target = Target(trt.__version__, *gpu_identity())
        engine = engine_path(folder, target, precision)
        reason = why_stale(engine, target, spec)
        if reason is None:
            _say(f"{engine}: up to date")
            return engine
        if not os.access(folder, os.W_OK):  # found now, not when saving the engine after minutes of building
            raise EdgeError(f"{folder}: this user cannot write here, so the engine could not be saved ({reason}); run "
                            "`edge build` as a user who can (the service's repository belongs to the user edge)")
        _say(f"{engine}: building ({reason}){other_engines(folder, precision, engine)}: TensorRT {target.tensorrt}, "
             f"{spec.path} from {spec.onnx}; this takes minutes")
        remove_stale(folder)
        sources = source_hashes(folder, spec)  # hashed before the build, so a file changed during it shows as stale
        started = time.monotonic()
        engine_bytes = _build_serialized(trt, folder, card, spec, target, cache)
        sidecar = make_sidecar(engine, target, spec, sources, hashlib.sha256(engine_bytes).hexdigest(),
                               time.monotonic() - started)
        install_engine(engine, engine_bytes, sidecar)
        _say(f"{engine}: built in {sidecar['build_seconds']} s")
        return engine


def _build_serialized(trt, folder: Path, card: Card, spec: BuildSpec, target: Target,
                      calibration_cache: bytes | None) -> bytes:
    """Polygraphy's loaders, configured from `spec`; returns the serialized engine and updates the timing cache."""
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        PostprocessConfig,
        Profile,
    )
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.WARNING  # TensorRT's warnings and errors reach the user; its chatter not
    G_LOGGER.colors = False
    onnx = folder / spec.onnx
    timing_cache = timing_cache_path(folder, target)
    implicit = spec.path == IMPLICIT
    flags = precision_named(spec.precision).builder_flags if implicit else ()
    int8 = "int8" in flags
    calibrator = cache_calibrator(trt, calibration_cache) if int8 else None
    profiles = None
    if spec.batch_profile:
        shape = tuple(card.input_shape)
        low, opt, high = spec.batch_profile
        profiles = [Profile().add(card.input_name, (low, *shape), (opt, *shape), (high, *shape))]
    try:
        builder, network, parser = NetworkFromOnnxPath(str(onnx), strongly_typed=not implicit)()
        if spec.dla_core is not None and spec.dla_core >= builder.num_DLA_cores:
            raise EdgeError(f"--dla {spec.dla_core}: this device has {builder.num_DLA_cores} DLA core(s)")
        config = CreateConfig(
            fp16="fp16" in flags,
            int8=int8,
            calibrator=calibrator,
            profiles=profiles,
            memory_pool_limits={trt.MemoryPoolType.WORKSPACE: spec.workspace_mib << 20} if spec.workspace_mib else None,
            load_timing_cache=io.BytesIO(timing_cache.read_bytes()) if timing_cache.is_file() else None,
        )
        if spec.dla_core is not None:
            config = PostprocessConfig(config, functools.partial(_use_dla, trt, spec.dla_core))
        trt_config = config(builder, network)
        engine = EngineBytesFromNetwork((builder, network, parser), config=trt_config)()
    except PolygraphyException as e:
        raise EdgeError(f"{onnx}: the TensorRT build failed: {described(e)} (TensorRT's messages are above)") \
            from None
    atomic_write_bytes(timing_cache, bytes(memoryview(trt_config.get_timing_cache().serialize())))
    return bytes(memoryview(engine))


def _use_dla(trt, core: int, builder, network, config) -> None:
    """Polygraphy's own DLA switch always takes core 0 and adds precision constraints; this sets only what we mean."""
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
