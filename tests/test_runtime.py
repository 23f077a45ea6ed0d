"""The camera loop's parts, in process: sources, the frame queue, results, sinks, the loop and its metrics."""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import EdgeError
from edge.model import Model
from edge.runtime.http import Metrics, parse_address
from edge.runtime.loop import STAGES, CpuExecutor, FrameQueue, Loop
from edge.runtime.sinks import Results, load_groups, open_sink
from edge.runtime.sources import Frame, Source, SourceError, open_source, opencv_has_gstreamer

from runtime_support import CLASSES, tiny_model_folder, write_video


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Model:
    return Model.load(tiny_model_folder(tmp_path_factory.mktemp("tiny")))


class ListSink:
    def __init__(self):
        self.lines: list[str] = []
        self.flushed = 0

    def write(self, line: str) -> None:
        self.lines.append(line)

    def flush(self) -> None:
        self.flushed += 1

    def close(self) -> None:
        pass


class Recorder:
    def __init__(self):
        self.seen: dict[str, list[float]] = {}

    def record(self, stage: str, seconds: float) -> None:
        self.seen.setdefault(stage, []).append(seconds)


# --- sources -----------------------------------------------------------------------------------------------

def test_test_pattern_is_a_live_source_of_bgr_frames_that_move():
    source = open_source("test://", width=80, height=60, fps=0)
    assert source.live
    first, second = source.read(), source.read()
    assert first.image.shape == (60, 80, 3) and first.image.dtype == np.uint8
    assert not np.array_equal(first.image, second.image)


def test_test_pattern_is_paced_at_fps():
    source = open_source("test://", width=32, height=32, fps=50)
    start = time.monotonic()
    for _ in range(10):
        source.read()
    assert time.monotonic() - start >= 9 / 50 - 0.01


def test_video_file_reads_every_frame_then_ends(tmp_path):
    video = write_video(tmp_path / "clip.avi", 12)
    for uri in (str(video), f"file://{video}"):
        source = open_source(uri)
        assert not source.live
        source.open()
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame)
        source.close()
        assert len(frames) == 12
        assert [f.position for f in frames] == sorted(f.position for f in frames)


def test_a_source_is_a_context_manager_and_an_iterator_of_frames(tmp_path, model):
    """The Python API's camera loop, as the README shows it, on a video file and on a folder."""
    import edge

    video = write_video(tmp_path / "clip.avi", 5)
    with edge.open_source(str(video)) as clip:
        labels = [model.classify(frame.image)[0].label for frame in clip]
        assert clip.capture is not None  # open inside the block
    assert len(labels) == 5 and clip.capture is None  # closed after it
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((9, 9, 3), 40 * i, np.uint8))
    with edge.open_source(str(tmp_path)) as folder:
        assert [Path(frame.file).name for frame in folder] == ["0.png", "1.png", "2.png"]


def test_looping_a_video_starts_it_over(tmp_path):
    source = open_source(str(write_video(tmp_path / "clip.avi", 3)), loop=True)
    source.open()
    frames = [source.read() for _ in range(7)]
    assert all(f is not None for f in frames)
    assert [f.position for f in frames[:4]] == [frames[0].position, frames[1].position, frames[2].position,
                                                frames[0].position]


def test_image_folder_is_sorted_and_counts_undecodable_files(tmp_path):
    for name in ("b.png", "a.png", "c.jpg"):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), 100, np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_source(str(tmp_path))
    source.open()
    files = []
    while (frame := source.read()) is not None:
        files.append(frame.file.rsplit("/", 1)[1])
    assert files == ["a.png", "b.png", "c.jpg"]
    assert source.decode_errors == 1
    glob_source = open_source(str(tmp_path / "*.png"))
    glob_source.open()
    assert glob_source.read().file.endswith("a.png")


@pytest.mark.parametrize("uri, message", [
    ("nope://x", "unknown input scheme"),
    ("/no/such/video.mp4", "no such file"),
    ("v4l2://video0", "expected v4l2:///dev/videoN"),
    ("csi://front", "expected csi://N"),
])
def test_bad_input_uris_are_one_line_errors(uri, message):
    with pytest.raises(EdgeError, match=message):
        open_source(uri)


def test_a_file_that_is_not_a_video_says_so(tmp_path):
    listing = tmp_path / "val.txt"
    listing.write_text("a.jpg 0\n")
    with pytest.raises(SourceError, match="val.txt: not a video OpenCV can open"):
        open_source(str(listing)).open()


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(EdgeError, match="no image files"):
        open_source(str(tmp_path))


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer: csi:// would be tried for real")
@pytest.mark.parametrize("uri", ["csi://0", "gst://videotestsrc ! appsink"])
def test_gstreamer_input_without_gstreamer_says_which_opencv_is_needed(uri):
    with pytest.raises(EdgeError) as error:
        open_source(uri)
    message = str(error.value)
    assert "\n" not in message
    assert "GStreamer" in message and "JetPack" in message and "edge info" in message


# --- the frame queue ---------------------------------------------------------------------------------------

def _frame(i: int) -> Frame:
    return Frame(np.zeros((1, 1, 3), np.uint8), float(i), position=float(i))


def test_live_queue_keeps_the_latest_and_counts_drops():
    queue = FrameQueue(capacity=2, latest_wins=True)
    for i in range(5):
        queue.put(_frame(i))
    assert queue.dropped == 3
    assert [f.position for f in queue.get_batch(4, timeout=0)] == [3.0, 4.0]


def test_file_queue_blocks_instead_of_dropping():
    queue = FrameQueue(capacity=2, latest_wins=False)
    produced = []

    def produce():
        for i in range(6):
            queue.put(_frame(i))
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
    queue.put(_frame(0))
    queue.finish()
    assert len(queue.get_batch(1, timeout=0.01)) == 1
    assert queue.get_batch(1, timeout=0.01) is None


# --- results and sinks -------------------------------------------------------------------------------------

def _probabilities(*pairs) -> np.ndarray:
    p = np.zeros(CLASSES, np.float32)
    for class_id, value in pairs:
        p[class_id] = value
    return p


def test_groups_sum_their_classes_and_respect_the_minimum(model, tmp_path):
    path = tmp_path / "groups.toml"
    path.write_text('[groups]\nlow = ["0-2"]\nhigh = [7, "class8"]\n')
    groups = load_groups(path, model.labels, CLASSES)
    assert groups["low"].tolist() == [0, 1, 2] and groups["high"].tolist() == [7, 8]
    results = Results(model, top=3, groups=groups, min_probability=0.15)
    result = results.make(_frame(0), _probabilities((0, 0.05), (1, 0.05), (7, 0.5), (8, 0.2), (9, 0.2)))
    assert result["groups"] == [{"name": "high", "probability": pytest.approx(0.7)}]  # low is 0.1 < 0.15
    assert [t["class_id"] for t in result["top"]] == [7, 8, 9]


@pytest.mark.parametrize("minimum", [-0.1, 1.5])
def test_a_minimum_probability_outside_0_to_1_is_refused(model, minimum):
    with pytest.raises(EdgeError, match=f"min_probability must be between 0 and 1, not {minimum}"):
        Results(model, min_probability=minimum)


@pytest.mark.parametrize("text, message", [
    ('[groups]\nx = [10]\n', "outside"),
    ('[groups]\nx = ["no such label"]\n', "not a class id"),
    ('[groups]\nx = []\n', "non-empty"),
    ('groups = 1\n', "expected a \\[groups\\] table"),
    ('[groups\n', "not valid TOML"),
])
def test_bad_groups_files_are_one_line_errors(model, tmp_path, text, message):
    path = tmp_path / "groups.toml"
    path.write_text(text)
    with pytest.raises(EdgeError, match=message):
        load_groups(path, model.labels, CLASSES)


def test_smoothing_is_a_moving_mean_over_the_last_n_frames(model):
    results = Results(model, top=1, smoothing=3)
    outputs = [results.make(_frame(i), _probabilities((i % 2, 1.0)))["top"][0] for i in range(4)]
    # frames: class0, class1, class0, class1 -> means over the last 3: c0 1.0 | 0.5/0.5 | c0 2/3 | c1 2/3
    assert outputs[0] == {"class_id": 0, "label": "class0", "probability": 1.0}
    assert outputs[2]["class_id"] == 0 and outputs[2]["probability"] == pytest.approx(2 / 3, abs=1e-5)
    assert outputs[3]["class_id"] == 1 and outputs[3]["probability"] == pytest.approx(2 / 3, abs=1e-5)


def test_file_and_udp_sinks_carry_json_lines(tmp_path):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2)
    udp = open_sink(f"udp://127.0.0.1:{receiver.getsockname()[1]}")
    path = tmp_path / "results.jsonl"
    file_sink = open_sink(str(path))
    for sink in (udp, file_sink):
        sink.write('{"frame":0}')
        sink.write('{"frame":1}')
        sink.close()
    assert [json.loads(receiver.recv(65536))["frame"] for _ in range(2)] == [0, 1]
    assert path.read_text() == '{"frame":0}\n{"frame":1}\n'
    with pytest.raises(EdgeError, match="expected udp://HOST:PORT"):
        open_sink("udp://nowhere")


@pytest.mark.parametrize("uri, message", [
    ("display://0", "display://0: unknown output scheme display:// (outputs are JSON lines: -, a file, file://PATH or "
     "udp://HOST:PORT)"),
    ("RTP://10.0.0.2:5000", "RTP://10.0.0.2:5000: unknown output scheme rtp:// (outputs are JSON lines: -, a file, "
     "file://PATH or udp://HOST:PORT)"),
    ("out.mp4", "out.mp4: --output writes JSON lines, not video; for the frames with their labels drawn, use "
     "--annotate out.mp4"),
    ("file://clip.AVI", "clip.AVI: --output writes JSON lines, not video; for the frames with their labels drawn, use "
     "--annotate clip.AVI"),
])
def test_outputs_that_are_not_json_lines_are_refused_by_name(tmp_path, monkeypatch, uri, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EdgeError) as refused:
        open_sink(uri)
    assert str(refused.value) == message
    assert list(tmp_path.iterdir()) == []  # nothing written: no display:/0 folder, no out.mp4 of JSON


def test_http_address_defaults_to_loopback():
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    with pytest.raises(EdgeError):
        parse_address("localhost:http")


# --- the loop ----------------------------------------------------------------------------------------------

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
            return np.tile(_probabilities((5, 1.0)), (count, 1))

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
        return np.stack([_probabilities((n % CLASSES, 1.0)) for n in numbers])


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


def test_cpu_executor_with_workers_gives_the_same_results_as_one(model, tmp_path):
    video = write_video(tmp_path / "clip.avi", 23)
    lines = {}
    for workers in (1, 2):
        sink = ListSink()
        Loop(open_source(str(video)), CpuExecutor(model, workers), Results(model, top=3), [sink], batch=2).run()
        lines[workers] = [{k: r[k] for k in ("frame", "position", "top")} for r in map(json.loads, sink.lines)]
    assert len(lines[2]) == 23 and lines[2] == lines[1]


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
    monkeypatch.setattr("edge.runtime.loop.BACKOFF_S", (0.01, 0.02))
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


def test_metrics_render_counters_and_histograms(model, tmp_path):
    source = open_source(str(write_video(tmp_path / "clip.avi", 5)))
    loop = Loop(source, CpuExecutor(model), Results(model), [ListSink()])
    metrics = Metrics(loop.stats, {"model": "tiny"})
    assert metrics.health() == (False, "no result yet")
    loop.timings.append(metrics)
    loop.run()
    text = metrics.render()
    assert "edge_frames_total 5\n" in text and "edge_source_reconnects_total 0\n" in text
    assert 'edge_stage_seconds_count{stage="compute"} 5\n' in text
    assert 'edge_latency_seconds_bucket{source="all",le="+Inf"} 5\n' in text
    assert metrics.health() == (True, "ok")


def test_jetson_stats_become_gauges():
    from edge.runtime.http import JetsonStats

    class FakeJtop:
        power = {"tot": {"power": 5230}}
        gpu = {"gpu": {"status": {"load": 41.0}}}
        temperature = {"cpu": {"temp": 48.5, "online": True}, "cv0": {"temp": -256, "online": False}}

    text = "\n".join(JetsonStats(FakeJtop()).lines())
    assert "edge_jetson_power_watts 5.230" in text and "edge_jetson_gpu_load_percent 41.0" in text
    assert 'edge_jetson_temperature_celsius{sensor="cpu"} 48.5' in text and "cv0" not in text


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


@pytest.mark.parametrize("uri", ["/dev/video99", "v4l2:///dev/video99"])
def test_a_camera_that_is_not_there_stops_at_once(uri):
    with pytest.raises(EdgeError, match=r"^/dev/video99: no such device \(video devices here: .*\)$"):
        open_source(uri)


def test_a_device_node_is_a_v4l2_camera(tmp_path):
    source = open_source("/dev/null")  # jetson-inference's `--input /dev/video0`
    assert source.live and source.uri == "/dev/null"
    with pytest.raises(SourceError, match="^/dev/null: opens, but does not capture: busy .* or not a camera$"):
        source.open()
    shm = Path("/dev/shm")
    if shm.is_dir():  # a folder of images kept in memory stays a folder
        with pytest.raises(EdgeError, match="no image files"):
            open_source(str(shm / "no-such-edge-folder" / "*.png"))


@pytest.mark.parametrize("error, reason", [
    (errno.ENOENT, "cannot open: no such device (unplugged?)"),
    (errno.EACCES, "cannot open: permission denied (add the user to the group "),
    (errno.EBUSY, "cannot open: busy (another program is capturing from it)"),
])
def test_a_camera_that_does_not_open_says_why(tmp_path, monkeypatch, error, reason):
    from edge.runtime import sources

    def refuse(path, flags):
        raise OSError(error, os.strerror(error), path)

    node = tmp_path / "video0"
    node.touch()
    monkeypatch.setattr(sources.os, "open", refuse)
    assert sources.device_problem(str(node)).startswith(reason)


def test_a_camera_whose_group_has_no_name_here_says_why(tmp_path, monkeypatch):
    from edge.runtime import sources

    def refuse(path, flags):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)

    def no_name(gid):
        raise KeyError(f"getgrgid(): gid not found: {gid}")  # as grp says it for a gid /etc/group does not list

    node = tmp_path / "video0"
    node.touch()
    monkeypatch.setattr(sources.os, "open", refuse)
    monkeypatch.setattr(sources.grp, "getgrgid", no_name)
    assert sources.device_problem(str(node)) == (f"cannot open: permission denied (the device's group, gid "
                                                 f"{node.stat().st_gid}, has no name here)")


def test_a_looped_clip_keeps_its_frame_rate_for_the_annotated_video(tmp_path):
    video = write_video(tmp_path / "clip.avi", 3, fps=10)
    with open_source(str(video), loop=True) as source:
        assert source.frame_rate() == 10


def test_skipped_files_are_logged_at_the_1st_2nd_4th_8th(caplog):
    from edge.runtime.sources import log_skipped

    with caplog.at_level("WARNING", logger="edge"):
        for count in range(1, 20):
            log_skipped("x.png: broken", count)
    assert [r.getMessage() for r in caplog.records] == [f"x.png: broken; skipped ({n} skipped so far)"
                                                        for n in (1, 2, 4, 8, 16)]
