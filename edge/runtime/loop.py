"""The camera loop: one capture thread feeding a bounded queue, and the calling thread classifying and writing.

    capture thread:  source.read()  -> FrameQueue            (stage "capture")
    calling thread:  FrameQueue -> executor.preprocess(images) (stage "preprocess"; see "prepare" below)
                                -> executor.compute(prepared)  (stage "compute": (N, classes) probabilities)
                                -> results.make(...)           (stage "postprocess": top-k, groups, smoothing)
                                -> sink.write(line)            (stage "sink", with the annotated video if any)

An executor with `workers` > 1 (CpuExecutor on ONNX Runtime: `edge run --workers`, by default one per core) has
the preprocess and compute steps of several batches run at once on a pool of that many threads; the calling
thread hands batches out in capture order and writes their results in that same order, so the output is the same
as with one worker. An executor with `in_flight` > 1 (GpuExecutor on pinned or mapped memory) instead queues a
batch's work in `preprocess` and waits for it in `compute`, all on the calling thread: the loop starts the next
batch before it collects the oldest, so that while the engine computes batch N, batch N+1 is uploaded and
preprocessed (double buffering, without threads).

Live sources keep only the newest frames (latest wins; the queue counts what it dropped); files and folders
block the capture thread instead, so they never drop. A live source that fails is reopened with backoff and
the reopen is counted; the loop itself never stops for it.

Hooks for the profiler and the GPU path (they wrap this same loop rather than running another pipeline):

- Stage timing: `Loop(..., timings=[recorder, ...])`. Each recorder has `record(stage, seconds)` and is called
  once per stage per batch with the stage's wall time (perf_counter) and once per frame for "latency"
  (capture to result written). Stages: "capture" (from the capture thread: for a live source this includes
  waiting for the camera's next frame), "preprocess", "compute", "postprocess", "sink". Recorders are called
  from several threads, so they must be thread-safe (a lock, or per-stage lists appended to: list.append is
  atomic).
- Swappable preprocessing and compute: `Loop(..., executor=...)` takes any object with
  `preprocess(images: list[np.ndarray]) -> prepared` and `compute(prepared) -> np.ndarray` of (>= N, classes)
  probabilities (rows beyond N, from padding a fixed batch, are ignored). CpuExecutor (executors.py) is the reference;
  a GPU executor replaces both steps (upload + kernel, then engine) and may record finer stages itself
  (e.g. "h2d", "d2h") through the same recorders. Without a `workers` attribute above 1 both run on the calling
  thread, so a CUDA context made current there stays current. With `in_flight` > 1, `compute(prepared)` is called
  in the order the batches were preprocessed, and the calling thread's "preprocess" and "compute" are the host's
  time to queue a batch and to wait for its result; the executor's own stages tell the device's time.
- Preparing ahead: an executor that also has `prepare(image) -> item` and `collate(items) -> prepared`
  (CpuExecutor does) gets, for files and folders only, each frame prepared on the capture thread as it is read,
  overlapping the previous batch's inference; the batch is then collated instead of preprocessed, and
  "preprocess" is recorded per frame from the capture thread ("compute" then includes the collating). Live
  frames may still be dropped, so they are preprocessed only once chosen. A wrapper that exposes only
  preprocess/compute (the profiler's) keeps every stage on the calling thread.
- `on_tick(loop)` is called from the calling thread after each batch, and every TICK_S while it waits for
  frames: the service sends READY and WATCHDOG from it, so a stuck inference (or a capture thread stuck longer than
  CAPTURE_STALL_S) stops the pings and systemd restarts the process.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import EdgeError
from ..retry import backoff_delay, worth_logging
from .sources import Frame, Source, SourceError, log_skipped

log = logging.getLogger("edge")

STAGES = ("capture", "preprocess", "compute", "postprocess", "sink")
TICK_S = 0.25
CAPTURE_STALL_S = 20.0  # longer than a stream's open + read timeouts and the longest backoff together


class StageTimes(Protocol):
    def record(self, stage: str, seconds: float) -> None: ...


class Executor(Protocol):
    def preprocess(self, images: list[np.ndarray]): ...

    def compute(self, prepared) -> np.ndarray: ...


class Sink(Protocol):
    def write(self, line: str) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class LoopStats:
    """Counters the HTTP endpoint and the logs read; each is written by one thread only."""

    frames: int = 0  # classified
    dropped: int = 0  # live frames replaced by newer ones before they were classified
    reconnects: int = 0  # successful reopens of a live source after a failure
    decode_errors: int = 0  # frames or files that could not be decoded, skipped
    started: float = field(default_factory=time.monotonic)
    last_result_at: float | None = None  # monotonic
    capture_alive_at: float = field(default_factory=time.monotonic)  # the capture thread's last sign of life
    latest: dict | None = None  # the last result written
    source_error: str | None = None  # why the live source is down and when it is retried; None while frames come


class FrameQueue:
    """A bounded FIFO between the capture thread and the loop.

    latest_wins: a put on a full queue discards the oldest frame and counts it (live sources).
    Otherwise a put waits for room (files and folders never drop). `finish()` marks the end of the source;
    `close()` releases a waiting producer when the loop stops."""

    def __init__(self, capacity: int, latest_wins: bool):
        self.capacity, self.latest_wins = capacity, latest_wins
        self.frames: collections.deque[Frame] = collections.deque()
        self.changed = threading.Condition()
        self.dropped = 0
        self.finished = self.closed = False

    def put(self, frame: Frame) -> None:
        with self.changed:
            while len(self.frames) >= self.capacity and not self.closed:
                if self.latest_wins:
                    self.frames.popleft()
                    self.dropped += 1
                else:
                    self.changed.wait()
            self.frames.append(frame)
            self.changed.notify_all()

    def finish(self) -> None:
        with self.changed:
            self.finished = True
            self.changed.notify_all()

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def get_batch(self, size: int, timeout: float) -> list[Frame] | None:
        """Up to `size` frames; [] after `timeout` with none; None once the source has finished and all are taken.

        Live sources get what is there (latency first); files wait for a full batch (throughput first)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                enough = len(self.frames) >= (1 if self.latest_wins else min(size, self.capacity))
                if enough or (self.finished and self.frames):
                    batch = [self.frames.popleft() for _ in range(min(size, len(self.frames)))]
                    self.changed.notify_all()
                    return batch
                if self.finished or self.closed:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self.changed.wait(remaining)


class Loop:
    def __init__(self, source: Source, executor: Executor, results, sinks: Sequence[Sink], batch: int = 1,
                 timings: Sequence[StageTimes] = (), on_tick: Callable[[Loop], None] | None = None,
                 annotate=None):
        self.source, self.executor, self.results, self.sinks = source, executor, results, list(sinks)
        self.annotate = annotate  # an AnnotatedVideo (sinks.py), or None
        self.batch = batch
        self.timings = list(timings)
        self.on_tick = on_tick
        self.stats = LoopStats()
        self.workers = getattr(executor, "workers", 1)
        self.in_flight = getattr(executor, "in_flight", 1)  # batches the executor queues before one is collected
        # A live source keeps a batch per worker, so that every worker has the newest frames to start on.
        capacity = batch * self.workers if source.live else max(2 * batch, 4)
        self.queue = FrameQueue(capacity, latest_wins=source.live)
        self.stop = threading.Event()
        self.capture_error: BaseException | None = None
        # Every frame of a file will be classified, so preparing it on the capture thread is never wasted.
        self.prepare_ahead = not source.live and hasattr(executor, "prepare") and hasattr(executor, "collate")
        self.bad_frames = 0  # frames not HxWx3 uint8, or of a size preprocessing refuses

    def _record(self, stage: str, seconds: float) -> None:
        for recorder in self.timings:
            recorder.record(stage, seconds)

    # --- the capture thread ------------------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        """Sleep without looking dead to the watchdog, and wake at once on stop."""
        end = time.monotonic() + seconds
        while not self.stop.is_set() and time.monotonic() < end:
            self.stats.capture_alive_at = time.monotonic()
            self.stop.wait(min(1.0, end - time.monotonic()))

    def _capture(self, opened: bool) -> None:
        stats, source = self.stats, self.source
        failures = 0  # consecutive failed opens or reads of a live source
        try:
            while not self.stop.is_set():
                stats.capture_alive_at = time.monotonic()
                try:
                    if not opened:
                        source.open()
                        opened = True
                        if failures:
                            stats.reconnects += 1
                            log.info("%s: reopened (reconnect %d)", source.uri, stats.reconnects)
                    start = time.perf_counter()
                    frame = source.read()
                except SourceError as e:
                    source.close()
                    opened = False
                    failures += 1
                    delay = backoff_delay(failures)
                    stats.source_error = f"{e}; retrying in {delay:.2g} s (attempt {failures})"
                    if worth_logging(failures):
                        log.warning("%s", stats.source_error)
                    self._wait(delay)
                    continue
                stats.decode_errors = getattr(source, "decode_errors", 0) + self.bad_frames
                if frame is None:
                    break
                if frame.image is None or frame.image.ndim != 3 or frame.image.shape[2] != 3 \
                        or frame.image.dtype != np.uint8:
                    self.bad_frames += 1
                    continue
                self._record("capture", time.perf_counter() - start)
                if self.prepare_ahead:
                    start = time.perf_counter()
                    try:
                        frame.prepared = self.executor.prepare(frame.image)
                    except EdgeError as e:  # a size preprocessing refuses (a frame 1 pixel wide): skip it
                        self.bad_frames += 1
                        log_skipped(f"{frame.file or 'frame'}: {e}", self.bad_frames)
                        continue
                    self._record("preprocess", time.perf_counter() - start)
                failures, stats.source_error = 0, None
                self.queue.put(frame)
                stats.dropped = self.queue.dropped
        except BaseException as e:  # a bug or an environment failure: the loop re-raises it
            self.capture_error = e
        finally:
            self.queue.finish()

    # --- the calling thread ------------------------------------------------------------------------------

    def run(self) -> str:
        """Classify until the source ends ("end") or `stop` is set ("stopped"); sinks are flushed either way."""
        opened = False
        if not self.source.live:
            try:
                self.source.open()
                opened = True
            except SourceError as e:
                raise EdgeError(str(e)) from None
        capture = threading.Thread(target=self._capture, args=(opened,), name="edge-capture", daemon=True)
        capture.start()
        try:
            reason = self._classify()
        finally:
            self.stop.set()
            self.queue.close()
            capture.join(timeout=0.5)
            if not capture.is_alive():  # a read blocked in a driver must not have its capture released under it
                self.source.close()
            for sink in self.sinks:
                sink.flush()
        if self.capture_error is not None:
            raise self.capture_error
        return reason

    def _classify(self) -> str:
        """Hand batches out in capture order and write their results in that order.

        Up to `ahead` batches are started and not yet written; the oldest is written as soon as there is no new
        frame to start. With one worker and one batch in flight, `ahead` is 1: each batch is computed and written
        before the next is taken. A pool of workers computes several at once, and files keep a second batch
        waiting per worker, so a worker that finishes early starts the next at once. An executor with batches in
        flight gets the next batch queued behind the oldest while the oldest is still on the device. Live frames
        never wait behind others (the queue, not the pool or the executor, is where they are dropped for newer
        ones): a live batch is written as soon as no newer frame is waiting. So a live source uses an executor's
        second batch in flight only when a newer frame has arrived by the time a batch is queued (the loop is
        behind the camera), and then queues that frame at once rather than after the older batch's result."""
        index, reason = 0, "stopped"
        if self.workers > 1:
            ahead = self.workers if self.source.live else 2 * self.workers
        else:
            ahead = self.in_flight
        started: collections.deque = collections.deque()  # (frames, result() -> their probabilities), oldest first
        pool = ThreadPoolExecutor(self.workers, "edge-compute") if self.workers > 1 else contextlib.nullcontext()
        with pool:
            while not self.stop.is_set():
                # (`queue.frames` is glanced at without its lock: a frame missed is taken on the next turn)
                if started and (len(started) >= ahead or not self.queue.frames):
                    frames, result = started.popleft()
                    self._write(frames, result())
                else:
                    frames = self.queue.get_batch(self.batch, timeout=TICK_S)
                    if frames is None:  # the capture thread is done: the source ended, or it saw `stop` first
                        reason = "stopped" if self.stop.is_set() else "end"
                        break
                    for offset, frame in enumerate(frames):
                        frame.index = index + offset
                    index += len(frames)
                    if frames and self.workers > 1:
                        started.append((frames, pool.submit(self._preprocess_and_compute, frames).result))
                    elif frames:  # on this thread, where an executor with batches in flight queues the work now
                        started.append((frames, functools.partial(self._compute, self._preprocess(frames))))
                if self.on_tick is not None:
                    self.on_tick(self)
            for frames, result in started:  # batches already started are finished and written, even on stop
                self._write(frames, result())
        return reason

    def _preprocess(self, frames: list[Frame]):
        """The executor's input for one batch. Frames prepared ahead are collated in _compute instead: their
        "preprocess" was recorded per frame on the capture thread."""
        if self.prepare_ahead:
            return [frame.prepared for frame in frames]
        start = time.perf_counter()
        prepared = self.executor.preprocess([frame.image for frame in frames])
        self._record("preprocess", time.perf_counter() - start)
        return prepared

    def _compute(self, prepared) -> np.ndarray:
        """Probabilities for one batch (rows beyond its frames, from padding, are ignored)."""
        start = time.perf_counter()
        if self.prepare_ahead:
            prepared = self.executor.collate(prepared)
        probabilities = self.executor.compute(prepared)
        self._record("compute", time.perf_counter() - start)
        return probabilities

    def _preprocess_and_compute(self, frames: list[Frame]) -> np.ndarray:
        """One batch on a pool thread, when the executor has several workers."""
        return self._compute(self._preprocess(frames))

    def _write(self, frames: list[Frame], probabilities: np.ndarray) -> None:
        t0 = time.perf_counter()
        results = [self.results.make(frame, p) for frame, p in zip(frames, probabilities)]
        t1 = time.perf_counter()
        for result in results:
            line = self.results.encode(result)
            for sink in self.sinks:
                sink.write(line)
        if self.annotate is not None:
            for frame, result in zip(frames, results):
                self.annotate.write(frame.image, result)
        t2 = time.perf_counter()
        now = time.time()
        self._record("postprocess", t1 - t0)
        self._record("sink", t2 - t1)
        for frame in frames:
            self._record("latency", now - frame.timestamp)
        self.stats.frames += len(frames)
        self.stats.latest = results[-1]
        self.stats.last_result_at = time.monotonic()
