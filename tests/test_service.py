"""The service glue: sd_notify over a test's own NOTIFY_SOCKET, signals, the TOML configuration, the unit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.errors import EdgeError
from edge.runtime.loop import CAPTURE_STALL_S, LoopStats
from edge.runtime.service import (
    RUN_OPTIONS,
    Notifier,
    Watchdog,
    read_config,
    render_config,
    render_unit,
    resolve_options,
    watchdog_interval,
)

from runtime_support import tiny_model_folder

EDGE = [sys.executable, "-m", "edge.cli"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(tiny_model_folder(tmp_path_factory.mktemp("tiny")))


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


def test_notify_speaks_to_abstract_sockets_too():
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"edge-test-{os.getpid()}"
    server.bind("\0" + name)
    server.settimeout(2)
    Notifier("@" + name).send("READY=1")
    assert server.recv(100) == b"READY=1"
    Notifier(None).send("READY=1")  # no NOTIFY_SOCKET: nothing, no error


def test_watchdog_interval_comes_from_the_option_or_systemd(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval(0) == 15.0
    assert watchdog_interval(2.5) == 2.5
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval(0) == 0.0


def test_watchdog_stops_pinging_when_the_capture_thread_is_stuck():
    sent = []

    class Fake:
        def send(self, message):
            sent.append(message.split("\n")[0])

    class FakeLoop:
        stats = LoopStats(frames=1)

    watchdog = Watchdog(Fake(), interval=0.01, source="test://")
    time.sleep(0.02)
    watchdog.tick(FakeLoop)
    assert sent == ["READY=1", "WATCHDOG=1"]
    FakeLoop.stats.capture_alive_at = time.monotonic() - CAPTURE_STALL_S - 1
    time.sleep(0.02)
    watchdog.tick(FakeLoop)
    assert sent == ["READY=1", "WATCHDOG=1"]


# --- configuration -----------------------------------------------------------------------------------------

def test_flags_win_over_the_file_and_the_file_over_defaults(tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text('model = "m"\ninput = "test://"\ntop = 2\nsmoothing = 4\nfps = 10\noutput = "-"\n')
    options = resolve_options(config, {"top": 7, "smoothing": None, "input": None})
    assert options["top"] == 7 and options["smoothing"] == 4 and options["fps"] == 10.0
    assert options["output"] == ["-"] and options["precision"] == "fp32"


@pytest.mark.parametrize("text, message", [
    ('inptu = "x"\n', "unknown key 'inptu'"),
    ('top = "five"\n', "top must be int"),
    ('loop = 1\n', "loop must be bool"),
    ('output = [1]\n', "output must be a list of strings"),
])
def test_bad_configuration_is_a_one_line_error(tmp_path, text, message):
    config = tmp_path / "edge.toml"
    config.write_text(text)
    with pytest.raises(EdgeError, match=message):
        read_config(config)


def test_the_shipped_edge_toml_documents_every_option_and_parses():
    shipped = (ROOT / "systemd" / "edge.toml").read_text()
    assert shipped == render_config(), "systemd/edge.toml is stale: regenerate it from render_config()"
    for option in RUN_OPTIONS:
        assert f"{option.key} = " in shipped
    assert read_config(ROOT / "systemd" / "edge.toml")["input"] == "csi://0"


def test_the_shipped_unit_is_the_rendered_one():
    shipped = (ROOT / "systemd" / "edge.service").read_text()
    assert shipped == render_unit("/usr/local/bin/edge", ["video", "render"]), \
        "systemd/edge.service is stale: regenerate it from render_unit()"


def test_systemd_analyze_verify_accepts_the_dry_run_unit(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("needs systemd-analyze (apt-get install systemd)")
    done = subprocess.run(EDGE + ["service", "install", "--dry-run"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "would run: systemctl enable edge.service" in done.stderr
    unit = tmp_path / "edge.service"
    unit.write_text(done.stdout)
    # --man=no: no man pages in CI containers. verify exits 0 on some bad settings, so its output must be clean too.
    check = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0 and "edge.service" not in check.stdout + check.stderr, check.stdout + check.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(done.stdout.replace("Type=notify", "Type=notifyy"))
    check = subprocess.run(["systemd-analyze", "verify", "--man=no", str(broken)], capture_output=True, text=True,
                           timeout=60)
    assert "notifyy" in check.stdout + check.stderr  # the check above would have caught it


def test_install_needs_root_or_dry_run(monkeypatch):
    from edge.runtime import service

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(EdgeError, match="must run as root"):
        service.install(dry_run=False)


def test_dry_run_lists_the_steps_in_the_order_install_takes_them(capsys):
    from edge.runtime import service

    assert service.install(dry_run=True) == 0
    steps = [line for line in capsys.readouterr().err.splitlines() if line.startswith("would ")]
    assert steps[-3].startswith("would write: /etc/systemd/system/edge.service")
    assert steps[-2:] == ["would run: systemctl daemon-reload", "would run: systemctl enable edge.service"]


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """The service's paths moved under tmp_path: nothing installed, no configuration, an empty state folder."""
    from edge.runtime import service

    monkeypatch.setattr(service, "UNIT_PATH", tmp_path / "systemd" / "edge.service")
    monkeypatch.setattr(service, "CONFIG_PATH", tmp_path / "etc" / "edge.toml")
    monkeypatch.setattr(service, "STATE_DIR", tmp_path / "var")
    return tmp_path


def test_uninstall_dry_run_says_when_nothing_is_installed(machine, capsys):
    from edge.runtime import service

    assert service.uninstall(dry_run=True) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"{service.UNIT_PATH}: not installed; nothing to disable or remove", "would run: systemctl daemon-reload"]
    service.UNIT_PATH.parent.mkdir()
    service.UNIT_PATH.write_text(service.render_unit())
    assert service.uninstall(dry_run=True) == 0
    assert capsys.readouterr().err.splitlines() == [
        "would run: systemctl disable --now edge.service", f"would remove: {service.UNIT_PATH}",
        "would run: systemctl daemon-reload"]


def test_install_dry_run_warns_when_the_configured_model_is_not_in_the_repository(machine, capsys):
    from edge.runtime import service

    engines = machine / "var" / "engines"
    service.CONFIG_PATH.parent.mkdir()
    service.CONFIG_PATH.write_text(f'model = "tiny"\nrepo = "{engines}"\ninput = "test://"\n')
    assert service.install(dry_run=True) == 0
    warning = capsys.readouterr().err.splitlines()[-1]
    assert warning == (f"edge: warning: the model 'tiny' ({service.CONFIG_PATH}) is not in {engines}: the service "
                       f"would fail at start; copy the model folder there (sudo cp -r engines/tiny {engines}/) or set "
                       f"model in {service.CONFIG_PATH}")
    tiny_model_folder(machine / "models")
    engines.mkdir(parents=True)
    (machine / "models" / "engines" / "tiny").rename(engines / "tiny")
    assert service.install(dry_run=True) == 0
    assert "warning" not in capsys.readouterr().err


def test_an_output_edge_cannot_write_is_refused_with_the_options_before_the_model_loads():
    with pytest.raises(EdgeError, match=r"^display://0: unknown output scheme display://"):
        resolve_options(None, {"model": "no-such-model", "input": "test://", "output": ["-", "display://0"]})


def test_a_negative_batch_is_refused_rather_than_waited_for():
    with pytest.raises(EdgeError, match=r"^--batch: batch must be at least 0, not -1$"):
        resolve_options(None, {"model": "m", "input": "test://", "batch": -1})


def test_edge_run_takes_the_cpu_path_on_onnxruntime_and_on_a_host_only_backend(tmp_path):
    import contextlib

    from edge import Model
    from edge.backends import parallel_runs
    from edge.runtime.loop import CpuExecutor
    from edge.runtime.service import make_executor

    model = Model.load(tiny_model_folder(tmp_path))
    with contextlib.ExitStack() as scope:
        executor = make_executor(model, "onnxruntime", parallel_runs("onnxruntime"), scope)
        assert type(executor) is CpuExecutor and executor.workers == parallel_runs("onnxruntime")
        # A backend that cannot run from device memory keeps the CPU path, one run at a time, and no CUDA context.
        executor = make_executor(model, "tensorrt", 1, scope)
        assert type(executor) is CpuExecutor and executor.workers == 1
    assert "pycuda" not in sys.modules


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


@pytest.mark.parametrize("backend", ["tensorrt", "torch"])
def test_a_gpu_backend_takes_workers_0_or_1_and_refuses_more(backend):
    options = {"model": "m", "input": "test://", "backend": backend}
    assert resolve_options(None, {**options, "workers": 0})["workers"] == 1
    assert resolve_options(None, {**options, "workers": 1})["workers"] == 1
    with pytest.raises(EdgeError, match=f"workers 2: the {backend} backend runs one batch at a time"):
        resolve_options(None, {**options, "workers": 2})


@pytest.mark.parametrize("text, message", [
    ("workers = -1\n", "edge.toml: workers must be at least 0, not -1"),
    ("workers = 1.5\n", "workers must be int"),
    ('workers = "2"\n', "workers must be int"),
    ('backend = "tensorrtx"\nworkers = 2\n', "backend must be one of onnxruntime, tensorrt, torch, not 'tensorrtx'"),
])
def test_bad_workers_in_the_file_are_a_one_line_error(tmp_path, text, message):
    config = tmp_path / "edge.toml"
    config.write_text('model = "m"\ninput = "test://"\n' + text)
    with pytest.raises(EdgeError, match=message):
        resolve_options(config, {})
