"""Backends run a preprocessed batch through a model. Each lives in its own module behind one small interface
(base.py):

    backend.run(batch: np.ndarray) -> np.ndarray   # (N, ...) model input in -> (N, classes, ...) output out

    onnxruntime.py   ONNX Runtime on the CPU: the default, and the reference
    torch.py         PyTorch on CUDA (onnx2torch), where TensorRT is absent
    triton.py        a model on a Triton Inference Server (--backend triton://HOST:PORT/MODEL); tritonclient is
                     imported when one is loaded
    edge/tensorrt/runner.py   a TensorRT engine (edge build makes it; edge/tensorrt/ holds all of TensorRT)

A GPU backend also runs from device memory (`input_dtype`, `output_shape(batch)`, `run_device(...)`), which the
GPU data path (edge/gpu/pipeline.py) drives. Modules are imported only when chosen, so the CPU path never
touches CUDA or TensorRT.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EdgeError
from ..folder import FP32, Card, missing_file_hint, precision_named
from .base import Backend
from .triton import Endpoint, TritonBackend, is_triton

BACKENDS = ("onnxruntime", "tensorrt", "torch")


def check_backend(name: str) -> None:
    if is_triton(name):  # a Triton server: the address parsed here, connected to only when loaded
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
    """`runs`: how many inferences the caller will run at once (see parallel_runs). Each backend's module is
    imported here, when chosen: onnxruntime, torch and TensorRT (with pycuda) are heavy, and all but the first
    optional."""
    check_backend(name)
    if is_triton(name):  # the model runs on the server; the folder gives its card and labels
        return TritonBackend(name, card)
    variant = precision_named(precision)
    if name in ("onnxruntime", "torch"):
        onnx_path = folder / variant.onnx
        if not onnx_path.is_file():
            what = "missing" if variant == FP32 else f"no {precision} variant"
            raise EdgeError(f"{onnx_path}: {what}; {missing_file_hint(folder, variant.onnx)}")
        if name == "torch":  # PyTorch on CUDA: a GPU executor where TensorRT is absent (edge/backends/torch.py)
            from .torch import TorchBackend  # torch and onnx2torch: optional, heavy

            return TorchBackend(onnx_path, card)
        from .onnxruntime import OnnxRuntimeBackend  # onnxruntime: a heavy import, chosen here

        return OnnxRuntimeBackend(onnx_path, card, runs)
    from ..tensorrt.runner import TensorRTBackend  # tensorrt and pycuda: optional, heavy

    return TensorRTBackend.from_model_folder(folder, card, precision)
