"""Defects found in review of the camera loop and the GPU executor, each held here by a test that failed before
its fix: unreadable or empty image files, a results file that cannot be written, Prometheus label escaping, and
the GPU executor's batch (the executor's batch logic runs on the CPU with a stand-in for the pycuda pipeline)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edge.errors import EdgeError
from edge.runtime.http import Metrics
from edge.runtime.loop import LoopStats
from edge.runtime.sinks import open_sink
from edge.runtime.sources import open_source


def test_empty_and_unreadable_image_files_are_skipped_and_counted(tmp_path, monkeypatch):
    for name in ("a.png", "c.png"):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), 100, np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"")  # a file still being written: imdecode raises on an empty buffer
    (tmp_path / "d.png").write_bytes(b"x")
    real_fromfile = np.fromfile

    def fromfile(path, *args, **kwargs):  # d.png unreadable (as root, chmod cannot make it so)
        if str(path).endswith("d.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_fromfile(path, *args, **kwargs)

    monkeypatch.setattr(np, "fromfile", fromfile)
    source = open_source(str(tmp_path))
    source.open()
    files = []
    while (frame := source.read()) is not None:
        files.append(frame.file.rsplit("/", 1)[1])
    assert files == ["a.png", "c.png"]
    assert source.decode_errors == 2


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_results_file_that_cannot_be_written_is_a_one_line_error():
    sink = open_sink("/dev/full")  # every write: ENOSPC, as on a full disk
    with pytest.raises(EdgeError, match="/dev/full: cannot write results: No space left on device"):
        sink.write('{"frame":0}')
    with pytest.raises(EdgeError, match="/dev/full: cannot write results"):
        sink.close()


def test_metrics_escape_quotes_and_backslashes_in_label_values():
    pipeline = 'gst://videotestsrc ! video/x-raw,format="BGR" ! appsink name=a\\b'
    text = Metrics(LoopStats(), {"model": "tiny", "input": pipeline}).render()
    assert 'edge_info{model="tiny",input="gst://videotestsrc ! video/x-raw,format=\\"BGR\\" ! appsink name=a\\\\b"} 1' \
        in text.splitlines()


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


def gpu_executor(monkeypatch, fixed_batch: int, batch: int):
    from edge.gpu import pipeline

    monkeypatch.setattr(pipeline, "GpuPipeline", FakePipeline)
    model = SimpleNamespace(card=SimpleNamespace(batch=fixed_batch, probabilities=True), preprocess=None,
                            folder="engines/tiny")
    return pipeline.GpuExecutor(model, engine=None, mode="pinned", batch=batch)


def test_gpu_executor_takes_the_loops_batch_on_a_dynamic_batch_engine(monkeypatch):
    executor = gpu_executor(monkeypatch, fixed_batch=0, batch=4)
    frames = [np.zeros((48, 64, 3), np.uint8)] * 4
    assert executor.compute(executor.preprocess(frames)).shape == (4, 3)


def test_gpu_executor_pads_partial_batches_for_a_fixed_batch_engine(monkeypatch):
    executor = gpu_executor(monkeypatch, fixed_batch=4, batch=4)
    executor.preprocess([np.zeros((48, 64, 3), np.uint8)] * 2)
    assert executor.pipeline.submitted == [4]  # the engine runs its one batch size; the Loop ignores the padding
    with pytest.raises(EdgeError, match="runs batches of at most 4"):
        gpu_executor(monkeypatch, fixed_batch=4, batch=8)


def test_gpu_executor_refuses_frames_of_several_sizes_in_one_line(monkeypatch):
    executor = gpu_executor(monkeypatch, fixed_batch=0, batch=2)
    with pytest.raises(EdgeError, match="frames of one size"):
        executor.preprocess([np.zeros((48, 64, 3), np.uint8), np.zeros((40, 64, 3), np.uint8)])


def test_the_unit_leaves_every_device_reachable():
    """ProtectClock=yes implies DeviceAllow=char-rtc r (systemd.exec(5)), and DevicePolicy=auto allows every device
    only while no DeviceAllow= is present (systemd.resource-control(5)): it would shut out the GPU and cameras."""
    from edge.runtime.service import render_unit

    settings = {line.split("=", 1)[0] for line in render_unit("/usr/local/bin/edge", []).splitlines()
                if "=" in line and not line.startswith("#")}
    assert not settings & {"ProtectClock", "DeviceAllow", "DevicePolicy", "PrivateDevices"}


def test_after_a_reload_the_watchdog_is_fed_before_the_new_loops_first_frame():
    """systemd's watchdog runs from the first READY=1 on, through reloads: a reload onto a source that is down must
    not starve it (docs/service.md: "a source that is merely down does not stop them")."""
    import time

    from edge.runtime.service import Watchdog

    for started, expected in ((False, []), (True, ["WATCHDOG=1"])):
        sent = []
        # the Watchdog sends only from tick(), within this iteration, so `sent` is this iteration's list
        notifier = SimpleNamespace(send=lambda message: sent.append(message.split("\n")[0]))  # noqa: B023
        watchdog = Watchdog(notifier, interval=0.01, source="rtsp://camera", started=started)
        time.sleep(0.02)
        watchdog.tick(SimpleNamespace(stats=LoopStats(frames=0)))
        assert sent == expected
