"""ONNX Runtime on the CPU: the default wherever TensorRT is absent, and the reference for correctness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import EdgeError
from ..folder import Card, Tensors, check_graph
from .base import run_in_fixed_batches


def session_options(runs: int = 1) -> ort.SessionOptions:
    """How edge runs any of its graphs (fp32, fp16, or int8 Q/DQ) on ONNX Runtime's CPU provider. Every session
    that runs a model.int8.onnx (eval, classify, run, calibration checks, benchmarks) is made with these.

    Q/DQ runs as written: QuantizeLinear and DequantizeLinear in float32 around float kernels (the session entry
    "session.disable_quant_qdq"). That is int8 values, the graph's own scales and products summed in float32, which
    is what TensorRT's int8 kernels compute (summing exactly in int32) up to float32 rounding, on any CPU.
    ONNX Runtime's default instead fuses Q/DQ into its own int8 kernels, whose x86 path without VNNI sums
    uint8 x int8 pairs into saturating 16-bit integers (vpmaddubsw): EfficientNet-Lite0 fell from 87 % to 65.5 %
    top-1 on an AVX2 AMD EPYC that way (docs/precision.md, "The same INT8 figure on any CPU"). Graphs without
    Q/DQ are not affected by the entry.

    `runs`: how many inferences the caller runs at once, from as many threads. Several runs are each
    single-threaded, since they already fill the cores; one run gets ONNX Runtime's pool (one per core)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    options.intra_op_num_threads = 1 if runs > 1 else 0
    if runs == 1:
        # The pool's threads would otherwise spin between runs: on a 30 fps camera that is 3x the CPU per frame
        # for 1 ms less latency when idle, and more latency under other load (docs/benchmarks.md, "Latency").
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def cpu_session(onnx_path: Path, runs: int = 1) -> ort.InferenceSession:
    """A session on the CPU with session_options(runs); a file ONNX Runtime cannot load is one line."""
    try:
        return ort.InferenceSession(str(onnx_path), session_options(runs), providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types, one line is enough for the user
        raise EdgeError(f"{onnx_path}: ONNX Runtime cannot load it: {str(e).splitlines()[0]}") from None


class OnnxRuntimeBackend:
    def __init__(self, onnx_path: Path, card: Card, runs: int = 1):
        """`runs`: as for session_options."""
        self.session = cpu_session(onnx_path, runs)
        check_graph(card, onnx_path, _tensors(self.session.get_inputs()), _tensors(self.session.get_outputs()))
        self.input_name = card.input_name
        self.output_name = card.output_name
        self.fixed_batch = card.batch  # 0: the graph takes any batch size

    def run(self, batch: np.ndarray) -> np.ndarray:
        return run_in_fixed_batches(self._run, batch, self.fixed_batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]


def _tensors(args: list[ort.NodeArg]) -> Tensors:
    """ONNX Runtime's view of a graph's inputs or outputs, as check_graph compares them with the card."""
    return {a.name: ([d if isinstance(d, int) else None for d in a.shape],
                     "float32" if a.type == "tensor(float)" else a.type) for a in args}
