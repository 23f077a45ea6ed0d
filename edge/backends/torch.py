"""PyTorch on a CUDA GPU: the ONNX graph converted to a torch module by onnx2torch.

For machines with an NVIDIA GPU and PyTorch but no TensorRT (a workstation, a CI box with a GPU), so the GPU
data path (edge/gpu) has a real executor there. Figures it produces are labelled "torch", never "tensorrt".
Install: `pip install 'edge[torch]'` (PyTorch with CUDA, and onnx2torch, which imports torchvision at import
time: a torchvision built for another PyTorch breaks it, and the backend says so).

What it runs, checked on the CPU (tests/test_torch_backend.py; onnx2torch 1.5.15, torch 2.13 and 2.14): the fp32
and fp16 variants (model.onnx, model.fp16.onnx) of EfficientNet-Lite0, the four Caffe zoo nets and the tiny test
models convert and agree with ONNX Runtime to 1.4e-6 (fp32) and 1.3e-3 (fp16) of the output's largest magnitude.
The int8 variant does not: onnx2torch has no QuantizeLinear / DequantizeLinear, and the backend refuses it by name
before touching the GPU. The GPU run itself has not been measured yet.

Besides `run(batch)`, it runs on device memory (`run_device`), so the GPU pipeline hands it the kernel's output
and a CUDA stream without a copy: pointers are wrapped with __cuda_array_interface__ and the stream with
torch.cuda.ExternalStream. Everything lives in the device's primary context, which pycuda also uses (edge/gpu).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ..errors import EdgeError, first_line
from ..folder import Card, load_onnx
from .base import run_in_fixed_batches

if TYPE_CHECKING:
    import torch

_TYPESTR = {np.dtype(np.float32): "<f4", np.dtype(np.float16): "<f2"}


class _DeviceArray:
    """A device pointer presented to torch.as_tensor through the CUDA array interface (no copy)."""

    def __init__(self, pointer: int, shape: tuple[int, ...], dtype):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": _TYPESTR[np.dtype(dtype)],
                                         "data": (int(pointer), False), "version": 3, "strides": None}


def to_torch_module(onnx_path: Path) -> tuple[torch.nn.Module, np.dtype]:
    """onnx_path converted by onnx2torch: (the module, on the CPU and in eval mode; the numpy dtype of its input).

    Runs anywhere PyTorch does, so tests check the conversion on the CPU. A graph with nodes onnx2torch has no
    converter for (the int8 variant's QuantizeLinear / DequantizeLinear) is refused by name before converting."""
    try:
        import onnx2torch
        from onnx2torch.node_converters import get_converter
    except (ImportError, RuntimeError) as e:  # RuntimeError: onnx2torch imports a torchvision built for another torch
        raise EdgeError(f"the torch backend needs PyTorch, onnx2torch and a torchvision built for that PyTorch "
                        f"({first_line(e)}): pip install 'edge[torch]'") from None
    graph = load_onnx(onnx_path)
    opsets = {opset.domain: opset.version for opset in graph.opset_import}
    unconvertible = set()
    for node in graph.graph.node:
        try:
            get_converter(node.op_type, opsets[node.domain], node.domain)
        except (NotImplementedError, KeyError):  # KeyError: a domain the model does not import
            unconvertible.add(node.op_type)
    if unconvertible:
        raise EdgeError(f"{onnx_path}: the torch backend cannot run {', '.join(sorted(unconvertible))} nodes: "
                        "onnx2torch has no converter for them (--backend onnxruntime or tensorrt runs this file)")
    try:
        module = onnx2torch.convert(graph).eval()
    except Exception as e:  # a converter that exists can still refuse an attribute, with NotImplementedError or others
        raise EdgeError(f"{onnx_path}: onnx2torch cannot convert it: {first_line(e)}") from None
    elem_type = graph.graph.input[0].type.tensor_type.elem_type
    return module, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


class TorchBackend:
    def __init__(self, onnx_path: Path, card: Card):
        module, self.input_dtype = to_torch_module(onnx_path)  # first, so what it cannot run is refused on any machine
        import torch

        if not torch.cuda.is_available():
            raise EdgeError("the torch backend runs on a CUDA GPU; torch.cuda.is_available() is False here")
        self.module = module.to("cuda")
        self.torch = torch
        self.card = card
        self.name = f"torch {torch.__version__} on {torch.cuda.get_device_name()}"

    def output_shape(self, batch: int) -> tuple[int, ...]:
        return batch, self.card.classes

    def run(self, batch: np.ndarray) -> np.ndarray:
        return run_in_fixed_batches(self._run, batch, self.card.batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=self.input_dtype)).to("cuda")
            return self.module(x).float().cpu().numpy()

    def run_device(self, input_pointer: int, output_pointer: int, batch: int, stream) -> None:
        """Queue the model on a pycuda Stream: input (batch, *input_shape) -> output (batch, classes) float32."""
        torch = self.torch
        with torch.cuda.stream(torch.cuda.ExternalStream(stream.handle)), torch.inference_mode():
            x = torch.as_tensor(_DeviceArray(input_pointer, (batch, *self.card.input_shape), self.input_dtype),
                                device="cuda")
            out = torch.as_tensor(_DeviceArray(output_pointer, self.output_shape(batch), np.float32), device="cuda")
            out.copy_(self.module(x).reshape(batch, -1))
