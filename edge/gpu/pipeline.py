"""The GPU data path: frames in host memory -> fused preprocessing -> engine -> probabilities on the host.

Each frame (or batch) takes a slot: its own host frame buffer, device buffers and events. Two CUDA streams:

    copy stream:     upload (pinned: async DMA; pageable: synchronous copy; mapped: none) -> fused kernel
    compute stream:  waits for the kernel's event -> engine -> download (async into pinned memory; pageable:
                     synchronous copy; mapped: none)

With two slots the loop is double-buffered: `submit(frame N+1)` queues its upload and kernel on the copy stream
while the engine still computes frame N on the compute stream, then `collect()` returns frame N. With one slot
(or submit/collect in turn) every frame runs alone, which is what per-stage timing wants. Pageable memory cannot
take part: its synchronous copies run on the legacy default stream, which waits for the work of every other
stream, so `submit` returns with the frame's download done (and nothing of it left to overlap).

Stage times come from CUDA events (upload, preprocess, compute, download) plus the host clock for the copy of the
frame into page-locked memory, which is counted in "upload" (the frame has to get there for the DMA to start).

An engine for this path is any object with
    input_dtype                                  numpy dtype the engine reads (float32 or float16)
    output_shape(batch) -> tuple                 float32 output elements per batch
    run_device(input_pointer, output_pointer, batch, stream)   queue the model on a pycuda Stream
The torch backend (edge/backends/torch.py) and the TensorRT runner (edge/tensorrt/runner.py) are two.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import EdgeError
from ..model import softmax
from ..preprocess import Preprocess
from .buffers import DeviceBuffer, HostBuffer, download, upload
from .kernels import FusedPreprocess, output_shape

GPU_STAGES = ("upload", "preprocess", "compute", "download")


class DeviceEngine(Protocol):
    input_dtype: np.dtype

    def output_shape(self, batch: int) -> tuple[int, ...]: ...

    def run_device(self, input_pointer: int, output_pointer: int, batch: int, stream) -> None: ...


def device_engine(backend) -> DeviceEngine | None:
    """The model's backend when it runs from device memory (torch, TensorRT), or None when it runs on the host
    (ONNX Runtime). Its input_dtype is read now, so an engine the path cannot run is refused before any buffer."""
    if not hasattr(backend, "run_device"):
        return None
    _ = backend.input_dtype
    return backend


@dataclass
class _Slot:
    frame_shape: tuple[int, ...] = ()
    host_frame: HostBuffer | None = None
    device_frame: DeviceBuffer | None = None
    device_input: DeviceBuffer | None = None
    device_output: DeviceBuffer | None = None
    host_output: HostBuffer | None = None
    events: dict = field(default_factory=dict)
    batch: int = 0
    staging_ms: float = 0.0


class GpuPipeline:
    def __init__(self, spec: Preprocess, engine: DeviceEngine, mode: str, max_batch: int = 1, slots: int = 2):
        import pycuda.driver as cuda

        self.spec, self.engine, self.mode, self.max_batch = spec, engine, mode, max_batch
        self.kernel = FusedPreprocess(spec, engine.input_dtype)
        self.copy_stream = cuda.Stream()
        self.compute_stream = cuda.Stream()
        self.slots = [_Slot(events={name: cuda.Event() for name in
                                    ("upload_start", "upload_end", "preprocess_end", "compute_start",
                                     "compute_end", "download_end")}) for _ in range(slots)]
        self.next_slot = 0
        self.in_flight: collections.deque[_Slot] = collections.deque()
        input_shape = output_shape(spec, max_batch)
        output = engine.output_shape(max_batch)
        for slot in self.slots:
            slot.device_input = DeviceBuffer(input_shape, engine.input_dtype)
            if mode == "mapped":  # the engine writes where the host reads, as jetson-inference does
                slot.host_output = HostBuffer(output, np.float32, "mapped")
            else:
                slot.device_output = DeviceBuffer(output, np.float32)
                slot.host_output = HostBuffer(output, np.float32, mode)

    def _frame_buffers(self, slot: _Slot, shape: tuple[int, ...]) -> None:
        """(Re)allocate a slot's frame buffers for frames of `shape` (batch, height, width, 3)."""
        if slot.frame_shape == shape:
            return
        slot.frame_shape = shape
        slot.host_frame = HostBuffer(shape, np.uint8, self.mode)
        slot.device_frame = None if self.mode == "mapped" else DeviceBuffer(shape, np.uint8)

    def submit(self, frames: list[np.ndarray]) -> None:
        """Queue frames (same size, uint8 HxWx3 BGR, at most max_batch) through kernel, engine and download."""
        if len(self.in_flight) == len(self.slots):
            raise RuntimeError("every slot is in flight: collect() one first")
        if not 0 < len(frames) <= self.max_batch:
            raise ValueError(f"a batch of 1 to {self.max_batch} frames, not {len(frames)}")
        slot = self.slots[self.next_slot]
        height, width = frames[0].shape[:2]
        batch = len(frames)
        # Sized for a full batch, so that partial ones (a live source, a file's end) do not reallocate it
        self._frame_buffers(slot, (self.max_batch, height, width, 3))
        events = slot.events

        start = time.perf_counter_ns()
        if self.mode == "pageable":  # copied from where the frames lie, as code without page-locked memory does
            slot.host_frame.array = np.ascontiguousarray(frames[0][None] if batch == 1 else np.stack(frames))
        else:  # into page-locked memory, where DMA (pinned) or the kernel (mapped) can reach them
            for i, frame in enumerate(frames):
                slot.host_frame.array[i] = frame
        slot.staging_ms = (time.perf_counter_ns() - start) / 1e6

        events["upload_start"].record(self.copy_stream)
        if self.mode != "mapped":
            upload(slot.device_frame, slot.host_frame, self.copy_stream, rows=batch)
            frames_pointer = slot.device_frame.pointer
        else:
            frames_pointer = slot.host_frame.device_pointer
        events["upload_end"].record(self.copy_stream)
        self.kernel.launch(frames_pointer, height, width, batch, slot.device_input.pointer, self.copy_stream)
        events["preprocess_end"].record(self.copy_stream)

        self.compute_stream.wait_for_event(events["preprocess_end"])
        events["compute_start"].record(self.compute_stream)
        output_pointer = slot.host_output.device_pointer if self.mode == "mapped" else slot.device_output.pointer
        self.engine.run_device(slot.device_input.pointer, output_pointer, batch, self.compute_stream)
        events["compute_end"].record(self.compute_stream)
        if self.mode != "mapped":  # pageable: synchronous, on the legacy default stream, so it waits for the engine
            download(slot.host_output, slot.device_output, self.compute_stream)
        # Recorded now, not in collect(): there it would follow the next frame's engine on the compute stream,
        # and collect() would wait for that frame too (and count its compute as this one's download).
        events["download_end"].record(self.compute_stream)
        slot.batch = batch
        self.in_flight.append(slot)
        # Only once the frame is in flight: after a submit that failed, its slot is the next one's again
        self.next_slot = (self.next_slot + 1) % len(self.slots)

    def collect(self) -> tuple[np.ndarray, dict[str, float]]:
        """The oldest submitted batch: (probabilities or logits (batch, ...) float32 copy, stage times in ms)."""
        slot = self.in_flight.popleft()
        events = slot.events
        events["download_end"].synchronize()  # after every other event of the frame, on either stream
        times = {
            "upload": slot.staging_ms + events["upload_end"].time_since(events["upload_start"]),
            "preprocess": events["preprocess_end"].time_since(events["upload_end"]),
            "compute": events["compute_end"].time_since(events["compute_start"]),
            "download": events["download_end"].time_since(events["compute_end"]),
        }
        return slot.host_output.array[: slot.batch].copy(), times


class GpuExecutor:
    """The Loop's executor protocol (edge/runtime/loop.py) on the GPU path: `preprocess` queues upload, kernel,
    engine and download, `compute` waits for the oldest batch queued and returns its probabilities.

    With `slots` = 2 the Loop keeps two batches in flight (`in_flight`), queuing batch N+1 before it collects batch
    N: the double buffering of GpuPipeline. Pageable memory keeps one, since its synchronous copies would have
    `preprocess` return with the batch already done (nothing overlaps) and a batch's result wait for the next's.
    The per-stage GPU times of each batch, from its own slot's events, go to the same recorders as the Loop's,
    named "gpu:<stage>"."""

    def __init__(self, model, engine: DeviceEngine, mode: str, recorders=(), batch: int = 1, slots: int = 1):
        self.softmax = None if model.card.probabilities else softmax
        # The Loop's batch, or the engine's fixed batch. Every partial batch is padded to it (the padding's rows
        # are ignored by the Loop), so the engine always runs one batch size: with two batches in flight, a
        # different size would change a TensorRT context's input shape while the other batch may still be running.
        self.fixed_batch = model.card.batch
        if self.fixed_batch and batch > self.fixed_batch:
            raise EdgeError(f"batch {batch}: on the GPU path {model.folder} runs batches of at most {self.fixed_batch}")
        self.batch = self.fixed_batch or batch
        self.in_flight = 1 if mode == "pageable" else slots
        self.pipeline = GpuPipeline(model.preprocess, engine, mode, max_batch=self.batch, slots=self.in_flight)
        self.recorders = list(recorders)

    def preprocess(self, images: list[np.ndarray]) -> int:
        if any(image.shape != images[0].shape for image in images):
            sizes = sorted({image.shape for image in images})
            raise EdgeError(f"the GPU path takes a batch of frames of one size, not {sizes}: use --batch 1 for "
                            "images of several sizes")
        images = images + [images[-1]] * (self.batch - len(images))
        self.pipeline.submit(images)
        return len(images)

    def compute(self, count: int) -> np.ndarray:
        output, times = self.pipeline.collect()  # the oldest batch: the Loop computes in the order it preprocessed
        for stage, ms in times.items():
            for recorder in self.recorders:
                recorder.record(f"gpu:{stage}", ms / 1000.0)
        output = output.reshape(len(output), -1)
        return self.softmax(output) if self.softmax else output
