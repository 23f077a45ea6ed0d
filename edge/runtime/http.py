"""The HTTP endpoint: the latest result, a health check and Prometheus metrics.

    GET /latest    the last result, as JSON (503 before the first)
    GET /healthz   200 "ok" while results keep coming; 503 with the reason (a source that is down, and why)
                   before the first and when none came for HEALTHY_S
    GET /metrics   Prometheus text: frames, drops, reconnects, decode errors, per-stage latency histograms,
                   with a Triton server as backend its errors and round trips, and, where jetson-stats (jtop)
                   is installed and its service reachable, power, GPU load and temperatures

It binds to loopback unless told otherwise (--http 0.0.0.0:8080 exposes it: there is no authentication).
Requests are served concurrently on one thread of their own (an asyncio loop; they only read counters), each with a
whole-request deadline, and open connections are capped: see Server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from http import HTTPStatus

from ..errors import EdgeError, first_line
from ..telemetry import availability, read_sample
from .loop import STAGES, LoopStats

log = logging.getLogger("edge")

HEALTHY_S = 10.0
MAX_CONNECTIONS = 256  # open at once; beyond, a new connection is answered 503 and closed at once
REQUEST_DEADLINE_S = 2.0  # for the whole request to arrive, and again for the answer to be taken
MAX_REQUEST_BYTES = 8192  # the request line and headers; a GET has no body
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

    def __init__(self, stats: LoopStats, info: dict[str, str], backend=None):
        """`backend`: the model's, whose own metric_lines() (a remote one's: errors, round trips) are added."""
        self.stats, self.info = stats, info
        self.backend_lines = getattr(backend, "metric_lines", None)
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
        if self.backend_lines is not None:
            lines += self.backend_lines()
        if self.jetson is not None:
            lines += self.jetson.lines()
        return "\n".join(lines) + "\n"

    def health(self) -> tuple[bool, str]:
        s = self.stats
        if s.last_result_at is None:
            return False, s.source_error or "no result yet"
        age = time.monotonic() - s.last_result_at
        if age < HEALTHY_S:
            return True, "ok"
        return False, f"no result for {age:.0f} s" + (f": {s.source_error}" if s.source_error else "")

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


class Server:
    """The endpoint on its own thread and asyncio event loop. Every connection is served at once; each must send
    its whole request within REQUEST_DEADLINE_S and take the answer within it again, and beyond MAX_CONNECTIONS a
    new one is answered 503 and closed. So a client that trickles, stalls or floods holds only its own connection,
    never a scrape's. One request per connection (Connection: close). Stop with close()."""

    def __init__(self, address: tuple[str, int], metrics: Metrics):
        self.metrics = metrics
        self.connections: set[asyncio.Task] = set()
        self.loop = asyncio.new_event_loop()
        try:
            self.server = self.loop.run_until_complete(asyncio.start_server(
                self._serve, *address, limit=MAX_REQUEST_BYTES, backlog=MAX_CONNECTIONS))
        except OSError as e:
            self.loop.close()
            raise EdgeError(f"--http {address[0]}:{address[1]}: cannot listen: {e.strerror or e}") from None
        self.address = self.server.sockets[0].getsockname()[:2]
        self.thread = threading.Thread(target=self.loop.run_forever, name="edge-http", daemon=True)
        self.thread.start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.connections) >= MAX_CONNECTIONS:  # closed at once, so that a flood holds no more sockets
            writer.write(_response(503, "too many connections\n", "text/plain"))  # (a reset if its request came)
            writer.close()
            return
        task = asyncio.current_task()
        self.connections.add(task)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_DEADLINE_S)
            writer.write(self.answer(head))
            await asyncio.wait_for(writer.drain(), REQUEST_DEADLINE_S)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # too slow, too long, or gone: closed, and nobody else waited for it
        except Exception as e:  # a bug: one line in the journal, not a traceback, and the server carries on
            log.warning("http: request from %s failed: %s: %s", writer.get_extra_info("peername", ("?",))[0],
                        type(e).__name__, e)
        finally:
            self.connections.discard(task)
            writer.close()

    def answer(self, head: bytes) -> bytes:
        request = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(request) != 3:
            return _response(400, "expected GET PATH HTTP/1.x\n", "text/plain")
        method, path = request[0], request[1].partition("?")[0]
        if method != "GET":
            return _response(405, "only GET\n", "text/plain")
        if path == "/metrics":
            return _response(200, self.metrics.render(), "text/plain; version=0.0.4")
        if path == "/healthz":
            ok, reason = self.metrics.health()
            return _response(200 if ok else 503, reason + "\n", "text/plain")
        if path == "/latest":
            latest = self.metrics.stats.latest
            if latest is None:
                return _response(503, json.dumps({"error": "no result yet"}) + "\n", "application/json")
            return _response(200, json.dumps(latest) + "\n", "application/json")
        return _response(404, "try /latest, /healthz or /metrics\n", "text/plain")

    def close(self) -> None:
        """Stop listening and drop the connections still open."""
        async def stop():
            self.server.close()
            for task in self.connections:
                task.cancel()
            await asyncio.gather(*self.connections, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


def _response(status: int, body: str, content_type: str) -> bytes:
    data = body.encode("utf-8")
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode("latin-1") + data


def serve(address: tuple[str, int], metrics: Metrics) -> Server:
    """Start serving on a thread of its own; stop with server.close()."""
    server = Server(address, metrics)
    log.info("http: serving /latest, /healthz and /metrics on http://%s:%d", *server.address)
    return server
