"""The executors: how a batch of frames becomes probabilities, for the loop (loop.py) of `edge run` and
`edge profile`. make_executor picks one for a loaded model: the CPU path, the GPU data path (edge/gpu) when
the model's backend runs from device memory (TensorRT, torch), or a Triton server's when the model is there.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future

import numpy as np

from ..backends.triton import IN_FLIGHT, TritonBackend
from ..gpu.buffers import GpuContext, default_memory_mode
from ..gpu.pipeline import GpuExecutor, device_engine
from ..preprocess import preprocess, preprocess_batch


class CpuExecutor:
    """The reference data path: the CPU preprocessing, then the model's backend (ONNX Runtime or TensorRT).

    A model with a fixed batch gets partial batches padded with copies of the last frame. `workers` > 1 lets the
    loop run that many batches at once, each on its own thread; the backend must allow concurrent runs (ONNX
    Runtime does). On a CPU, one single-threaded ONNX Runtime run per core gives more frames per second than one
    run spread over every core, whose threads meet at every operator (docs/benchmarks.md, "Camera loop")."""

    def __init__(self, model, workers: int = 1):
        self.model, self.workers = model, workers
        self.fixed_batch = model.card.batch

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return preprocess(image, self.model.preprocess)

    def collate(self, inputs: list[np.ndarray]) -> np.ndarray:
        if self.fixed_batch and len(inputs) % self.fixed_batch:
            inputs = inputs + [inputs[-1]] * (self.fixed_batch - len(inputs) % self.fixed_batch)
        return np.stack(inputs)

    def preprocess(self, images: list[np.ndarray]) -> np.ndarray:
        return self.collate([self.prepare(image) for image in images])

    def compute(self, prepared: np.ndarray) -> np.ndarray:
        return self.model.probabilities(prepared)


class TritonExecutor:
    """The camera loop's data path through a Triton server: `preprocess` sends the batch (the frames, or the batch
    preprocessed here when the server's model takes float32) and `compute` collects the answer, IN_FLIGHT batches
    apart, so that the round trip overlaps the next batches' capture (edge/backends/triton.py)."""

    in_flight = IN_FLIGHT

    def __init__(self, model):
        self.model, self.backend = model, model.backend

    def preprocess(self, images: list[np.ndarray]) -> list[tuple[Future, int]]:
        if self.backend.raw_frames:
            return self.backend.send(images)
        return self.backend.send(preprocess_batch(images, self.model.preprocess))

    def compute(self, sent: list[tuple[Future, int]]) -> np.ndarray:
        return self.model.to_probabilities(self.backend.receive(sent))


def make_executor(model, workers: int, gpu_scope: contextlib.ExitStack | None, batch: int = 1,
                  memory: str | None = None, recorders=()):
    """The GPU data path (upload, the fused kernel, the engine on device memory) when the model's backend runs from
    device memory; otherwise the CPU path, with `workers` runs at once on ONNX Runtime (inference_workers).

    On the GPU path the host memory mode is `memory`, or by default the device's: mapped on an integrated GPU
    (zero-copy), pinned on a discrete one; for the default the CUDA context is entered in `gpu_scope` and held
    current on this thread, the loop's calling thread (a caller naming `memory` holds the context current itself,
    as the profiler does). Stage times of the GPU path go to `recorders` too. The GPU path keeps two batches in
    flight: the next is uploaded and preprocessed while the engine computes the last. A model on a Triton server
    gets its own path, several batches in flight to the server."""
    if isinstance(model.backend, TritonBackend):
        return TritonExecutor(model)
    engine = device_engine(model.backend)
    if engine is None:
        return CpuExecutor(model, workers)
    if memory is None:
        facts = gpu_scope.enter_context(GpuContext()).facts
        memory = default_memory_mode(facts.integrated, facts.can_map_host_memory)
    return GpuExecutor(model, engine, memory, recorders=recorders, batch=batch, slots=2)
