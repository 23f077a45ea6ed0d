"""A real Triton Inference Server for the tests, on loopback, from the PyPI package nvidia-pytriton.

nvidia-pytriton 0.7.0 ships tritonserver 2.51 with its Python backend, and a Python-backend stub per Python
version. Its stub is built against numpy 1 (with numpy 2 the tensors it hands a model are zeros), and the package
pins numpy < 2, so it lives in its own environment, .venv-triton, beside the suite's (.ci/run makes it):

    python3 -m venv .venv-triton && .venv-triton/bin/pip install -e . 'nvidia-pytriton==0.7.0'

$EDGE_TRITON_ENV names another. The server runs that environment's Python (its bin/ first on PATH, which is how
the stub finds its prefix) with edge installed, so the exported Python-backend models import edge.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START_S = 90.0  # loading the models: each Python-backend instance starts a stub process that imports edge


def triton_environment() -> tuple[Path, Path]:
    """(the server's Python environment, pytriton's tritonserver folder in it); skips the test without them."""
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient (pip install -e '.[triton]')")
    env = Path(os.environ.get("EDGE_TRITON_ENV") or ROOT / ".venv-triton")
    found = sorted(env.glob("lib/python3*/site-packages/pytriton/tritonserver/bin/tritonserver"))
    if not found:
        pytest.skip(f"no tritonserver: make {env} as .ci/run does (pip install nvidia-pytriton==0.7.0 there)")
    server = found[-1].parents[1]
    libraries = subprocess.run(["ldd", str(stub(server, env))], capture_output=True, text=True).stdout
    if "not found" in libraries:
        pytest.skip(f"the Python-backend stub lacks libraries here: {libraries.strip().splitlines()[0]}")
    return env, server


def stub(server: Path, env: Path) -> Path:
    version = server.parents[2].name.removeprefix("python")  # lib/python3.11/site-packages/pytriton/tritonserver
    return server / "python_backend_stubs" / version / "triton_python_backend_stub"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """tritonserver serving `models` of `repository` on 127.0.0.1 (HTTP and gRPC on free ports, no metrics port);
    start() waits until it is ready, stop() ends it. Its log is kept in `log` (a file under the test's tmp_path).
    Only `models` (and those an ensemble among them calls) are loaded: this server has no ONNX Runtime backend."""

    def __init__(self, repository: Path, scratch: Path, models: list[str]):
        self.env, self.server = triton_environment()
        self.repository, self.models = repository, models
        # The Python backend looks for the stub beside libtriton_python.so: a backends folder with the stub of
        # this environment's Python linked in, the package's own left as it is.
        self.backends = scratch / "backends"
        python = self.backends / "python"
        python.mkdir(parents=True, exist_ok=True)
        for file in (self.server / "backends" / "python").iterdir():
            if file.is_file() and not (python / file.name).exists():
                (python / file.name).symlink_to(file)
        if not (python / "triton_python_backend_stub").exists():
            (python / "triton_python_backend_stub").symlink_to(stub(self.server, self.env))
        self.log = scratch / "tritonserver.log"
        self.http_port, self.grpc_port = free_port(), free_port()
        self.process = None
        # The Python backend's shared memory, named so that what a killed server leaves in /dev/shm is removed
        self.shm_prefix = f"edge_test_{os.getpid()}_{id(self)}_"

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> TritonServer:
        command = [str(self.server / "bin" / "tritonserver"), f"--model-repository={self.repository}",
                   f"--backend-directory={self.backends}", "--http-address=127.0.0.1",
                   f"--http-port={self.http_port}", "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
                   "--allow-metrics=false", "--exit-timeout-secs=5",
                   "--model-control-mode=explicit",
                   f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}"]
        command += [f"--load-model={name}" for name in self.models]
        environment = {**os.environ, "PATH": f"{self.env / 'bin'}:{os.environ['PATH']}"}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                            start_new_session=True)
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"tritonserver exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.http}/v2/health/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise AssertionError(f"tritonserver not ready in {START_S} s:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """End the server and its stub processes (its own session: the group is the server's alone)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

