"""Small ONNX classifiers made in the test run, so the suite needs no downloaded model, and images for them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_classifier(path: Path, classes: int = 4, size: int = 8, channels: int = 3, batch: int | str = "N",
                    softmax: bool = False, nhwc: bool = False, seed: int = 0, input_name: str = "image") -> Path:
    """Conv 3x3 -> ReLU -> global average pool -> flatten -> Gemm (-> Softmax): the shape of a real classifier."""
    rng = np.random.default_rng(seed)
    shape = [batch, size, size, channels] if nhwc else [batch, channels, size, size]
    nodes = []
    image = input_name
    if nhwc:
        nodes.append(helper.make_node("Transpose", [input_name], ["image_nchw"], perm=[0, 3, 1, 2]))
        image = "image_nchw"
    nodes += [
        helper.make_node("Conv", [image, "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    output = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["prob"], axis=1))
        output = "prob"
    initializers = [
        numpy_helper.from_array(rng.normal(0, 0.02, (8, channels, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.normal(0, 1.0, (classes, 8)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, classes])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_images(folder: Path, count: int = 4) -> Path:
    """A folder of `count` random 10 x 12 PNGs, enough to calibrate the tiny classifier on."""
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(count):
        cv2.imwrite(str(folder / f"img{i}.png"), rng.integers(0, 256, (10, 12, 3), dtype=np.uint8))
    return folder
