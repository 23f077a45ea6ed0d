"""A small real run on EfficientNet-Lite0: 20 calibration images, 40 others to compare on (needs ../shared).

The 100 / 400 acceptance measurement is benchmarks/calibration.py, with its figures in docs/benchmarks.md.
"""

from __future__ import annotations

import json

import onnx

from edge.evaluate import evaluate, read_label_list
from edge.importer import PreprocessOptions, import_model
from edge.model import Model
from edge.precision import calibrate, choose_images, exclude_calibration_images, make_fp16
from edge.precision.calibrate import check_int8_graph
from edge.tensorrt.calibration_cache import read_cache


def test_efficientnet_lite0_fp16_and_int8_on_real_images(shared, tmp_path, onnxruntime_calibrates):
    folder = import_model(shared / "models" / "efficientnet_lite0" / "model.onnx", repo=tmp_path, name="lite0",
                          options=PreprocessOptions(resize="shorter", resize_size=256, color="rgb",
                                                    mean_values=(127, 127, 127), scale=1 / 128))
    labels = shared / "data" / "imagenet-sample" / "labels.txt"
    make_fp16(folder)
    chosen = choose_images(labels, 20)
    calibrate(folder, chosen)
    check_int8_graph(onnx.load(str(folder / "model.int8.onnx")))
    record = json.loads((folder / "calibration.json").read_text())
    assert read_cache(folder / "calibration.cache").scales == {k: t["scale"] for k, t in record["tensors"].items()}

    items = exclude_calibration_images(folder, read_label_list(labels))
    assert len(items) == 480 and not {p.resolve() for p, _ in items} & {p.resolve() for p in chosen}
    models = {p: Model.load(folder, precision=p) for p in ("fp32", "fp16", "int8")}
    scores = evaluate(models, items[::12], batch_size=8, progress=False)  # 40 images spread over the classes
    assert scores["fp16"]["top1_agreement"] >= 0.975
    assert scores["int8"]["top1_agreement"] >= 0.85
    assert scores["int8"]["top1"] >= scores["fp32"]["top1"] - 0.1
