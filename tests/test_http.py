"""The HTTP endpoint (edge/runtime/http.py): its address, /metrics' counters, histograms and gauges with escaped
labels, and request errors kept out of the journal's tracebacks."""

from __future__ import annotations

import pytest

from edge.errors import EdgeError
from edge.runtime.executors import CpuExecutor
from edge.runtime.http import Metrics, parse_address
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


def test_http_request_errors_are_not_tracebacks_in_the_journal(capfd):
    from edge.runtime.http import serve

    server = serve(("127.0.0.1", 0), Metrics(LoopStats(), {}))
    try:
        for error in (ConnectionResetError(104, "Connection reset by peer"), ValueError("a bug")):
            try:
                raise error
            except Exception:  # as socketserver calls it: from inside the except block around the request
                server.handle_error(None, ("127.0.0.1", 40000))
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in capfd.readouterr().err
