"""Caffe models (deploy.prototxt + .caffemodel, mean .binaryproto) -> ONNX, with Caffe's exact semantics.

    conversion = convert_caffe(Path("deploy.prototxt"), Path("net.caffemodel"))
    onnx.save(conversion.model, "model.onnx")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from ..errors import EdgeError
from ..words import plural
from .convert import SUPPORTED, build_graph, check_supported
from .reader import read_mean_image, read_net, read_weights

__all__ = ["SUPPORTED", "CaffeConversion", "convert_caffe", "read_mean_image"]


@dataclass
class CaffeConversion:
    model: onnx.ModelProto  # float32, one NCHW image input with a symbolic batch, one output
    mean_values: tuple[float, ...] | None  # transform_param's mean_value, one per channel
    scale: float | None  # transform_param's scale
    mean_file: str | None  # transform_param's mean_file: a mean image the user must hand over with --mean


def convert_caffe(prototxt: Path, caffemodel: Path) -> CaffeConversion:
    """Reads both files, refuses what it cannot convert exactly, and builds the ONNX model in memory."""
    prototxt, caffemodel = Path(prototxt), Path(caffemodel)
    net = read_net(prototxt)
    check_supported(net, prototxt)  # before reading what may be hundreds of MB of weights
    weights = read_weights(caffemodel)
    model = build_graph(net, weights, prototxt, caffemodel)
    # The deploy net's transform_param, else the one the training net kept in the caffemodel's TEST data layer.
    source, transform = (prototxt, net.transform) if net.transform is not None else (caffemodel, weights.transform)
    mean_values, scale, mean_file = None, None, None
    if transform is not None:
        mean_file = transform.mean_file or None
        channels = net.input_shape[1]
        means = tuple(float(v) for v in transform.mean_value)
        if means:
            if len(means) == 1:
                means *= channels
            if len(means) != channels:
                given = plural(len(means), "mean_value entry", "mean_value entries")
                raise EdgeError(f"{source}: transform_param has {given} for {plural(channels, 'channel')}")
            mean_values = means
        if transform.HasField("scale"):
            scale = float(transform.scale)
    return CaffeConversion(model, mean_values, scale, mean_file)
