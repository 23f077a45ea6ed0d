"""What INT8 costs on the CPU: FP32, INT8 with Q/DQ emulated in float (edge's path for every INT8 figure), and INT8
on ONNX Runtime's own int8 kernels (its default Q/DQ fusion), in milliseconds per image (docs/benchmarks.md).

    python benchmarks/int8_cpu_speed.py [--shared ../shared] [--runs 100] [--rounds 5]

EfficientNet-Lite0 and -Lite1 from ../shared are imported with their READMEs' preprocessing and calibrated as
`edge calibrate` does, on 20 images (the scales do not change the speed). Each variant runs one preprocessed image
at a time on one thread, as each of `edge eval`'s workers does; the three are interleaved round by round so that
other load on the machine hits them alike. Prints the median over the rounds of each round's mean, and the best
round.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

from edge.backends.onnxruntime import session_options
from edge.folder import Card
from edge.importer import PreprocessOptions, import_model
from edge.info import cpu_line
from edge.precision import calibrate, choose_images
from edge.preprocess import load_image, preprocess

ROOT = Path(__file__).resolve().parents[1]
MODELS = {name: PreprocessOptions(resize="shorter", resize_size=size, color="rgb", mean_values=(127, 127, 127),
                                  std=(128, 128, 128))
          for name, size in (("efficientnet_lite0", 256), ("efficientnet_lite1", 274))}


def session(path: Path, qdq_fusion: bool) -> ort.InferenceSession:
    options = session_options(runs=2)  # a run among several: one thread
    if qdq_fusion:
        options.add_session_config_entry("session.disable_quant_qdq", "0")  # ORT warns that this overrides it
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--runs", type=int, default=100, help="images per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ort.set_default_logger_severity(3)
    labels = args.shared / "data" / "imagenet-sample" / "labels.txt"
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {cpu_line()}; onnxruntime "
          f"{ort.__version__}; load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as repo:
        for name, options in MODELS.items():
            folder = import_model(args.shared / "models" / name / "model.onnx", repo=repo, name=name, options=options)
            calibrate(folder, choose_images(labels, 20))
            card = Card.read(folder)
            image = preprocess(load_image(args.shared / "data" / "cat.jpg"), card.preprocess)[None]
            variants = {"FP32": session(folder / "model.onnx", False),
                        "INT8, Q/DQ emulated in float (edge)": session(folder / "model.int8.onnx", False),
                        "INT8, ONNX Runtime's int8 kernels": session(folder / "model.int8.onnx", True)}
            times: dict[str, list[float]] = {variant: [] for variant in variants}
            for _ in range(args.rounds):
                for variant, s in variants.items():
                    s.run(None, {card.input_name: image})  # warm
                    start = time.perf_counter()
                    for _ in range(args.runs):
                        s.run(None, {card.input_name: image})
                    times[variant].append((time.perf_counter() - start) / args.runs * 1000)
            rows += [(name, variant, statistics.median(t), min(t)) for variant, t in times.items()]
    print(f"load average {os.getloadavg()[0]:.1f} at the end; {args.rounds} rounds of {args.runs} images\n")
    print("| model | variant | ms per image (median of rounds) | best round |\n|---|---|---:|---:|")
    for name, variant, median, best in rows:
        print(f"| {name} | {variant} | {median:.1f} | {best:.1f} |")


if __name__ == "__main__":
    main()
