"""Test helpers for the Caffe converter: random caffemodels, the OpenCV reference, one-layer prototxts.

The blob shapes come from a small shape walk of its own (not the converter's), so a converter shape bug shows up
as a mismatch against OpenCV rather than being written into the test weights.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from edge.caffe import schema
from edge.caffe.reader import read_net

V1_TYPES = {v2: v1 for v1, v2 in schema.V1_TYPE_NAMES.items()}


def _pair(p, name, default):
    values = list(getattr(p, name))
    h, w = (f"{name.removesuffix('_size')}_{axis}" for axis in "hw")
    if p.HasField(h) or p.HasField(w):
        return getattr(p, h), getattr(p, w)
    return (values[0], values[-1]) if values else (default, default)


def _out_shapes(layer, shapes: list[tuple]) -> list[tuple]:
    """Top shapes of one layer from Caffe's formulas (only what the test nets use)."""
    t = layer.type
    if t in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        (kh, kw), (sh, sw), (ph, pw) = _pair(p, "kernel_size", 0), _pair(p, "stride", 1), _pair(p, "pad", 0)
        d = list(p.dilation) or [1]
        n, _, h, w = shapes[0]
        if t == "Convolution":
            size = [(i + 2 * pd - (d[0] * (k - 1) + 1)) // s + 1 for i, k, s, pd in ((h, kh, sh, ph), (w, kw, sw, pw))]
        else:
            size = [s * (i - 1) + d[0] * (k - 1) + 1 - 2 * pd for i, k, s, pd in ((h, kh, sh, ph), (w, kw, sw, pw))]
        return [(n, p.num_output, *size)]
    if t == "Pooling":
        p = layer.pooling_param
        n, c, h, w = shapes[0]
        if p.global_pooling:
            return [(n, c, 1, 1)]
        k = (p.kernel_h, p.kernel_w) if p.HasField("kernel_h") else (p.kernel_size,) * 2
        s = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride,) * 2
        pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad,) * 2
        out = []
        for i, kk, ss, pp in zip((h, w), k, s, pad):
            o = math.ceil((i + 2 * pp - kk) / ss) + 1
            if any(pad) and (o - 1) * ss >= i + pp:
                o -= 1
            out.append(o)
        return [(n, c, *out)]
    if t == "InnerProduct":
        return [(*shapes[0][:layer.inner_product_param.axis], layer.inner_product_param.num_output)]
    if t == "Concat":
        axis = layer.concat_param.axis
        first = shapes[0]
        return [(*first[:axis], sum(s[axis] for s in shapes), *first[axis + 1:])]
    if t == "Flatten":
        return [(shapes[0][0], int(np.prod(shapes[0][1:])))]
    if t == "Split":
        return [shapes[0]] * len(layer.top)
    if t == "Slice":
        p, s = layer.slice_param, shapes[0]
        points = list(p.slice_point) or [s[p.axis] * i // len(layer.top) for i in range(1, len(layer.top))]
        points = [0, *points, s[p.axis]]
        return [(*s[:p.axis], b - a, *s[p.axis + 1:]) for a, b in zip(points, points[1:])]
    return [shapes[0]]


def _blob(array: np.ndarray, legacy: bool):
    blob = schema.BlobProto()
    if legacy:  # old files: 4-D, right-aligned
        dims = (1,) * (4 - array.ndim) + array.shape
        blob.num, blob.channels, blob.height, blob.width = dims
    elif array.ndim:
        blob.shape.dim.extend(array.shape)
    # a 0-axis blob (PReLU's shared slope) is left without `shape`: Caffe writes `shape {}`, which OpenCV 4.14
    # cannot read (it asserts making a 0-D Mat); both read a blob with no shape at all as a scalar
    blob.data.extend(array.astype(np.float32).ravel().tolist())
    return blob


def _weights(layer, shapes: list[tuple], rng: np.random.Generator) -> list[np.ndarray]:
    """Realistic scales: He-normal filters, small biases, BatchNorm statistics near the unit ones."""
    t, c = layer.type, shapes[0][1]
    if t in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        (kh, kw) = _pair(p, "kernel_size", 0)
        g = p.group
        shape = (p.num_output, c // g, kh, kw) if t == "Convolution" else (c, p.num_output // g, kh, kw)
        fan_in = c // g * kh * kw
        blobs = [rng.normal(0, math.sqrt(2 / fan_in), shape)]
        return blobs + ([rng.normal(0, 0.1, p.num_output)] if p.bias_term else [])
    if t == "InnerProduct":
        p = layer.inner_product_param
        k = int(np.prod(shapes[0][p.axis:]))
        blobs = [rng.normal(0, math.sqrt(1 / k), (k, p.num_output) if p.transpose else (p.num_output, k))]
        return blobs + ([rng.normal(0, 0.1, p.num_output)] if p.bias_term else [])
    if t == "BatchNorm":
        factor = rng.uniform(0.5, 2.0)
        mean, var = rng.normal(0, 0.3, c), rng.uniform(0.5, 2.0, c)
        return [mean * factor, var * factor, np.array([factor])]
    if t == "Scale":
        blobs = [rng.uniform(0.5, 1.5, c)] if len(shapes) == 1 else []
        return blobs + ([rng.normal(0, 0.2, c)] if layer.scale_param.bias_term else [])
    if t == "Bias":
        return [rng.normal(0, 0.2, c)] if len(shapes) == 1 else []
    if t == "PReLU":
        # a shared slope is a 0-axis blob (prelu_layer.cpp)
        return [np.array(rng.uniform(0.0, 0.5)) if layer.prelu_param.channel_shared else rng.uniform(0.0, 0.5, c)]
    return []


def random_caffemodel(prototxt: Path, caffemodel: Path, seed: int = 0, v1: bool = False, legacy: bool = False,
                      train_layers: bool = True) -> None:
    """Writes weights for every layer of the deploy net, as a training run would save them.

    train_layers adds what a train_val net leaves in its caffemodel (a Data layer, an Accuracy and a loss layer),
    which a converter must skip; v1 writes the legacy `layers` form with enum types; legacy 4-D blob shapes.
    """
    rng = np.random.default_rng(seed)
    net = read_net(prototxt)
    shapes = {net.input_name: net.input_shape}
    out = schema.NetParameter(name=prototxt.stem)
    records = []
    if train_layers:
        records.append(("data", "Data", [], ["data", "label"], []))
    for layer in net.layers:
        bottom = [shapes[b] for b in layer.bottom]
        blobs = _weights(layer, bottom, rng)
        for top, shape in zip(layer.top, _out_shapes(layer, bottom)):
            shapes[top] = shape
        records.append((layer.name, layer.type, list(layer.bottom), list(layer.top), blobs))
    if train_layers:
        records.append(("loss", "SoftmaxWithLoss", [records[-1][3][0], "label"], ["loss"], []))
        records.append(("accuracy", "Accuracy", [records[-2][3][0], "label"], ["accuracy"], []))
    for name, kind, bottom, top, blobs in records:
        layer = out.layers.add() if v1 else out.layer.add()
        layer.name = name
        if v1:
            layer.type = schema.ENUMS["LayerType"][V1_TYPES[kind]]
        else:
            layer.type = kind
        layer.bottom.extend(bottom)
        layer.top.extend(top)
        layer.blobs.extend(_blob(b, legacy) for b in blobs)
    caffemodel.write_bytes(out.SerializeToString())


def opencv_forward(prototxt: Path, caffemodel: Path, batch: np.ndarray) -> np.ndarray:
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.enableFusion(False)
    net.setInput(batch)
    return net.forward()


def onnx_forward(model, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def one_layer_net(layer_text: str, input_shape=(1, 4, 9, 9), extra: str = "") -> str:
    """A prototxt with an `input_shape` input named data and the given layer(s) reading it."""
    dims = " ".join(f"dim: {d}" for d in input_shape)
    return f'name: "t"\ninput: "data"\ninput_shape {{ {dims} }}\n{layer_text}\n{extra}'


def reformat(prototxt_text: str) -> str:
    """Round trip through the schema (checks the text parses)."""
    return text_format.MessageToString(text_format.Parse(prototxt_text, schema.NetParameter()))
