"""Images per second of `edge eval` against a bare serial script, side by side in one run.

The bare script is what a user would write without edge: for each image, decode, preprocess with OpenCV and
numpy, run ONNX Runtime (default settings: one intra-op thread per core) on it, take the argmax. Both sides are
timed from the first image to the last (model loading excluded), alternating, three rounds each; the best round of
each is reported.

    python benchmarks/eval_throughput.py [--shared ../shared] [--rounds 3]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from edge.evaluate import evaluate, load_models, read_label_list
from edge.importer import PreprocessOptions, import_model


def bare_serial(onnx_path: Path, items: list[tuple[Path, int]]) -> int:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    correct = 0
    for path, class_id in items:
        image = cv2.imread(str(path))
        h, w = image.shape[:2]
        scale = 256 / min(h, w)
        image = cv2.resize(image, (int(w * scale) if w > h else 256, int(h * scale) if h > w else 256))
        top, left = (image.shape[0] - 224) // 2, (image.shape[1] - 224) // 2
        crop = image[top : top + 224, left : left + 224, ::-1].astype(np.float32)
        x = ((crop - 127.0) / 128.0).transpose(2, 0, 1)[None]
        logits = session.run(None, {"input": np.ascontiguousarray(x)})[0]
        correct += int(logits[0].argmax() == class_id)
    return correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    onnx_path = args.shared / "models/efficientnet_lite0/model.onnx"
    items = read_label_list(args.shared / "data/imagenet-sample/labels.txt")
    with tempfile.TemporaryDirectory() as repo:
        folder = import_model(onnx_path, repo=repo, options=PreprocessOptions(
            resize="shorter", resize_size=256, color="rgb", mean_values=(127, 127, 127), std=(128, 128, 128)))
        models, workers = load_models(folder, None, "onnxruntime", ["fp32"])  # as `edge eval` does
        evaluate(models, items[:16], workers=workers, progress=False)  # warm-up
        bare_serial(onnx_path, items[:16])
        edge_times, bare_times = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            evaluate(models, items, workers=workers, progress=False)
            edge_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            bare_serial(onnx_path, items)
            bare_times.append(time.perf_counter() - start)
    n = len(items)
    edge_ips, bare_ips = n / min(edge_times), n / min(bare_times)
    print(f"machine: {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores, "
          f"onnxruntime {ort.__version__}, opencv {cv2.__version__}")
    print(f"images: {n}, rounds: {args.rounds} (best of each)")
    print("| pipeline | images/s |")
    print("|---|---|")
    print(f"| `edge eval` ({workers} workers, each decoding and running single-threaded ONNX Runtime) "
          f"| {edge_ips:.1f} |")
    print(f"| bare serial script (decode, preprocess, ORT, one image at a time) | {bare_ips:.1f} |")
    print(f"| ratio edge / bare | {edge_ips / bare_ips:.2f} |")


if __name__ == "__main__":
    main()
