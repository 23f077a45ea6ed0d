"""Backends run a preprocessed batch through a model. Each lives in its own module behind one small interface:

    backend.run(batch: np.ndarray) -> np.ndarray   # (N, ...) model input in -> (N, classes, ...) output out

Modules are imported only when chosen, so the CPU path never touches CUDA or TensorRT.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..errors import EdgeError

if TYPE_CHECKING:
    from ..model import Card

BACKENDS = ("onnxruntime", "tensorrt", "torch")


class Backend(Protocol):
    def run(self, batch: np.ndarray) -> np.ndarray: ...


def run_in_fixed_batches(run, batch: np.ndarray, fixed_batch: int) -> np.ndarray:
    """run(batch), in chunks of the model's batch size when its graph takes only that one (fixed_batch; 0: any)."""
    if not fixed_batch or len(batch) == fixed_batch:
        return run(batch)
    if len(batch) % fixed_batch:
        raise EdgeError(f"batch of {len(batch)} does not split into the model's batch {fixed_batch}")
    return np.concatenate([run(chunk) for chunk in np.split(batch, len(batch) // fixed_batch)])


def check_backend(name: str) -> None:
    from .triton import Endpoint, is_triton  # a Triton server: parsed here, connected to only when loaded

    if is_triton(name):
        Endpoint.parse(name)
    elif name not in BACKENDS:
        raise EdgeError(f"backend must be one of {', '.join(BACKENDS)}, or triton://HOST:PORT/MODEL, not {name!r}")


def parallel_runs(name: str) -> int:
    """How many inferences to run at once for throughput. On ONNX Runtime, one single-threaded run per core beats
    one run whose threads meet at every operator (about 1.2x on 2 cores: docs/benchmarks.md); the models are then
    loaded with that many `runs`. A GPU backend runs one batch at a time."""
    return (os.cpu_count() or 1) if name == "onnxruntime" else 1


def inference_workers(backend: str, workers: int) -> int:
    """How many inferences `edge run` and `edge profile` run at once (--workers): `workers`, or for 0 the backend's
    choice for throughput (parallel_runs). The model is loaded for that many runs and the executor given that many
    workers, both from this one number, so that ONNX Runtime's threads per run always match the runs made."""
    check_backend(backend)  # first: the refusals below name it
    if workers < 0:
        raise EdgeError(f"workers must be 0 (the backend's choice) or more, not {workers}")
    if workers > 1 and backend != "onnxruntime":
        raise EdgeError(f"workers {workers}: the {backend} backend runs one batch at a time (workers 0 or 1)")
    return workers or parallel_runs(backend)


def load_backend(name: str, folder: Path, card: Card, precision: str, runs: int = 1) -> Backend:
    """`runs`: how many inferences the caller will run at once (see parallel_runs)."""
    from ..model import PRECISION_FILES
    from .triton import TritonBackend, is_triton

    check_backend(name)
    if is_triton(name):  # the model runs on the server; the folder gives its card and labels
        return TritonBackend(name, card)
    if name in ("onnxruntime", "torch"):
        onnx_path = folder / PRECISION_FILES[precision]
        if not onnx_path.is_file():
            if precision == "fp32":
                raise EdgeError(f"{onnx_path}: missing; import the model again with `edge import ... --force`")
            hint = "edge fp16" if precision == "fp16" else "edge calibrate"
            raise EdgeError(f"{onnx_path}: no {precision} variant; make it with `{hint} {folder}`")
        if name == "torch":  # PyTorch on CUDA: a GPU executor where TensorRT is absent (edge/backends/torch.py)
            from .torch import TorchBackend

            return TorchBackend(onnx_path, card)
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_path, card, runs)
    from .tensorrt import TensorRTBackend

    return TensorRTBackend.from_model_folder(folder, card, precision)
