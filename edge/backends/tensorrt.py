"""TensorRT: build an engine from a model folder's ONNX files, and run it. The one module that calls TensorRT.

Which build, by the installed TensorRT version (docs/tensorrt.md lists every call and the versions that have it):

    11.x      strongly typed network from model.onnx / model.fp16.onnx / model.int8.onnx; no precision flags and no
              calibrator (11 removed both): the precision is in the graph.
    10.x      the same by default; `implicit=True` (edge build --implicit) instead parses model.onnx and sets the
              FP16/INT8 builder flags, with an entropy calibrator that only reads calibration.cache.
    8.5, 8.6  explicit-batch network from model.onnx with the FP16/INT8 flags and the same calibrator.

The build goes through Polygraphy's TensorRT loaders (NVIDIA's, tested against each of these versions). Running is
done here: the binding API and execute_async_v2 on 8.x, the name-based tensor API and execute_async_v3 on 10/11.
tensorrt, polygraphy and pycuda are imported only inside the functions that need them.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import io
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..engine import (
    ENGINE_SUFFIX,
    IMPLICIT,
    STRONGLY_TYPED,
    BuildSpec,
    Target,
    engine_path,
    install_engine,
    make_sidecar,
    read_sidecar,
    source_hashes,
    timing_cache_path,
    why_stale,
)
from ..errors import EdgeError, first_line
from ..files import atomic_write_bytes, remove_stale
from ..precision.calibrate import CALIBRATION_CACHE

if TYPE_CHECKING:
    from ..model import Card

DYNAMIC_BATCH_PROFILE = (1, 1, 16)  # (min, opt, max) for a graph that takes any batch: one camera frame is the
#                                     common case, 10 crops the largest (--oversample); run() splits bigger batches
WHERE_TO_BUILD = "build engines on the Jetson (or GPU machine) that will run them"


# --- which TensorRT, which path -----------------------------------------------------------------------------

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
                    "and calibrators; build without --implicit (from model.fp16.onnx / model.int8.onnx)")


def uses_bindings(version: str) -> bool:
    """8.x runs engines through the binding API; 10 removed it for the name-based tensor API."""
    return check_supported(version) == 8


def build_spec(folder: Path, card: Card, version: str, precision: str, dla: int | None = None,
               workspace_mib: int | None = None, implicit: bool = False) -> BuildSpec:
    """What to build on this TensorRT; refuses (one line) what cannot be built, before anything is written."""
    from ..model import PRECISION_FILES

    if precision not in PRECISION_FILES:
        raise EdgeError(f"precision must be one of {', '.join(PRECISION_FILES)}, not {precision!r}")
    path = build_path(version, implicit)
    if path == STRONGLY_TYPED:
        onnx, cache = PRECISION_FILES[precision], None
    else:
        onnx, cache = PRECISION_FILES["fp32"], (CALIBRATION_CACHE if precision == "int8" else None)
    for name in filter(None, (onnx, cache)):
        if not (folder / name).is_file():
            hint = "edge fp16" if name == PRECISION_FILES["fp16"] else "edge calibrate"
            raise EdgeError(f"{folder / name}: missing; the {precision} build reads it: make it with `{hint} {folder}`")
    if dla is not None and dla < 0:
        raise EdgeError(f"--dla takes a DLA core number (0, 1, ...), not {dla}")
    if dla is not None and precision == "fp32":
        raise EdgeError("--dla needs --precision fp16 or int8: the DLA has no FP32")
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


# --- the calibration cache (implicit INT8) ------------------------------------------------------------------

def read_calibration_cache(path: Path, version: str) -> bytes:
    """The cache's bytes, after checking it is one this TensorRT will take (edge/precision/cache.py has the format).

    TensorRT skips a cache whose header names another version or algorithm and then wants to calibrate on the
    device; with no images here that would lose the INT8 scales, so a mismatch is refused up front.
    """
    from ..precision.cache import ALGORITHM, parse_cache, tensorrt_version_number

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


# --- this machine -------------------------------------------------------------------------------------------

def import_tensorrt():
    try:
        import tensorrt
    except Exception as e:  # a broken install raises more than ImportError
        raise EdgeError(f"TensorRT is not installed here (import tensorrt failed: {_described(e)}); "
                        f"{WHERE_TO_BUILD}") from None
    return tensorrt


def gpu_identity() -> tuple[str, str]:
    """(device name, compute capability "major.minor") of CUDA device 0, asked of the driver directly."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
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
    graphs = "strongly typed from model.onnx / model.fp16.onnx / model.int8.onnx"
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


def _described(e: BaseException) -> str:
    """`ModuleNotFoundError: No module named 'tensorrt'`: the type says as much as the message here."""
    return f"{type(e).__name__}: {first_line(e)}" if str(e).strip() else type(e).__name__


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _other_engines(folder: Path, precision: str, engine: Path) -> str:
    others = sorted(p.name for p in folder.glob(f"*-{precision}{ENGINE_SUFFIX}") if p != engine)
    return f" (here only for another GPU or TensorRT version: {', '.join(others)})" if others else ""


# --- build --------------------------------------------------------------------------------------------------

def build_engine(folder: Path, precision: str, dla: int | None = None, workspace_mib: int | None = None,
                 implicit: bool = False) -> Path:
    """The engine for this GPU and TensorRT, built from `folder` unless an up-to-date one is there; its path.

    Says on stderr whether it reused, built or rebuilt (and why). A build that fails or is killed leaves the
    previous engine and sidecar as they were.
    """
    from ..importer import load_checked_onnx
    from ..model import Card

    trt = import_tensorrt()
    try:
        import polygraphy  # noqa: F401
    except ImportError as e:
        raise EdgeError(f"polygraphy is not installed here ({_described(e)}); `edge build` uses NVIDIA's Polygraphy "
                        "to drive TensorRT: pip install polygraphy") from None
    card = Card.read(folder)
    load_checked_onnx(folder, card)  # a graph that is not the card's is refused now, not after minutes of building
    spec = build_spec(folder, card, trt.__version__, precision, dla, workspace_mib, implicit)
    cache = read_calibration_cache(folder / spec.calibration_cache, trt.__version__) if spec.calibration_cache else None
    target = Target(trt.__version__, *gpu_identity())
    engine = engine_path(folder, target, precision)
    reason = why_stale(engine, target, spec)
    if reason is None:
        _say(f"{engine}: up to date")
        return engine
    if not os.access(folder, os.W_OK):  # found now, not when saving the engine after minutes of building
        raise EdgeError(f"{folder}: this user cannot write here, so the engine could not be saved ({reason}); run "
                        "`edge build` as a user who can (the service's repository belongs to the user edge)")
    _say(f"{engine}: building ({reason}){_other_engines(folder, precision, engine)}: TensorRT {target.tensorrt}, "
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
    int8 = implicit and spec.precision == "int8"
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
            fp16=implicit and spec.precision in ("fp16", "int8"),  # INT8 with FP16 for the layers INT8 cannot run
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
        raise EdgeError(f"{onnx}: the TensorRT build failed: {_described(e)} (TensorRT's messages are above)") \
            from None
    atomic_write_bytes(timing_cache, bytes(memoryview(trt_config.get_timing_cache().serialize())))
    return bytes(memoryview(engine))


def _use_dla(trt, core: int, builder, network, config) -> None:
    """Polygraphy's own DLA switch always takes core 0 and adds precision constraints; this sets only what we mean."""
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


# --- run ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IOTensor:
    name: str
    shape: tuple[int, ...]  # -1 where the engine takes any size (the dynamic batch)
    dtype: np.dtype
    mode: str  # "input" or "output"


class _TensorApi:
    """TensorRT 10 and 11 (the API also exists in 8.5, where the binding API is still the usual one)."""

    def __init__(self, trt, engine, context):
        self.trt, self.engine, self.context = trt, engine, context

    def tensors(self) -> list[IOTensor]:
        engine, trt = self.engine, self.trt
        tensors = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            tensors.append(IOTensor(name, tuple(engine.get_tensor_shape(name)), dtype, mode))
        return tensors

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        return self.context.set_input_shape(name, shape)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.context.get_tensor_shape(name))

    def execute(self, addresses: dict[str, int], stream_handle: int) -> bool:
        for name, address in addresses.items():
            self.context.set_tensor_address(name, address)
        return self.context.execute_async_v3(stream_handle)


class _BindingApi:
    """TensorRT 8.5 and 8.6: tensors are bindings, addressed by index."""

    def __init__(self, trt, engine, context):
        self.trt, self.engine, self.context = trt, engine, context
        self.index = {engine.get_binding_name(i): i for i in range(engine.num_bindings)}

    def tensors(self) -> list[IOTensor]:
        engine, trt = self.engine, self.trt
        tensors = []
        for name, i in self.index.items():
            mode = "input" if engine.binding_is_input(i) else "output"
            dtype = np.dtype(trt.nptype(engine.get_binding_dtype(i)))
            tensors.append(IOTensor(name, tuple(engine.get_binding_shape(i)), dtype, mode))
        return tensors

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        return self.context.set_binding_shape(self.index[name], shape)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.context.get_binding_shape(self.index[name]))

    def execute(self, addresses: dict[str, int], stream_handle: int) -> bool:
        return self.context.execute_async_v2([addresses[name] for name in self.index], stream_handle)


def runtime_api(trt, engine, context) -> _TensorApi | _BindingApi:
    return (_BindingApi if uses_bindings(trt.__version__) else _TensorApi)(trt, engine, context)


def _pycuda():
    try:
        import pycuda.driver as cuda
    except Exception as e:
        raise EdgeError(f"pycuda is not installed here (import pycuda.driver failed: {_described(e)}); "
                        "pip install 'edge[jetson]' with nvcc on PATH") from None
    cuda.init()
    return cuda


class TensorRTBackend:
    """A built engine on CUDA device 0, in that device's primary context (the one the CUDA runtime and TensorRT
    use; a caller that makes its own buffers and streams must use it too: Device(0).retain_primary_context()).

    run(batch) takes and returns host arrays, like the ONNX Runtime backend. The GPU loop instead sets the batch
    once with set_batch(n), allocates buffers of the shapes it returns, and calls execute(addresses, stream).
    """

    def __init__(self, trt, engine_file: Path, card: Card, sidecar: dict):
        self.cuda = _pycuda()
        self.cuda_context = self.cuda.Device(0).retain_primary_context()
        self.input_name, self.output_name, self.input_shape = card.input_name, card.output_name, card.input_shape
        flags = sidecar["flags"]
        self.max_batch = flags["batch_profile"][2] if flags["batch_profile"] else card.batch
        self.dynamic = bool(flags["batch_profile"])
        self.cuda_context.push()
        try:
            # TensorRT keeps pointers to the logger and the runtime: both live as long as the engine
            self.logger = trt.Logger(trt.Logger.WARNING)
            self.runtime = trt.Runtime(self.logger)
            if flags["dla_core"] is not None:
                self.runtime.DLA_core = flags["dla_core"]
            self.engine = self.runtime.deserialize_cuda_engine(engine_file.read_bytes())
            if self.engine is None:
                raise EdgeError(f"{engine_file}: TensorRT could not deserialize it (its messages are above)")
            self.context = self.engine.create_execution_context()
            self.api = runtime_api(trt, self.engine, self.context)
            self.tensors = self.api.tensors()
        finally:
            self.cuda_context.pop()
        names = {t.name for t in self.tensors}
        if {self.input_name, self.output_name} - names:
            raise EdgeError(f"{engine_file}: has tensors {sorted(names)}, the card wants {self.input_name} and "
                            f"{self.output_name}; rebuild it with `edge build`")

    @classmethod
    def from_model_folder(cls, folder: Path, card: Card, precision: str) -> TensorRTBackend:
        trt = import_tensorrt()
        check_supported(trt.__version__)
        target = Target(trt.__version__, *gpu_identity())
        engine = engine_path(folder, target, precision)
        reason = why_stale(engine, target)
        if reason is not None:
            raise EdgeError(f"{engine}: {reason}{_other_engines(folder, precision, engine)}; "
                            f"run `edge build {folder} --precision {precision}` on this machine")
        return cls(trt, engine, card, read_sidecar(engine))

    def set_batch(self, n: int) -> dict[str, tuple[int, ...]]:
        """Shapes of every I/O tensor for a batch of n (sets the input shape when the batch is dynamic)."""
        if not self.dynamic and n != self.max_batch:
            raise EdgeError(f"the engine takes a batch of {self.max_batch}, not {n}")
        if self.dynamic and not self.api.set_input_shape(self.input_name, (n, *self.input_shape)):
            raise EdgeError(f"the engine does not take a batch of {n} (its profile allows up to {self.max_batch})")
        return {t.name: self.api.shape(t.name) for t in self.tensors}

    def execute(self, addresses: dict[str, int], stream_handle: int) -> None:
        """Enqueue one inference on a CUDA stream; `addresses` has a device pointer for every I/O tensor."""
        if not self.api.execute(addresses, stream_handle):
            raise EdgeError("TensorRT could not enqueue the engine (its messages are above)")

    def run(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) > self.max_batch or (not self.dynamic and len(batch) != self.max_batch):
            if not self.dynamic and len(batch) % self.max_batch:
                raise EdgeError(f"batch of {len(batch)} does not split into the engine's batch {self.max_batch}")
            step = self.max_batch
            return np.concatenate([self.run(batch[i:i + step]) for i in range(0, len(batch), step)])
        cuda = self.cuda
        self.cuda_context.push()
        try:
            shapes = self.set_batch(len(batch))
            host = {t.name: np.empty(shapes[t.name], t.dtype) for t in self.tensors}
            host[self.input_name][...] = batch
            device = {name: cuda.mem_alloc(max(array.nbytes, 1)) for name, array in host.items()}
            stream = cuda.Stream()
            cuda.memcpy_htod(device[self.input_name], host[self.input_name])
            self.execute({name: int(buffer) for name, buffer in device.items()}, stream.handle)
            stream.synchronize()
            cuda.memcpy_dtoh(host[self.output_name], device[self.output_name])
        finally:
            self.cuda_context.pop()
        return host[self.output_name].astype(np.float32, copy=False)
