"""`edge run` as a process (edge/runtime/service.py): READY, WATCHDOG and STOPPING over a test's own NOTIFY_SOCKET,
SIGHUP reloads, and the workers the options ask for reaching the model and the loop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.runtime.options import resolve_options

EDGE = [sys.executable, "-m", "edge.cli"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def notify_socket(tmp_path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    server.bind(str(path))
    server.settimeout(30)
    yield server, str(path)
    server.close()


def receive(server) -> tuple[float, list[str]]:
    return time.monotonic(), server.recv(4096).decode().split("\n")


def test_ready_then_watchdog_at_the_interval_then_stopping_and_exit_0_within_a_second(tiny, notify_socket, tmp_path):
    server, path = notify_socket
    env = {**os.environ, "NOTIFY_SOCKET": path}
    env.pop("WATCHDOG_USEC", None)
    process = subprocess.Popen(EDGE + ["run", tiny, "--input", "test://", "--fps", "50", "--output", "/dev/null",
                                       "--watchdog-interval", "0.2"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        _, first = receive(server)
        assert first[0] == "READY=1", first
        pings = []
        while len(pings) < 6:
            when, message = receive(server)
            assert message == ["WATCHDOG=1"], message
            pings.append(when)
        # Times are taken when this process receives: a late receive shortens the next gap, so the interval is
        # held on the span of five gaps, and each gap only to the bound the watchdog itself needs.
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert 5 * 0.17 < pings[-1] - pings[0] < 5 * 0.4, gaps
        assert max(gaps) < 0.6, gaps
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        while (message := receive(server)[1]) == ["WATCHDOG=1"]:
            pass
        assert message == ["STOPPING=1"]
        assert process.wait(timeout=5) == 0
        assert time.monotonic() - sent < 1.0
    finally:
        process.kill()
    assert "SIGTERM: stopping" in process.stderr.read()


def test_sighup_reloads_the_configuration_and_a_bad_one_is_refused(tiny, notify_socket, tmp_path):
    server, path = notify_socket
    out = tmp_path / "results.jsonl"
    config = tmp_path / "edge.toml"
    config.write_text(f'model = "{tiny}"\ninput = "test://"\nfps = 100.0\noutput = ["{out}"]\ntop = 3\n')
    process = subprocess.Popen(EDGE + ["run", "--config", str(config)], env={**os.environ, "NOTIFY_SOCKET": path},
                               stderr=subprocess.PIPE, text=True)
    try:
        assert receive(server)[1][0] == "READY=1"
        config.write_text(config.read_text().replace("top = 3", "top = 1"))
        process.send_signal(signal.SIGHUP)
        assert receive(server)[1][0] == "RELOADING=1"
        assert receive(server)[1][0] == "READY=1"
        assert len(json.loads(out.read_text().splitlines()[-1])["top"]) == 1
        config.write_text("top = -")
        process.send_signal(signal.SIGHUP)
        assert receive(server)[1][0] == "RELOADING=1"
        assert receive(server)[1][0] == "READY=1"
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
    log = process.stderr.read()
    assert "configuration reloaded" in log and "not valid TOML" in log and "keeping the running configuration" in log
    frames = [json.loads(line)["frame"] for line in out.read_text().splitlines()]
    assert frames[0] == 0 and len(frames) > 3
# --- workers: how many inferences run at once --------------------------------------------------------------

def started_loop(monkeypatch, config, flags: dict):
    """The loop `edge run` would start with this configuration and these flags, stopped before its first frame."""
    from edge.runtime.loop import Loop
    from edge.runtime.service import Runner

    started = []
    monkeypatch.setattr(Loop, "run", lambda loop: started.append(loop) or "end")
    Runner(config, flags).run_once(resolve_options(config, flags))
    return started[0]


def intra_op_threads(loop) -> int:
    """ONNX Runtime's threads per run for the loop's model (0: ONNX Runtime's pool, one per core)."""
    return loop.executor.model.backend.session.get_session_options().intra_op_num_threads


@pytest.mark.parametrize("in_file, flag, workers, threads", [
    (None, 1, 1, 0),  # one run on every core
    (3, None, 3, 1),  # three single-threaded runs
    (3, 1, 1, 0),  # the flag wins over the file
])
def test_workers_reach_the_model_and_the_loop_from_the_flag_or_the_file(tiny, tmp_path, monkeypatch, in_file,
                                                                           flag, workers, threads):
    config = tmp_path / "edge.toml"
    config.write_text(f'model = "{tiny}"\ninput = "test://"\noutput = "/dev/null"\n'
                      + (f"workers = {in_file}\n" if in_file is not None else ""))
    loop = started_loop(monkeypatch, config, {"workers": flag})
    assert loop.workers == workers and loop.executor.workers == workers
    assert intra_op_threads(loop) == threads


def test_workers_0_is_one_single_threaded_run_per_core_on_onnxruntime(tiny, monkeypatch):
    from edge.backends import parallel_runs

    loop = started_loop(monkeypatch, None, {"model": tiny, "input": "test://", "output": ["/dev/null"]})
    assert loop.workers == parallel_runs("onnxruntime")
    assert intra_op_threads(loop) == (1 if loop.workers > 1 else 0)


def test_a_reload_that_changes_workers_reloads_the_model_for_them(tiny):
    from edge.runtime.service import Runner

    runner = Runner(None, {})
    one_run = runner.load_model(resolve_options(None, {"model": tiny, "input": "test://", "workers": 1}))
    assert runner.load_model(resolve_options(None, {"model": tiny, "input": "test://", "workers": 1})) is one_run
    two_runs = runner.load_model(resolve_options(None, {"model": tiny, "input": "test://", "workers": 2}))
    assert two_runs is not one_run and two_runs.backend.session.get_session_options().intra_op_num_threads == 1
