"""Camera-loop efficiency on the CPU: `edge run`'s loop against two bare loops, side by side in one process.

    serial   decode, preprocess, ONNX Runtime, one after another (what a first script does)
    ceiling  ONNX Runtime alone, over frames decoded and preprocessed in advance (the most the CPU can give)
    edge     the loop `edge run` runs (capture thread, queue, preprocess, compute, results, a JSON-lines sink)

All three use the same model, video and preprocessing, and exclude loading. The bare loops share one ONNX Runtime
session with its defaults (one run spread over every core); `edge run` loads its own the way it does for the
service (single-threaded, one run per core at once: edge/backends/__init__.py, parallel_runs).
Rounds are interleaved (serial, ceiling, edge, serial, ...) so that other load on the machine hits all three
alike; the median of the rounds is reported. Model: EfficientNet-Lite0 from ../shared when present, otherwise
the tests' tiny generated classifier (then the figures say little: preprocessing outweighs the model).

    python benchmarks/run_throughput.py [--frames 300] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "tests"))


def model_folder(workdir: Path) -> tuple[Path, str]:
    from edge.importer import PreprocessOptions, import_model

    onnx_path = SHARED / "models" / "efficientnet_lite0" / "model.onnx"
    if onnx_path.is_file():
        options = PreprocessOptions(resize="shorter", resize_size=256, color="rgb", mean_values=(127, 127, 127),
                                    scale=1 / 128)
        folder = import_model(onnx_path, name="efficientnet_lite0", repo=workdir,
                              labels=SHARED / "data" / "synset_words.txt", options=options)
        return folder, "EfficientNet-Lite0 (../shared)"
    from runtime_support import tiny_model_folder

    return tiny_model_folder(workdir / "tiny"), "tiny generated classifier (../shared absent)"


def make_video(path: Path, frames: int, width: int = 640, height: int = 480) -> tuple[Path, str]:
    """An MJPG .avi from the shared ImageNet sample (real photographs), or from the test pattern without it."""
    images = sorted((SHARED / "data" / "imagenet-sample").glob("*.jpg"))[:frames]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (width, height))
    if images:
        what = f"{frames} frames {width}x{height} MJPG from the ImageNet sample"
        for i in range(frames):
            writer.write(cv2.resize(cv2.imread(str(images[i % len(images)])), (width, height)))
    else:
        from edge.runtime.sources import open_source

        what = f"{frames} frames {width}x{height} MJPG of the test pattern"
        pattern = open_source("test://", width, height, fps=0)
        for _ in range(frames):
            writer.write(pattern.read().image)
    writer.release()
    return path, what


def run_serial(video: Path, model) -> float:
    from edge.preprocess import preprocess

    session, spec = model.backend.session, model.preprocess
    names = [model.card.output_name], model.card.input_name
    capture = cv2.VideoCapture(str(video))
    count, start = 0, time.perf_counter()
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        session.run(names[0], {names[1]: preprocess(frame, spec)[None]})
        count += 1
    return count / (time.perf_counter() - start)


def run_ceiling(inputs: list[np.ndarray], model) -> float:
    session = model.backend.session
    output, name = [model.card.output_name], model.card.input_name
    start = time.perf_counter()
    for x in inputs:
        session.run(output, {name: x})
    return len(inputs) / (time.perf_counter() - start)


def run_edge(video: Path, model, workers: int) -> float:
    from edge.runtime.executors import CpuExecutor
    from edge.runtime.loop import Loop
    from edge.runtime.sinks import Results, open_sink
    from edge.runtime.sources import open_source

    sink = open_sink("/dev/null")
    loop = Loop(open_source(str(video)), CpuExecutor(model, workers), Results(model), [sink])
    start = time.perf_counter()
    loop.run()
    elapsed = time.perf_counter() - start
    sink.close()
    return loop.stats.frames / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from edge.backends import parallel_runs
    from edge.model import Model
    from edge.preprocess import preprocess

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        folder, model_name = model_folder(workdir)
        video, video_name = make_video(workdir / "clip.avi", args.frames)
        model = Model.load(folder)
        workers = parallel_runs("onnxruntime")
        edge_model = Model.load(folder, runs=workers)
        capture, inputs = cv2.VideoCapture(str(video)), []
        while (frame := capture.read())[0]:
            inputs.append(preprocess(frame[1], model.preprocess)[None])
        run_ceiling(inputs[:20], model)  # warm-up: ONNX Runtime's first runs allocate
        run_ceiling(inputs[:20], edge_model)
        fps = {"serial": [], "ceiling": [], "edge": []}
        for _ in range(args.rounds):
            fps["serial"].append(run_serial(video, model))
            fps["ceiling"].append(run_ceiling(inputs, model))
            fps["edge"].append(run_edge(video, edge_model, workers))
    median = {name: statistics.median(values) for name, values in fps.items()}
    report = {"model": model_name, "video": video_name, "rounds": args.rounds, "fps": fps, "median_fps": median,
              "edge_vs_serial": median["edge"] / median["serial"],
              "edge_vs_ceiling": median["edge"] / median["ceiling"]}
    if args.json:
        print(json.dumps(report))
        return
    print(f"model  {model_name}\nvideo  {video_name}\nrounds {args.rounds} (median shown; every round in --json)")
    for name in ("serial", "ceiling", "edge"):
        rounds = ", ".join(f"{v:.1f}" for v in fps[name])
        print(f"{name:8} {median[name]:7.1f} fps   ({rounds})")
    print(f"edge / serial  {report['edge_vs_serial']:.2f}x   (goal >= 1.0)")
    print(f"edge / ceiling {report['edge_vs_ceiling']:.2f}x   (goal >= 0.85)")


if __name__ == "__main__":
    main()
