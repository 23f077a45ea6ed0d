"""PyTorch on a CUDA GPU: the ONNX graph converted to a torch module by onnx2torch.

For machines with an NVIDIA GPU and PyTorch but no TensorRT (a workstation, a CI box with a GPU), so the GPU
data path (edge/gpu) has a real executor there. Figures it produces are labelled "torch", never "tensorrt".
Install: `pip install 'edge[torch]'` (PyTorch with CUDA, and onnx2torch).

Besides `run(batch)`, it runs on device memory (`run_device`), so the GPU pipeline hands it the kernel's output
and a CUDA stream without a copy: pointers are wrapped with __cuda_array_interface__ and the stream with
torch.cuda.ExternalStream. Everything lives in the device's primary context, which pycuda also uses (edge/gpu).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EdgeError, first_line

if TYPE_CHECKING:
    from ..model import Card

_TYPESTR = {np.dtype(np.float32): "<f4", np.dtype(np.float16): "<f2"}


class _DeviceArray:
    """A device pointer presented to torch.as_tensor through the CUDA array interface (no copy)."""

    def __init__(self, pointer: int, shape: tuple[int, ...], dtype):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": _TYPESTR[np.dtype(dtype)],
                                         "data": (int(pointer), False), "version": 3, "strides": None}


class TorchBackend:
    def __init__(self, onnx_path: Path, card: "Card"):
        try:
            import onnx
            import torch
            from onnx2torch import convert
        except ImportError as e:
            raise EdgeError(f"the torch backend needs PyTorch and onnx2torch ({e}): "
                            "pip install 'edge[torch]'") from None
        if not torch.cuda.is_available():
            raise EdgeError("the torch backend runs on a CUDA GPU; torch.cuda.is_available() is False here")
        graph = onnx.load(str(onnx_path))
        elem_type = graph.graph.input[0].type.tensor_type.elem_type
        self.input_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
        try:
            self.module = convert(graph).eval().to("cuda")
        except Exception as e:  # onnx2torch raises NotImplementedError and others for unsupported nodes
            raise EdgeError(f"{onnx_path}: onnx2torch cannot convert it: {first_line(e)}") from None
        self.torch = torch
        self.card = card
        self.name = f"torch {torch.__version__} on {torch.cuda.get_device_name()}"

    def output_shape(self, batch: int) -> tuple[int, ...]:
        return batch, self.card.classes

    def run(self, batch: np.ndarray) -> np.ndarray:
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
