"""systemd's side (edge/runtime/systemd.py): sd_notify, the watchdog, the unit, and edge service install."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge.errors import EdgeError
from edge.runtime.loop import CAPTURE_STALL_S, LoopStats
from edge.runtime.systemd import Notifier, Watchdog, render_unit, watchdog_interval

from runtime_support import tiny_model_folder

EDGE = [sys.executable, "-m", "edge.cli"]
ROOT = Path(__file__).resolve().parents[1]


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


def test_after_a_reload_the_watchdog_is_fed_before_the_new_loops_first_frame():
    """systemd's watchdog runs from the first READY=1 on, through reloads: a reload onto a source that is down must
    not starve it (docs/service.md: "a source that is merely down does not stop them")."""
    import time

    from edge.runtime.systemd import Watchdog

    for started, expected in ((False, []), (True, ["WATCHDOG=1"])):
        sent = []
        # the Watchdog sends only from tick(), within this iteration, so `sent` is this iteration's list
        notifier = SimpleNamespace(send=lambda message: sent.append(message.split("\n")[0]))  # noqa: B023
        watchdog = Watchdog(notifier, interval=0.01, source="rtsp://camera", started=started)
        time.sleep(0.02)
        watchdog.tick(SimpleNamespace(stats=LoopStats(frames=0)))
        assert sent == expected


def test_the_shipped_unit_is_the_rendered_one():
    shipped = (ROOT / "systemd" / "edge.service").read_text()
    assert shipped == render_unit("/usr/local/bin/edge", ["video", "render"]), \
        "systemd/edge.service is stale: regenerate it from render_unit()"


def test_the_unit_leaves_every_device_reachable():
    """ProtectClock=yes implies DeviceAllow=char-rtc r (systemd.exec(5)), and DevicePolicy=auto allows every device
    only while no DeviceAllow= is present (systemd.resource-control(5)): it would shut out the GPU and cameras."""
    from edge.runtime.systemd import render_unit

    settings = {line.split("=", 1)[0] for line in render_unit("/usr/local/bin/edge", []).splitlines()
                if "=" in line and not line.startswith("#")}
    assert not settings & {"ProtectClock", "DeviceAllow", "DevicePolicy", "PrivateDevices"}


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
    from edge.runtime import systemd

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(EdgeError, match="must run as root"):
        systemd.install(dry_run=False)


def test_dry_run_lists_the_steps_in_the_order_install_takes_them(capsys):
    from edge.runtime import systemd

    assert systemd.install(dry_run=True) == 0
    steps = [line for line in capsys.readouterr().err.splitlines() if line.startswith("would ")]
    assert steps[-3].startswith("would write: /etc/systemd/system/edge.service")
    assert steps[-2:] == ["would run: systemctl daemon-reload", "would run: systemctl enable edge.service"]


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """The service's paths moved under tmp_path: nothing installed, no configuration, an empty state folder."""
    from edge.runtime import systemd

    monkeypatch.setattr(systemd, "UNIT_PATH", tmp_path / "systemd" / "edge.service")
    monkeypatch.setattr(systemd, "CONFIG_PATH", tmp_path / "etc" / "edge.toml")
    monkeypatch.setattr(systemd, "STATE_DIR", tmp_path / "var")
    return tmp_path


def test_uninstall_dry_run_says_when_nothing_is_installed(machine, capsys):
    from edge.runtime import systemd

    assert systemd.uninstall(dry_run=True) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"{systemd.UNIT_PATH}: not installed; nothing to disable or remove", "would run: systemctl daemon-reload"]
    systemd.UNIT_PATH.parent.mkdir()
    systemd.UNIT_PATH.write_text(systemd.render_unit())
    assert systemd.uninstall(dry_run=True) == 0
    assert capsys.readouterr().err.splitlines() == [
        "would run: systemctl disable --now edge.service", f"would remove: {systemd.UNIT_PATH}",
        "would run: systemctl daemon-reload"]


def test_install_dry_run_warns_when_the_configured_model_is_not_in_the_repository(machine, capsys):
    from edge.runtime import systemd

    engines = machine / "var" / "engines"
    systemd.CONFIG_PATH.parent.mkdir()
    systemd.CONFIG_PATH.write_text(f'model = "tiny"\nrepo = "{engines}"\ninput = "test://"\n')
    assert systemd.install(dry_run=True) == 0
    warning = capsys.readouterr().err.splitlines()[-1]
    assert warning == (f"edge: warning: the model 'tiny' ({systemd.CONFIG_PATH}) is not in {engines}: the service "
                       f"would fail at start; copy the model folder there (sudo cp -r engines/tiny {engines}/) or set "
                       f"model in {systemd.CONFIG_PATH}")
    tiny_model_folder(machine / "models")
    engines.mkdir(parents=True)
    (machine / "models" / "engines" / "tiny").rename(engines / "tiny")
    assert systemd.install(dry_run=True) == 0
    assert "warning" not in capsys.readouterr().err
