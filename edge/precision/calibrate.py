"""`edge calibrate`: model.onnx + images -> model.int8.onnx (Q/DQ), calibration.cache, calibration.json.

The statistics come from ONNX Runtime's calibrators (create_calibrator / collect_data / compute_data) and the
Q/DQ graph from its quantize_static, called the way TensorRT needs it:
- symmetric int8 for activations and weights, every zero point 0 (TensorRT rejects any other);
- weights per output channel (Conv axis 0, Gemm/MatMul by ORT's per-op default), activations per tensor;
- Q/DQ on the inputs of Conv/Gemm/MatMul only, never on their outputs, so TensorRT fuses DQ+Conv+bias+ReLU6+Q
  into one int8 kernel; the bias stays float (TensorRT rejects an int32 bias DequantizeLinear);
- weights stored in float with a Q->DQ pair (the form TensorRT 8.5 parses, and 10/11 accept) and one Q/DQ pair
  per consumer (TensorRT cannot share a pair between layers).
One calibration pass gives the ranges of every float tensor of the graph: the Q/DQ graph uses those of the
quantized inputs, and calibration.cache carries all of them, for TensorRT's implicit INT8 build from a cache on
TensorRT 8.5-10 without any image on the device. docs/precision.md has the measurements behind these choices.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from tqdm import tqdm

from .. import __version__
from ..errors import EdgeError, first_line
from ..files import model_lock, sha256_file, updated_folder
from ..folder import CALIBRATION_CACHE, CALIBRATION_JSON, CARD, FP32, PRECISIONS, Card, load_checked_onnx
from ..preprocess import load_image_for, preprocess
from ..tensorrt.calibration_cache import DEFAULT_TENSORRT, cache_header, format_cache
from ..words import plural

METHODS = ("percentile", "entropy", "minmax")  # the first is the default: docs/precision.md
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]
INT8_MAX = 127  # symmetric int8: [-127, 127], scale = amax / 127


def calibration_unsupported() -> str | None:
    """Why this ONNX Runtime cannot calibrate, or None. quantize_static takes ranges already computed (its
    calibration_cache_path) from onnxruntime 1.27; before, it would calibrate a second time on its own."""
    import onnxruntime
    from onnxruntime.quantization import calibrate as ort_calibrate

    if hasattr(ort_calibrate, "save_tensors_data"):
        return None
    return (f"edge calibrate needs onnxruntime 1.27 or newer; this is {onnxruntime.__version__} (1.23 is the newest "
            "for Python 3.10): calibrate where Python 3.11 or newer runs, and copy the model folder")
BATCH = 10


def calibrate(folder: Path, images: list[Path], method: str = "percentile",
              tensorrt_version: str = DEFAULT_TENSORRT) -> Path:
    """Calibrate folder/model.onnx on `images`; writes the three files and returns model.int8.onnx's path."""
    folder = Path(folder)
    if not (folder / CARD).is_file():
        raise EdgeError(f"{folder}: not a model folder (no {CARD})")
    if method not in METHODS:
        raise EdgeError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if not images:
        raise EdgeError(f"{folder}: no calibration images given")
    cache_header(tensorrt_version)  # a bad --tensorrt is refused now, not after minutes of calibration
    if reason := calibration_unsupported():
        raise EdgeError(reason)
    # Held to the end: a file another run (edge fp16, edge build) writes into the folder meanwhile would be left
    # out of the swap, and a re-import meanwhile would be calibrated on the old model.
    with model_lock(folder, "edge calibrate"):
        card = Card.read(folder)
        source = folder / FP32.onnx
        model = load_checked_onnx(folder, card)
        calibrated = {path: sha256_file(path) for path in (folder / CARD, source)}  # what the int8 files are made from
        # The three files change together or not at all: written in a staging folder that then replaces the model
        # folder in one step. ONNX Runtime's working files (tens of MB) live in it too, so a killed run's are found.
        with updated_folder(folder) as staging:
            try:
                _calibrate_into(staging, calibrated[source], model, card, images, method, tensorrt_version)
            except DecodeError as e:  # ONNX's shape inference (in ONNX Runtime) does not report a write cut short
                free = shutil.disk_usage(staging).free
                raise EdgeError(f"{folder}: ONNX Runtime read back a cut-short working copy of the model "
                                f"({first_line(e)}); {free >> 20} MiB free on that disk, and calibration needs room "
                                f"for several copies of {source.name}") from None
            # The folder's other files join the new ones next: not those of an `edge import --force` run meanwhile
            if any(sha256_file(path) != sha256 for path, sha256 in calibrated.items()):
                raise EdgeError(f"{folder}: {CARD} or {source.name} was replaced while calibrating (another edge "
                                "run?); nothing written: calibrate again")
    return folder / PRECISIONS["int8"].onnx


def _calibrate_into(staging: Path, model_sha256: str, model: onnx.ModelProto, card: Card, images: list[Path],
                    method: str, tensorrt_version: str) -> None:
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=staging) as tmp:
        fp32 = Path(tmp) / "model.onnx"
        onnx.save(_with_opset_13(model), str(fp32))
        calibrator = create_calibrator(
            fp32, [], augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=getattr(CalibrationMethod, {"minmax": "MinMax"}.get(method, method.title())),
            extra_options={"symmetric": True},  # TensorRT's ranges are symmetric: amax = max(|min|, |max|)
        )
        with _quiet():
            for batch in _batches(images, card, card.batch or BATCH):
                calibrator.collect_data(_OneBatch({card.input_name: batch}))  # histograms merge batch by batch
            ranges = calibrator.compute_data()
            int8 = _quantize(fp32, ranges, Path(tmp))
    seconds = time.perf_counter() - started

    order = [i.name for i in int8.graph.input] + [o for node in int8.graph.node for o in node.output]
    names = sorted(ranges.keys(), key=lambda name: (order.index(name) if name in order else len(order), name))
    low_high = {name: tuple(float(np.ravel(v)[0]) for v in ranges[name].range_value) for name in names}
    amax = {name: max(abs(low), abs(high)) for name, (low, high) in low_high.items()}
    scales = {name: float(np.float32(a / INT8_MAX)) for name, a in amax.items() if a > 0}
    int8_bytes = int8.SerializeToString()
    record = {
        "method": method,
        "count": len(images),
        "images": [{"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for p in images],
        "model_sha256": model_sha256,
        "int8_sha256": hashlib.sha256(int8_bytes).hexdigest(),
        "cache_header": cache_header(tensorrt_version),
        "quantized_ops": QUANTIZED_OPS,
        "seconds": round(seconds, 1),
        "made": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "edge_version": __version__,
        "tensors": {name: {"min": low, "max": high, "amax": amax[name], "scale": scales.get(name)}
                    for name, (low, high) in low_high.items()},
    }
    (staging / CALIBRATION_CACHE).write_text(format_cache(scales, tensorrt_version), encoding="utf-8")
    (staging / CALIBRATION_JSON).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    (staging / PRECISIONS["int8"].onnx).write_bytes(int8_bytes)


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantization tools print progress notes on stdout and, through the root logger, advice to
    run its shape-inference pre-pass (model.onnx was shape-inferred at import): keep both out of edge's output."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


class _OneBatch:
    """ONNX Runtime's CalibrationDataReader for a single batch."""

    def __init__(self, feed: dict[str, np.ndarray]):
        self.feed = feed

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed, self.feed = self.feed, None
        return feed


def _batches(images: list[Path], card: Card, batch_size: int):
    """Preprocessed batches, decoded with the model's own preprocessing; a progress bar on a terminal."""
    if card.batch and len(images) % card.batch:
        raise EdgeError(f"{plural(len(images), 'image')}: not whole batches of the model's fixed batch size "
                        f"{card.batch}")
    with tqdm(total=len(images), desc="calibrating", unit="image", disable=None) as bar:
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            yield np.stack([preprocess(load_image_for(p, card.preprocess), card.preprocess) for p in chunk])
            bar.update(len(chunk))


def _with_opset_13(model: onnx.ModelProto) -> onnx.ModelProto:
    """Per-channel Q/DQ needs the `axis` attribute, which QuantizeLinear has from opset 13."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return onnx.version_converter.convert_version(model, 13) if opset < 13 else model


def _quantize(fp32: Path, ranges, tmp: Path) -> onnx.ModelProto:
    """ORT's quantize_static on the ranges already computed (passed as its JSON range cache: no second pass)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    save_tensors_data(ranges, tmp / "ranges.json")
    quantize_static(
        str(fp32), str(tmp / "model.int8.onnx"), None, calibration_cache_path=str(tmp / "ranges.json"),
        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8, calibrate_method=ranges.calibration_method, op_types_to_quantize=QUANTIZED_OPS,
        extra_options={
            "ActivationSymmetric": True, "WeightSymmetric": True, "AddQDQPairToWeight": True,
            "DedicatedQDQPair": True, "QuantizeBias": False, "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS,
        },
    )
    model = onnx.load(str(tmp / "model.int8.onnx"))
    check_int8_graph(model)
    return model


def check_int8_graph(model: onnx.ModelProto) -> None:
    """What TensorRT needs of a Q/DQ graph, checked; raises EdgeError naming the first node that breaks it."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise EdgeError(f"the int8 graph fails the ONNX checker: {first_line(e)}") from None
    constants = {t.name: t for t in model.graph.initializer}
    consumers = {name: node for node in model.graph.node for name in node.input}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3:  # ONNX's default zero point is uint8, which TensorRT rejects
            raise EdgeError(f"int8 graph: {node.name} has no zero point; TensorRT needs an int8 0")
        scale, zero = (numpy_helper.to_array(constants[name]) for name in node.input[1:3])
        if zero.dtype != np.int8 or np.any(zero != 0):
            raise EdgeError(f"int8 graph: {node.name} has zero point {zero.dtype} {zero.ravel()[:4].tolist()}; "
                            "TensorRT needs int8 0")
        if not np.all((scale > 0) & np.isfinite(scale)):  # a NaN or inf range (an overflowing tensor) too
            raise EdgeError(f"int8 graph: {node.name} has a scale that is not a positive finite number")
        if node.op_type == "DequantizeLinear":
            continue
        weight = constants.get(node.input[0])
        if weight is None:
            if scale.ndim != 0:
                raise EdgeError(f"int8 graph: activation {node.input[0]} is quantized per channel; "
                                "TensorRT needs one scale per activation tensor")
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        layer = consumers[consumers[node.output[0]].output[0]]  # weight -> Q -> DQ -> the layer
        if scale.ndim != 1 or scale.size != weight.dims[axis] or axis != _output_channel_axis(layer, len(weight.dims)):
            raise EdgeError(f"int8 graph: weight {node.input[0]} is not quantized per output channel")


def _output_channel_axis(layer: onnx.NodeProto, rank: int) -> int:
    """Conv weights are (out, in, kh, kw); Gemm's B (out, in) with transB, else (in, out); MatMul's (.., in, out)."""
    if layer.op_type == "Gemm":
        return 0 if any(a.name == "transB" and a.i for a in layer.attribute) else 1
    return rank - 1 if layer.op_type == "MatMul" else 0
