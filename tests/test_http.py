"""The HTTP endpoint (edge/runtime/http.py): its address, /metrics' counters, histograms and gauges with escaped
labels; and under hostile clients: slow ones, silent ones, too many, and a handler that fails. Servers listen on
127.0.0.1 on a free port and every wait is bounded."""

from __future__ import annotations

import socket
import statistics
import threading
import time
import urllib.error
import urllib.request

import pytest

from edge.errors import EdgeError
from edge.runtime import http
from edge.runtime.executors import CpuExecutor
from edge.runtime.http import Metrics, parse_address, serve
from edge.runtime.loop import Loop, LoopStats
from edge.runtime.sinks import Results
from edge.runtime.sources import open_source

from runtime_support import ListSink, write_video


def test_http_address_defaults_to_loopback():
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    with pytest.raises(EdgeError):
        parse_address("localhost:http")


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


def test_metrics_escape_quotes_and_backslashes_in_label_values():
    pipeline = 'gst://videotestsrc ! video/x-raw,format="BGR" ! appsink name=a\\b'
    text = Metrics(LoopStats(), {"model": "tiny", "input": pipeline}).render()
    assert 'edge_info{model="tiny",input="gst://videotestsrc ! video/x-raw,format=\\"BGR\\" ! appsink name=a\\\\b"} 1' \
        in text.splitlines()


def test_jetson_stats_become_gauges():
    from edge.runtime.http import JetsonStats

    class FakeJtop:
        power = {"tot": {"power": 5230}}
        gpu = {"gpu": {"status": {"load": 41.0}}}
        temperature = {"cpu": {"temp": 48.5, "online": True}, "cv0": {"temp": -256, "online": False}}

    text = "\n".join(JetsonStats(FakeJtop()).lines())
    assert "edge_jetson_power_watts 5.230" in text and "edge_jetson_gpu_load_percent 41.0" in text
    assert 'edge_jetson_temperature_celsius{sensor="cpu"} 48.5' in text and "cv0" not in text


@pytest.fixture
def server():
    server = serve(("127.0.0.1", 0), Metrics(LoopStats(), {"model": "tiny"}))
    yield server
    server.close()


def scrape(server, path: str = "/metrics") -> tuple[int, str, float]:
    """Status, body and seconds taken, as Prometheus scrapes: a fresh connection per request."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.address[1]}{path}", timeout=10) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read().decode()
    return status, body, time.monotonic() - start


def test_a_scrape_answers_within_a_second_while_200_clients_trickle_a_byte_every_half_second(server):
    stop = threading.Event()
    address = ("127.0.0.1", server.address[1])
    clients = [socket.create_connection(address, timeout=5) for _ in range(200)]

    def trickle():  # one byte per client every 0.5 s; a client the server closed connects again at once
        while not stop.wait(0.5):
            for i, client in enumerate(clients):
                try:
                    client.send(b"G")
                except OSError:
                    client.close()
                    try:
                        clients[i] = socket.create_connection(address, timeout=5)
                    except OSError:
                        pass

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        times = []
        for _ in range(5):  # spread over 2.5 s: through the tricklers' first deadline and their reconnects
            status, body, seconds = scrape(server)
            assert status == 200 and "edge_frames_total 0" in body
            times.append(seconds)
            time.sleep(0.5)
    finally:
        stop.set()
        trickler.join(timeout=5)
        for client in clients:
            client.close()
    assert statistics.median(times) < 1.0, times


def test_silent_clients_are_closed_at_the_deadline_and_those_beyond_the_cap_get_503(server, monkeypatch):
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 3)
    address = ("127.0.0.1", server.address[1])
    silent = [socket.create_connection(address, timeout=5) for _ in range(3)]
    deadline = time.monotonic() + 5
    while len(server.connections) < 3 and time.monotonic() < deadline:  # until the server has them all
        time.sleep(0.01)
    # within REQUEST_DEADLINE_S (2 s) of them, all three still open. This client sends nothing: one whose request
    # had arrived would get a reset instead (the server closes at once, the request unread), which is as well.
    with socket.create_connection(address, timeout=5) as refused:
        answer = b"".join(iter(lambda: refused.recv(1000), b""))
    assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(b"\r\n\r\ntoo many connections\n")
    for client in silent:  # closed by the server (EOF), not left open for ever
        assert client.recv(100) == b""
        client.close()
    status, _, _ = scrape(server, "/healthz")
    assert status == 503  # room again: answered (503 only because no result came yet)


def test_a_request_longer_than_the_limit_is_closed_and_the_server_keeps_serving(server):
    with socket.create_connection(("127.0.0.1", server.address[1]), timeout=5) as client:
        client.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (2 * http.MAX_REQUEST_BYTES))
        assert client.recv(100) == b""
    assert scrape(server)[0] == 200


def test_bad_requests_and_failing_handlers_are_answered_and_logged_in_one_line(server, capfd, monkeypatch):
    warnings = []
    monkeypatch.setattr(http.log, "warning", lambda message, *args: warnings.append(message % args))
    with socket.create_connection(("127.0.0.1", server.address[1]), timeout=5) as client:
        client.sendall(b"POST /metrics HTTP/1.1\r\n\r\n")
        assert client.recv(100).startswith(b"HTTP/1.1 405 ")
    assert scrape(server, "/nothing")[0] == 404

    def render():
        raise ValueError("a bug")

    monkeypatch.setattr(server.metrics, "render", render)
    with pytest.raises(OSError):  # the connection closed without an answer
        scrape(server)
    assert "Traceback" not in capfd.readouterr().err
    assert warnings == ["http: request from 127.0.0.1 failed: ValueError: a bug"]
