"""Reading Caffe's three files: the net (prototxt, text), its weights (caffemodel, binary) and a mean (binaryproto).

What comes out is what Caffe's Net sees after its upgrades: V2 layers only (V1 `layers` upgraded), the TEST-phase
layers only, the net input as a (name, shape) pair, and the weights by layer name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from ..errors import EdgeError, first_line
from ..words import plural
from . import schema

TEST = schema.ENUMS["Phase"]["TEST"]


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise EdgeError(f"{path}: no such file") from None
    except OSError as e:
        raise EdgeError(f"{path}: cannot read it ({e.strerror})") from None


def read_prototxt(path: Path):
    """A NetParameter in protobuf text format (deploy.prototxt)."""
    data = _read_bytes(path)
    try:
        return text_format.Parse(data.decode("utf-8"), schema.NetParameter())
    except UnicodeDecodeError:
        raise EdgeError(f"{path}: not a Caffe prototxt (not UTF-8 text)") from None
    except Exception as e:  # ParseError for bad text; RecursionError for absurd nesting
        raise EdgeError(f"{path}: not a Caffe prototxt: {first_line(e)}") from None


def _read_binary(path: Path, message, what: str):
    data = _read_bytes(path)
    try:
        message.ParseFromString(data)
    except Exception as e:  # DecodeError: truncated or corrupt bytes
        raise EdgeError(f"{path}: not a {what} ({first_line(e)})") from None
    return message


def read_caffemodel(path: Path):
    """A NetParameter in binary protobuf (.caffemodel)."""
    return _read_binary(path, schema.NetParameter(), "Caffe model (binary NetParameter)")


def blob_array(blob, where: str) -> np.ndarray:
    """A BlobProto as float32 in its stored shape: legacy num/channels/height/width when any is set, else shape."""
    legacy = ("num", "channels", "height", "width")
    if any(blob.HasField(f) for f in legacy):
        shape = tuple(getattr(blob, f) for f in legacy)
    else:
        shape = tuple(blob.shape.dim)
    values = blob.double_data if len(blob.double_data) else blob.data
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) != len(values):
        raise EdgeError(f"{where}: blob of shape {list(shape)} holds {plural(len(values), 'value')}")
    return np.array(values, dtype=np.float32).reshape(shape)


def read_mean_image(path: Path) -> np.ndarray:
    """A mean .binaryproto (a BlobProto, as compute_image_mean writes it) as a (C, H, W) float32 array."""
    path = Path(path)
    blob = _read_binary(path, schema.BlobProto(), "Caffe mean file (binary BlobProto)")
    mean = blob_array(blob, str(path))
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim != 3 or mean.size == 0:
        raise EdgeError(f"{path}: a mean image is 1 x C x H x W or C x H x W, this blob is {list(mean.shape)}")
    if not np.isfinite(mean).all():
        raise EdgeError(f"{path}: the mean image holds values that are not finite")
    return mean


@dataclass
class Net:
    """A deploy net as Caffe's Net::Init sees it."""

    layers: list  # LayerParameter, TEST phase, V2, without the Input layers
    input_name: str
    input_shape: tuple[int, ...]
    transform: object | None  # the first TransformationParameter found, if any


def _v1_to_v2(old) -> object:
    """UpgradeV1LayerParameter, for the fields a deploy net needs."""
    layer = schema.LayerParameter(name=old.name, bottom=old.bottom, top=old.top)
    enum = old.DESCRIPTOR.fields_by_name["type"].enum_type
    layer.type = schema.V1_TYPE_NAMES[enum.values_by_number[old.type].name]
    layer.blobs.extend(old.blobs)
    layer.include.extend(old.include)
    layer.exclude.extend(old.exclude)
    for name in schema.V1_PARAMS:
        if old.HasField(name):
            getattr(layer, name).CopyFrom(getattr(old, name))
    return layer


def v2_layers(net, path: Path) -> list:
    if len(net.layers) and len(net.layer):
        raise EdgeError(f"{path}: has both `layer` and legacy `layers` entries (Caffe refuses such a net)")
    return [_v1_to_v2(old) for old in net.layers] if len(net.layers) else list(net.layer)


def _rule_met(rule, state) -> bool:
    """net.cpp StateMeetsRule."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    return all(s in state.stage for s in rule.stage) and not any(s in state.stage for s in rule.not_stage)


def test_phase_layers(net, path: Path) -> list:
    """net.cpp FilterNet with the phase set to TEST, as pycaffe's caffe.Net(..., caffe.TEST) does."""
    state = schema.NetParameter().state
    state.CopyFrom(net.state)
    state.phase = TEST
    kept = []
    for layer in v2_layers(net, path):
        if len(layer.include) and len(layer.exclude):
            raise EdgeError(f"{path}: layer '{layer.name}' has both include and exclude rules")
        if len(layer.include):
            if any(_rule_met(rule, state) for rule in layer.include):
                kept.append(layer)
        elif not any(_rule_met(rule, state) for rule in layer.exclude):
            kept.append(layer)
    return kept


def _net_inputs(net, layers: list, path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """Inputs given as `input` + `input_shape` or `input_dim`, or as Input layers."""
    inputs = []
    if len(net.input):
        if len(net.input_shape):
            if len(net.input_shape) != len(net.input):
                raise EdgeError(f"{path}: {plural(len(net.input), 'input')} but "
                                f"{plural(len(net.input_shape), 'input_shape entry', 'input_shape entries')}")
            shapes = [tuple(s.dim) for s in net.input_shape]
        elif len(net.input_dim):
            if len(net.input_dim) != 4 * len(net.input):
                raise EdgeError(f"{path}: {plural(len(net.input), 'input')} need {4 * len(net.input)} input_dim "
                                "values, "
                                f"found {len(net.input_dim)}")
            dims = list(net.input_dim)
            shapes = [tuple(dims[4 * i:4 * i + 4]) for i in range(len(net.input))]
        else:
            raise EdgeError(f"{path}: input '{net.input[0]}' has no input_shape or input_dim")
        inputs += list(zip(net.input, shapes))
    for layer in layers:
        if layer.type != "Input":
            continue
        shapes = [tuple(s.dim) for s in layer.input_param.shape]
        if len(shapes) == 1:
            shapes = shapes * len(layer.top)
        if len(shapes) != len(layer.top):
            raise EdgeError(f"{path}: Input layer '{layer.name}' has {len(layer.top)} tops and "
                            f"{len(layer.input_param.shape)} shapes")
        inputs += list(zip(layer.top, shapes))
    return inputs


def read_net(path: Path) -> Net:
    """The deploy prototxt, checked to have one image input (N, C, H, W)."""
    net = read_prototxt(path)
    layers = test_phase_layers(net, path)
    inputs = _net_inputs(net, layers, path)
    if len(inputs) != 1:
        found = ", ".join(f"{name}{list(shape)}" for name, shape in inputs) or "none"
        raise EdgeError(f"{path}: expected one net input (an image), found {found}")
    name, shape = inputs[0]
    if len(shape) != 4 or min(shape) <= 0:
        raise EdgeError(f"{path}: input '{name}' has shape {list(shape)}; expected N x C x H x W, all positive")
    transform = next((layer.transform_param for layer in layers if layer.HasField("transform_param")), None)
    return Net([layer for layer in layers if layer.type != "Input"], name, shape, transform)


@dataclass
class Weights:
    blobs: dict[str, list]  # layer name -> BlobProto list
    transform: object | None  # the TEST-phase data layer's TransformationParameter, if the file keeps it


def read_weights(path: Path) -> Weights:
    """Blobs by layer name (net.cpp CopyTrainedLayersFrom: a later layer of the same name wins)."""
    net = read_caffemodel(path)
    if not len(net.layer) and not len(net.layers):
        raise EdgeError(f"{path}: not a Caffe model (binary NetParameter): it holds no layers")
    layers = test_phase_layers(net, path)
    blobs = {layer.name: list(layer.blobs) for layer in v2_layers(net, path) if len(layer.blobs)}
    transform = next((layer.transform_param for layer in layers if layer.HasField("transform_param")), None)
    return Weights(blobs, transform)
