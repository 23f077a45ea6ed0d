"""Calibration time and what each precision costs in accuracy, on EfficientNet-Lite0 (docs/benchmarks.md, Precision).

    python benchmarks/calibration.py [--shared ../shared] [--count 100] [--methods entropy,minmax,percentile]

Imports ../shared/models/efficientnet_lite0 into a temporary repository, makes model.fp16.onnx, then for each
method calibrates on `--count` images of ../shared/data/imagenet-sample chosen by choose_images (timed) and
evaluates FP32, FP16 and INT8 in one pass over the other images (exclude_calibration_images). Two ablations show
what the TensorRT-shaped choices buy, on the same ranges: weights per tensor instead of per output channel, and
Q/DQ on every op ONNX Runtime can quantize (Add, Clip, pooling) instead of only the inputs of Conv/Gemm, and
7-bit weights (ORT's reduce_range, its advice for CPUs without VNNI).
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from edge.backends.onnxruntime import OnnxRuntimeBackend
from edge.evaluate import evaluate, read_label_list
from edge.folder import Card
from edge.importer import PreprocessOptions, import_model
from edge.info import cpu_line
from edge.model import Model
from edge.precision import calibrate, choose_images, exclude_calibration_images, make_fp16
from edge.precision.calibrate import QUANTIZED_OPS, check_int8_graph

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [  # (name, file tag, per-channel weights, op types with Q/DQ (None: all ORT can), 7-bit weights)
    ("per-tensor weights", "per_tensor", False, QUANTIZED_OPS, False),
    ("per-tensor 7-bit weights (reduce_range)", "per_tensor_7bit", False, QUANTIZED_OPS, True),
    ("per-channel 7-bit weights (reduce_range)", "per_channel_7bit", True, QUANTIZED_OPS, True),
    ("Q/DQ on every op ORT quantizes", "all_ops", True, None, False),
]


def ablation(folder: Path, tag: str, per_channel: bool, op_types: list[str] | None, reduce_range: bool) -> Path:
    """ORT's quantize_static on the ranges in calibration.json, with one choice changed."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    tensors = json.loads((folder / "calibration.json").read_text())["tensors"]
    ranges = TensorsData(CalibrationMethod.MinMax, {k: (np.float32(-t["amax"]), np.float32(t["amax"]))
                                                    for k, t in tensors.items()})
    out = folder / f"model.int8.{tag}.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, cache)
        quantize_static(str(folder / "model.onnx"), str(out), None, calibration_cache_path=str(cache),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=op_types,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "AddQDQPairToWeight": True,
                                       "DedicatedQDQPair": True, "QuantizeBias": False,
                                       "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS})
    if per_channel:  # the per-tensor ablation breaks the per-channel rule on purpose
        check_int8_graph(onnx.load(str(out)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--methods", default="entropy,minmax,percentile")
    args = parser.parse_args()
    data = args.shared / "data" / "imagenet-sample"
    with tempfile.TemporaryDirectory() as repo:
        folder = import_model(args.shared / "models" / "efficientnet_lite0" / "model.onnx", repo=repo,
                              name="efficientnet_lite0", labels=args.shared / "data" / "synset_words.txt",
                              options=PreprocessOptions(resize="shorter", resize_size=256, color="rgb",
                                                        mean_values=(127, 127, 127), scale=1 / 128))
        started = time.perf_counter()
        make_fp16(folder)
        print(f"fp16 conversion: {time.perf_counter() - started:.1f} s")
        images = choose_images(data / "labels.txt", args.count)
        card = Card.read(folder)
        rows, ablations = [], []
        for method in args.methods.split(","):
            started = time.perf_counter()
            calibrate(folder, images, method)
            seconds = time.perf_counter() - started
            items = exclude_calibration_images(folder, read_label_list(data / "labels.txt"))
            models = {p: Model.load(folder, precision=p) for p in ("fp32", "fp16", "int8")}
            if method == "minmax":
                for name, tag, per_channel, ops, reduce_range in VARIANTS:
                    path = ablation(folder, tag, per_channel, ops, reduce_range)
                    models[name] = Model(folder, card, OnnxRuntimeBackend(path, card))
            scores = evaluate(models, items, progress=False)
            rows.append((method, seconds, scores))
            ablations += [(method, name, s) for name, s in scores.items() if name not in ("fp32", "fp16", "int8")]
            print(f"{method}: calibrated on {len(images)} images in {seconds:.1f} s", flush=True)

    print(f"\n{cpu_line()}, Python {platform.python_version()}; calibration on {args.count} images, "
          f"evaluation on the {rows[0][2]['fp32']['n']} others\n")
    print("| method | calibration (s) | FP32 top-1 | FP16 top-1 | FP16 agreement | FP16 max dp "
          "| INT8 top-1 | INT8 top-5 | INT8 agreement | INT8 max dp |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method, seconds, s in rows:
        f32, f16, i8 = s["fp32"], s["fp16"], s["int8"]
        print(f"| {method} | {seconds:.1f} | {f32['top1']:.2%} | {f16['top1']:.2%} | {f16['top1_agreement']:.2%} "
              f"| {f16['max_probability_deviation']:.4f} | {i8['top1']:.2%} | {i8['top5']:.2%} "
              f"| {i8['top1_agreement']:.2%} | {i8['max_probability_deviation']:.4f} |")
    print("\n| ranges | variant | INT8 top-1 | agreement | max dp |\n|---|---|---|---|---|")
    for method, name, s in ablations:
        print(f"| {method} | {name} | {s['top1']:.2%} | {s['top1_agreement']:.2%} "
              f"| {s['max_probability_deviation']:.4f} |")


if __name__ == "__main__":
    main()
