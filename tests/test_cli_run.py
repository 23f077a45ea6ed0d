"""`edge run` end to end, as a process: a video file, test://, an image folder, and a network stream that dies."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from runtime_support import write_video

EDGE = [sys.executable, "-m", "edge.cli"]
SUPPORT = Path(__file__).with_name("runtime_support.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#") and "{" not in line}


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except OSError:  # the HTTP endpoint is not up yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_video_file_gives_exactly_one_json_line_per_frame_in_order(tiny, tmp_path):
    video = write_video(tmp_path / "clip.avi", 40)
    done = subprocess.run(EDGE + ["run", tiny, "--input", str(video), "--top", "3"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["frame"] for r in results] == list(range(40))
    positions = [r["position"] for r in results]
    assert positions == sorted(positions) and positions[0] == 0.0
    assert all(len(r["top"]) == 3 and {"class_id", "label", "probability"} <= set(r["top"][0]) for r in results)
    assert all(isinstance(r["timestamp"], float) and r["latency_ms"] >= 0 for r in results)
    assert "end: 40 frames, 0 dropped" in done.stderr


def test_an_annotated_video_plays_at_the_clips_frame_rate(tiny, tmp_path):
    video = write_video(tmp_path / "clip.avi", 20, fps=10)
    out = tmp_path / "out.mp4"
    done = subprocess.run(EDGE + ["run", tiny, "--input", str(video), "--annotate", str(out), "--output", "-"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    written = cv2.VideoCapture(str(out))
    assert (written.get(cv2.CAP_PROP_FPS), written.get(cv2.CAP_PROP_FRAME_COUNT)) == (10, 20)  # was 30 fps
    written.release()


def test_an_image_folder_names_each_file_and_skips_broken_ones(tiny, tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((20, 30, 3), 80 * i, np.uint8))
    (tmp_path / "3.png").write_bytes(b"broken")
    out = tmp_path / "results.jsonl"
    done = subprocess.run(EDGE + ["run", tiny, "--input", str(tmp_path), "--output", str(out), "--output", "-"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    files = [Path(json.loads(line)["file"]).name for line in out.read_text().splitlines()]
    assert files == ["0.png", "1.png", "2.png"]
    assert done.stdout == out.read_text()
    assert "end: 3 frames, 0 dropped, 0 reconnects, 1 decode error\n" in done.stderr  # not "1 decode errors"
    assert f"edge: warning: {tmp_path / '3.png'}: not an image of a format edge reads" in done.stderr
    assert "or its header is cut short; skipped (1 skipped so far)" in done.stderr


def test_test_pattern_runs_until_stopped(tiny, tmp_path):
    out = tmp_path / "results.jsonl"
    process = subprocess.Popen(EDGE + ["run", tiny, "--input", "test://", "--fps", "100", "--output", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 20, 30, "20 results")
        time.sleep(1.0)
        assert process.poll() is None, "test:// ended by itself"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
    lines = out.read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(len(lines)))
    assert "SIGINT: stopping" in process.stderr.read()


def test_bad_input_is_one_line_and_exit_1(tiny):
    done = subprocess.run(EDGE + ["run", tiny, "--input", "/no/such.mp4"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "edge: error: /no/such.mp4: no such file or folder"
    done = subprocess.run(EDGE + ["run", "--input", "test://"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no model" in done.stderr


def test_a_camera_that_does_not_exist_is_one_line_and_exit_1_not_retried_for_ever(tiny):
    done = subprocess.run(EDGE + ["run", tiny, "--input", "v4l2:///dev/video99"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("edge: error: /dev/video99: no such device (video devices here: ")
    assert len(done.stderr.splitlines()) == 1


def test_workers_the_backend_cannot_run_are_one_line_and_exit_1(tiny):
    done = subprocess.run(EDGE + ["run", tiny, "--input", "test://", "--backend", "tensorrt", "--workers", "2"],
                          capture_output=True, text=True, timeout=60)
    message = "edge: error: workers 2: the tensorrt backend runs one batch at a time (workers 0 or 1)"
    assert (done.returncode, done.stdout, done.stderr) == (1, "", message + "\n")


def test_a_stream_killed_and_restarted_five_times_is_reconnected_five_times(tiny):
    """A network camera over loopback (MJPEG over HTTP, read by OpenCV's FFmpeg backend) that dies 5 times."""
    stream_port, http_port = free_port(), free_port()

    def start_server():
        return subprocess.Popen([sys.executable, str(SUPPORT), str(stream_port)])

    server = start_server()
    # Listening before edge starts: a first open that fails and is retried would count as a reconnect too.
    wait_for(lambda: socket.create_connection(("127.0.0.1", stream_port), timeout=1).close() is None, 30,
             "the stream server")
    edge = subprocess.Popen(EDGE + ["run", tiny, "--input", f"http://127.0.0.1:{stream_port}/", "--output", "/dev/null",
                                    "--http", f"127.0.0.1:{http_port}"], stderr=subprocess.PIPE, text=True)
    try:
        frames = wait_for(lambda: metrics(http_port)["edge_frames_total"], 30, "first frames")
        for restart in range(5):
            server.kill()
            server.wait()
            wait_for(lambda: "edge_source_reconnects_total" in metrics(http_port) and
                     urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=2), 5, "loop alive")
            time.sleep(0.5)
            server = start_server()
            # wait_for calls the condition before it returns, within this iteration: it sees this `frames` and `restart`
            frames = wait_for(lambda: (m := metrics(http_port))["edge_frames_total"] > frames + 10  # noqa: B023
                              and m["edge_source_reconnects_total"] == restart + 1  # noqa: B023
                              and m["edge_frames_total"], 30, f"frames after restart {restart + 1}")
            assert edge.poll() is None
        assert metrics(http_port)["edge_source_reconnects_total"] == 5
        edge.send_signal(signal.SIGTERM)
        assert edge.wait(timeout=5) == 0
    finally:
        server.kill()
        edge.kill()
    log = edge.stderr.read()
    assert log.count("reopened (reconnect") == 5
    assert "[ WARN" not in log  # OpenCV's own warnings are kept out of the journal
