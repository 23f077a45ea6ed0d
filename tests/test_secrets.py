"""Credentials: redaction of every URL form, ${NAME} from the environment instead of argv, the installed
configuration's permissions, and FFmpeg's own log lines (which bypassed the throttled log) silenced, with the
reason a stream cannot open given by edge itself, in the log and on /healthz."""

from __future__ import annotations

import grp
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from edge.errors import EdgeError
from edge.runtime.http import Metrics
from edge.runtime.loop import LoopStats
from edge.runtime.sources import SourceError, open_source, redact

from runtime_support import tiny_model_folder

EDGE = [sys.executable, "-m", "edge.cli"]


def closed_port() -> int:
    with socket.socket() as s:  # bound, never listened on, then closed: connecting is refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("uri, shown", [
    ("rtsp://admin:s3cret@10.0.0.5:554/stream", "rtsp://***@10.0.0.5:554/stream"),
    ("rtsp://admin:p@ss@10.0.0.5/stream", "rtsp://***@10.0.0.5/stream"),
    ("rtsp://admin:pa/ss@10.0.0.5/stream", "rtsp://***@10.0.0.5/stream"),
    ("rtsp://admin:p#s?s@10.0.0.5/stream", "rtsp://***@10.0.0.5/stream"),
    ("rtsp://admin:p%40ss@cam/x", "rtsp://***@cam/x"),
    ("RTSP://Admin:pw@cam/x", "RTSP://***@cam/x"),
    ("http://Tk9hbWVUb2tlbg@cam.local/feed.mjpg", "http://***@cam.local/feed.mjpg"),
    ("rtsp://user@host/x", "rtsp://***@host/x"),  # a bare user may be a token: shown as one
    ("https://cam/live?token=abc123&fps=5", "https://cam/live?token=***&fps=5"),
    ("https://cam/live?fps=5&access_token=abc", "https://cam/live?fps=5&access_token=***"),
    ("http://cam/x?user=admin&password=hunter2", "http://cam/x?user=admin&password=***"),
    ("http://cam/snap?API_KEY=k1;auth=k2", "http://cam/snap?API_KEY=***;auth=***"),
    ("https://s3/v.mp4?X-Amz-Credential=c&X-Amz-Signature=s", "https://s3/v.mp4?X-Amz-Credential=***&X-Amz-Signature=***"),
    ("rtsp://u:p@cam/x?auth=zzz", "rtsp://***@cam/x?auth=***"),
    ("srt://cam:9000?passphrase=longsecret", "srt://cam:9000?passphrase=***"),
    ("gst://rtspsrc location=rtsp://admin:pw@cam/x user-pw=pw2 ! decodebin ! appsink",
     "gst://***@cam/x user-pw=*** ! decodebin ! appsink"),
    ("gst://souphttpsrc location=http://cam/x?token=t ! jpegdec ! appsink",
     "gst://souphttpsrc location=http://cam/x?token=*** ! jpegdec ! appsink"),
    # nothing to hide
    ("rtsp://10.0.0.5:554/stream", "rtsp://10.0.0.5:554/stream"),
    ("http://cam/x?fps=5&width=640", "http://cam/x?fps=5&width=640"),
    ("test://", "test://"),
    ("csi://0", "csi://0"),
    ("v4l2:///dev/video0", "v4l2:///dev/video0"),
    ("/videos/a:b@c.mp4", "/videos/a:b@c.mp4"),
    ("file:///videos/a:b@c.mp4", "file:///videos/a:b@c.mp4"),
    ("shots/*.jpg", "shots/*.jpg"),
])
def test_redaction_table(uri, shown):
    assert redact(uri) == shown


def test_a_stream_shows_the_redacted_uri_and_opens_the_one_with_the_environment_filled_in(monkeypatch):
    monkeypatch.setenv("CAMERA_PASSWORD", "p@ss/w0rd")
    source = open_source("rtsp://admin:${CAMERA_PASSWORD}@127.0.0.1:9/stream?token=${CAMERA_PASSWORD}")
    assert source.uri == "rtsp://***@127.0.0.1:9/stream?token=***"
    assert source.target == "rtsp://admin:p@ss/w0rd@127.0.0.1:9/stream?token=p@ss/w0rd"
    with pytest.raises(EdgeError, match=r"^rtsp://\*\*\*@cam/x: \$\{NOT_SET_ANYWHERE\} is not set in the environment$"):
        open_source("rtsp://admin:${NOT_SET_ANYWHERE}@cam/x")
    with pytest.raises(EdgeError, match=r"^rtsq://\*\*\*@cam/x: unknown input scheme"):
        open_source("rtsq://admin:s3cret@cam/x")


@pytest.mark.parametrize("uri, warned", [("rtsp://admin:s3cret@cam/x", True), ("https://cam/x?token=t", True),
                                         ("rtsp://admin:${CAMERA_PASSWORD}@cam/x", False), ("rtsp://cam/x", False)])
def test_a_credential_on_the_command_line_is_warned_about_in_one_line(uri, warned, capsys):
    from edge.cli import _warn_of_credentials_in_argv

    _warn_of_credentials_in_argv(uri)
    err = capsys.readouterr().err
    assert err.startswith("edge: warning: --input holds a credential") == warned and err.count("\n") == warned


def test_a_stream_that_cannot_open_says_why():
    port = closed_port()
    source = open_source(f"rtsp://admin:s3cret@127.0.0.1:{port}/x")
    with pytest.raises(SourceError) as refused:
        source.open()
    assert str(refused.value) == f"rtsp://***@127.0.0.1:{port}/x: cannot open: connection refused"
    source = open_source(f"rtsp://admin:pa/ss@127.0.0.1:{port}/x")  # FFmpeg would look for the host "ss"
    with pytest.raises(SourceError, match="must be written %2F, %3F or %23$"):
        source.open()

    with socket.socket() as server:  # accepts the connection, then never speaks RTSP
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        source = open_source(f"http://127.0.0.1:{port}/feed")
        source.params[1] = source.params[3] = 500  # FFmpeg's open and read timeouts, ms: no need to wait 5 s
        with pytest.raises(SourceError, match="answers but sends no stream"):
            source.open()


def test_healthz_gives_the_sources_reason_before_the_first_result_and_after_the_last():
    stats = LoopStats(source_error="rtsp://***@cam/x: cannot open: connection refused; retrying in 4 s (attempt 5)")
    assert Metrics(stats, {}).health() == (False, stats.source_error)
    stats.last_result_at = time.monotonic() - 60
    ok, reason = Metrics(stats, {}).health()
    assert not ok and reason.startswith("no result for 60 s: rtsp://***@cam/x: cannot open")
    assert Metrics(LoopStats(), {}).health() == (False, "no result yet")


def test_edge_run_on_a_refused_stream_keeps_its_log_to_its_own_lines_and_shows_no_password(tmp_path):
    """End to end: the password is on argv (warned about), FFmpeg stays quiet, /healthz says why."""
    tiny = tiny_model_folder(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        http_port = s.getsockname()[1]
    secret = "p@ssw0rd"
    uri = f"rtsp://admin:{secret}@127.0.0.1:{closed_port()}/x"
    edge = subprocess.Popen(EDGE + ["run", str(tiny), "--input", uri, "--output", str(tmp_path / "out.jsonl"),
                                    "--http", f"127.0.0.1:{http_port}"], stderr=subprocess.PIPE, text=True)
    try:
        deadline, health = time.monotonic() + 60, ""
        while "attempt 4" not in health and time.monotonic() < deadline:  # about 2 s of retries
            time.sleep(0.2)
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=2)
            except urllib.error.HTTPError as e:
                assert e.code == 503
                health = e.read().decode()
            except OSError:  # not listening yet: the model is still loading
                pass
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=2) as response:
            metrics = response.read().decode()
        edge.send_signal(signal.SIGTERM)
        assert edge.wait(timeout=10) == 0
    finally:
        edge.kill()
    log = edge.stderr.read().splitlines()
    assert health.startswith("rtsp://***@127.0.0.1:") and ": cannot open: connection refused; retrying in " in health
    assert secret not in metrics and "rtsp://***@127.0.0.1:" in metrics
    assert not any(secret in line for line in log)
    assert log[0].startswith("edge: warning: --input holds a credential")
    assert all(line.startswith("edge: ") for line in log), log  # no line of FFmpeg's or OpenCV's own
    retries = [line for line in log if "cannot open" in line]
    assert 2 <= len(retries) <= 4, log  # attempts 1, 2 (and 4): throttled


def test_install_writes_the_configuration_0640_root_edge_and_tightens_an_existing_one(tmp_path, monkeypatch):
    from edge.runtime import systemd

    config, unit = tmp_path / "etc" / "edge" / "edge.toml", tmp_path / "edge.service"
    monkeypatch.setattr(systemd, "CONFIG_PATH", config)
    monkeypatch.setattr(systemd, "UNIT_PATH", unit)
    monkeypatch.setattr(systemd, "_systemd_ready", lambda: None)
    ran = []
    monkeypatch.setattr(systemd, "_run", ran.append)
    real_getgrnam = grp.getgrnam

    def getgrnam(name):  # the group `edge` as groupadd would have made it (the recorded command did not run)
        return SimpleNamespace(gr_gid=4242) if name == "edge" else real_getgrnam(name)

    monkeypatch.setattr(grp, "getgrnam", getgrnam)
    chowned = []
    monkeypatch.setattr(os, "chown", lambda path, uid, gid: chowned.append((path, uid, gid)))
    assert systemd.install(dry_run=False) == 0
    assert stat.S_IMODE(config.stat().st_mode) == 0o640 and chowned == [(config, 0, 4242)]

    config.write_text('input = "rtsp://admin:s3cret@cam/x"\n')
    config.chmod(0o644)  # as installed before
    chowned.clear()
    assert systemd.install(dry_run=False) == 0
    assert stat.S_IMODE(config.stat().st_mode) == 0o640 and chowned == [(config, 0, 4242)]
    assert config.read_text() == 'input = "rtsp://admin:s3cret@cam/x"\n'
