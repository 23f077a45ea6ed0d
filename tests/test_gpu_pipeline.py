"""GpuPipeline's orchestration without a GPU: pycuda.driver is replaced by a small simulation of CUDA's ordering
rules, so that slot reuse, cross-stream waits, event timings, the end of a finite source and the Loop's two batches
in flight (GpuExecutor with two slots) are checked on the CPU.

The simulation (FakeCuda) is as late as CUDA allows with data and as early as it allows with time:
- an operation queued on a stream changes memory only when the host synchronizes on something that depends on it
  (the same stream before it, or an event a stream waited for). A host buffer overwritten before its upload or
  the kernel reading it in place has run therefore shows up as the wrong frame's data;
- its time is the earliest CUDA gives it: streams run side by side, an event completes as soon as the work before
  it on its stream has, a stream that waits for an event starts no earlier than that event;
- synchronous copies (pageable memory) run on the legacy default stream: they wait for every stream's work, and
  work queued after them waits for them;
- elapsed time between events that have not completed is an error, as cuEventElapsedTime's CUDA_ERROR_NOT_READY.
No GPU result is claimed here: tests/test_gpu.py runs the same pipeline on a device.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from types import SimpleNamespace

import numpy as np
import pytest

from edge.errors import EdgeError
from edge.preprocess import Preprocess

SPEC = Preprocess(size=(2, 2))  # the kernel's output per frame: 3 x 2 x 2 float32
KERNEL_MS = 1.0
ENGINE_MS = 10.0
BYTES_PER_MS = 1e6
ADDRESS_BITS = 32  # each allocation has its own 4 GiB of the simulated address space


class HostAllocation(bytearray):
    """Page-locked host memory (the array's base, as pycuda's HostAllocation is)."""

    def __init__(self, nbytes: int, pointer: int | None):
        super().__init__(nbytes)
        self.pointer = pointer

    def get_device_pointer(self) -> int:
        if self.pointer is None:
            raise RuntimeError("not mapped: allocated without DEVICEMAP")
        return self.pointer


class DeviceAllocation:
    def __init__(self, pointer: int):
        self.pointer = pointer

    def __int__(self) -> int:
        return self.pointer


class Op:
    """One piece of queued work: its memory effect runs once every operation it depends on has run."""

    def __init__(self, after, effect=None):
        self.after, self.effect, self.done = [op for op in after if op is not None], effect, False

    def run(self) -> None:
        pending = [self]
        while pending:  # depth first, without recursion: a long stream is a long chain
            op = pending[-1]
            waiting = [before for before in op.after if not before.done]
            if waiting:
                pending.extend(waiting)
                continue
            pending.pop()
            if not op.done:
                op.done = True
                if op.effect is not None:
                    op.effect()


class FakeCuda:
    """The parts of pycuda.driver that edge/gpu uses."""

    class Error(Exception):
        pass

    host_alloc_flags = SimpleNamespace(DEVICEMAP=2)

    def __init__(self):
        self.memory: dict[int, np.ndarray] = {}  # allocation's pointer -> its bytes
        self.streams: list = []
        self.host_ms = 0.0  # the host's clock, advanced by what it waits for
        self.device_allocations = 0
        self.copied_bytes: list[int] = []  # host <-> device copies, in the order they were queued
        fake = self

        class Stream:
            def __init__(self, flags=0):
                self.handle = 0x5000 + len(fake.streams)
                self.last: Op | None = None
                self.ready_ms = 0.0  # when the work queued on it so far has finished
                fake.streams.append(self)

            def wait_for_event(self, event) -> None:
                self.ready_ms = max(self.ready_ms, event.time_ms)
                self.last = Op([self.last, event.op])

            def synchronize(self) -> None:
                if self.last is not None:
                    self.last.run()
                fake.host_ms = max(fake.host_ms, self.ready_ms)

        class Event:
            def __init__(self, flags=0):
                self.op: Op | None = None
                self.time_ms = 0.0

            def record(self, stream) -> None:
                self.time_ms = max(fake.host_ms, stream.ready_ms)
                self.op = stream.last = Op([stream.last])

            def synchronize(self) -> None:
                self.op.run()
                fake.host_ms = max(fake.host_ms, self.time_ms)

            def time_since(self, start) -> float:
                if not (self.op.done and start.op.done):
                    raise fake.Error("cuEventElapsedTime failed: device not ready")
                return self.time_ms - start.time_ms

        self.Stream, self.Event = Stream, Event

    # --- memory --------------------------------------------------------------------------------------------------

    def _new_pointer(self, raw: np.ndarray) -> int:
        pointer = (len(self.memory) + 1) << ADDRESS_BITS
        self.memory[pointer] = raw
        return pointer

    def view(self, pointer, nbytes: int) -> np.ndarray:
        """The `nbytes` bytes at a device pointer; an access past its allocation's end fails, as on a GPU."""
        pointer = int(pointer)
        base, offset = pointer >> ADDRESS_BITS << ADDRESS_BITS, pointer & ((1 << ADDRESS_BITS) - 1)
        raw = self.memory[base]
        assert offset + nbytes <= len(raw), "access past the end of an allocation"
        return raw[offset: offset + nbytes]

    def mem_alloc(self, nbytes: int) -> DeviceAllocation:
        self.device_allocations += 1
        return DeviceAllocation(self._new_pointer(np.zeros(nbytes, np.uint8)))

    def pagelocked_empty(self, shape, dtype, mem_flags=0) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        allocation = HostAllocation(nbytes, None)
        if mem_flags & self.host_alloc_flags.DEVICEMAP:
            allocation.pointer = self._new_pointer(np.frombuffer(allocation, np.uint8))
        return np.ndarray(shape, dtype, buffer=allocation)

    @staticmethod
    def pagelocked(array: np.ndarray) -> bool:
        while array is not None and not isinstance(array, HostAllocation):
            array = getattr(array, "base", None)
        return array is not None

    # --- work ----------------------------------------------------------------------------------------------------

    def queue(self, stream, effect, ms: float) -> None:
        stream.ready_ms = max(self.host_ms, stream.ready_ms) + ms
        stream.last = Op([stream.last], effect)

    def flush(self) -> None:
        for stream in self.streams:
            stream.synchronize()

    def synchronous(self, effect, ms: float) -> None:
        """A copy on the legacy default stream: after every stream's work, and before any queued later."""
        self.flush()
        effect()
        self.host_ms = max([self.host_ms] + [s.ready_ms for s in self.streams]) + ms
        for stream in self.streams:
            stream.ready_ms = max(stream.ready_ms, self.host_ms)

    def memcpy_htod_async(self, device, host: np.ndarray, stream) -> None:
        assert self.pagelocked(host), "an async copy from pageable memory would be synchronous"
        self.copied_bytes.append(host.nbytes)
        self.queue(stream, lambda: self.view(device, host.nbytes).__setitem__(slice(None), host.view(np.uint8).ravel()),
                   host.nbytes / BYTES_PER_MS)

    def memcpy_dtoh_async(self, host: np.ndarray, device, stream) -> None:
        assert self.pagelocked(host), "an async copy into pageable memory would be synchronous"
        self.copied_bytes.append(host.nbytes)
        self.queue(stream, lambda: host.reshape(-1).view(np.uint8).__setitem__(slice(None),
                                                                               self.view(device, host.nbytes)),
                   host.nbytes / BYTES_PER_MS)

    def memcpy_htod(self, device, host: np.ndarray) -> None:
        self.copied_bytes.append(host.nbytes)
        source = np.ascontiguousarray(host).view(np.uint8).ravel()
        self.synchronous(lambda: self.view(device, source.nbytes).__setitem__(slice(None), source),
                         host.nbytes / BYTES_PER_MS)

    def memcpy_dtoh(self, host: np.ndarray, device) -> None:
        self.copied_bytes.append(host.nbytes)
        self.synchronous(lambda: host.reshape(-1).view(np.uint8).__setitem__(slice(None),
                                                                             self.view(device, host.nbytes)),
                         host.nbytes / BYTES_PER_MS)


class FakeKernel:
    """The fused kernel's stand-in: every element of frame b's input is that frame's first byte (its number)."""

    def __init__(self, spec, dtype=np.float32):
        self.elements = int(np.prod(spec.size)) * spec.channels

    def launch(self, frames_pointer, frame_height, frame_width, batch, out_pointer, stream) -> None:
        cuda = sys.modules["pycuda.driver"]
        frame_bytes = frame_height * frame_width * 3

        def effect():
            frames = cuda.view(frames_pointer, batch * frame_bytes).reshape(batch, frame_bytes)
            out = cuda.view(out_pointer, batch * self.elements * 4).view(np.float32).reshape(batch, -1)
            out[:] = frames[:, :1]

        cuda.queue(stream, effect, KERNEL_MS)


class NumberingEngine:
    """A DeviceEngine whose output row is (the frame's number, the batch it ran in); it notes what it computed."""

    input_dtype = np.dtype(np.float32)

    def __init__(self, fail_on_call: int | None = None):
        self.calls, self.fail_on_call = 0, fail_on_call
        self.computed: list[int] = []  # frame numbers, in the order the simulated GPU ran them
        self.elements = int(np.prod(SPEC.size)) * SPEC.channels

    def output_shape(self, batch: int) -> tuple[int, int]:
        return batch, 2

    def run_device(self, input_pointer, output_pointer, batch, stream) -> None:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise EdgeError("the engine could not be enqueued")
        cuda = sys.modules["pycuda.driver"]

        def effect():
            numbers = cuda.view(input_pointer, batch * self.elements * 4).view(np.float32).reshape(batch, -1)[:, 0]
            out = cuda.view(output_pointer, batch * 2 * 4).view(np.float32).reshape(batch, 2)
            out[:, 0], out[:, 1] = numbers, batch
            self.computed.extend(int(n) for n in numbers)

        cuda.queue(stream, effect, ENGINE_MS)


@pytest.fixture
def cuda(monkeypatch):
    from edge.gpu import pipeline

    fake = FakeCuda()
    package = types.ModuleType("pycuda")
    package.driver = fake
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", fake)
    monkeypatch.setattr(pipeline, "FusedPreprocess", FakeKernel)
    return fake


def numbered(*numbers: int, size=(6, 8)) -> list[np.ndarray]:
    return [np.full((*size, 3), n, np.uint8) for n in numbers]


def make_pipeline(mode, engine=None, max_batch=1, slots=2):
    from edge.gpu.pipeline import GpuPipeline

    return GpuPipeline(SPEC, engine or NumberingEngine(), mode, max_batch=max_batch, slots=slots)


@pytest.mark.parametrize("mode", ["pageable", "pinned", "mapped"])
def test_double_buffering_returns_every_frame_in_order_from_reused_slots(cuda, mode):
    """Frame N+2 is written into frame N's slot: only after frame N's upload (or, mapped, its kernel) has run."""
    pipeline = make_pipeline(mode)
    got = []
    for frame in numbered(*range(1, 8)):
        if len(pipeline.in_flight) == 2:
            got.append(pipeline.collect()[0][0, 0])
        pipeline.submit([frame])
    while pipeline.in_flight:
        got.append(pipeline.collect()[0][0, 0])
    assert got == list(range(1, 8))


@pytest.mark.parametrize("mode", ["pinned", "mapped"])
def test_collecting_frame_n_does_not_wait_for_frame_n_plus_1(cuda, mode):
    engine = NumberingEngine()
    pipeline = make_pipeline(mode, engine)
    first, second = numbered(1, 2)
    pipeline.submit([first])
    pipeline.submit([second])  # queued behind frame 1's engine on the compute stream
    output, times = pipeline.collect()
    assert output[0, 0] == 1
    assert engine.computed == [1], "collect() of frame 1 waited for frame 2's engine"
    assert times["download"] < ENGINE_MS, "frame 2's compute was counted as frame 1's download"
    output, times = pipeline.collect()
    assert output[0, 0] == 2 and engine.computed == [1, 2]
    assert times["compute"] == pytest.approx(ENGINE_MS)  # it started when frame 1's ended


def test_pageable_copies_are_timed_without_the_other_frames_compute(cuda):
    """Synchronous copies wait for every stream: neither frame's copy may count the other frame's engine."""
    pipeline = make_pipeline("pageable")
    pipeline.submit(numbered(1))
    pipeline.submit(numbered(2))
    for n in (1, 2):
        output, times = pipeline.collect()
        assert output[0, 0] == n
        assert times["upload"] < ENGINE_MS and times["download"] < ENGINE_MS, times
        assert times["compute"] == pytest.approx(ENGINE_MS)


@pytest.mark.parametrize("mode", ["pageable", "pinned", "mapped"])
def test_stage_times_of_one_frame_at_a_time_add_up_to_its_device_time(cuda, mode):
    pipeline = make_pipeline(mode, slots=1)
    for n in (1, 2, 3):
        before = cuda.host_ms
        pipeline.submit(numbered(n))
        output, times = pipeline.collect()
        assert output[0, 0] == n
        device_ms = times["upload"] + times["preprocess"] + times["compute"] + times["download"]
        assert device_ms - (cuda.host_ms - before) == pytest.approx(0.0, abs=5.0)  # host staging: real time


@pytest.mark.parametrize("mode", ["pageable", "pinned", "mapped"])
def test_a_submit_that_fails_does_not_hand_its_slot_to_a_frame_in_flight(cuda, mode):
    engine = NumberingEngine(fail_on_call=2)
    pipeline = make_pipeline(mode, engine)
    pipeline.submit(numbered(1))
    with pytest.raises(EdgeError, match="could not be enqueued"):
        pipeline.submit(numbered(2))
    pipeline.submit(numbered(3))  # before the fix: into frame 1's slot, still in flight
    assert [pipeline.collect()[0][0, 0] for _ in range(2)] == [1, 3]


@pytest.mark.parametrize("mode", ["pageable", "pinned"])
def test_a_partial_batch_uploads_its_own_frames_into_the_full_batchs_buffers(cuda, mode):
    pipeline = make_pipeline(mode, max_batch=4, slots=1)
    frame_bytes = 6 * 8 * 3
    pipeline.submit(numbered(1, 2, 3, 4))
    assert [row[0] for row in pipeline.collect()[0]] == [1, 2, 3, 4]
    allocations = cuda.device_allocations
    cuda.copied_bytes.clear()
    for batch in ([5], [6, 7], [8, 9, 10]):  # a live source's partial batches, or a file's last frames
        pipeline.submit(numbered(*batch))
        assert [row[0] for row in pipeline.collect()[0]] == batch
    uploads = [n for n in cuda.copied_bytes if n % frame_bytes == 0]
    assert uploads == [1 * frame_bytes, 2 * frame_bytes, 3 * frame_bytes]
    assert cuda.device_allocations == allocations, "a batch of another size reallocated the frame buffers"


class Video:
    """A video file of numbered frames (1, 2, ...): the part of edge.runtime.sources.Source that the Loop uses."""

    live, uri = False, "video.mp4"

    def __init__(self, frames: int):
        self.frames = iter(numbered(*range(1, frames + 1)))

    def open(self) -> None:
        pass

    def read(self):
        from edge.runtime.sources import Frame

        image = next(self.frames, None)
        return None if image is None else Frame(image, time.time())

    def close(self) -> None:
        pass


def trace(pipeline, traced: list, after_submit=lambda: None) -> None:
    """Note ("submit", first frame's number) and ("collect", its number) in `traced` as the pipeline sees them."""
    submit, collect = pipeline.submit, pipeline.collect

    def traced_submit(images):
        submit(images)
        traced.append(("submit", int(images[0][0, 0, 0])))
        after_submit()

    def traced_collect():
        output, times = collect()
        traced.append(("collect", int(output[0, 0])))
        return output, times

    pipeline.submit, pipeline.collect = traced_submit, traced_collect


def run_loop(executor, frames: int = 7, batch: int = 1, on_tick=None, traced=None):
    """The real Loop over a Video of `frames` frames on `executor`: (reason, rows written), each row (frame index,
    the number the engine saw, the batch it ran in). With `traced`, the pipeline is traced, and each submit waits
    until the capture thread has the next frame queued (or the video has ended), so that what the Loop does next
    does not hang on which thread runs first."""
    from edge.runtime.loop import Loop

    class Rows:
        def make(self, frame, probabilities):
            return frame.index, int(probabilities[0]), int(probabilities[1])

        def encode(self, result):
            return result

    written = []
    sink = SimpleNamespace(write=written.append, flush=lambda: None, close=lambda: None)
    loop = Loop(Video(frames), executor, Rows(), [sink], batch=batch, on_tick=on_tick)

    def until_the_next_frame_is_queued():
        deadline = time.monotonic() + 5.0
        while not (loop.queue.frames or loop.queue.finished) and time.monotonic() < deadline:
            time.sleep(0.001)

    if traced is not None:
        trace(executor.pipeline, traced, until_the_next_frame_is_queued)
    return loop.run(), written


def gpu_executor(mode, engine, fixed_batch=0, batch=1, slots=2, recorders=()):
    from edge.gpu.pipeline import GpuExecutor

    model = SimpleNamespace(card=SimpleNamespace(batch=fixed_batch, probabilities=True), preprocess=SPEC,
                            folder="engines/tiny")
    return GpuExecutor(model, engine, mode, recorders=recorders, batch=batch, slots=slots)


@pytest.mark.parametrize("mode", ["pageable", "pinned", "mapped"])
@pytest.mark.parametrize("slots", [1, 2])
@pytest.mark.parametrize("fixed_batch, loop_batch", [(0, 3), (4, 4), (4, 1)])
def test_the_loop_on_the_gpu_executor_classifies_every_frame_of_a_file_once_in_order(cuda, mode, slots,
                                                                                      fixed_batch, loop_batch):
    """7 frames: the last batch is partial; the engine gets it padded to its one batch size (the fixed one, else
    the loop's), and the padding's rows are dropped."""
    engine = NumberingEngine()
    reason, written = run_loop(gpu_executor(mode, engine, fixed_batch, loop_batch, slots), batch=loop_batch)
    assert reason == "end"
    assert [(index, number) for index, number, _ in written] == [(i, i + 1) for i in range(7)]
    ran_in = {batch for _, _, batch in written}
    assert ran_in == {fixed_batch or loop_batch}
    assert engine.computed == sorted(engine.computed)  # the engine ran them in order too (with any padding)


@pytest.mark.parametrize("mode", ["pinned", "mapped"])
def test_the_loop_submits_frame_n_plus_1_before_it_collects_frame_n(cuda, mode):
    """Double buffering in the Loop: with frames waiting, the next is queued (its upload, or mapped its kernel,
    behind nothing of frame N's) before frame N's result is waited for, so the kernels run under the engines."""
    traced = []
    reason, written = run_loop(gpu_executor(mode, NumberingEngine()), traced=traced)
    assert reason == "end" and [number for _, number, _ in written] == list(range(1, 8))
    assert traced == [("submit", 1), ("submit", 2), ("collect", 1), ("submit", 3), ("collect", 2),
                      ("submit", 4), ("collect", 3), ("submit", 5), ("collect", 4), ("submit", 6), ("collect", 5),
                      ("submit", 7), ("collect", 6), ("collect", 7)]
    # Device time: the first kernel, then the seven engines back to back (each later kernel ran under an engine)
    assert cuda.host_ms == pytest.approx(KERNEL_MS + 7 * ENGINE_MS, abs=0.1)


@pytest.mark.parametrize("mode", ["pageable", "pinned", "mapped"])
def test_one_slot_or_pageable_memory_keeps_one_frame_in_flight(cuda, mode):
    """The serial path (and pageable memory, whose copies are synchronous): each frame collected before the next."""
    traced = []
    slots = 2 if mode == "pageable" else 1
    assert run_loop(gpu_executor(mode, NumberingEngine(), slots=slots), traced=traced)[0] == "end"
    assert traced == [(step, n) for n in range(1, 8) for step in ("submit", "collect")]
    assert cuda.host_ms == pytest.approx(7 * (KERNEL_MS + ENGINE_MS), abs=0.1)


@pytest.mark.parametrize("mode", ["pinned", "mapped"])
def test_gpu_stage_times_stay_per_batch_with_two_in_flight(cuda, mode):
    """Each batch's gpu:* times come from its own slot's events: no batch's compute counts another's engine."""

    class Recorder:
        def __init__(self):
            self.seen: dict[str, list[float]] = {}

        def record(self, stage, seconds):
            self.seen.setdefault(stage, []).append(seconds * 1000.0)

    recorder = Recorder()
    assert run_loop(gpu_executor(mode, NumberingEngine(), recorders=[recorder]), traced=[])[0] == "end"
    assert recorder.seen["gpu:compute"] == pytest.approx([ENGINE_MS] * 7)
    assert recorder.seen["gpu:preprocess"] == pytest.approx([KERNEL_MS] * 7)
    assert all(ms < 0.1 for ms in recorder.seen["gpu:download"]), recorder.seen["gpu:download"]


@pytest.mark.parametrize("mode", ["pinned", "mapped"])
def test_a_stop_with_two_batches_in_flight_writes_both(cuda, mode):
    engine = NumberingEngine()
    executor = gpu_executor(mode, engine)

    def stop_with_two_in_flight(loop):
        if len(executor.pipeline.in_flight) == 2:
            loop.stop.set()

    reason, written = run_loop(executor, frames=50, on_tick=stop_with_two_in_flight, traced=[])
    assert reason == "stopped"
    assert engine.calls == len(written) < 50  # every batch submitted was written, and the stop came mid-stream
    assert [(index, number) for index, number, _ in written] == [(i, i + 1) for i in range(len(written))]
    assert not executor.pipeline.in_flight


@pytest.mark.parametrize("mode", ["pinned", "mapped"])
def test_a_failing_submit_on_the_executor_leaves_the_other_slot_and_the_next_batch_intact(cuda, mode):
    executor = gpu_executor(mode, NumberingEngine(fail_on_call=2))
    first = executor.preprocess(numbered(1))
    with pytest.raises(EdgeError, match="could not be enqueued"):
        executor.preprocess(numbered(2))
    third = executor.preprocess(numbered(3))
    assert executor.compute(first)[0, 0] == 1 and executor.compute(third)[0, 0] == 3
    assert not executor.pipeline.in_flight


@pytest.mark.parametrize("mode", ["pinned", "mapped"])
def test_a_live_source_on_two_slots_writes_each_kept_frame_once_in_order_and_every_started_one_on_stop(cuda, mode):
    """A camera faster than the loop: when a newer frame has arrived by the time a batch is queued (here during its
    2 ms submit, as a 1080p frame's copy into page-locked memory can take), it is submitted before the older one is
    collected; frames the loop has no room for are dropped for newer ones."""
    from edge.runtime.loop import Loop
    from edge.runtime.sources import SourceError

    class Camera(Video):
        """Frames 1 to 255 (a frame's number is its first byte), one a millisecond, then a camera gone away."""

        live = True

        def __init__(self):
            super().__init__(255)
            self.read_so_far = 0

        def read(self):
            time.sleep(0.001)
            frame = super().read()
            if frame is None:
                raise SourceError("the camera has gone away")
            self.read_so_far += 1
            return frame

    engine, camera, written, traced = NumberingEngine(), Camera(), [], []
    executor = gpu_executor(mode, engine)
    trace(executor.pipeline, traced, after_submit=lambda: time.sleep(0.002))
    sink = SimpleNamespace(write=written.append, flush=lambda: None, close=lambda: None)
    rows = SimpleNamespace(make=lambda frame, p: (frame.index, int(p[0])), encode=lambda row: row)
    loop = Loop(camera, executor, rows, [sink])
    threading.Timer(0.2, loop.stop.set).start()
    assert loop.run() == "stopped"
    assert [index for index, _ in written] == list(range(len(written))) and len(written) > 10
    numbers = [number for _, number in written]
    assert numbers == sorted(set(numbers))  # the newest kept, none twice, none out of order
    assert engine.calls == len(written)  # nothing submitted was left unwritten
    assert loop.stats.dropped > 0 and loop.stats.frames + loop.stats.dropped <= camera.read_so_far
    position = {event: i for i, event in enumerate(traced)}
    assert any(position["submit", later] < position["collect", earlier] for earlier, later in zip(numbers, numbers[1:]))


def test_a_failing_submit_stops_the_loop_with_the_error(cuda):
    with pytest.raises(EdgeError, match="could not be enqueued"):
        run_loop(gpu_executor("pinned", NumberingEngine(fail_on_call=4)))


@pytest.mark.parametrize("mode", ["pinned", "mapped"])
def test_the_profilers_serial_run_keeps_one_frame_in_flight_on_the_double_buffered_executor(cuda, mode):
    """`edge profile` makes the executor as `edge run` does (two slots); its serial run holds the capture thread
    until each frame is written, so every frame is collected before the next is submitted, and the per-stage
    times are of one frame alone."""
    from edge.profiler import _run_loop

    traced = []

    def make_executor(recorder):
        executor = gpu_executor(mode, NumberingEngine(), recorders=[recorder])
        assert executor.in_flight == 2
        trace(executor.pipeline, traced)
        return executor

    model = SimpleNamespace(card=SimpleNamespace(classes=2), top=lambda probabilities, k: [])
    recorder = _run_loop(lambda: Video(8), make_executor, model, warmup=2, frames=5, serial=True)
    assert traced == [(step, n) for n in range(1, 8) for step in ("submit", "collect")]
    assert recorder.loop.in_flight == 2  # the profiler's wrapper passes the slots on: the overlapped run uses them
    assert recorder.measured("gpu:compute") == pytest.approx([ENGINE_MS] * 5)
    assert recorder.measured("gpu:preprocess") == pytest.approx([KERNEL_MS] * 5)


class FakePipeline:
    """GpuPipeline's submit/collect contract without pycuda: at most max_batch frames of one size per submit."""

    def __init__(self, spec, engine, mode, max_batch=1, slots=2):
        self.max_batch, self.submitted = max_batch, []

    def submit(self, frames):
        if not 0 < len(frames) <= self.max_batch:
            raise ValueError(f"a batch of 1 to {self.max_batch} frames, not {len(frames)}")
        self.submitted.append(len(frames))

    def collect(self):
        return np.full((self.submitted[-1], 3), 1 / 3, np.float32), {}


def batching_executor(monkeypatch, fixed_batch: int, batch: int):
    from edge.gpu import pipeline

    monkeypatch.setattr(pipeline, "GpuPipeline", FakePipeline)
    model = SimpleNamespace(card=SimpleNamespace(batch=fixed_batch, probabilities=True), preprocess=None,
                            folder="engines/tiny")
    return pipeline.GpuExecutor(model, engine=None, mode="pinned", batch=batch)


def test_gpu_executor_takes_the_loops_batch_on_a_dynamic_batch_engine(monkeypatch):
    executor = batching_executor(monkeypatch, fixed_batch=0, batch=4)
    frames = [np.zeros((48, 64, 3), np.uint8)] * 4
    assert executor.compute(executor.preprocess(frames)).shape == (4, 3)


def test_gpu_executor_pads_partial_batches_for_a_fixed_batch_engine(monkeypatch):
    executor = batching_executor(monkeypatch, fixed_batch=4, batch=4)
    executor.preprocess([np.zeros((48, 64, 3), np.uint8)] * 2)
    assert executor.pipeline.submitted == [4]  # the engine runs its one batch size; the Loop ignores the padding
    with pytest.raises(EdgeError, match="runs batches of at most 4"):
        batching_executor(monkeypatch, fixed_batch=4, batch=8)


def test_gpu_executor_refuses_frames_of_several_sizes_in_one_line(monkeypatch):
    executor = batching_executor(monkeypatch, fixed_batch=0, batch=2)
    with pytest.raises(EdgeError, match="frames of one size"):
        executor.preprocess([np.zeros((48, 64, 3), np.uint8), np.zeros((40, 64, 3), np.uint8)])
