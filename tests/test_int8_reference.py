"""edge's CPU run of a Q/DQ graph, held element by element to a numpy implementation of the ONNX operators.

TensorRT's int8 kernels multiply int8 values and sum the products exactly in int32, then apply the graph's float
scales. edge's CPU path (edge.backends.onnxruntime.cpu_session) must compute the same on any CPU. The graph here
is made so that float32 computes it exactly too: every scale is a power of two and every sum stays below 2**24
units, so float32 sums are exact in any order and the two sides agree bit for bit. Its first convolution has
large activations and weights over 3x3x64 inputs, where ONNX Runtime's own int8 kernels on an x86 CPU without
VNNI (uint8 x int8 pairs summed into saturating 16-bit integers) are off by a large fraction of the output.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.backends.onnxruntime import cpu_session

INT8 = np.iinfo(np.int8)


def quantize_linear(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 1) -> np.ndarray:
    """ONNX QuantizeLinear to int8: saturate(round_half_to_even(x / scale) + zero_point); a 1-D scale is per
    channel along `axis`."""
    scale, zero_point = _along(scale, x.ndim, axis), _along(zero_point, x.ndim, axis)
    return np.clip(np.round(x / scale) + zero_point, INT8.min, INT8.max).astype(np.int8)  # np.round: half to even


def dequantize_linear(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 1) -> np.ndarray:
    """ONNX DequantizeLinear: (q - zero_point) * scale."""
    return (q.astype(np.float64) - _along(zero_point, q.ndim, axis)) * _along(scale, q.ndim, axis)


def _along(value: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    value = np.asarray(value, np.float64)
    return value if value.ndim == 0 else value.reshape([-1 if i == axis else 1 for i in range(ndim)])


def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    """ONNX Conv, NCHW, stride 1, no groups."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))  # (n, c, h, w, kh, kw)
    return np.einsum("nchwij,ocij->nohw", windows, w) + b[None, :, None, None]


def qdq(x: np.ndarray, scale: np.ndarray, axis: int = 1) -> np.ndarray:
    zero = np.zeros(np.shape(scale), np.int8)
    return dequantize_linear(quantize_linear(x, scale, zero, axis), scale, zero, axis)


class Net:
    """x -> Q/DQ -> Conv 3x3 (64 -> 32) -> Q/DQ -> Conv 1x1 (32 -> 16) -> Relu -> Flatten -> Q/DQ -> Gemm (-> 10).

    The shape of edge's graphs (Q/DQ on the inputs of Conv and Gemm, per-output-channel weights, per-tensor
    activations, float bias, zero points 0): the first Conv's output feeding the second's Q/DQ is the pattern ONNX
    Runtime fuses into its int8 QLinearConv by default, as it does in EfficientNet-Lite0."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)

        def weight(shape, exponents):  # int8 levels 64..127 with a random sign per output channel, times 2**-e
            levels = rng.integers(64, 128, shape) * rng.choice([-1, 1], (shape[0],) + (1,) * (len(shape) - 1))
            scale = 2.0 ** -np.asarray(exponents, np.float64)
            return levels * _along(scale, len(shape), 0), scale

        self.x_scale = np.float64(2.0 ** -1)
        self.conv1_w, self.conv1_w_scale = weight((32, 64, 3, 3), rng.integers(4, 9, 32))
        self.conv1_b = rng.integers(-3000, 3000, 32) * self.x_scale * self.conv1_w_scale  # on the sum's grid
        self.conv1_out_scale = np.float64(2.0 ** 9)  # the largest sums exceed 127 levels: saturation both ways
        self.conv2_w, self.conv2_w_scale = weight((16, 32, 1, 1), rng.integers(4, 9, 16))
        self.conv2_b = rng.integers(-500, 500, 16) * self.conv1_out_scale * self.conv2_w_scale
        self.fc_in_scale = np.float64(2.0 ** 15)
        self.fc_w, self.fc_w_scale = weight((10, 16 * 25), rng.integers(4, 9, 10))
        self.fc_b = rng.integers(-500, 500, 10) * self.fc_in_scale * self.fc_w_scale

    def reference(self, x: np.ndarray) -> np.ndarray:
        h = conv(qdq(x, self.x_scale), qdq(self.conv1_w, self.conv1_w_scale, 0), self.conv1_b, pad=1)
        h = conv(qdq(h, self.conv1_out_scale), qdq(self.conv2_w, self.conv2_w_scale, 0), self.conv2_b, pad=0)
        h = np.maximum(h, 0).reshape(len(x), -1)
        return qdq(h, self.fc_in_scale) @ qdq(self.fc_w, self.fc_w_scale, 0).T + self.fc_b

    def onnx(self) -> onnx.ModelProto:
        constants, nodes = [], []

        def constant(name, value, dtype=np.float32):
            constants.append(numpy_helper.from_array(np.asarray(value, dtype), name))
            return name

        def qdq_node(tensor, scale, axis=1):
            s = constant(f"{tensor}_scale", scale)
            z = constant(f"{tensor}_zero", np.zeros(np.shape(scale)), np.int8)
            nodes.append(helper.make_node("QuantizeLinear", [tensor, s, z], [f"{tensor}_q"], axis=axis))
            nodes.append(helper.make_node("DequantizeLinear", [f"{tensor}_q", s, z], [f"{tensor}_dq"], axis=axis))
            return f"{tensor}_dq"

        def layer(op, tensor, scale, name, **attributes):
            weight = qdq_node(constant(f"{name}_w", getattr(self, f"{name}_w")), getattr(self, f"{name}_w_scale"), 0)
            inputs = [qdq_node(tensor, scale), weight, constant(f"{name}_b", getattr(self, f"{name}_b"))]
            nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
            return name

        h = layer("Conv", "x", self.x_scale, "conv1", pads=[1, 1, 1, 1])
        h = layer("Conv", h, self.conv1_out_scale, "conv2")
        nodes += [helper.make_node("Relu", [h], ["relu"]), helper.make_node("Flatten", ["relu"], ["flat"])]
        layer("Gemm", "flat", self.fc_in_scale, "fc", transB=1)
        graph = helper.make_graph(nodes, "qdq",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64, 5, 5])],
                                  [helper.make_tensor_value_info("fc", TensorProto.FLOAT, ["N", 10])], constants)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def test_the_cpu_path_computes_qdq_as_the_onnx_operators_define_it(tmp_path):
    net = Net()
    rng = np.random.default_rng(1)
    # x / scale from 64 to 130: large activations, half of them exactly halfway between two levels (round half to
    # even), those above 127 saturating
    x = rng.integers(128, 261, (2, 64, 5, 5)) * net.x_scale / 2
    path = tmp_path / "qdq.onnx"
    onnx.save(net.onnx(), str(path))
    got = cpu_session(path).run(None, {"x": x.astype(np.float32)})[0]
    expected = net.reference(x)
    np.testing.assert_array_equal(got, expected.astype(np.float32))


def test_the_reference_follows_the_onnx_definition():
    """The numpy operators on the cases ONNX spells out: ties to even, saturation at -128 and 127, per channel."""
    x = np.array([[-300.0, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 127.4, 300.0], [2.0] * 9])
    q = quantize_linear(x, np.array([1.0, 0.5]), np.zeros(2, np.int8), axis=0)
    np.testing.assert_array_equal(q, [[-128, -2, -2, 0, 0, 2, 2, 127, 127], [4] * 9])
    np.testing.assert_array_equal(dequantize_linear(q, np.array([1.0, 0.5]), np.zeros(2), axis=0)[1], [2.0] * 9)
    np.testing.assert_array_equal(conv(np.ones((1, 2, 3, 3)), np.ones((1, 2, 3, 3)), np.zeros(1), pad=1)[0, 0],
                                  [[8, 12, 8], [12, 18, 12], [8, 12, 8]])
