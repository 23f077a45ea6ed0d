"""The HTTP endpoint: the latest result, a health check and Prometheus metrics.

    GET /latest    the last result, as JSON (503 before the first)
    GET /healthz   200 "ok" while results keep coming; 503 with the reason when none came for HEALTHY_S
    GET /metrics   Prometheus text: frames, drops, reconnects, decode errors, per-stage latency histograms,
                   and, where jetson-stats (jtop) is installed and its service reachable, power, GPU load and
                   temperatures

It binds to loopback unless told otherwise (--http 0.0.0.0:8080 exposes it: there is no authentication).
One thread serves the requests one at a time; they only read counters.
"""

from __future__ import annotations

import http.server
import json
import logging
import sys
import threading
import time

from ..errors import EdgeError, first_line
from ..telemetry import availability, read_sample
from .loop import STAGES, LoopStats

log = logging.getLogger("edge")

HEALTHY_S = 10.0
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT, or a bare PORT meaning 127.0.0.1:PORT; port 0 picks a free one (the log says which)."""
    host, sep, port = text.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise EdgeError(f"--http {text}: expected HOST:PORT or PORT")
    return (host.strip("[]") if sep and host else "127.0.0.1"), int(port)


def _label_value(text: str) -> str:
    """Prometheus' escapes inside a label value: a gst:// pipeline or a path may hold quotes or backslashes."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Histogram:
    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)  # the last is +Inf
        self.sum = 0.0
        self.lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        slot = next((i for i, bound in enumerate(BUCKETS) if seconds <= bound), len(BUCKETS))
        with self.lock:
            self.counts[slot] += 1
            self.sum += seconds

    def lines(self, name: str, labels: str) -> list[str]:
        with self.lock:
            counts, total = list(self.counts), self.sum
        out, cumulative = [], 0
        for bound, count in zip([*map(str, BUCKETS), "+Inf"], counts):
            cumulative += count
            out.append(f'{name}_bucket{{{labels},le="{bound}"}} {cumulative}')
        out.append(f"{name}_sum{{{labels}}} {total:.6f}")
        out.append(f"{name}_count{{{labels}}} {cumulative}")
        return out


class Metrics:
    """A stage-time recorder for the loop (see loop.py) that also renders everything as Prometheus text."""

    def __init__(self, stats: LoopStats, info: dict[str, str]):
        self.stats, self.info = stats, info
        self.stages = {stage: Histogram() for stage in STAGES}
        self.latency = Histogram()
        self.jetson = JetsonStats.start()

    def record(self, stage: str, seconds: float) -> None:
        histogram = self.latency if stage == "latency" else self.stages.get(stage)
        if histogram is not None:
            histogram.observe(seconds)

    def render(self) -> str:
        s = self.stats
        info = ",".join(f'{k}="{_label_value(v)}"' for k, v in self.info.items())
        lines = ["# HELP edge_info What is running.", "# TYPE edge_info gauge", f"edge_info{{{info}}} 1"]
        for name, value, text in (
            ("edge_frames_total", s.frames, "Frames classified."),
            ("edge_frames_dropped_total", s.dropped, "Live frames replaced by newer ones before classification."),
            ("edge_source_reconnects_total", s.reconnects, "Live source reopened after a failure."),
            ("edge_decode_errors_total", s.decode_errors, "Frames or files that could not be decoded, skipped."),
        ):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} counter", f"{name} {value}"]
        lines += ["# HELP edge_uptime_seconds Seconds since the loop started.", "# TYPE edge_uptime_seconds gauge",
                  f"edge_uptime_seconds {time.monotonic() - s.started:.3f}"]
        lines += ["# HELP edge_stage_seconds Wall time of each loop stage, per batch.",
                  "# TYPE edge_stage_seconds histogram"]
        for stage, histogram in self.stages.items():
            lines += histogram.lines("edge_stage_seconds", f'stage="{stage}"')
        lines += ["# HELP edge_latency_seconds From capture to result written, per frame.",
                  "# TYPE edge_latency_seconds histogram"]
        lines += self.latency.lines("edge_latency_seconds", 'source="all"')
        if self.jetson is not None:
            lines += self.jetson.lines()
        return "\n".join(lines) + "\n"

    def health(self) -> tuple[bool, str]:
        s = self.stats
        if s.last_result_at is None:
            return False, "no result yet"
        age = time.monotonic() - s.last_result_at
        return (True, "ok") if age < HEALTHY_S else (False, f"no result for {age:.0f} s")

    def close(self) -> None:
        if self.jetson is not None:
            self.jetson.close()


class JetsonStats:
    """Board power, GPU load and temperatures from jetson-stats' jtop service (edge/telemetry.py), read per scrape."""

    def __init__(self, client):
        self.client = client

    @classmethod
    def start(cls) -> JetsonStats | None:
        usable, note = availability()
        if not usable:
            if "not installed" not in note:  # on a workstation its absence is normal, not worth a line
                log.warning("%s", note)
            return None
        from jtop import jtop

        try:
            client = jtop(interval=1.0)
            client.start()
        except Exception as e:  # JtopException: service down, not in the jtop group, or a version mismatch
            log.warning("jetson-stats cannot connect: %s", first_line(e))
            return None
        return cls(client)

    def lines(self) -> list[str]:
        try:
            sample = read_sample(self.client)
        except Exception:  # the service went away: leave the figures out rather than fail the scrape
            return []
        out = []
        if sample["power_mw"] is not None:
            out += ["# HELP edge_jetson_power_watts Board power (jetson-stats).",
                    "# TYPE edge_jetson_power_watts gauge",
                    f"edge_jetson_power_watts {sample['power_mw'] / 1000.0:.3f}"]
        if sample["gpu_load_percent"] is not None:
            out += ["# HELP edge_jetson_gpu_load_percent GPU load (jetson-stats).",
                    "# TYPE edge_jetson_gpu_load_percent gauge",
                    f"edge_jetson_gpu_load_percent {sample['gpu_load_percent']:.1f}"]
        out += ["# HELP edge_jetson_temperature_celsius Temperature per sensor (jetson-stats).",
                "# TYPE edge_jetson_temperature_celsius gauge"]
        out += [f'edge_jetson_temperature_celsius{{sensor="{name}"}} {celsius:.1f}'
                for name, celsius in sample["temperatures_c"].items()]
        return out

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass


def serve(address: tuple[str, int], metrics: Metrics) -> http.server.HTTPServer:
    """Start serving in one daemon thread; stop with server.shutdown() then server.server_close()."""

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 1.0  # a client that connects and says nothing must not hold up the others, or shutdown

        def do_GET(self):
            if self.path == "/metrics":
                self._send(200, metrics.render(), "text/plain; version=0.0.4")
            elif self.path == "/healthz":
                ok, reason = metrics.health()
                self._send(200 if ok else 503, reason + "\n", "text/plain")
            elif self.path == "/latest":
                latest = metrics.stats.latest
                if latest is None:
                    self._send(503, json.dumps({"error": "no result yet"}) + "\n", "application/json")
                else:
                    self._send(200, json.dumps(latest) + "\n", "application/json")
            else:
                self._send(404, "try /latest, /healthz or /metrics\n", "text/plain")

        def _send(self, status: int, body: str, content_type: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):  # requests are not worth a journal line each
            pass

    class Server(http.server.HTTPServer):
        def handle_error(self, request, client_address) -> None:
            # socketserver's default prints a traceback to stderr, the journal: a scraper that hung up mid-reply
            # is no news, anything else is one line.
            error = sys.exc_info()[1]
            if not isinstance(error, ConnectionError):
                log.warning("http: request from %s failed: %s: %s", client_address[0], type(error).__name__, error)

    try:
        server = Server(address, Handler)
    except OSError as e:
        raise EdgeError(f"--http {address[0]}:{address[1]}: cannot listen: {e.strerror or e}") from None
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="edge-http", daemon=True).start()
    host, port = server.server_address[:2]
    log.info("http: serving /latest, /healthz and /metrics on http://%s:%d", host, port)
    return server
