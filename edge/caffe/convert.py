"""A Caffe net -> an ONNX graph (opset 13), one small function per layer type with Caffe's formula beside it.

Opset 13 because ONNX Runtime and every TensorRT from 8.5 (JetPack 5) on read it. The batch axis stays symbolic:
no layer here mixes samples, so layers that would touch the batch axis are refused rather than baked to one size.
Blob names are SSA-renamed (in-place layers write a new tensor each time); the net's output keeps its Caffe name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import EdgeError
from ..words import plural
from . import schema
from .reader import Net, Weights, blob_array

OPSET = 13
IR_VERSION = 7  # the IR that came with opset 13: older TensorRT parsers refuse newer IR numbers
BATCH = "batch"

_POOL = schema.ENUMS["PoolMethod"]
_ELTWISE = schema.ENUMS["EltwiseOp"]
_ROUND = schema.ENUMS["RoundMode"]
_NORM = schema.ENUMS["NormRegion"]


class Graph:
    """The ONNX nodes and constants being built, with unique tensor names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.used: set[str] = set()

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def const(self, base: str, array: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, base: str, values) -> str:
        return self.const(base, np.asarray(values, dtype=np.int64))

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        """Adds one node; returns its (fresh) output name."""
        out = self.fresh(output)
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh(f"{output}/{op}"), **attrs))
        return out


@dataclass
class Layer:
    """One Caffe layer as a converter sees it: parameters, input tensors and their shapes, weights."""

    param: object  # LayerParameter
    inputs: list[str]
    shapes: list[tuple[int, ...]]
    blobs: list = field(default_factory=list)  # BlobProto
    prototxt: Path = Path()
    caffemodel: Path = Path()

    @property
    def where(self) -> str:
        return f"{self.prototxt}: layer '{self.param.name}' ({self.param.type})"

    def fail(self, what: str) -> EdgeError:
        return EdgeError(f"{self.where}: {what}")

    @property
    def top(self) -> str:
        return self.param.top[0]

    def weights(self, count: int) -> list[np.ndarray]:
        """The layer's blobs from the caffemodel; Caffe requires exactly as many as the layer makes."""
        if not self.blobs:
            raise EdgeError(f"{self.in_weights}: no weights for this layer in the caffemodel")
        if len(self.blobs) != count:
            raise EdgeError(f"{self.in_weights}: {len(self.blobs)} weight blobs, the prototxt needs {count}")
        return [blob_array(blob, self.in_weights) for blob in self.blobs]

    @property
    def in_weights(self) -> str:
        return f"{self.caffemodel}: layer '{self.param.name}' ({self.param.type})"

    def fit(self, array: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
        """A blob checked as Blob::ShapeEquals does: the layer's shape, or a legacy 4-D one right-aligned to it."""
        shape = tuple(shape)
        legacy = len(shape) <= 4 and array.shape == (1,) * (4 - len(shape)) + shape
        if array.shape != shape and not legacy:
            raise EdgeError(f"{self.in_weights}: {what} has shape {list(array.shape)}, expected {list(shape)}")
        if not np.isfinite(array).all():
            raise EdgeError(f"{self.in_weights}: {what} holds values that are not finite")
        return array.reshape(shape)

    def axis(self, axis: int, rank: int, batch_too: bool = False) -> int:
        """Caffe's CanonicalAxisIndex; the batch axis is refused (unless the operation works sample by sample,
        batch_too) because the ONNX batch stays symbolic."""
        if not -rank <= axis < rank:
            raise self.fail(f"axis {axis} is out of range for a {rank}-D input")
        axis %= rank
        if axis == 0 and not batch_too:
            raise self.fail("works across the batch axis (axis 0), which edge does not convert")
        return axis

    def bottoms(self, count: int) -> None:
        if len(self.inputs) != count or len(self.param.top) != 1:
            raise self.fail(f"expected {count} bottom(s) and 1 top, found {len(self.inputs)} and {len(self.param.top)}")


Output = list[tuple[str, tuple[int, ...]]]


def _pair(layer: Layer, p, name: str, default: int | None) -> tuple[int, int]:
    """Convolution's `name` (repeated: one value or one per spatial axis) or `<name>_h` + `<name>_w`."""
    values = list(getattr(p, name))
    h, w = (f"{name.removesuffix('_size')}_{axis}" for axis in "hw")
    if p.HasField(h) or p.HasField(w):
        if values:
            raise layer.fail(f"give either {name} or {h}/{w}, not both")
        if default is None and not (p.HasField(h) and p.HasField(w)):
            raise layer.fail(f"{h} and {w} go together")
        return getattr(p, h), getattr(p, w)
    if not values:
        if default is None:
            raise layer.fail(f"has no {name}")
        return default, default
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise layer.fail(f"{name} has {plural(len(values), 'value')}; a 2-D layer takes 1 or 2")


def _conv_geometry(layer: Layer, p) -> tuple[tuple[int, int], ...]:
    kernel, stride, pad = _pair(layer, p, "kernel_size", None), _pair(layer, p, "stride", 1), _pair(layer, p, "pad", 0)
    dilation = list(p.dilation) or [1]
    if len(dilation) > 2:
        raise layer.fail(f"dilation has {plural(len(dilation), 'value')}; a 2-D layer takes 1 or 2")
    dilation = (dilation[0], dilation[-1])
    if min(kernel + stride + dilation) <= 0:
        raise layer.fail(f"kernel {kernel}, stride {stride} and dilation {dilation} must be positive")
    if len(layer.shapes[0]) != 4 or layer.axis(p.axis, 4) != 1:
        raise layer.fail("edge converts 2-D convolutions over N x C x H x W (axis 1), "
                         f"not shape {list(layer.shapes[0])}")
    return kernel, stride, pad, dilation


def _conv_channels(layer: Layer, p, channels: int) -> tuple[int, int]:
    out, group = p.num_output, p.group
    if out <= 0 or group <= 0 or channels % group or out % group:
        raise layer.fail(f"num_output {out} and input channels {channels} must both divide by group {group}")
    return out, group


def _weight_and_bias(g: Graph, layer: Layer, p, weight_shape: tuple[int, ...], out_c: int) -> list[str]:
    """The (de)convolution's inputs: x, its weight blob in `weight_shape`, and the bias blob if bias_term."""
    blobs = layer.weights(2 if p.bias_term else 1)
    inputs = [layer.inputs[0], g.const(f"{layer.param.name}/weight", layer.fit(blobs[0], weight_shape, "weight"))]
    if p.bias_term:
        inputs.append(g.const(f"{layer.param.name}/bias", layer.fit(blobs[1], (out_c,), "bias")))
    return inputs


def convolution(g: Graph, layer: Layer) -> Output:
    """y = conv(x, W, group, dilation) + b;  out = (in + 2 pad - (dilation (k - 1) + 1)) / stride + 1 (floor)."""
    layer.bottoms(1)
    p = layer.param.convolution_param
    kernel, stride, pad, dilation = _conv_geometry(layer, p)
    n, c, h, w = layer.shapes[0]
    out_c, group = _conv_channels(layer, p, c)
    size = [(i + 2 * pd - (d * (k - 1) + 1)) // s + 1 for i, k, s, pd, d in zip((h, w), kernel, stride, pad, dilation)]
    if min(size) <= 0:
        raise layer.fail(f"the {h} x {w} input is smaller than the {kernel} kernel")
    inputs = _weight_and_bias(g, layer, p, (out_c, c // group, *kernel), out_c)
    y = g.node("Conv", inputs, layer.top, kernel_shape=list(kernel), strides=list(stride), pads=[*pad, *pad],
               dilations=list(dilation), group=group)
    return [(y, (n, out_c, *size))]


def deconvolution(g: Graph, layer: Layer) -> Output:
    """Convolution's backward pass: out = stride (in - 1) + dilation (k - 1) + 1 - 2 pad;
    W is (C_in, O / group, kh, kw)."""
    layer.bottoms(1)
    p = layer.param.convolution_param
    kernel, stride, pad, dilation = _conv_geometry(layer, p)
    n, c, h, w = layer.shapes[0]
    out_c, group = _conv_channels(layer, p, c)
    size = [s * (i - 1) + d * (k - 1) + 1 - 2 * pd for i, k, s, pd, d in zip((h, w), kernel, stride, pad, dilation)]
    if min(size) <= 0:
        raise layer.fail(f"pad {pad} leaves no output for the {h} x {w} input")
    inputs = _weight_and_bias(g, layer, p, (c, out_c // group, *kernel), out_c)
    y = g.node("ConvTranspose", inputs, layer.top, kernel_shape=list(kernel), strides=list(stride),
               pads=[*pad, *pad], dilations=list(dilation), group=group)
    return [(y, (n, out_c, *size))]


def _pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool, clip: bool) -> int:
    """pooling_layer.cpp Reshape: round up (default), then make the last window start inside the image."""
    steps = (size + 2 * pad - kernel) / stride
    out = (math.ceil(steps) if ceil else math.floor(steps)) + 1
    if clip and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pooling(g: Graph, layer: Layer) -> Output:
    """MAX over the real pixels of each window; AVE = sum / window size clipped to the padded input [-pad, in + pad).

    ONNX pools round down, so the windows Caffe's rounding up adds are made with extra end padding `e`; for AVE that
    overhang must not count, so the symmetric padding becomes an explicit zero Pad and the pool excludes only `e`.
    """
    layer.bottoms(1)
    p = layer.param.pooling_param
    shape = layer.shapes[0]
    if len(shape) != 4:
        raise layer.fail(f"edge converts 2-D pooling over N x C x H x W, not shape {list(shape)}")
    if p.pool not in (_POOL["MAX"], _POOL["AVE"]):
        raise layer.fail("STOCHASTIC pooling has no deterministic CPU forward in Caffe; edge converts MAX and AVE")
    n, c, h, w = shape
    pad = _pool_pair(layer, p, "pad", p.pad)
    stride = _pool_pair(layer, p, "stride", p.stride)
    if p.global_pooling:
        if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
            raise layer.fail("global_pooling takes no kernel size")
        if pad != (0, 0) or stride != (1, 1):
            raise layer.fail("global_pooling needs pad 0 and stride 1")
        op = "GlobalMaxPool" if p.pool == _POOL["MAX"] else "GlobalAveragePool"
        return [(g.node(op, layer.inputs, layer.top), (n, c, 1, 1))]
    kernel = _pool_pair(layer, p, "kernel", p.kernel_size if p.HasField("kernel_size") else None)
    if min(kernel) <= 0 or min(stride) <= 0:
        raise layer.fail(f"kernel {kernel} and stride {stride} must be positive")
    if any(pd >= k for pd, k in zip(pad, kernel)):
        raise layer.fail(f"pad {pad} must be smaller than the kernel {kernel}")
    if p.HasField("round_mode") and p.HasField("ceil_mode"):
        raise layer.fail("give round_mode or ceil_mode, not both")
    ceil = p.round_mode == _ROUND["CEIL"] and p.ceil_mode
    clip = any(pad)
    size = [_pooled_size(i, k, s, pd, ceil, clip) for i, k, s, pd in zip((h, w), kernel, stride, pad)]
    if min(size) <= 0:
        raise layer.fail(f"the {h} x {w} input is smaller than the {kernel} window")
    if any((o - 1) * s - pd >= i for o, s, pd, i in zip(size, stride, pad, (h, w))):
        # only without padding (no clip) and with stride > kernel: Caffe gives -FLT_MAX (MAX) or garbage (AVE)
        raise layer.fail(f"the last {kernel} window (stride {stride}) lies wholly outside the {h} x {w} input")
    extra = [max(0, (o - 1) * s + k - (i + 2 * pd)) for o, s, k, i, pd in zip(size, stride, kernel, (h, w), pad)]
    attrs = {"kernel_shape": list(kernel), "strides": list(stride)}
    if p.pool == _POOL["MAX"]:
        y = g.node("MaxPool", layer.inputs, layer.top, pads=[*pad, pad[0] + extra[0], pad[1] + extra[1]], **attrs)
    elif not any(extra):
        y = g.node("AveragePool", layer.inputs, layer.top, pads=[*pad, *pad], count_include_pad=1, **attrs)
    else:
        x = layer.inputs[0]
        if any(pad):
            x = g.node("Pad", [x, g.ints(f"{layer.param.name}/pads", [0, 0, *pad, 0, 0, *pad])], f"{layer.top}/padded")
        y = g.node("AveragePool", [x], layer.top, pads=[0, 0, *extra], count_include_pad=0, **attrs)
    return [(y, (n, c, *size))]


def _pool_pair(layer: Layer, p, name: str, single: int | None) -> tuple[int, int]:
    """Pooling's `name` (one value) or `name_h` + `name_w` (both)."""
    has_hw = p.HasField(f"{name}_h") or p.HasField(f"{name}_w")
    has_one = p.HasField(name if name != "kernel" else "kernel_size")
    if has_hw:
        if has_one or not (p.HasField(f"{name}_h") and p.HasField(f"{name}_w")):
            raise layer.fail(f"give {name} alone or both {name}_h and {name}_w")
        return getattr(p, f"{name}_h"), getattr(p, f"{name}_w")
    if single is None:
        raise layer.fail("has no kernel_size (nor kernel_h and kernel_w)")
    return single, single


def inner_product(g: Graph, layer: Layer) -> Output:
    """y = x' W^T + b, x' = x flattened from `axis`; W is N x K, or K x N with transpose: true."""
    layer.bottoms(1)
    p = layer.param.inner_product_param
    shape = layer.shapes[0]
    axis = layer.axis(p.axis, len(shape))
    k, n = int(np.prod(shape[axis:])), p.num_output
    if n <= 0:
        raise layer.fail("num_output must be positive")
    blobs = layer.weights(2 if p.bias_term else 1)
    weight = layer.fit(blobs[0], (k, n) if p.transpose else (n, k), "weight")
    x = layer.inputs[0]
    if len(shape) != 2:
        x = g.node("Flatten", [x], f"{layer.top}/flat", axis=axis)
    inputs = [x, g.const(f"{layer.param.name}/weight", weight)]
    if p.bias_term:
        inputs.append(g.const(f"{layer.param.name}/bias", layer.fit(blobs[1], (n,), "bias")))
    out_shape = (*shape[:axis], n)
    if axis == 1:
        return [(g.node("Gemm", inputs, layer.top, transB=0 if p.transpose else 1), out_shape)]
    y = g.node("Gemm", inputs, f"{layer.top}/2d", transB=0 if p.transpose else 1)
    return [(g.node("Reshape", [y, g.ints(f"{layer.param.name}/shape", [-1, *out_shape[1:]])], layer.top), out_shape)]


def relu(g: Graph, layer: Layer) -> Output:
    """y = max(x, 0) + negative_slope min(x, 0)."""
    layer.bottoms(1)
    slope = layer.param.relu_param.negative_slope
    if slope == 0:
        return [(g.node("Relu", layer.inputs, layer.top), layer.shapes[0])]
    return [(g.node("LeakyRelu", layer.inputs, layer.top, alpha=slope), layer.shapes[0])]


def prelu(g: Graph, layer: Layer) -> Output:
    """y = max(x, 0) + a_c min(x, 0), one slope per channel (axis 1) or one shared."""
    layer.bottoms(1)
    shape = layer.shapes[0]
    if len(shape) < 2:
        raise layer.fail("needs an input of at least 2 axes")
    if layer.param.prelu_param.channel_shared:  # one slope, stored as a 0-axis blob
        slope = layer.fit(layer.weights(1)[0], (), "slope")
    else:
        slope = layer.fit(layer.weights(1)[0], (shape[1],), "slopes").reshape((shape[1],) + (1,) * (len(shape) - 2))
    return [(g.node("PRelu", [layer.inputs[0], g.const(f"{layer.param.name}/slope", slope)], layer.top), shape)]


def _unary(op: str):
    def convert(g: Graph, layer: Layer) -> Output:
        layer.bottoms(1)
        return [(g.node(op, layer.inputs, layer.top), layer.shapes[0])]
    convert.__doc__ = f"ONNX {op}: the same elementwise formula."
    return convert


def elu(g: Graph, layer: Layer) -> Output:
    """y = x if x > 0 else alpha (exp(x) - 1)."""
    layer.bottoms(1)
    return [(g.node("Elu", layer.inputs, layer.top, alpha=layer.param.elu_param.alpha), layer.shapes[0])]


def _scalar(g: Graph, base: str, value: float) -> str:
    return g.const(base, np.asarray(value, dtype=np.float32))


def power(g: Graph, layer: Layer) -> Output:
    """y = (shift + scale x)^power; when power * scale == 0, the constant (power == 0 ? 1 : shift^power)."""
    layer.bottoms(1)
    p, name, top = layer.param.power_param, layer.param.name, layer.top
    x = layer.inputs[0]
    if p.power * p.scale == 0:
        value = np.float32(1.0) if p.power == 0 else np.float32(p.shift) ** np.float32(p.power)
        shape = g.node("Shape", [x], f"{top}/shape")
        fill = numpy_helper.from_array(np.asarray([value], dtype=np.float32))
        return [(g.node("ConstantOfShape", [shape], top, value=fill), layer.shapes[0])]
    steps = [("Mul", p.scale != 1, p.scale), ("Add", p.shift != 0, p.shift), ("Pow", p.power != 1, p.power)]
    steps = [(op, value) for op, needed, value in steps if needed]
    if not steps:
        return [(g.node("Identity", [x], top), layer.shapes[0])]
    for i, (op, value) in enumerate(steps):
        x = g.node(op, [x, _scalar(g, f"{name}/{op.lower()}", value)],
                   top if i == len(steps) - 1 else f"{top}/{op.lower()}")
    return [(x, layer.shapes[0])]


def lrn(g: Graph, layer: Layer) -> Output:
    """ACROSS_CHANNELS: y = x (k + alpha/size sum_{size channels} x^2)^-beta (ONNX LRN exactly).
    WITHIN_CHANNEL: y = x (1 + alpha/size^2 sum_{size x size window, zero padded} x^2)^-beta (Caffe ignores k)."""
    layer.bottoms(1)
    p, top, name = layer.param.lrn_param, layer.top, layer.param.name
    if p.local_size % 2 == 0 or p.local_size == 0:
        raise layer.fail(f"local_size {p.local_size} must be odd")
    if len(layer.shapes[0]) != 4:
        raise layer.fail(f"needs an N x C x H x W input, not {list(layer.shapes[0])}")
    if p.norm_region == _NORM["ACROSS_CHANNELS"]:
        y = g.node("LRN", layer.inputs, top, size=p.local_size, alpha=p.alpha, beta=p.beta, bias=p.k)
        return [(y, layer.shapes[0])]
    x, size, pre_pad = layer.inputs[0], p.local_size, (p.local_size - 1) // 2
    squared = g.node("Mul", [x, x], f"{top}/squared")
    # stride 1, pad (size-1)/2: every window's divisor in Caffe's AVE pooling is size^2, padding included
    mean = g.node("AveragePool", [squared], f"{top}/mean", kernel_shape=[size, size], pads=[pre_pad] * 4,
                  count_include_pad=1)
    scaled = g.node("Mul", [mean, _scalar(g, f"{name}/alpha", p.alpha)], f"{top}/scaled")
    shifted = g.node("Add", [scaled, _scalar(g, f"{name}/one", 1.0)], f"{top}/shifted")
    factor = g.node("Pow", [shifted, _scalar(g, f"{name}/minus_beta", -p.beta)], f"{top}/factor")
    return [(g.node("Mul", [x, factor], top), layer.shapes[0])]


def batch_norm(g: Graph, layer: Layer) -> Output:
    """y = (x - f mean) / sqrt(f var + eps), f = 1 / blobs[2][0] (0 when it is 0); no scale or shift of its own."""
    layer.bottoms(1)
    p, shape, name = layer.param.batch_norm_param, layer.shapes[0], layer.param.name
    if p.HasField("use_global_stats") and not p.use_global_stats:
        raise layer.fail("use_global_stats: false normalises with each batch's statistics; edge converts nets that "
                         "use the stored statistics")
    if len(shape) < 2:
        raise layer.fail("needs an input of at least 2 axes")
    channels = shape[1]
    mean, var, factor = layer.weights(3)
    factor = layer.fit(factor, (1,), "scale factor")[0]
    f = np.float32(0) if factor == 0 else np.float32(1) / factor
    inputs = [
        layer.inputs[0],
        g.const(f"{name}/scale", np.ones(channels, np.float32)),
        g.const(f"{name}/bias", np.zeros(channels, np.float32)),
        g.const(f"{name}/mean", f * layer.fit(mean, (channels,), "mean")),
        g.const(f"{name}/var", f * layer.fit(var, (channels,), "variance")),
    ]
    return [(g.node("BatchNormalization", inputs, layer.top, epsilon=p.eps), shape)]


def _extent(layer: Layer, p) -> tuple[int, tuple[int, ...]]:
    """Where Scale's or Bias's operand sits in x: (its first axis, its shape); rank and () for a scalar."""
    shape = layer.shapes[0]
    rank = len(shape)
    if len(layer.inputs) == 2:
        operand = tuple(layer.shapes[1])
        if not operand:
            return rank, ()
        axis = layer.axis(p.axis, rank, batch_too=True)  # bottom[1] carries the batch axis itself
        if tuple(shape[axis:axis + len(operand)]) != operand:
            raise layer.fail(f"bottom shape {list(operand)} does not match {list(shape)} from axis {axis}")
        return axis, operand
    if p.num_axes == 0:
        return rank, ()
    axis = layer.axis(p.axis, rank)
    end = rank if p.num_axes == -1 else axis + p.num_axes
    if p.num_axes < -1 or end > rank:
        raise layer.fail(f"num_axes {p.num_axes} from axis {axis} does not fit a {rank}-D input")
    return axis, tuple(shape[axis:end])


def _operand(g: Graph, layer: Layer, extent: tuple[int, tuple[int, ...]], blob: np.ndarray | None, what: str) -> str:
    """The operand with trailing 1s so that it broadcasts over x from its axis: a weight blob, else bottom[1]."""
    axis, shape = extent
    trailing = len(layer.shapes[0]) - axis - len(shape)
    if blob is not None:
        value = layer.fit(blob, shape, what).reshape(shape + (1,) * trailing)
        return g.const(f"{layer.param.name}/{what}", value)
    if not trailing:
        return layer.inputs[1]
    axes = g.ints(f"{layer.param.name}/axes", range(len(shape), len(shape) + trailing))
    return g.node("Unsqueeze", [layer.inputs[1], axes], f"{layer.top}/{what}")


def scale(g: Graph, layer: Layer) -> Output:
    """y = x * s (+ b with bias_term), s over the axes [axis, axis + num_axes) of x: a weight blob or bottom[1]."""
    p = layer.param.scale_param
    _bottoms_one_or_two(layer)
    from_blob = len(layer.inputs) == 1
    blobs = layer.weights(from_blob + p.bias_term) if from_blob or p.bias_term else []
    extent = _extent(layer, p)
    factor = _operand(g, layer, extent, blobs[0] if from_blob else None, "scale")
    if not p.bias_term:
        return [(g.node("Mul", [layer.inputs[0], factor], layer.top), layer.shapes[0])]
    y = g.node("Mul", [layer.inputs[0], factor], f"{layer.top}/scaled")
    shift = _operand(g, layer, extent, blobs[-1], "bias")
    return [(g.node("Add", [y, shift], layer.top), layer.shapes[0])]


def bias(g: Graph, layer: Layer) -> Output:
    """y = x + b, b over the axes [axis, axis + num_axes) of x: a weight blob or bottom[1]."""
    _bottoms_one_or_two(layer)
    from_blob = len(layer.inputs) == 1
    blob = layer.weights(1)[0] if from_blob else None
    shift = _operand(g, layer, _extent(layer, layer.param.bias_param), blob, "bias")
    return [(g.node("Add", [layer.inputs[0], shift], layer.top), layer.shapes[0])]


def _bottoms_one_or_two(layer: Layer) -> None:
    if len(layer.inputs) not in (1, 2) or len(layer.param.top) != 1:
        raise layer.fail(f"expected 1 or 2 bottoms and 1 top, found {len(layer.inputs)} and {len(layer.param.top)}")


def eltwise(g: Graph, layer: Layer) -> Output:
    """SUM: y = sum_i coeff_i x_i (in bottom order); PROD: y = prod_i x_i; MAX: y = max_i x_i. Shapes must match."""
    p = layer.param.eltwise_param
    if len(layer.inputs) < 2 or len(layer.param.top) != 1:
        raise layer.fail(f"expected at least 2 bottoms and 1 top, found {len(layer.inputs)} and {len(layer.param.top)}")
    if any(s != layer.shapes[0] for s in layer.shapes):
        raise layer.fail(f"bottom shapes differ: {[list(s) for s in layer.shapes]}")
    coeffs = list(p.coeff)
    if coeffs and (p.operation != _ELTWISE["SUM"] or len(coeffs) != len(layer.inputs)):
        raise layer.fail("coeff is for SUM only, one per bottom")
    if p.operation == _ELTWISE["MAX"]:
        return [(g.node("Max", layer.inputs, layer.top), layer.shapes[0])]
    op = "Mul" if p.operation == _ELTWISE["PROD"] else "Add"
    terms = list(layer.inputs)
    for i, coeff in enumerate(coeffs):
        if coeff != 1:
            terms[i] = g.node("Mul", [terms[i], _scalar(g, f"{layer.param.name}/coeff{i}", coeff)],
                              f"{layer.top}/term{i}")
    y = terms[0]
    for i, term in enumerate(terms[1:], start=2):
        y = g.node(op, [y, term], layer.top if i == len(terms) else f"{layer.top}/partial{i}")
    return [(y, layer.shapes[0])]


def concat(g: Graph, layer: Layer) -> Output:
    """y = the bottoms joined along `axis` (or the older concat_dim); all other sizes must agree."""
    p = layer.param.concat_param
    if len(layer.param.top) != 1 or not layer.inputs:
        raise layer.fail("expected bottoms and 1 top")
    if p.HasField("axis") and p.HasField("concat_dim"):
        raise layer.fail("give axis or concat_dim, not both")
    rank = len(layer.shapes[0])
    axis = layer.axis(p.concat_dim if p.HasField("concat_dim") else p.axis, rank)
    if len(layer.inputs) == 1:
        return [(layer.inputs[0], layer.shapes[0])]
    first = layer.shapes[0]
    if any(len(s) != rank or s[:axis] + s[axis + 1:] != first[:axis] + first[axis + 1:] for s in layer.shapes):
        raise layer.fail(f"bottom shapes {[list(s) for s in layer.shapes]} differ outside axis {axis}")
    shape = (*first[:axis], sum(s[axis] for s in layer.shapes), *first[axis + 1:])
    return [(g.node("Concat", layer.inputs, layer.top, axis=axis), shape)]


def slice_(g: Graph, layer: Layer) -> Output:
    """tops = consecutive pieces of x along `axis`, cut at slice_point (or equal pieces without them)."""
    p = layer.param.slice_param
    if len(layer.inputs) != 1 or not layer.param.top:
        raise layer.fail("expected 1 bottom and at least 1 top")
    if p.HasField("axis") and p.HasField("slice_dim"):
        raise layer.fail("give axis or slice_dim, not both")
    shape, tops = layer.shapes[0], list(layer.param.top)
    axis = layer.axis(p.slice_dim if p.HasField("slice_dim") else p.axis, len(shape))
    points = list(p.slice_point)
    if points:
        if len(points) != len(tops) - 1 or points != sorted(set(points)) or points[0] <= 0 or points[-1] >= shape[axis]:
            raise layer.fail(f"slice_point {points} must be {len(tops) - 1} increasing points inside 0..{shape[axis]}")
        sizes = [b - a for a, b in zip([0, *points], [*points, shape[axis]])]
    elif shape[axis] % len(tops):
        raise layer.fail(f"axis {axis} of size {shape[axis]} does not split evenly into {len(tops)} tops")
    else:
        sizes = [shape[axis] // len(tops)] * len(tops)
    if len(tops) == 1:
        return [(layer.inputs[0], shape)]
    outs = [g.fresh(top) for top in tops]
    g.nodes.append(helper.make_node("Split", [layer.inputs[0], g.ints(f"{layer.param.name}/split", sizes)], outs,
                                    name=g.fresh(f"{layer.param.name}/Split"), axis=axis))
    return [(out, (*shape[:axis], size, *shape[axis + 1:])) for out, size in zip(outs, sizes)]


def split(g: Graph, layer: Layer) -> Output:
    """Every top is the bottom (Caffe shares the data)."""
    if len(layer.inputs) != 1:
        raise layer.fail(f"expected 1 bottom, found {len(layer.inputs)}")
    return [(layer.inputs[0], layer.shapes[0]) for _ in layer.param.top]


def dropout(g: Graph, layer: Layer) -> Output:
    """TEST phase: y = x."""
    layer.bottoms(1)
    return [(layer.inputs[0], layer.shapes[0])]


def flatten(g: Graph, layer: Layer) -> Output:
    """Axes axis..end_axis (inclusive) merged into one."""
    layer.bottoms(1)
    p, shape = layer.param.flatten_param, layer.shapes[0]
    axis = layer.axis(p.axis, len(shape))
    end = layer.axis(p.end_axis, len(shape))
    if end < axis:
        raise layer.fail(f"end_axis {p.end_axis} comes before axis {p.axis}")
    out = (*shape[:axis], int(np.prod(shape[axis:end + 1])), *shape[end + 1:])
    if axis == 1 and end == len(shape) - 1:
        return [(g.node("Flatten", layer.inputs, layer.top, axis=1), out)]
    return [(g.node("Reshape", [layer.inputs[0], g.ints(f"{layer.param.name}/shape", [0, *out[1:]])], layer.top), out)]


def reshape(g: Graph, layer: Layer) -> Output:
    """Axes [axis, axis + num_axes) replaced by shape.dim: 0 copies the bottom's size there, -1 is inferred."""
    layer.bottoms(1)
    p, shape = layer.param.reshape_param, layer.shapes[0]
    rank, dims = len(shape), list(p.shape.dim)
    start = p.axis if p.axis >= 0 else rank + p.axis + 1
    end = rank if p.num_axes == -1 else start + p.num_axes
    if not 0 <= start <= end <= rank or p.num_axes < -1:
        raise layer.fail(f"axis {p.axis} and num_axes {p.num_axes} do not fit a {rank}-D input")
    new = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= end:
                raise layer.fail(f"dim {i} is 0 (copy) but the bottom has no axis {start + i} in the replaced range")
            new.append(shape[start + i])
        elif d < -1 or (d == -1 and dims.count(-1) > 1):
            raise layer.fail(f"shape {dims}: sizes are positive, 0 (copy) or one -1 (inferred)")
        else:
            new.append(d)
    out = [*shape[:start], *new, *shape[end:]]
    known = int(np.prod([d for d in out if d != -1]))
    total = int(np.prod(shape))
    if -1 in out:
        if known == 0 or total % known:
            raise layer.fail(f"cannot reshape {list(shape)} to {dims}")
        out[out.index(-1)] = total // known
    if int(np.prod(out)) != total:
        raise layer.fail(f"cannot reshape {list(shape)} ({plural(total, 'value')}) to {out}")
    if start == 0 and dims and dims[0] != 0:
        raise layer.fail("reshapes the batch axis, which edge keeps as it is")
    return [(g.node("Reshape", [layer.inputs[0], g.ints(f"{layer.param.name}/shape", [0, *out[1:]])], layer.top),
             tuple(out))]


def softmax(g: Graph, layer: Layer) -> Output:
    """y = exp(x - max) / sum exp(x - max) over the one axis `axis` (ONNX Softmax from opset 13)."""
    layer.bottoms(1)
    shape = layer.shapes[0]
    axis = layer.axis(layer.param.softmax_param.axis, len(shape))
    return [(g.node("Softmax", layer.inputs, layer.top, axis=axis), shape)]


CONVERTERS = {
    "Convolution": convolution, "Deconvolution": deconvolution, "Pooling": pooling, "InnerProduct": inner_product,
    "ReLU": relu, "PReLU": prelu, "Sigmoid": _unary("Sigmoid"), "TanH": _unary("Tanh"), "AbsVal": _unary("Abs"),
    "ELU": elu, "Power": power, "LRN": lrn, "BatchNorm": batch_norm, "Scale": scale, "Bias": bias,
    "Eltwise": eltwise, "Concat": concat, "Slice": slice_, "Split": split, "Flatten": flatten, "Reshape": reshape,
    "Dropout": dropout, "Softmax": softmax,
}
SUPPORTED = sorted([*CONVERTERS, "Input"])


def check_supported(net: Net, prototxt: Path) -> None:
    for layer in net.layers:
        if not layer.type:
            raise EdgeError(f"{prototxt}: layer '{layer.name}' has no type (V0-format nets, from before 2014, are "
                            "not read; upgrade them with Caffe's upgrade_net_proto_text)")
        if layer.type not in CONVERTERS:
            raise EdgeError(f"{prototxt}: layer '{layer.name}' has type '{layer.type}', which edge cannot convert; "
                            f"supported: {', '.join(SUPPORTED)}")


def fold_scale_into_batch_norm(graph: onnx.GraphProto, ranks: dict[str, int]) -> None:
    """BatchNormalization(scale 1, B 0) -> Mul(s) [-> Add(b)], each the only reader of the one before: one node.
    `ranks` gives tensors' ranks: s and b must broadcast onto axis 1, the channels, to fold.

    Exact in real arithmetic (Caffe's BatchNorm + Scale pair is ONNX BatchNormalization with scale s and B b);
    rounding may differ in the last bit.
    """
    constants = {t.name: t for t in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def per_channel_reader(tensor: str, op: str, channels: int, rank: int) -> tuple[onnx.NodeProto, np.ndarray] | None:
        """The one node reading `tensor` (of `rank` axes), if it is `op` with a (channels, 1, ...) constant as second
        input: one that broadcasts onto axis 1."""
        nodes = readers.get(tensor, [])
        if tensor in outputs or len(nodes) != 1 or nodes[0].op_type != op or nodes[0].input[0] != tensor:
            return None
        constant = constants.get(nodes[0].input[1])
        if (constant is None or not constant.dims or constant.dims[0] != channels
                or any(d != 1 for d in constant.dims[1:])):
            return None
        if len(constant.dims) != rank - 1:  # (C, 1) on N x C x H x W is per row, not per channel
            return None
        return nodes[0], numpy_helper.to_array(constant).reshape(channels)

    folded = []
    for bn in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        gamma, beta = (numpy_helper.to_array(constants[name]) for name in bn.input[1:3])
        rank = ranks.get(bn.input[0], 0)  # Mul and Add keep it
        mul = per_channel_reader(bn.output[0], "Mul", gamma.shape[0], rank)
        if mul is None or not (gamma == 1).all() or not (beta == 0).all():
            continue
        constants[bn.input[1]].CopyFrom(numpy_helper.from_array(mul[1], bn.input[1]))
        last = mul[0]
        add = per_channel_reader(last.output[0], "Add", gamma.shape[0], rank)
        if add is not None:
            constants[bn.input[2]].CopyFrom(numpy_helper.from_array(add[1], bn.input[2]))
            last = add[0]
        bn.output[0] = last.output[0]
        folded += [mul[0]] + ([add[0]] if add is not None else [])
    for node in folded:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)


def build_graph(net: Net, weights: Weights, prototxt: Path, caffemodel: Path) -> onnx.ModelProto:
    """Walks the layers (already checked by check_supported) in order, as Caffe's Net does, keeping for each blob
    name its latest tensor."""
    g = Graph()
    input_name = g.fresh(net.input_name)
    current = {net.input_name: (input_name, net.input_shape)}
    available = [net.input_name]  # blobs no later layer has read yet: at the end, the net's outputs
    ranks = {input_name: len(net.input_shape)}
    for param in net.layers:
        missing = [b for b in param.bottom if b not in current]
        if missing:
            raise EdgeError(f"{prototxt}: layer '{param.name}' ({param.type}) reads blob '{missing[0]}', which no "
                            "earlier layer makes")
        for i, top in enumerate(param.top):
            in_place = i < len(param.bottom) and param.bottom[i] == top
            if top in current and not in_place:
                raise EdgeError(f"{prototxt}: layer '{param.name}' writes blob '{top}', which another layer makes "
                                "(Caffe allows only in-place reuse)")
        layer = Layer(param, [current[b][0] for b in param.bottom], [current[b][1] for b in param.bottom],
                      weights.blobs.get(param.name, []), prototxt, caffemodel)
        outputs = CONVERTERS[param.type](g, layer)
        for b in param.bottom:
            if b in available:
                available.remove(b)
        for top, output in zip(param.top, outputs):
            current[top] = output
            ranks[output[0]] = len(output[1])
            if top not in available:
                available.append(top)
    if len(available) != 1:
        raise EdgeError(f"{prototxt}: expected one net output, found {len(available)}: "
                        f"{', '.join(available) or 'none'}")
    output_blob = available[0]
    output, output_shape = current[output_blob]
    output = _name_output(g, output, output_blob, input_name)
    c, h, w = net.input_shape[1:]
    graph = helper.make_graph(
        g.nodes, prototxt.stem,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [BATCH, c, h, w])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [BATCH, *output_shape[1:]])],
        g.initializers,
    )
    fold_scale_into_batch_norm(graph, ranks)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                             producer_name="edge")


def _name_output(g: Graph, output: str, blob: str, input_name: str) -> str:
    """The output tensor takes the Caffe blob's name ('prob'), which an earlier in-place version may hold."""
    if output == input_name:  # the net only passes its input through
        return g.node("Identity", [output], blob)
    if output == blob or blob == input_name:  # the input keeps its name; an in-place output on it cannot
        return output
    if blob in g.used:
        _rename(g, blob, g.fresh(f"{blob}_0"))
    _rename(g, output, blob)
    return blob


def _rename(g: Graph, old: str, new: str) -> None:
    for node in g.nodes:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new
    for tensor in g.initializers:
        if tensor.name == old:
            tensor.name = new
