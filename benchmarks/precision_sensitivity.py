"""Where INT8 loses on EfficientNet-Lite0, layer by layer (docs/precision.md).

    python benchmarks/precision_sensitivity.py [--shared ../shared] [--count 100] [--method minmax]

Calibrates as `edge calibrate` does, then measures with ONNX Runtime's quantization debugging tools
(onnxruntime.quantization.qdq_loss_debug):
1. weight SQNR of every Conv/Gemm, per output channel (what edge writes) and per tensor (one scale per layer);
2. activation SQNR: FP32 activations against the INT8 model's, at every quantized input, on 20 evaluation images;
3. single-layer sensitivity: only that one layer quantized, top-1 agreement with FP32 and the mean |dp| over
   the evaluation images; then the whole model with the k most sensitive layers left in float.
Images are decoded and preprocessed once; evaluation images are those calibration did not use.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edge.backends.onnxruntime import cpu_session, session_options
from edge.evaluate import read_label_list
from edge.folder import Card
from edge.importer import PreprocessOptions, import_model
from edge.info import cpu_line
from edge.model import softmax
from edge.precision import calibrate, choose_images, exclude_calibration_images
from edge.precision.calibrate import QUANTIZED_OPS, _quiet
from edge.preprocess import load_image, preprocess

ROOT = Path(__file__).resolve().parents[1]


def sqnr(x: np.ndarray, y: np.ndarray) -> float:
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio

    return compute_signal_to_quantization_noice_ratio(x, y)


def per_tensor(w: np.ndarray) -> np.ndarray:
    scale = np.abs(w).max() / 127
    return np.clip(np.round(w / scale), -127, 127) * scale


def probabilities(path: Path, x: np.ndarray, name: str) -> np.ndarray:
    session = cpu_session(path)
    return np.concatenate([softmax(session.run(None, {name: x[i:i + 50]})[0]) for i in range(0, len(x), 50)])


def quantize(fp32: Path, ranges_json: Path, out: Path, exclude: list[str]) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with _quiet():
        quantize_static(str(fp32), str(out), None, calibration_cache_path=str(ranges_json),
                        quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=QUANTIZED_OPS,
                        nodes_to_exclude=exclude,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "AddQDQPairToWeight": True,
                                       "DedicatedQDQPair": True, "QuantizeBias": False,
                                       "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    data = args.shared / "data" / "imagenet-sample"
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, save_tensors_data
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = import_model(args.shared / "models" / "efficientnet_lite0" / "model.onnx", repo=tmp, name="lite0",
                              options=PreprocessOptions(resize="shorter", resize_size=256, color="rgb",
                                                        mean_values=(127, 127, 127), scale=1 / 128))
        calibrate(folder, choose_images(data / "labels.txt", args.count), "minmax")
        card = Card.read(folder)
        items = exclude_calibration_images(folder, read_label_list(data / "labels.txt"))
        x = np.stack([preprocess(load_image(p), card.preprocess) for p, _ in items])
        fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"

        print(f"{cpu_line()}\n")
        print("## 1. Weight SQNR (dB), the 8 lowest with per-tensor scales\n")
        model, qdq = onnx.load(str(fp32)), onnx.load(str(int8))
        constants = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
        producers = {o: n for n in qdq.graph.node for o in n.output}
        rows = []
        for node in (n for n in qdq.graph.node if n.op_type in QUANTIZED_OPS):
            dq = producers[node.input[1]]
            q = producers[dq.input[0]]
            w, scale = constants[q.input[0]], constants[q.input[1]].reshape(-1, *[1] * (constants[q.input[0]].ndim - 1))
            channel = np.clip(np.round(w / scale), -127, 127) * scale
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            kind = "depthwise" if group > 1 else node.op_type
            rows.append((sqnr(w, per_tensor(w)), sqnr(w, channel), node.name, kind))
        print("| layer | kind | per tensor | per channel |\n|---|---|---|---|")
        for tensor_db, channel_db, name, kind in sorted(rows)[:8]:
            print(f"| {name} | {kind} | {tensor_db:.1f} | {channel_db:.1f} |")
        depthwise = np.array([r[:2] for r in rows if r[3] == "depthwise"])
        other = np.array([r[:2] for r in rows if r[3] != "depthwise"])
        print(f"\nmedian over the {len(depthwise)} depthwise layers: per tensor {np.median(depthwise[:, 0]):.1f} dB, "
              f"per channel {np.median(depthwise[:, 1]):.1f} dB; over the other {len(other)}: "
              f"{np.median(other[:, 0]):.1f} / {np.median(other[:, 1]):.1f} dB")

        print("\n## 2. Activation SQNR (dB), FP32 against INT8, 20 evaluation images, the 8 lowest\n")
        feeds = [{card.input_name: x[i:i + 1]} for i in range(20)]
        for path, augmented in ((fp32, tmp / "fp32.aug.onnx"), (int8, tmp / "int8.aug.onnx")):
            modify_model_output_intermediate_tensors(str(path), str(augmented))
        float_acts = collect_activations(str(tmp / "fp32.aug.onnx"), iter(feeds), session_options())
        qdq_acts = collect_activations(str(tmp / "int8.aug.onnx"), iter(feeds), session_options())
        matched = create_activation_matching(qdq_acts, float_acts)
        errors = sorted((sqnr(m["float"], m["post_qdq"]), name) for name, m in matched.items() if m.get("float"))
        print("| tensor (input of a quantized layer) | SQNR |\n|---|---|")
        for db, name in errors[:8]:
            print(f"| {name} | {db:.1f} |")

        print("\n## 3. Sensitivity: one layer quantized at a time (agreement with FP32 over "
              f"{len(x)} evaluation images)\n")
        reference = probabilities(fp32, x, card.input_name)
        tensors = json.loads((folder / "calibration.json").read_text())["tensors"]
        ranges = TensorsData(CalibrationMethod.MinMax, {k: (np.float32(-t["amax"]), np.float32(t["amax"]))
                                                        for k, t in tensors.items()})
        save_tensors_data(ranges, tmp / "ranges.json")
        layers = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS]
        scores = []
        for name in layers:
            p = probabilities(quantize(fp32, tmp / "ranges.json", tmp / "one.onnx", [n for n in layers if n != name]),
                              x, card.input_name)
            agreement = (p.argmax(1) == reference.argmax(1)).mean()
            scores.append((agreement, float(np.abs(p - reference).sum(1).mean()), name))
        scores.sort(key=lambda s: -s[1])
        print("| layer | agreement | mean sum of abs(dp) |\n|---|---|---|")
        for agree, dp, name in scores[:8]:
            print(f"| {name} | {agree:.2%} | {dp:.4f} |")
        labels = np.array([c for _, c in items])
        print("\n| left in float | INT8 top-1 | agreement | mean sum of abs(dp) |\n|---|---|---|---|")
        print(f"| (FP32) | {(reference.argmax(1) == labels).mean():.2%} | - | - |")
        for k in (0, 1, 3, 5):
            p = probabilities(quantize(fp32, tmp / "ranges.json", tmp / "k.onnx", [s[2] for s in scores[:k]]),
                              x, card.input_name)
            print(f"| {k} most sensitive | {(p.argmax(1) == labels).mean():.2%} | "
                  f"{(p.argmax(1) == reference.argmax(1)).mean():.2%} | {np.abs(p - reference).sum(1).mean():.4f} |")


if __name__ == "__main__":
    main()
