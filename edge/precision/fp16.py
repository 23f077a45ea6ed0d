"""`edge fp16`: model.onnx -> model.fp16.onnx, a strongly typed float16 graph with float32 inputs and outputs.

TensorRT 11 has no FP16 builder flag: the graph itself says which layers run in float16, and a strongly typed
network needs every type spelled out: an explicit Cast wherever a tensor changes type, and no op that reads
float16 and float32 inputs together. This module writes that graph.

The keep-in-float32 rule. A node stays in float32 when
  1. its op reduces over a whole axis or image, or exponentiates (KEEP_FLOAT32: Softmax, LRN, global pooling,
     Reduce*, Exp, Pow): a sum of many terms, or an exponential, leaves float16's range (largest 65504) or
     loses the small terms to its 11-bit mantissa; or
  2. it reads a constant (weight, bias, clip bound) that float16 cannot hold (|value| > 65504).
Every other float node, the convolutions, Gemm, activations, Add, pooling windows, runs in float16 with float16
weights. Constants outside float16's smallest subnormal (6e-8) flush to zero, as TensorRT does with them.
Cast, Constant and ConstantOfShape write the type their attribute names, so they are left as they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import EdgeError, first_line
from ..files import atomic_write_bytes, model_lock, remove_stale
from ..folder import CARD, FP32, PRECISIONS, Card, load_checked_onnx

KEEP_FLOAT32 = frozenset({
    "Softmax", "LogSoftmax", "LRN", "GlobalAveragePool", "GlobalLpPool", "Exp", "Pow",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
})
FLOAT16_MAX = float(np.finfo(np.float16).max)
TYPED_BY_ATTRIBUTE = frozenset({"Cast", "Constant", "ConstantOfShape"})  # their output type is an attribute's


def make_fp16(folder: Path) -> Path:
    """Write folder/model.fp16.onnx from folder/model.onnx; returns its path."""
    folder = Path(folder)
    if not (folder / CARD).is_file():
        raise EdgeError(f"{folder}: not a model folder (no {CARD})")
    source = folder / FP32.onnx
    with model_lock(folder, "edge fp16"):  # model.onnx read and model.fp16.onnx written with no swap between
        model = load_checked_onnx(folder, Card.read(folder))
        try:
            half = to_float16(model)
            onnx.checker.check_model(half)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
            raise EdgeError(f"{source}: the float16 graph is not valid ONNX: {first_line(e)}") from None
        target = folder / PRECISIONS["fp16"].onnx
        remove_stale(folder)  # what a killed run left; one file, so a rename is enough to replace it whole
        atomic_write_bytes(target, half.SerializeToString())
    return target


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` converted by the keep-in-float32 rule, with explicit Casts at every type change."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    _constants_to_initializers(graph)
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*graph.input, *graph.value_info, *graph.output)}
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    types.update({t.name: t.data_type for t in graph.initializer})
    graph_outputs = {o.name for o in graph.output}

    def is_float(name: str) -> bool:
        return bool(name) and types.get(name) == TensorProto.FLOAT

    def runs_in_float16(node: onnx.NodeProto) -> bool:
        if node.op_type in KEEP_FLOAT32 or node.op_type in TYPED_BY_ATTRIBUTE or not node.output:
            return False
        if not all(is_float(o) for o in node.output):
            return False
        return all(np.abs(constants[i]).max(initial=0) <= FLOAT16_MAX
                   for i in node.input if i in constants and is_float(i))

    # available[(tensor, dtype)]: the name of a tensor holding that value in that type
    available = {(name, TensorProto.FLOAT): name for name in (*(i.name for i in graph.input), *constants)}
    new_initializers: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def tensor_as(name: str, dtype: int) -> str:
        if (name, dtype) in available:
            return available[(name, dtype)]
        suffix = "fp16" if dtype == TensorProto.FLOAT16 else "fp32"
        converted = f"{name}/{suffix}"
        if name in constants:  # a weight: store it converted rather than casting it at run time
            new_initializers.append(numpy_helper.from_array(constants[name].astype(np.float16), converted))
        else:
            source = available.get((name, TensorProto.FLOAT)) or available[(name, TensorProto.FLOAT16)]
            nodes.append(helper.make_node("Cast", [source], [converted], name=f"{converted}/cast", to=dtype))
        available[(name, dtype)] = converted
        return converted

    for node in graph.node:
        dtype = TensorProto.FLOAT16 if runs_in_float16(node) else TensorProto.FLOAT
        for k, name in enumerate(node.input):
            if is_float(name):
                node.input[k] = tensor_as(name, dtype)
        nodes.append(node)
        for k, name in enumerate(node.output):
            if dtype == TensorProto.FLOAT16 and name in graph_outputs:  # outputs stay float32: cast back
                node.output[k] = f"{name}/fp16"
                nodes.append(helper.make_node("Cast", [node.output[k]], [name], name=f"{name}/cast",
                                              to=TensorProto.FLOAT))
                available[(name, TensorProto.FLOAT16)] = node.output[k]
                available[(name, TensorProto.FLOAT)] = name
            elif is_float(name):
                available[(name, dtype)] = name

    used = {i for n in nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name in used] + [t for t in new_initializers if t.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Constant nodes become initializers, so every constant is converted (or kept) by one rule."""
    constant_nodes = [n for n in graph.node if n.op_type == "Constant" and n.attribute[0].name == "value"]
    for node in constant_nodes:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        graph.node.remove(node)
