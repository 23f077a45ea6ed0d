"""FP16 and INT8 variants on a tiny EfficientNet-Lite-like model built here: CPU only, no shared data needed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.backends.onnxruntime import cpu_session
from edge.errors import EdgeError
from edge.importer import PreprocessOptions, import_model
from edge.precision import calibrate, choose_images, exclude_calibration_images, make_fp16
from edge.precision.calibrate import check_int8_graph
from edge.tensorrt.calibration_cache import (
    read_cache,
)

CLASSES = 5


def lite_block_model(path: Path, seed: int = 0, extra_nodes=(), extra_initializers=()) -> Path:
    """Conv -> ReLU6 -> depthwise Conv -> ReLU6 -> 1x1 Conv -> + residual -> global pool -> Gemm -> Softmax.

    ReLU6 is Clip with its bounds from Constant nodes, and the depthwise weights differ in scale from channel to
    channel by 100x, as BatchNorm folding leaves them in EfficientNet-Lite.
    """
    rng = np.random.default_rng(seed)
    depthwise = rng.normal(0, 1, (8, 1, 3, 3)) * np.geomspace(0.01, 1.0, 8)[:, None, None, None]
    weights = {
        "stem_w": rng.normal(0, 0.3, (8, 3, 3, 3)), "stem_b": rng.normal(0, 0.1, 8),
        "dw_w": depthwise, "dw_b": rng.normal(0, 0.1, 8),
        "project_w": rng.normal(0, 0.3, (8, 8, 1, 1)), "project_b": np.zeros(8),
        "fc_w": rng.normal(0, 1.0, (CLASSES, 8)), "fc_b": np.zeros(CLASSES),
    }
    nodes = [
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.float32))),
        helper.make_node("Constant", [], ["six"], value=numpy_helper.from_array(np.array(6, np.float32))),
        helper.make_node("Conv", ["image", "stem_w", "stem_b"], ["stem"], pads=[1, 1, 1, 1], name="stem"),
        helper.make_node("Clip", ["stem", "zero", "six"], ["stem_relu6"], name="stem_relu6"),
        helper.make_node("Conv", ["stem_relu6", "dw_w", "dw_b"], ["dw"], pads=[1, 1, 1, 1], group=8, name="dw"),
        helper.make_node("Clip", ["dw", "zero", "six"], ["dw_relu6"], name="dw_relu6"),
        helper.make_node("Conv", ["dw_relu6", "project_w", "project_b"], ["project"], name="project"),
        helper.make_node("Add", ["project", "stem_relu6"], ["residual"], name="residual"),
        *extra_nodes,
        helper.make_node("GlobalAveragePool", ["residual"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1, name="softmax"),
    ]
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    graph = helper.make_graph(
        nodes, "lite_block", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", CLASSES])],
        initializers + list(extra_initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def model_folder(tmp_path: Path, **kwargs) -> Path:
    src = lite_block_model(tmp_path / "lite.onnx", **kwargs)
    options = PreprocessOptions(resize="stretch", resize_size=20, color="rgb", mean_values=(127, 127, 127),
                                scale=1 / 64)
    return import_model(src, repo=tmp_path / "engines", options=options)


def write_images(folder: Path, count: int, seed: int = 1) -> list[Path]:
    """Smooth random images (blurred noise, so neighbouring pixels correlate as in photographs)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = cv2.GaussianBlur(rng.integers(0, 256, (24, 28, 3), dtype=np.uint8), (5, 5), 0)
        path = folder / f"img_{i:03d}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def run(path: Path, batch: np.ndarray) -> np.ndarray:
    return cpu_session(path).run(None, {"image": batch})[0]


def batch_of(folder: Path, images: list[Path]) -> np.ndarray:
    from edge.folder import Card
    from edge.preprocess import load_image, preprocess

    spec = Card.read(folder).preprocess
    return np.stack([preprocess(load_image(p), spec) for p in images])


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.input, *inferred.value_info, *inferred.output)}
    types.update({t.name: t.data_type for t in inferred.initializer})
    return types


# --- FP16 ---------------------------------------------------------------------------------------------------

def test_fp16_graph_keeps_float32_io_and_is_strongly_typed(tmp_path):
    folder = model_folder(tmp_path)
    path = make_fp16(folder)
    assert path == folder / "model.fp16.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    types = tensor_types(model)
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16}
    compute = {}
    for node in model.graph.node:
        if node.op_type == "Cast":
            continue
        kinds = {types[name] for name in node.input if types.get(name) in floats}
        assert len(kinds) == 1, f"{node.name} mixes float16 and float32 inputs"
        compute[node.name] = kinds.pop()
    assert compute["pool"] == compute["softmax"] == TensorProto.FLOAT  # the keep-in-float32 rule
    for name in ("stem", "stem_relu6", "dw", "project", "residual", "fc"):
        assert compute[name] == TensorProto.FLOAT16, name

    images = write_images(tmp_path / "images", 8)
    batch = batch_of(folder, images)
    half, full = run(path, batch), run(folder / "model.onnx", batch)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, full, atol=2e-3)


def test_fp16_keeps_a_node_with_an_out_of_range_constant_in_float32(tmp_path):
    big = numpy_helper.from_array(np.array(1e5, np.float32), "big")
    tiny = numpy_helper.from_array(np.array(1e-5, np.float32), "tiny")
    extra = [helper.make_node("Mul", ["residual", "big"], ["scaled"], name="scale_up"),
             helper.make_node("Mul", ["scaled", "tiny"], ["residual_again"], name="scale_down")]
    folder = model_folder(tmp_path)
    src = lite_block_model(tmp_path / "big.onnx", extra_nodes=extra, extra_initializers=[big, tiny])
    model = onnx.load(str(src))
    for node in model.graph.node:  # the pool reads the rescaled tensor
        if node.name == "pool":
            node.input[0] = "residual_again"
    onnx.save(model, str(folder / "model.onnx"))
    types = tensor_types(onnx.load(str(make_fp16(folder))))
    assert types["big"] == TensorProto.FLOAT and types["scaled"] == TensorProto.FLOAT
    assert types["stem"] == TensorProto.FLOAT16


def test_fp16_errors_write_nothing(tmp_path):
    with pytest.raises(EdgeError, match="no model.toml"):
        make_fp16(tmp_path)
    folder = model_folder(tmp_path)
    (folder / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(EdgeError, match="model.onnx: not an ONNX model"):
        make_fp16(folder)
    assert not (folder / "model.fp16.onnx").exists()


# --- INT8 ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, onnxruntime_calibrates):
    tmp_path = tmp_path_factory.mktemp("int8")
    folder = model_folder(tmp_path)
    images = write_images(tmp_path / "images", 30)
    chosen = choose_images(tmp_path / "images", 20)
    calibrate(folder, chosen, "minmax")
    return folder, chosen, [p for p in images if p not in chosen]


def test_int8_graph_is_what_tensorrt_accepts(calibrated):
    folder, _, _ = calibrated
    model = onnx.load(str(folder / "model.int8.onnx"))
    check_int8_graph(model)  # the checker, int8 zero points of 0, positive scales, per-channel weights
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize and all(constants[n.input[2]].dtype == np.int8 for n in quantize)
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            data, weight, bias = (producers.get(name) for name in node.input)
            assert data.op_type == weight.op_type == "DequantizeLinear", node.name  # Q/DQ on the inputs
            assert bias is None and constants[node.input[2]].dtype == np.float32  # bias stays float
            weight_q = producers[weight.input[0]]
            channels = constants[weight_q.input[0]].shape[0]
            assert constants[weight_q.input[1]].shape == (channels,), node.name  # per output channel
            assert next(a.i for a in weight_q.attribute if a.name == "axis") == 0
    for node in quantize:
        source = producers.get(node.input[0])
        assert source is None or source.op_type not in ("Conv", "Gemm"), "no Q/DQ on a Conv/Gemm output"


def _break(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    """A copy of the int8 graph with one TensorRT rule broken."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    constants = {t.name: t for t in model.graph.initializer}
    weight_q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "stem_w")
    if what == "zero point":
        constants[weight_q.input[2]].CopyFrom(numpy_helper.from_array(np.full(8, 3, np.int8), weight_q.input[2]))
    elif what == "per tensor":
        constants[weight_q.input[1]].CopyFrom(numpy_helper.from_array(np.array(0.01, np.float32), weight_q.input[1]))
        constants[weight_q.input[2]].CopyFrom(numpy_helper.from_array(np.array(0, np.int8), weight_q.input[2]))
        del weight_q.attribute[:]
    elif what == "infinite scale":
        constants[weight_q.input[1]].CopyFrom(numpy_helper.from_array(np.full(8, np.inf, np.float32),
                                                                      weight_q.input[1]))
    elif what == "axis":  # stem_w is (8, 3, 3, 3): 3 scales on axis 1 fit the shape but not the output channels
        constants[weight_q.input[1]].CopyFrom(numpy_helper.from_array(np.full(3, 0.01, np.float32), weight_q.input[1]))
        constants[weight_q.input[2]].CopyFrom(numpy_helper.from_array(np.zeros(3, np.int8), weight_q.input[2]))
        for node in model.graph.node:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[1] == weight_q.input[1]:
                next(a for a in node.attribute if a.name == "axis").i = 1
    return model


@pytest.mark.parametrize("what, message", [("zero point", "zero point"), ("per tensor", "per output channel"),
                                           ("axis", "per output channel"), ("infinite scale", "positive finite")])
def test_int8_graph_check_catches_what_tensorrt_rejects(calibrated, what, message):
    folder, _, _ = calibrated
    with pytest.raises(EdgeError, match=message):
        check_int8_graph(_break(onnx.load(str(folder / "model.int8.onnx")), what))


def test_int8_runs_and_stays_close_to_fp32(calibrated):
    folder, _, held_out = calibrated
    batch = batch_of(folder, held_out)
    int8, fp32 = run(folder / "model.int8.onnx", batch), run(folder / "model.onnx", batch)
    assert np.abs(int8 - fp32).max() < 0.05
    assert (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.9


def test_calibration_cache_round_trips_to_calibration_json(calibrated):
    folder, chosen, _ = calibrated
    record = json.loads((folder / "calibration.json").read_text())
    cache = read_cache(folder / "calibration.cache")
    assert (folder / "calibration.cache").read_text().splitlines()[0] == "TRT-8502-EntropyCalibration2"
    assert cache.scales == {name: t["scale"] for name, t in record["tensors"].items() if t["scale"]}
    assert "image" in cache.scales and "residual" in cache.scales
    assert record["method"] == "minmax" and record["count"] == len(chosen) == 20
    assert [i["path"] for i in record["images"]] == [str(p.resolve()) for p in chosen]
    # the Q/DQ graph quantizes each activation with the scale the cache carries
    model = onnx.load(str(folder / "model.int8.onnx"))
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    activations = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in constants]
    assert activations
    for node in activations:
        assert float(constants[node.input[1]]) == pytest.approx(cache.scales[node.input[0]], rel=1e-6)


def test_calibration_writes_nothing_on_an_unreadable_image(tmp_path, onnxruntime_calibrates):
    folder = model_folder(tmp_path)
    images = write_images(tmp_path / "images", 4)
    images[2].write_bytes(b"not an image")
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(EdgeError, match=images[2].name):
        calibrate(folder, images, "entropy")
    assert sorted(p.name for p in folder.iterdir()) == before


def test_calibration_errors(tmp_path):
    images = write_images(tmp_path / "images", 3)
    with pytest.raises(EdgeError, match="no model.toml"):
        calibrate(tmp_path, images)
    folder = model_folder(tmp_path)
    with pytest.raises(EdgeError, match="method must be one of"):
        calibrate(folder, images, "kl")
    with pytest.raises(EdgeError, match="no calibration images"):
        calibrate(folder, [])
    assert not (folder / "calibration.json").exists()


# --- choosing images ----------------------------------------------------------------------------------------

def test_choose_images_is_deterministic_and_evenly_spaced(tmp_path):
    write_images(tmp_path / "images", 10)
    chosen = choose_images(tmp_path / "images", 4)
    assert [p.name for p in chosen] == ["img_000.png", "img_002.png", "img_005.png", "img_007.png"]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"images/img_{i:03d}.png {i % 3}\n" for i in reversed(range(10))))
    assert choose_images(listing, 4) == chosen
    listing.write_text("".join(f"images/img_{i:03d}.png\t{i % 3}\n" for i in range(10)))  # a tab: as well
    assert choose_images(listing, 4) == chosen


def test_choose_images_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeError, match="no images"):
        choose_images(tmp_path / "empty", 1)
    with pytest.raises(EdgeError, match="no such folder"):
        choose_images(tmp_path / "missing", 1)
    write_images(tmp_path / "few", 3)
    with pytest.raises(EdgeError, match="3 images, fewer than the 5 asked for"):
        choose_images(tmp_path / "few", 5)
    with pytest.raises(EdgeError, match=r"^.*img_000\.png: an image; calibration takes many \(about 100\): give a "
                       "folder of images or a list file of `file \\[class_id\\]` lines$"):
        choose_images(tmp_path / "few" / "img_000.png", 1)


def test_evaluation_excludes_calibration_images_by_path_and_by_content(calibrated, tmp_path):
    folder, chosen, held_out = calibrated
    renamed_copy = tmp_path / "copy.png"
    shutil.copyfile(chosen[0], renamed_copy)
    items = [(p, 0) for p in chosen + held_out] + [(renamed_copy, 0)]
    assert exclude_calibration_images(folder, items) == [(p, 0) for p in held_out]


def test_eval_leaves_out_calibration_images_only_when_int8_is_evaluated(calibrated, tmp_path, capsys):
    from edge.cli import main

    folder, chosen, held_out = calibrated
    listing = tmp_path / "val.txt"
    listing.write_text("".join(f"{p} 0\n" for p in chosen + held_out))
    capsys.readouterr()
    assert main(["eval", str(folder), "--list", str(listing), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == len(chosen + held_out)  # FP32 alone: every image
    assert main(["eval", str(folder), "--list", str(listing), "--json", "--precision", "fp32,int8"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n"] == scores["precisions"]["fp32"]["n"] == len(held_out)
    assert scores["calibration_images_left_out"] == len(chosen)
    assert main(["eval", str(folder), "--list", str(listing), "--precision", "int8"]) == 0
    assert f"left out: the {len(chosen)} listed images model.int8.onnx was calibrated on" in capsys.readouterr().out


# --- the calibration cache format ---------------------------------------------------------------------------







def test_calibration_without_model_onnx_is_refused(tmp_path, onnxruntime_calibrates):
    folder = model_folder(tmp_path)
    images = write_images(tmp_path / "images", 2)
    (folder / "model.onnx").unlink()
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(EdgeError, match="model.onnx: no such file"):
        calibrate(folder, images, "minmax")
    assert sorted(p.name for p in folder.iterdir()) == before


def test_an_onnxruntime_that_cannot_calibrate_is_one_line_before_any_work(tmp_path, monkeypatch):
    from onnxruntime.quantization import calibrate as ort_calibrate

    monkeypatch.delattr(ort_calibrate, "save_tensors_data", raising=False)  # as in onnxruntime 1.26 and older
    folder = model_folder(tmp_path)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(EdgeError, match=r"needs onnxruntime 1\.27 or newer; this is ") as refused:
        calibrate(folder, [tmp_path / "never-read.png"], "minmax")
    assert "\n" not in str(refused.value)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_calibration_refuses_a_bad_tensorrt_version_before_reading_images(tmp_path):
    folder = model_folder(tmp_path)
    with pytest.raises(EdgeError, match="not a TensorRT version"):
        calibrate(folder, [tmp_path / "never-read.png"], "minmax", tensorrt_version="ten")


def test_fp16_keeps_nodes_typed_by_their_attribute_in_float32(tmp_path):
    """ConstantOfShape (what a Caffe Power layer with scale 0 becomes) writes float32 whatever its input: it must
    stay float32 and be cast, not be taken for a float16 node."""
    extra = [helper.make_node("Shape", ["residual"], ["residual_shape"], name="shape"),
             helper.make_node("ConstantOfShape", ["residual_shape"], ["half"], name="fill",
                              value=numpy_helper.from_array(np.array([0.5], np.float32))),
             helper.make_node("Add", ["residual", "half"], ["residual_again"], name="shift")]
    folder = model_folder(tmp_path)
    model = onnx.load(str(lite_block_model(tmp_path / "fill.onnx", extra_nodes=extra)))
    for node in model.graph.node:  # the pool reads the shifted tensor
        if node.name == "pool":
            node.input[0] = "residual_again"
    onnx.save(model, str(folder / "model.onnx"))
    half = make_fp16(folder)
    assert tensor_types(onnx.load(str(half)))["half"] == TensorProto.FLOAT
    batch = batch_of(folder, write_images(tmp_path / "images", 2))
    np.testing.assert_allclose(run(half, batch), run(folder / "model.onnx", batch), atol=5e-3)


def test_excluding_calibration_images_leaves_unreadable_ones_to_evaluation(tmp_path):
    import json

    from edge.folder import CALIBRATION_JSON
    from edge.precision.images import exclude_calibration_images

    image = tmp_path / "a.png"
    image.write_bytes(b"not really a png")
    (tmp_path / CALIBRATION_JSON).write_text(json.dumps({"images": [{"path": str(tmp_path / "c.png"),
                                                                     "sha256": "0" * 64}]}))
    items = [(image, 1), (tmp_path / "missing.png", 2), (tmp_path / "folder", 3)]
    (tmp_path / "folder").mkdir()
    assert exclude_calibration_images(tmp_path, items) == items


def test_cache_names_tensors_of_model_onnx_even_when_calibration_upgraded_the_opset(tmp_path, onnxruntime_calibrates):
    """TensorRT's implicit INT8 build parses model.onnx and looks the cache's names up in it."""
    from edge.importer import import_model
    from edge.precision.calibrate import calibrate
    from edge.tensorrt.calibration_cache import read_cache

    from tiny_models import tiny_classifier

    source = tiny_classifier(tmp_path / "old.onnx")
    model = onnx.load(str(source))
    model.opset_import[0].version = 11  # calibration converts a copy to opset 13 for per-channel Q/DQ
    onnx.save(model, str(source))
    folder = import_model(source, repo=tmp_path / "engines")
    images = []
    for i in range(4):
        images.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(images[-1]), np.random.default_rng(i).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    calibrate(folder, images, "minmax")
    graph = onnx.load(str(folder / "model.onnx")).graph
    names = {name for node in graph.node for name in [*node.input, *node.output]} | {i.name for i in graph.input}
    scales = read_cache(folder / "calibration.cache").scales
    assert scales and set(scales) <= names
