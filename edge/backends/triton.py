"""--backend triton://HOST:PORT/MODEL (HTTP) or triton+grpc://HOST:PORT/MODEL: inference on a Triton server.

The model folder stays on the camera node for its card and labels; the server runs the model. A server model
whose input is uint8 (the ensemble `edge export --triton` writes, preprocessing included) is sent the camera's
frames as they are; one whose input is float32 (the model alone) is sent the batch edge preprocessed here.

Requests run on a small pool of threads, each with its own client (tritonclient's HTTP client is not safe to
share between threads), so that with several batches in flight the network round trip overlaps capture and the
next batch. A request that finds the server gone (restarting, the network down) is sent again with backoff
until it is answered, as a camera is reopened: no frame of a file is lost, and the loop carries on.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import EdgeError
from ..retry import backoff_delay, worth_logging

log = logging.getLogger("edge")

SCHEMES = {"triton": "http", "triton+grpc": "grpc"}
IN_FLIGHT = 4  # batches sent and not yet answered: enough to hide a LAN's round trip behind 30 fps capture
TIMEOUT_S = 30.0  # for one answer, and for the server's first reply at start


def is_triton(backend: str) -> bool:
    return backend.partition("://")[0] in SCHEMES and "://" in backend


@dataclass(frozen=True)
class Endpoint:
    protocol: str  # http or grpc
    address: str  # HOST:PORT
    model: str

    @classmethod
    def parse(cls, uri: str) -> Endpoint:
        scheme, _, rest = uri.partition("://")
        address, _, model = rest.partition("/")
        host, _, port = address.rpartition(":")
        if scheme not in SCHEMES or not host or not port.isdigit() or not model or "/" in model:
            raise EdgeError(f"--backend {uri}: expected triton://HOST:PORT/MODEL (HTTP) or "
                            "triton+grpc://HOST:PORT/MODEL")
        return cls(SCHEMES[scheme], address, model)


def _client_module(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
    except ImportError as e:
        raise EdgeError(f"--backend triton: tritonclient is not installed ({e.name}); pip install 'edge[triton]'") \
            from None
    return client


class TritonBackend:
    """One model on a Triton server, behind the Backend interface (run) and the pipelined one (send, receive)."""

    def __init__(self, uri: str, card):
        self.endpoint = Endpoint.parse(uri)
        self.card = card
        self.client_module = _client_module(self.endpoint.protocol)
        from tritonclient.utils import InferenceServerException

        self.server_errors = (InferenceServerException, OSError)
        self.local = threading.local()
        self.counts = threading.Lock()
        self.remote_errors = 0  # requests that found the server gone and were sent again
        self.round_trips, self.round_trip_seconds = 0, 0.0  # answered requests, and their time from send to answer
        # What differs between the two protocols' clients, said once
        grpc = self.endpoint.protocol == "grpc"
        self.as_json = {"as_json": True} if grpc else {}  # HTTP's answers are JSON already
        self.infer_options = {"client_timeout": TIMEOUT_S} if grpc else {}
        self.client_options = {} if grpc else {"network_timeout": TIMEOUT_S, "connection_timeout": TIMEOUT_S}
        try:
            metadata = self._client().get_model_metadata(self.endpoint.model, **self.as_json)
            config = self._client().get_model_config(self.endpoint.model, **self.as_json)
        except self.server_errors as e:
            raise EdgeError(f"--backend {uri}: {str(e).splitlines()[0] or type(e).__name__}") from None
        config = config.get("config", config)  # gRPC wraps it
        if len(metadata["inputs"]) != 1:
            raise EdgeError(f"--backend {uri}: the server's model takes {len(metadata['inputs'])} inputs; edge "
                            "sends one")
        self.input_name, self.input_type = metadata["inputs"][0]["name"], metadata["inputs"][0]["datatype"]
        outputs = [output["name"] for output in metadata["outputs"]]
        if card.output_name not in outputs:
            raise EdgeError(f"--backend {uri}: the server's model outputs {', '.join(outputs)}, not "
                            f"{card.output_name} (the card's)")
        if self.input_type not in ("UINT8", "FP32"):
            raise EdgeError(f"--backend {uri}: its input {self.input_name} is {self.input_type}; edge sends UINT8 "
                            "frames or FP32 preprocessed batches")
        self.raw_frames = self.input_type == "UINT8"
        # the most images one request may hold: the server's max_batch_size, or the graph's fixed batch
        self.request_batch = int(config.get("max_batch_size", 0)) or card.batch or 1
        self.pool = ThreadPoolExecutor(IN_FLIGHT, "edge-triton")

    def _client(self):
        if getattr(self.local, "client", None) is None:
            self.local.client = self.client_module.InferenceServerClient(self.endpoint.address,
                                                                         **self.client_options)
        return self.local.client

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """One request, sent again with backoff until the server answers it."""
        failures = 0
        while True:
            start = time.perf_counter()
            try:
                model_input = self.client_module.InferInput(self.input_name, list(batch.shape), self.input_type)
                model_input.set_data_from_numpy(batch)
                result = self._client().infer(self.endpoint.model, [model_input], **self.infer_options)
                output = result.as_numpy(self.card.output_name)
                with self.counts:
                    self.round_trips += 1
                    self.round_trip_seconds += time.perf_counter() - start
                return output
            except self.server_errors as e:
                if not _unavailable(e):
                    raise EdgeError(f"triton {self.endpoint.address}/{self.endpoint.model}: "
                                    f"{str(e).splitlines()[0]}") from None
                with self.counts:
                    self.remote_errors += 1
                failures += 1
                delay = backoff_delay(failures)
                if worth_logging(failures):
                    log.warning("triton %s: %s; sending again in %.2g s (attempt %d)", self.endpoint.address,
                                str(e).splitlines()[0] or type(e).__name__, delay, failures)
                self.local.client = None  # a new connection for the restarted server
                time.sleep(delay)

    def send(self, images: list[np.ndarray] | np.ndarray) -> list[tuple[Future, int]]:
        """Start the requests for a batch: frames (uint8 HWC, sent as they are, one request per frame size) or a
        preprocessed batch; each request at most request_batch images, a fixed batch padded to its size. Each
        request comes with the number of its images that are real, so `receive` drops the padding's rows."""
        if self.raw_frames and isinstance(images, list) and len({image.shape for image in images}) > 1:
            groups = [np.stack([image]) for image in images]
        else:
            groups = [np.stack(images) if isinstance(images, list) else images]
        futures = []
        for group in groups:
            for start in range(0, len(group), self.request_batch):
                chunk = group[start:start + self.request_batch]
                real = len(chunk)
                if self.card.batch and real < self.card.batch:
                    chunk = np.concatenate([chunk] + [chunk[-1:]] * (self.card.batch - real))
                futures.append((self.pool.submit(self._infer, np.ascontiguousarray(chunk)), real))
        return futures

    def receive(self, sent: list[tuple[Future, int]]) -> np.ndarray:
        return np.concatenate([future.result()[:real] for future, real in sent])

    def times(self) -> dict[str, tuple[int, float]]:
        """(count, seconds) totals: this client's "round_trip"s, and Triton's own for the model since the server
        started ("success": whole requests on the server, "queue", "compute_input", "compute_infer",
        "compute_output"). time_split tells two readings apart."""
        stats = self._client().get_inference_statistics(self.endpoint.model, **self.as_json)["model_stats"][0]
        totals = {name: (int(value.get("count", 0)), int(value.get("ns", 0)) / 1e9)
                  for name, value in stats["inference_stats"].items()
                  if name in ("success", "queue", "compute_input", "compute_infer", "compute_output")}
        with self.counts:
            totals["round_trip"] = (self.round_trips, self.round_trip_seconds)
        return totals

    def time_split(self, before: dict[str, tuple[int, float]]) -> str:
        """Since the reading `before`: the round trip per request, the server's part (Triton's statistics) and the
        rest, the network's and the client's. Other clients of the same model share the server's figures."""
        after = self.times()
        count, seconds = (a - b for a, b in zip(after["round_trip"], before["round_trip"]))
        if not count:
            return "no request answered by the Triton server"
        per_request = {name: (after[name][1] - before[name][1]) / max(after[name][0] - before[name][0], 1)
                       for name in after if name != "round_trip" and name in before}
        server = per_request.get("success", 0.0)
        compute = sum(per_request.get(name, 0.0) for name in ("compute_input", "compute_infer", "compute_output"))
        queue = per_request.get("queue", 0.0)
        return (f"Triton: {count} requests, {seconds / count * 1e3:.2f} ms a round trip: server {server * 1e3:.2f} ms "
                f"(queue {queue * 1e3:.2f}, compute {compute * 1e3:.2f}), network and client "
                f"{(seconds / count - server) * 1e3:.2f} ms")

    def metric_lines(self) -> list[str]:
        """Prometheus text for /metrics (runtime/http.py): remote errors, and round trips as a summary."""
        with self.counts:
            errors, count, seconds = self.remote_errors, self.round_trips, self.round_trip_seconds
        return ["# HELP edge_remote_errors_total Requests to the Triton server that failed and were sent again.",
                "# TYPE edge_remote_errors_total counter", f"edge_remote_errors_total {errors}",
                "# HELP edge_remote_round_trip_seconds From a request sent to the Triton server to its answer.",
                "# TYPE edge_remote_round_trip_seconds summary", f"edge_remote_round_trip_seconds_sum {seconds:.6f}",
                f"edge_remote_round_trip_seconds_count {count}"]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """A preprocessed batch (`edge classify`, `edge eval`), for a server model that takes one."""
        if self.raw_frames:
            raise EdgeError(f"triton {self.endpoint.address}/{self.endpoint.model} takes camera frames; "
                            "`edge run` sends them (name the model alone, its _onnx, to send preprocessed batches)")
        return self.receive(self.send(batch))


def _unavailable(error: Exception) -> bool:
    """The server is not there (refused, reset, restarting, timed out), as against a request it refused."""
    if isinstance(error, OSError):
        return True
    status = str(error.status() or "")
    return status in ("", "StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "503") or \
        "connection" in str(error).lower()
