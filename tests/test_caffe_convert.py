"""Caffe -> ONNX: differential tests against OpenCV 4.x's Caffe importer, and numpy formulas where OpenCV departs
from Caffe (LRN's k, InnerProduct's transpose, round_mode: FLOOR; see shared/reference/opencv_caffe_notes.md)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format

from edge.caffe import convert_caffe, schema
from edge.errors import EdgeError

from caffe_helpers import one_layer_net, onnx_forward, opencv_forward, random_caffemodel

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
    pytest.skip("needs OpenCV 4.x with cv2.dnn.readNetFromCaffe", allow_module_level=True)

SHARED_NETS = ["squeezenet_v1.0", "squeezenet_v1.1", "mobilenet_v1", "mobilenet_v2"]


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """The acceptance rule: largest absolute difference at most 1e-4 of the largest magnitude."""
    expected = expected.reshape(actual.shape)
    assert np.isfinite(expected).all() and np.abs(expected).max() > 0
    diff = np.abs(actual - expected).max()
    assert diff <= 1e-4 * np.abs(expected).max(), f"max |diff| {diff:.3g}, max |expected| {np.abs(expected).max():.3g}"


def convert_text(tmp_path: Path, text: str, seed: int = 0, **weights) -> tuple[Path, Path, onnx.ModelProto]:
    prototxt, caffemodel = tmp_path / "deploy.prototxt", tmp_path / "net.caffemodel"
    prototxt.write_text(text)
    random_caffemodel(prototxt, caffemodel, seed=seed, **weights)
    model = convert_caffe(prototxt, caffemodel).model
    onnx.checker.check_model(model, full_check=True)
    return prototxt, caffemodel, model


def against_opencv(tmp_path: Path, text: str, shape: tuple[int, ...], seed: int = 0, **weights) -> onnx.ModelProto:
    prototxt, caffemodel, model = convert_text(tmp_path, text, seed, **weights)
    x = np.random.default_rng(seed + 1).normal(0, 1, shape).astype(np.float32)
    assert_close(onnx_forward(model, x), opencv_forward(prototxt, caffemodel, x))
    return model


def without_last_softmax(prototxt: Path, out: Path) -> Path:
    net = text_format.Parse(prototxt.read_text(), schema.NetParameter())
    assert net.layer[-1].type == "Softmax"
    del net.layer[-1]
    out.write_text(text_format.MessageToString(net))
    return out


# ---- every shared prototxt, random weights, vs OpenCV ----

@pytest.mark.parametrize("name", SHARED_NETS)
def test_shared_net_matches_opencv(shared: Path, tmp_path: Path, name: str) -> None:
    deploy = shared / "models" / "caffe" / name / "deploy.prototxt"
    logits = without_last_softmax(deploy, tmp_path / "logits.prototxt")
    caffemodel = tmp_path / "net.caffemodel"
    random_caffemodel(deploy, caffemodel, seed=7)  # with train_val's Data/loss/Accuracy layers, which must be skipped
    conversion = convert_caffe(deploy, caffemodel)
    model = conversion.model
    onnx.checker.check_model(model, full_check=True)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, *[224 if "mobile" in name else 227] * 2]
    assert model.graph.output[0].name == "prob"
    rng = np.random.default_rng(3)
    # inputs at the scale each net sees: mobilenets take (pixel - mean) * 0.017, squeezenets pixel - mean
    batch = rng.normal(0, 1.0 if "mobile" in name else 50.0, (3, *[d.dim_value for d in dims[1:]])).astype(np.float32)
    assert_close(onnx_forward(model, batch), opencv_forward(deploy, caffemodel, batch))
    logits_model = convert_caffe(logits, caffemodel).model
    expected = opencv_forward(logits, caffemodel, batch)
    assert np.abs(expected).max() > 1.0  # the logits compare real numbers, not a saturated softmax
    assert_close(onnx_forward(logits_model, batch), expected)


def test_deploy_with_legacy_v1_caffemodel(shared: Path, tmp_path: Path) -> None:
    """As with BVLC AlexNet/CaffeNet: a V2 deploy.prototxt, weights in a V1 (`layers`) file with 4-D legacy blobs."""
    deploy = shared / "models" / "caffe" / "squeezenet_v1.0" / "deploy.prototxt"
    caffemodel = tmp_path / "v1.caffemodel"
    random_caffemodel(deploy, caffemodel, seed=5, v1=True, legacy=True)
    assert len(schema.NetParameter.FromString(caffemodel.read_bytes()).layers) > 0
    model = convert_caffe(deploy, caffemodel).model
    batch = np.random.default_rng(8).normal(0, 50, (2, 3, 227, 227)).astype(np.float32)
    assert_close(onnx_forward(model, batch), opencv_forward(deploy, caffemodel, batch))


# ---- one layer and its corner cases, vs OpenCV ----

CONV = 'layer {{ name: "l" type: "Convolution" bottom: "data" top: "out" convolution_param {{ {} }} }}'
POOL = 'layer {{ name: "l" type: "Pooling" bottom: "data" top: "out" pooling_param {{ {} }} }}'

OPENCV_CASES = {
    "conv pad stride bias": (CONV.format("num_output: 5 kernel_size: 3 pad: 1 stride: 2"), (2, 4, 9, 9)),
    "conv group dilation h/w": (CONV.format("num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 "
                                            "pad_h: 2 pad_w: 0 group: 2 dilation: 2 bias_term: false"), (2, 4, 11, 10)),
    "depthwise conv": (CONV.format("num_output: 4 kernel_size: 3 pad: 1 group: 4"), (2, 4, 8, 8)),
    "deconvolution": ('layer { name: "l" type: "Deconvolution" bottom: "data" top: "out" convolution_param { '
                      'num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 } }', (2, 4, 5, 6)),
    # H: 4 + 2 - 2 over stride 3 rounds up to 3 windows, the third starts in the padding and is clipped away;
    # W: 10 + 2 - 3 over 2 rounds up: the last window hangs past the padding (AVE must not count the overhang)
    "max ceil, clip, overhang": (POOL.format("pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 3 stride_w: 2 "
                                             "pad_h: 1 pad_w: 1"), (2, 3, 4, 10)),
    "ave ceil, clip, overhang": (POOL.format("pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 3 stride_w: 2 "
                                             "pad_h: 1 pad_w: 1"), (2, 3, 4, 10)),
    "ave pad, no overhang": (POOL.format("pool: AVE kernel_size: 3 stride: 2 pad: 1"), (2, 3, 9, 9)),
    "ave overhang, no pad": (POOL.format("pool: AVE kernel_size: 3 stride: 2"), (2, 3, 8, 8)),
    "max overhang, no pad": (POOL.format("pool: MAX kernel_size: 3 stride: 2"), (2, 3, 8, 8)),
    "max ceil_mode false": (POOL.format("pool: MAX kernel_size: 3 stride: 2 ceil_mode: false"), (2, 3, 8, 8)),
    "ave ceil_mode false": (POOL.format("pool: AVE kernel_size: 3 stride: 2 pad: 1 ceil_mode: false"), (2, 3, 8, 8)),
    "global ave": (POOL.format("pool: AVE global_pooling: true"), (2, 3, 7, 5)),
    "global max": (POOL.format("pool: MAX global_pooling: true"), (2, 3, 7, 5)),
    "lrn across": ('layer { name: "l" type: "LRN" bottom: "data" top: "out" lrn_param { local_size: 5 '
                   'alpha: 0.3 beta: 0.75 } }', (2, 7, 4, 4)),
    "lrn within": ('layer { name: "l" type: "LRN" bottom: "data" top: "out" lrn_param { local_size: 3 '
                   'alpha: 0.5 beta: 0.6 norm_region: WITHIN_CHANNEL } }', (2, 3, 6, 5)),
    "inner product": ('layer { name: "l" type: "InnerProduct" bottom: "data" top: "out" '
                      'inner_product_param { num_output: 7 } }', (2, 3, 4, 5)),
    "batchnorm + scale, in place": (
        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "y" batch_norm_param { eps: 0.001 } }\n'
        'layer { name: "sc" type: "Scale" bottom: "y" top: "y" scale_param { bias_term: true } }', (2, 4, 3, 3)),
    "batchnorm alone": ('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "out" }', (2, 4, 3, 3)),
    "scale without bias": ('layer { name: "sc" type: "Scale" bottom: "data" top: "out" }', (2, 4, 3, 3)),
    "prelu": ('layer { name: "l" type: "PReLU" bottom: "data" top: "out" }', (2, 4, 3, 3)),
    "prelu shared": ('layer { name: "l" type: "PReLU" bottom: "data" top: "out" prelu_param { channel_shared: true } }',
                     (2, 4, 3, 3)),
    "relu slope, elu, abs, sigmoid, tanh": (
        'layer { name: "a" type: "ReLU" bottom: "data" top: "a" relu_param { negative_slope: 0.1 } }\n'
        'layer { name: "b" type: "ELU" bottom: "a" top: "b" elu_param { alpha: 0.7 } }\n'
        'layer { name: "c" type: "AbsVal" bottom: "b" top: "c" }\n'
        'layer { name: "d" type: "TanH" bottom: "c" top: "d" }\n'
        'layer { name: "e" type: "Sigmoid" bottom: "d" top: "out" }', (2, 3, 4, 4)),
    "power": ('layer { name: "l" type: "Power" bottom: "data" top: "out" '
              'power_param { power: 2 scale: 0.5 shift: 1 } }', (2, 3, 4, 4)),
    "slice, eltwise sum coeffs, prod, max, concat": (
        'layer { name: "sl" type: "Slice" bottom: "data" top: "a" top: "b" top: "c" slice_param { slice_point: 2 '
        'slice_point: 4 } }\n'
        'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "sum" '
        'eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 1 } }\n'
        'layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "b" top: "prod" eltwise_param { operation: PROD } }\n'
        'layer { name: "max" type: "Eltwise" bottom: "b" bottom: "c" top: "max" eltwise_param { operation: MAX } }\n'
        'layer { name: "cat" type: "Concat" bottom: "sum" bottom: "prod" bottom: "max" top: "out" }', (2, 6, 3, 3)),
    "split, dropout, flatten, softmax": (
        'layer { name: "sp" type: "Split" bottom: "data" top: "x1" top: "x2" }\n'
        'layer { name: "add" type: "Eltwise" bottom: "x1" bottom: "x2" top: "y" }\n'
        'layer { name: "drop" type: "Dropout" bottom: "y" top: "y" dropout_param { dropout_ratio: 0.3 } }\n'
        'layer { name: "fl" type: "Flatten" bottom: "y" top: "f" }\n'
        'layer { name: "sm" type: "Softmax" bottom: "f" top: "out" }', (2, 3, 2, 2)),
    "reshape": ('layer { name: "r" type: "Reshape" bottom: "data" top: "out" reshape_param { shape { dim: 0 dim: -1 '
                'dim: 4 } } }', (2, 3, 4, 2)),
    "softmax over channels": ('layer { name: "sm" type: "Softmax" bottom: "data" top: "out" }', (2, 5, 3, 3)),
}


@pytest.mark.parametrize("case", sorted(OPENCV_CASES))
def test_layer_matches_opencv(tmp_path: Path, case: str) -> None:
    layers, shape = OPENCV_CASES[case]
    against_opencv(tmp_path, one_layer_net(layers, shape), shape)


def test_v1_layers_with_input_dim(tmp_path: Path) -> None:
    """A V1 net (`layers`, enum types) with `input` + `input_dim`, and a V1 caffemodel with legacy 4-D blobs."""
    text = ('name: "v1"\ninput: "data"\ninput_dim: 2\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
            'layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" convolution_param { num_output: 4 '
            'kernel_size: 3 } }\n'
            'layers { name: "relu" type: RELU bottom: "conv" top: "conv" }\n'
            'layers { name: "pool" type: POOLING bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 3 '
            'stride: 2 } }\n'
            'layers { name: "norm" type: LRN bottom: "pool" top: "norm" lrn_param { local_size: 3 alpha: 0.1 } }\n'
            'layers { name: "fc" type: INNER_PRODUCT bottom: "norm" top: "fc" inner_product_param { num_output: 5 } }\n'
            'layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }\n')
    model = against_opencv(tmp_path, text, (2, 3, 8, 8), v1=True, legacy=True)
    assert model.graph.output[0].name == "prob"


def test_input_layer_form(tmp_path: Path) -> None:
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 6 dim: 6 } } }\n'
            + CONV.format("num_output: 2 kernel_size: 3"))
    against_opencv(tmp_path, text, (2, 3, 6, 6))


def test_in_place_on_the_input(tmp_path: Path) -> None:
    text = one_layer_net('layer { name: "r" type: "ReLU" bottom: "data" top: "data" }', (1, 3, 4, 4))
    model = against_opencv(tmp_path, text, (2, 3, 4, 4))
    assert model.graph.output[0].name != model.graph.input[0].name == "data"


def test_in_place_chain_keeps_output_name(tmp_path: Path) -> None:
    text = one_layer_net(CONV.format("num_output: 2 kernel_size: 1") +
                         '\nlayer { name: "r" type: "ReLU" bottom: "out" top: "out" }', (1, 3, 4, 4))
    model = against_opencv(tmp_path, text, (2, 3, 4, 4))
    assert model.graph.output[0].name == "out"


def test_batchnorm_scale_fold_into_one_node(tmp_path: Path) -> None:
    layers, shape = OPENCV_CASES["batchnorm + scale, in place"]
    model = against_opencv(tmp_path, one_layer_net(layers, shape), shape)
    assert [n.op_type for n in model.graph.node] == ["BatchNormalization"]


def test_transform_param_gives_mean_and_scale(tmp_path: Path) -> None:
    text = ('layer { name: "data" type: "Input" top: "data" transform_param { scale: 0.017 mean_value: 104 '
            'mean_value: 117 mean_value: 123 } input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }\n'
            + CONV.format("num_output: 2 kernel_size: 1"))
    prototxt, caffemodel, _ = convert_text(tmp_path, text)
    conversion = convert_caffe(prototxt, caffemodel)
    assert conversion.mean_values == (104.0, 117.0, 123.0)
    assert conversion.scale == pytest.approx(0.017)
    plain, _, _ = convert_text(tmp_path, one_layer_net(CONV.format("num_output: 2 kernel_size: 1"), (1, 3, 4, 4)))
    assert (convert_caffe(plain, caffemodel).mean_values, convert_caffe(plain, caffemodel).scale) == (None, None)


# ---- where OpenCV departs from Caffe: numpy formulas from Caffe's CPU code ----

def caffe_pool(x: np.ndarray, kernel, stride, pad, out, ave: bool) -> np.ndarray:
    """pooling_layer.cpp Forward_cpu, loop for loop."""
    n, c, h, w = x.shape
    y = np.empty((n, c, *out), np.float32)
    for i in range(out[0]):
        for j in range(out[1]):
            hs, ws = i * stride[0] - pad[0], j * stride[1] - pad[1]
            he, we = min(hs + kernel[0], h + pad[0]), min(ws + kernel[1], w + pad[1])
            size = (he - hs) * (we - ws)
            window = x[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)]
            y[:, :, i, j] = window.sum(axis=(2, 3)) / size if ave else window.max(axis=(2, 3))
    return y


def caffe_pooled(size, kernel, stride, pad, ceil=True):
    steps = (size + 2 * pad - kernel) / stride
    out = (math.ceil(steps) if ceil else math.floor(steps)) + 1
    return out - 1 if pad and (out - 1) * stride >= size + pad else out


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("geometry", [((3, 3), (2, 2), (1, 1), (8, 10)), ((2, 3), (3, 2), (1, 1), (4, 10)),
                                      ((3, 3), (2, 2), (0, 0), (8, 7)), ((5, 5), (3, 3), (2, 2), (7, 13))])
@pytest.mark.parametrize("round_mode", ["CEIL", "FLOOR"])
def test_pooling_matches_caffe_formula(tmp_path: Path, pool: str, geometry, round_mode: str) -> None:
    kernel, stride, pad, size = geometry
    text = one_layer_net(POOL.format(f"pool: {pool} kernel_h: {kernel[0]} kernel_w: {kernel[1]} stride_h: {stride[0]} "
                                     f"stride_w: {stride[1]} pad_h: {pad[0]} pad_w: {pad[1]} round_mode: {round_mode}"),
                         (1, 3, *size))
    _, _, model = convert_text(tmp_path, text)
    x = np.random.default_rng(5).normal(0, 1, (2, 3, *size)).astype(np.float32)
    any_pad = any(pad)
    out = [caffe_pooled(i, k, s, p if any_pad else 0, round_mode == "CEIL")
           for i, k, s, p in zip(size, kernel, stride, pad)]
    if any_pad:  # Caffe clips both axes when either has padding
        out = [o - 1 if (o - 1) * s >= i + p else o for o, s, i, p in zip(out, stride, size, pad)]
    assert_close(onnx_forward(model, x), caffe_pool(x, kernel, stride, pad, out, pool == "AVE"))


def test_lrn_across_with_k_matches_caffe_formula(tmp_path: Path) -> None:
    """OpenCV ignores LRN's k; Caffe: y = x (k + alpha/size sum x^2)^-beta over size channels."""
    text = one_layer_net('layer { name: "l" type: "LRN" bottom: "data" top: "out" lrn_param { local_size: 3 '
                         'alpha: 0.2 beta: 0.75 k: 2 } }', (1, 5, 3, 3))
    _, _, model = convert_text(tmp_path, text)
    x = np.random.default_rng(2).normal(0, 2, (2, 5, 3, 3)).astype(np.float32)
    padded = np.pad(x * x, ((0, 0), (1, 1), (0, 0), (0, 0)))
    sums = padded[:, 0:5] + padded[:, 1:6] + padded[:, 2:7]
    assert_close(onnx_forward(model, x), x * (2 + 0.2 / 3 * sums) ** -0.75)


def test_lrn_within_channel_ignores_k(tmp_path: Path) -> None:
    """Caffe's WITHIN_CHANNEL builds 1 + alpha/size^2 * box sum, whatever k says."""
    text = one_layer_net('layer { name: "l" type: "LRN" bottom: "data" top: "out" lrn_param { local_size: 3 '
                         'alpha: 0.4 beta: 0.5 k: 5 norm_region: WITHIN_CHANNEL } }', (1, 2, 4, 5))
    _, _, model = convert_text(tmp_path, text)
    x = np.random.default_rng(2).normal(0, 2, (2, 2, 4, 5)).astype(np.float32)
    padded = np.pad(x * x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    box = sum(padded[:, :, i:i + 4, j:j + 5] for i in range(3) for j in range(3))
    assert_close(onnx_forward(model, x), x * (1 + 0.4 / 9 * box) ** -0.5)


def test_inner_product_transpose_and_axis(tmp_path: Path) -> None:
    """OpenCV misreads transpose: true; Caffe: y = x' W + b with W stored K x N; axis 2 keeps the first axes."""
    text = one_layer_net('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "out" inner_product_param { '
                         'num_output: 3 transpose: true axis: 2 } }', (1, 4, 5, 2))
    _, caffemodel, model = convert_text(tmp_path, text)
    net = schema.NetParameter.FromString(caffemodel.read_bytes())
    blobs = next(layer.blobs for layer in net.layer if layer.name == "fc")
    weight = np.array(blobs[0].data, np.float32).reshape(10, 3)
    b = np.array(blobs[1].data, np.float32)
    x = np.random.default_rng(1).normal(0, 1, (2, 4, 5, 2)).astype(np.float32)
    assert_close(onnx_forward(model, x), x.reshape(2, 4, 10) @ weight + b)


def test_bias_and_two_bottom_scale(tmp_path: Path) -> None:
    """OpenCV has no Bias layer. y = (a + b_c) * c + c, where a and c are halves of x (Scale/Bias with 2 bottoms)."""
    text = one_layer_net(
        'layer { name: "sl" type: "Slice" bottom: "data" top: "a" top: "c" }\n'
        'layer { name: "bias" type: "Bias" bottom: "a" top: "a" }\n'
        'layer { name: "mul" type: "Scale" bottom: "a" bottom: "c" top: "m" scale_param { axis: 0 } }\n'
        'layer { name: "add" type: "Bias" bottom: "m" bottom: "c" top: "out" bias_param { axis: 0 } }', (1, 4, 3, 3))
    _, caffemodel, model = convert_text(tmp_path, text)
    net = schema.NetParameter.FromString(caffemodel.read_bytes())
    b = np.array(next(layer for layer in net.layer if layer.name == "bias").blobs[0].data, np.float32)
    x = np.random.default_rng(1).normal(0, 1, (2, 4, 3, 3)).astype(np.float32)
    a, c = x[:, :2], x[:, 2:]
    assert_close(onnx_forward(model, x), (a + b[:, None, None]) * c + c)


def test_power_constant_case(tmp_path: Path) -> None:
    """power * scale == 0: Caffe writes the constant shift^power (1 when power is 0) everywhere."""
    text = one_layer_net('layer { name: "p" type: "Power" bottom: "data" top: "out" power_param { power: 3 scale: 0 '
                         'shift: 2 } }', (1, 2, 3, 3))
    _, _, model = convert_text(tmp_path, text)
    x = np.random.default_rng(1).normal(0, 1, (2, 2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(onnx_forward(model, x), np.full_like(x, 8.0))


def test_batch_norm_zero_scale_factor(tmp_path: Path) -> None:
    """blobs[2] == 0 means mean and variance 0: y = x / sqrt(eps)."""
    text = one_layer_net('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "out" }', (1, 2, 2, 2))
    prototxt, caffemodel, _ = convert_text(tmp_path, text)
    net = schema.NetParameter.FromString(caffemodel.read_bytes())
    bn = next(layer for layer in net.layer if layer.name == "bn")
    bn.blobs[2].data[0] = 0.0
    caffemodel.write_bytes(net.SerializeToString())
    model = convert_caffe(prototxt, caffemodel).model
    x = np.random.default_rng(1).normal(0, 1, (1, 2, 2, 2)).astype(np.float32)
    assert_close(onnx_forward(model, x), x / np.sqrt(np.float32(1e-5)))


def test_prelu_shared_slope_as_caffe_writes_it(tmp_path: Path) -> None:
    """Caffe saves the shared slope as a 0-axis blob with an empty `shape {}` (OpenCV cannot read that form)."""
    text = one_layer_net('layer { name: "p" type: "PReLU" bottom: "data" top: "out" '
                         'prelu_param { channel_shared: true } }', (1, 2, 3, 3))
    prototxt, caffemodel, _ = convert_text(tmp_path, text)
    net = schema.NetParameter.FromString(caffemodel.read_bytes())
    blob = next(layer for layer in net.layer if layer.name == "p").blobs[0]
    blob.shape.SetInParent()
    blob.data[:] = [0.25]
    caffemodel.write_bytes(net.SerializeToString())
    x = np.random.default_rng(1).normal(0, 1, (2, 2, 3, 3)).astype(np.float32)
    out = onnx_forward(convert_caffe(prototxt, caffemodel).model, x)
    np.testing.assert_allclose(out, np.maximum(x, 0) + 0.25 * np.minimum(x, 0), rtol=1e-6)


def test_transform_param_from_the_caffemodel(tmp_path: Path) -> None:
    """A deploy net without transform_param: the training net's TEST data layer, kept in the caffemodel, says it."""
    text = one_layer_net(CONV.format("num_output: 2 kernel_size: 1"), (1, 3, 4, 4))
    prototxt, caffemodel, _ = convert_text(tmp_path, text)
    net = schema.NetParameter.FromString(caffemodel.read_bytes())
    train = net.layer.add(name="train_data", type="Data")
    train.include.add(phase=schema.ENUMS["Phase"]["TRAIN"])
    train.transform_param.scale = 0.5
    data = next(layer for layer in net.layer if layer.name == "data")
    data.include.add(phase=schema.ENUMS["Phase"]["TEST"])
    data.transform_param.mean_value[:] = [128.0]
    caffemodel.write_bytes(net.SerializeToString())
    conversion = convert_caffe(prototxt, caffemodel)
    assert (conversion.mean_values, conversion.scale) == ((128.0, 128.0, 128.0), None)


def test_double_data_blobs(tmp_path: Path) -> None:
    text = one_layer_net('layer { name: "sc" type: "Scale" bottom: "data" top: "out" }', (1, 3, 2, 2))
    prototxt, caffemodel, _ = convert_text(tmp_path, text)
    net = schema.NetParameter.FromString(caffemodel.read_bytes())
    blob = next(layer for layer in net.layer if layer.name == "sc").blobs[0]
    blob.double_data.extend([2.0, 3.0, 4.0])
    del blob.data[:]
    caffemodel.write_bytes(net.SerializeToString())
    x = np.ones((1, 3, 2, 2), np.float32)
    out = onnx_forward(convert_caffe(prototxt, caffemodel).model, x)
    np.testing.assert_array_equal(out[0, :, 0, 0], [2, 3, 4])


# ---- refusals: one line, naming the file and the layer ----

def test_unsupported_layer_is_refused_with_the_list(tmp_path: Path) -> None:
    text = one_layer_net('layer { name: "odd" type: "Threshold" bottom: "data" top: "out" }', (1, 3, 4, 4))
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(text)
    with pytest.raises(EdgeError) as e:
        convert_caffe(prototxt, tmp_path / "missing.caffemodel")  # refused before the weights are read
    message = str(e.value)
    assert "\n" not in message and str(prototxt) in message and "'odd'" in message and "Threshold" in message
    assert "Convolution" in message and "Pooling" in message


@pytest.mark.parametrize("mangle, expected", [
    ("missing", "no weights for this layer"),
    ("wrong shape", "expected [2, 3, 1, 1]"),
    ("blob count", "1 weight blobs, the prototxt needs 2"),
])
def test_weights_that_do_not_fit(tmp_path: Path, mangle: str, expected: str) -> None:
    text = one_layer_net(CONV.format("num_output: 2 kernel_size: 1"), (1, 3, 4, 4))
    prototxt, caffemodel, _ = convert_text(tmp_path, text)
    net = schema.NetParameter.FromString(caffemodel.read_bytes())
    conv = next(layer for layer in net.layer if layer.name == "l")
    if mangle == "missing":
        conv.name = "renamed"
    elif mangle == "wrong shape":
        conv.blobs[0].data.append(0.0)
        conv.blobs[0].shape.dim[:] = [7]
    else:
        del conv.blobs[1]
    caffemodel.write_bytes(net.SerializeToString())
    with pytest.raises(EdgeError, match="l' \\(Convolution\\)") as e:
        convert_caffe(prototxt, caffemodel)
    assert expected in str(e.value) and str(caffemodel) in str(e.value)


@pytest.mark.parametrize("text, expected", [
    ('input: "data"\n' + CONV.format("num_output: 2 kernel_size: 1"), "no input_shape or input_dim"),
    ('input: "data"\ninput_dim: 1\ninput_dim: 3\n', "need 4 input_dim values"),
    (one_layer_net(CONV.format("num_output: 2 kernel_size: 1 bogus: 3")), "bogus"),
    (one_layer_net(CONV.format("num_output: 3 kernel_size: 1 group: 2")), "must both divide by group 2"),
    (one_layer_net(POOL.format("pool: MAX kernel_size: 2 pad: 2")), "pad (2, 2) must be smaller than the kernel"),
    (one_layer_net(POOL.format("pool: STOCHASTIC kernel_size: 2")), "STOCHASTIC"),
    (one_layer_net(POOL.format("pool: MAX kernel_size: 1 stride: 3"), (1, 2, 5, 5)), "wholly outside"),
    (one_layer_net('layer { name: "r" type: "ReLU" bottom: "nothing" top: "out" }'), "reads blob 'nothing'"),
    (one_layer_net('layer { name: "a" type: "ReLU" bottom: "data" top: "x" }\n'
                   'layer { name: "b" type: "ReLU" bottom: "data" top: "x" }'), "writes blob 'x'"),
    (one_layer_net('layer { name: "s" type: "Split" bottom: "data" top: "a" top: "b" }'), "one net output, found 2"),
    (one_layer_net('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "out" batch_norm_param { '
                   'use_global_stats: false } }'), "use_global_stats: false"),
    (one_layer_net('layer { name: "sm" type: "Softmax" bottom: "data" top: "out" softmax_param { axis: 0 } }'),
     "batch axis"),
    ('layer { name: "a" type: "Input" top: "a" top: "b" input_param { shape { dim: 1 dim: 3 dim: 2 dim: 2 } } }',
     "one net input"),
    ('input: "data"\ninput_shape { dim: 1 dim: 3 }\n', "N x C x H x W"),
    ('input: "data"\ninput_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\nlayers { name: "a" type: RELU bottom: "data" '
     'top: "a" }\nlayer { name: "b" type: "ReLU" bottom: "data" top: "b" }', "both `layer` and legacy `layers`"),
])
def test_bad_prototxt(tmp_path: Path, text: str, expected: str) -> None:
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(text)
    caffemodel = tmp_path / "net.caffemodel"
    caffemodel.write_bytes(schema.NetParameter(layer=[schema.LayerParameter(name="l", blobs=[
        schema.BlobProto(shape=schema.BlobShape(dim=[2, 3, 1, 1]), data=[0.5] * 6)])]).SerializeToString())
    with pytest.raises(EdgeError) as e:
        convert_caffe(prototxt, caffemodel)
    message = str(e.value)
    assert expected in message and "\n" not in message and str(prototxt) in message


def test_phase_rules_select_test_layers(tmp_path: Path) -> None:
    """include { phase: TRAIN } layers are dropped, exclude { phase: TEST } too; as in a train_val net."""
    text = one_layer_net(
        'layer { name: "train_only" type: "Threshold" bottom: "data" top: "t" include { phase: TRAIN } }\n'
        'layer { name: "not_test" type: "Threshold" bottom: "data" top: "u" exclude { phase: TEST } }\n'
        + CONV.format("num_output: 2 kernel_size: 1"), (1, 3, 4, 4))
    _, _, model = convert_text(tmp_path, text)
    assert [n.op_type for n in model.graph.node] == ["Conv"]


def test_scale_over_height_after_batch_norm_is_not_folded_as_per_channel(tmp_path: Path) -> None:
    """Scale with axis 2 multiplies rows; with as many rows as channels its operand is (4, 1), which the
    BatchNorm fold must not mistake for a per-channel (4, 1, 1) one."""
    text = one_layer_net('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" }\n'
                         'layer { name: "sc" type: "Scale" bottom: "data" top: "out" scale_param { axis: 2 } }',
                         (1, 4, 4, 5))
    _, caffemodel, model = convert_text(tmp_path, text)
    net = schema.NetParameter.FromString(caffemodel.read_bytes())
    bn = next(layer for layer in net.layer if layer.name == "bn")
    mean, var, factor = (np.array(b.data, np.float32) for b in bn.blobs)
    s = np.array(next(layer for layer in net.layer if layer.name == "sc").blobs[0].data, np.float32)
    x = np.random.default_rng(1).normal(0, 1, (2, 4, 4, 5)).astype(np.float32)
    normalised = (x - (mean / factor)[:, None, None]) / np.sqrt((var / factor)[:, None, None] + np.float32(1e-5))
    assert_close(onnx_forward(model, x), normalised * s[None, None, :, None])
