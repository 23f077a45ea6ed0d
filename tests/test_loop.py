"""The camera loop (edge/runtime/loop.py): the frame queue, order and stage timing, batches, concurrent workers,
reconnecting, stopping, frames prepared ahead, the annotated video."""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest

from edge.errors import EdgeError
from edge.model import Model
from edge.runtime.executors import CpuExecutor
from edge.runtime.loop import STAGES, FrameQueue, Loop
from edge.runtime.sinks import Results
from edge.runtime.sources import Frame, Source, SourceError, open_source

from runtime_support import CLASSES, ListSink, Recorder, frame, probabilities, tiny_model_folder, write_video


def test_live_queue_keeps_the_latest_and_counts_drops():
    queue = FrameQueue(capacity=2, latest_wins=True)
    for i in range(5):
        queue.put(frame(i))
    assert queue.dropped == 3
    assert [f.position for f in queue.get_batch(4, timeout=0)] == [3.0, 4.0]


def test_file_queue_blocks_instead_of_dropping():
    queue = FrameQueue(capacity=2, latest_wins=False)
    produced = []

    def produce():
        for i in range(6):
            queue.put(frame(i))
            produced.append(i)
        queue.finish()

    thread = threading.Thread(target=produce)
    thread.start()
    time.sleep(0.2)
    assert len(produced) == 2  # the third put waits for room
    taken = []
    while (batch := queue.get_batch(4, timeout=1)) is not None:
        taken += [f.position for f in batch]
    thread.join()
    assert taken == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and queue.dropped == 0


def test_queue_times_out_empty_and_ends_with_none():
    queue = FrameQueue(capacity=4, latest_wins=True)
    assert queue.get_batch(1, timeout=0.01) == []
    queue.put(frame(0))
    queue.finish()
    assert len(queue.get_batch(1, timeout=0.01)) == 1
    assert queue.get_batch(1, timeout=0.01) is None


def test_loop_over_a_file_classifies_every_frame_in_order_with_every_stage_timed(model, tmp_path):
    source = open_source(str(write_video(tmp_path / "clip.avi", 23)))
    sink, recorder = ListSink(), Recorder()
    loop = Loop(source, CpuExecutor(model), Results(model, top=2), [sink], batch=4, timings=[recorder])
    assert loop.run() == "end"
    results = [json.loads(line) for line in sink.lines]
    assert [r["frame"] for r in results] == list(range(23))
    assert all(len(r["top"]) == 2 and r["latency_ms"] >= 0 for r in results)
    assert sink.flushed >= 1 and loop.stats.frames == 23 and loop.stats.dropped == 0
    assert set(recorder.seen) == set(STAGES) | {"latency"}
    assert len(recorder.seen["capture"]) == 23 and len(recorder.seen["compute"]) == 6  # 5 batches of 4, then 3
    # the same frames one at a time give the same probabilities
    expected = [model.classify(f.image, 2) for f in _all_frames(tmp_path / "clip.avi")]
    assert [[t["class_id"] for t in r["top"]] for r in results] == [[p.class_id for p in e] for e in expected]


def _all_frames(path):
    source = open_source(str(path))
    source.open()
    while (frame := source.read()) is not None:
        yield frame


def test_a_fixed_batch_model_gets_partial_batches_padded(tmp_path):
    fixed = Model.load(tiny_model_folder(tmp_path / "fixed", batch=4))
    assert fixed.card.batch == 4
    sink = ListSink()
    loop = Loop(open_source(str(write_video(tmp_path / "clip.avi", 6))), CpuExecutor(fixed), Results(fixed), [sink],
                batch=4)
    loop.run()
    assert [json.loads(line)["frame"] for line in sink.lines] == list(range(6))


def test_the_executor_is_swappable(model, tmp_path):
    class Fixed:
        def preprocess(self, images):
            return len(images)

        def compute(self, count):
            return np.tile(probabilities((5, 1.0)), (count, 1))

    sink = ListSink()
    Loop(open_source(str(write_video(tmp_path / "clip.avi", 3))), Fixed(), Results(model, top=1), [sink]).run()
    assert [json.loads(line)["top"][0]["class_id"] for line in sink.lines] == [5, 5, 5]


class NumberedFrames(Source):
    """`count` frames whose pixels are their number (a file-like source when not live, so nothing is dropped)."""

    uri = "numbered://"

    def __init__(self, count: int, live: bool = False):
        self.count, self.live, self.read_so_far = count, live, 0

    def read(self) -> Frame | None:
        if not self.live and self.read_so_far == self.count:
            return None
        self.read_so_far += 1
        return Frame(np.full((4, 4, 3), (self.read_so_far - 1) % 256, np.uint8), time.time())


class ShuffledFinish:
    """An executor of `workers` workers whose batches finish out of order: each compute sleeps a random time.
    Its probabilities put each frame's own number (mod CLASSES) on top; it counts how many computes overlap."""

    def __init__(self, workers: int):
        self.workers, self.random = workers, np.random.default_rng(0)
        self.lock, self.running, self.most_at_once, self.computed, self.threads = threading.Lock(), 0, 0, 0, set()

    def preprocess(self, images):
        return [int(image[0, 0, 0]) for image in images]

    def compute(self, numbers):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.threads.add(threading.current_thread().name)
            delay = self.random.uniform(0, 0.01)
        time.sleep(delay)
        with self.lock:
            self.running -= 1
            self.computed += len(numbers)
        return np.stack([probabilities((n % CLASSES, 1.0)) for n in numbers])


@pytest.mark.parametrize("batch", [1, 3])
def test_concurrent_workers_write_every_frame_once_in_capture_order(model, batch):
    executor, sink, recorder, ticks = ShuffledFinish(workers=3), ListSink(), Recorder(), []
    loop = Loop(NumberedFrames(40), executor, Results(model, top=1), [sink], batch=batch, timings=[recorder],
                on_tick=lambda loop: ticks.append(loop.stats.frames))
    assert loop.run() == "end"
    results = [json.loads(line) for line in sink.lines]
    assert [r["frame"] for r in results] == list(range(40))
    assert [r["top"][0]["class_id"] for r in results] == [i % CLASSES for i in range(40)]  # each its own result
    assert executor.most_at_once > 1 and threading.current_thread().name not in executor.threads
    assert len(recorder.seen["compute"]) == len(recorder.seen["sink"]) == -(-40 // batch)
    assert len(recorder.seen["latency"]) == 40 and ticks and ticks == sorted(ticks)


def test_concurrent_workers_on_a_live_source_stop_with_every_started_batch_written(model):
    source, executor, sink = NumberedFrames(0, live=True), ShuffledFinish(workers=2), ListSink()
    loop = Loop(source, executor, Results(model, top=1), [sink])
    threading.Timer(0.3, loop.stop.set).start()
    assert loop.run() == "stopped"
    assert [json.loads(line)["frame"] for line in sink.lines] == list(range(loop.stats.frames))
    assert loop.stats.frames > 10 and executor.most_at_once > 1
    assert executor.computed == loop.stats.frames  # nothing computed was left unwritten
    assert loop.stats.frames + loop.stats.dropped <= source.read_so_far  # no frame twice


class FlakySource(Source):
    """A live source that fails to read every `period` frames and fails its next open too."""

    live = True
    uri = "flaky://"

    def __init__(self, period: int):
        self.period, self.reads, self.opens = period, 0, 0

    def open(self):
        self.opens += 1
        if self.opens % 2 == 0:
            raise SourceError("flaky://: cannot open")

    def read(self):
        self.reads += 1
        if self.reads % self.period == 0:
            raise SourceError("flaky://: no frame")
        time.sleep(0.002)
        return Frame(np.zeros((8, 8, 3), np.uint8), time.time())


def test_a_failing_live_source_is_reopened_and_counted_while_the_loop_keeps_going(model, monkeypatch):
    monkeypatch.setattr("edge.retry.BACKOFF_S", (0.01, 0.02))
    source, sink = FlakySource(period=10), ListSink()
    loop = Loop(source, CpuExecutor(model), Results(model), [sink])
    threading.Timer(1.0, loop.stop.set).start()
    assert loop.run() == "stopped"
    assert loop.stats.reconnects >= 3
    failed_reads = source.reads // 10
    assert loop.stats.reconnects in (failed_reads - 1, failed_reads)  # one reopen after each (the last may be cut)
    assert loop.stats.frames == len(sink.lines) > 20


def test_a_blocking_live_source_does_not_delay_stop(model):
    class Stuck(Source):
        live, uri = True, "stuck://"

        def read(self):
            time.sleep(5)

    loop = Loop(Stuck(), CpuExecutor(model), Results(model), [ListSink()])
    threading.Timer(0.2, loop.stop.set).start()
    start = time.monotonic()
    assert loop.run() == "stopped"
    assert time.monotonic() - start < 1.5


def test_file_frames_are_prepared_ahead_on_the_capture_thread_live_frames_only_once_chosen(model, tmp_path):
    class Spy(CpuExecutor):
        def prepare(self, image):
            self.threads.add(threading.current_thread().name)
            return super().prepare(image)

    for source, thread in ((open_source(str(write_video(tmp_path / "clip.avi", 5))), "edge-capture"),
                           (open_source("test://", 64, 48, fps=100), threading.current_thread().name)):
        executor, sink = Spy(model), ListSink()
        executor.threads = set()
        loop = Loop(source, executor, Results(model), [sink])
        threading.Timer(0.5, loop.stop.set).start()
        loop.run()
        assert executor.threads == {thread} and len(sink.lines) >= 5


def test_annotated_video_gets_every_frame_with_its_label_drawn_at_the_sources_rate(model, tmp_path):
    from edge.runtime.sinks import AnnotatedVideo

    video = write_video(tmp_path / "clip.avi", 6, width=160, height=120, fps=10)
    source = open_source(str(video))
    annotated = AnnotatedVideo(tmp_path / "annotated.avi", source, fps=25)
    Loop(source, CpuExecutor(model), Results(model), [ListSink()], annotate=annotated).run()
    annotated.close()
    written = cv2.VideoCapture(str(tmp_path / "annotated.avi"))
    assert written.get(cv2.CAP_PROP_FPS) == 10  # the clip's rate: --fps is for sources without one
    written.release()
    originals = [f.image for f in _all_frames(video)]
    drawn = [f.image for f in _all_frames(tmp_path / "annotated.avi")]
    assert len(drawn) == 6
    # the label sits in the top-left corner; the rest of the frame is the frame (MJPG: nearly)
    assert all(np.abs(d[:25, :100].astype(int) - o[:25, :100]).max() > 100 for d, o in zip(drawn, originals))
    assert all(np.abs(d[60:].astype(int) - o[60:]).mean() < 8 for d, o in zip(drawn, originals))
    with pytest.raises(EdgeError, match=".avi or .mp4"):
        AnnotatedVideo(tmp_path / "annotated.gif", source)
    with pytest.raises(EdgeError, match="no folder .*missing to write the video into"):
        AnnotatedVideo(tmp_path / "missing" / "annotated.avi", source)  # refused before any frame is classified


@pytest.mark.parametrize("fps, expected", [(None, 30.0), (5.0, 5.0)])
def test_an_annotated_folder_plays_at_fps_else_30_and_the_log_says_so(model, tmp_path, caplog, monkeypatch, fps,
                                                                      expected):
    import logging

    from edge.runtime.sinks import AnnotatedVideo

    monkeypatch.setattr(logging.getLogger("edge"), "propagate", True)  # as it is before `edge run` sets up its log

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((48, 64, 3), 60 * i, np.uint8))
    source = open_source(str(tmp_path))
    annotated = AnnotatedVideo(tmp_path / "annotated.avi", source, fps)
    with caplog.at_level("INFO", logger="edge"):
        Loop(source, CpuExecutor(model), Results(model), [ListSink()], annotate=annotated).run()
    annotated.close()
    written = cv2.VideoCapture(str(tmp_path / "annotated.avi"))
    assert written.get(cv2.CAP_PROP_FPS) == expected
    written.release()
    assert f"{tmp_path} has no frame rate of its own; the video plays at {expected:g} fps" in caplog.text
