"""A built TensorRT engine, run: from host arrays (`run`, like every backend) or from device memory
(`run_device`, the interface the torch backend offers too, which the GPU data path in edge/gpu/pipeline.py drives).

The binding API and execute_async_v2 on TensorRT 8.x, the name-based tensor API and execute_async_v3 on 10/11.
tensorrt and pycuda are imported only when an engine is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EdgeError
from ..folder import Card
from ..gpu.buffers import DeviceBuffer
from .build import Target, engine_path, other_engines, read_sidecar, why_stale
from .version import check_supported, described, gpu_identity, import_tensorrt, uses_bindings


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
        raise EdgeError(f"pycuda is not installed here (import pycuda.driver failed: {described(e)}); "
                        "pip install 'edge[jetson]' with nvcc on PATH") from None
    cuda.init()
    return cuda


class TensorRTBackend:
    """A built engine on CUDA device 0, in that device's primary context (the one the CUDA runtime and TensorRT
    use; a caller that makes its own buffers and streams must use it too: Device(0).retain_primary_context()).

    run(batch) takes and returns host arrays, like the ONNX Runtime backend. The GPU data path instead uses the
    device interface the torch backend offers too: `input_dtype`, `output_shape(batch)` and `run_device(input,
    output, batch, stream)`, built here on set_batch(n) (the shapes of every tensor for n) and execute(addresses,
    stream). The card's input and output tensors go at the pipeline's pointers, any other output the engine has
    into scratch buffers of its own.
    """

    device_batch = 0  # the batch run_device last set on the execution context (0: set it again)

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
        self.scratch: dict[str, DeviceBuffer] = {}
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
            raise EdgeError(f"{engine}: {reason}{other_engines(folder, precision, engine)}; "
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

    @property
    def input_dtype(self) -> np.dtype:
        """The dtype the engine reads, for the GPU data path, which reads a float32 output (and refuses others)."""
        tensors = {t.name: t for t in self.tensors}
        output = tensors[self.output_name]
        if output.dtype != np.float32:
            raise EdgeError(f"the GPU path reads a float32 output; this engine's {output.name} is {output.dtype}")
        return np.dtype(tensors[self.input_name].dtype)

    def output_shape(self, batch: int) -> tuple[int, ...]:
        self.device_batch = 0  # set_batch sets the context's input shape: the next run sets its own batch again
        return self.set_batch(batch)[self.output_name]

    def run_device(self, input_pointer: int, output_pointer: int, batch: int, stream) -> None:
        """Queue the engine on a pycuda Stream: input (batch, *input_shape) -> output (batch, classes)."""
        if batch != self.device_batch:
            shapes = self.set_batch(batch)
            others = [t for t in self.tensors if t.mode == "output" and t.name != self.output_name]
            self.scratch = {t.name: DeviceBuffer(shapes[t.name], t.dtype) for t in others}
            self.device_batch = batch
        addresses = {self.input_name: input_pointer, self.output_name: output_pointer}
        addresses.update({name: buffer.pointer for name, buffer in self.scratch.items()})
        self.execute(addresses, stream.handle)
