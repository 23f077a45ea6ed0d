"""Damaged Caffe files: every case ends in a one-line EdgeError or a valid ONNX model; never a traceback or a hang."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.caffe import convert_caffe, read_mean_image
from edge.errors import EdgeError

from caffe_helpers import one_layer_net, random_caffemodel

NET = one_layer_net("""
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" \
convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" \
pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
""", (1, 2, 6, 6))

FUZZ = settings(max_examples=300, deadline=3000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, bytes, str]:
    folder = tmp_path_factory.mktemp("caffe-fuzz")
    prototxt, caffemodel = folder / "deploy.prototxt", folder / "net.caffemodel"
    prototxt.write_text(NET)
    random_caffemodel(prototxt, caffemodel, seed=3)
    convert_caffe(prototxt, caffemodel)  # the undamaged pair converts
    return folder, caffemodel.read_bytes(), NET


def outcome(prototxt: Path, caffemodel: Path) -> None:
    try:
        model = convert_caffe(prototxt, caffemodel).model
    except EdgeError as e:
        message = str(e)
        assert message and "\n" not in message and ("prototxt" in message or "caffemodel" in message), message
        return
    onnx.checker.check_model(model, full_check=True)


def flip(data: bytes, bits: list[int]) -> bytes:
    damaged = bytearray(data)
    for bit in bits:
        damaged[bit // 8 % len(damaged)] ^= 1 << (bit % 8)
    return bytes(damaged)


@FUZZ
@given(st.data())
def test_damaged_caffemodel(files, data) -> None:
    folder, weights, _ = files
    if data.draw(st.booleans(), label="truncate"):
        damaged = weights[:data.draw(st.integers(0, len(weights) - 1), label="length")]
    else:
        damaged = flip(weights, data.draw(st.lists(st.integers(0, 8 * len(weights) - 1), min_size=1, max_size=8),
                                          label="bits"))
    (folder / "damaged.caffemodel").write_bytes(damaged)
    outcome(folder / "deploy.prototxt", folder / "damaged.caffemodel")


TOKENS = ["{", "}", ":", "-1", "0", "3", "99999999999", "1e40", '"conv"', '"data"', "layer", "top", "bottom",
          "kernel_size", "num_output", "group", "pool", "AVE", "MAX", "axis", "pad", "stride", "\n", "#", '"']


@FUZZ
@given(st.data())
def test_mangled_prototxt(files, data) -> None:
    folder, _, text = files
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(text)), label="at")
        cut = data.draw(st.integers(0, 40), label="cut")
        insert = data.draw(st.sampled_from(["", " ", *TOKENS]), label="insert")
        text = text[:at] + insert + text[at + cut:]
    (folder / "mangled.prototxt").write_text(text)
    outcome(folder / "mangled.prototxt", folder / "net.caffemodel")


@settings(max_examples=60, deadline=3000, derandomize=True)
@given(st.binary(max_size=64))
def test_garbage_mean_file(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("mean") / "mean.binaryproto"
    path.write_bytes(data)
    try:
        mean = read_mean_image(path)
    except EdgeError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        return
    assert mean.ndim == 3 and mean.dtype.name == "float32"


@settings(max_examples=60, deadline=3000, derandomize=True)
@given(st.binary(max_size=200))
def test_binary_bytes_as_prototxt(tmp_path_factory, data: bytes) -> None:
    folder = tmp_path_factory.mktemp("garbage")
    (folder / "deploy.prototxt").write_bytes(data)
    (folder / "net.caffemodel").write_bytes(b"")
    outcome(folder / "deploy.prototxt", folder / "net.caffemodel")
