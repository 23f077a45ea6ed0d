"""A live camera's latency and CPU cost per frame on the CPU path, for each way `edge run` can run inference.

    default        --workers 0: one single-threaded ONNX Runtime run per core at once (throughput)
    workers1       --workers 1: one run on ONNX Runtime's thread pool, spin-waiting off (as edge loads it)
    workers1-spin  the same with the pool's idle threads spin-waiting (ONNX Runtime's own default)

The source is test:// at 640x480 and 30 fps (paced like a camera), the model EfficientNet-Lite0 from ../shared
(else the tests' tiny classifier), imported as benchmarks/run_throughput.py does. Each configuration runs
`edge run`'s own Loop in this process for --seconds; latency is capture to result (the loop's "latency" stage),
CPU is this process's user + system time over the run divided by the frames classified, which is what a Jetson
pays in power for each frame. Configurations are interleaved round by round so that other load on the machine
hits them alike; medians over the rounds.

    python benchmarks/run_latency.py [--seconds 8] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from run_throughput import model_folder  # the same model as the throughput benchmark, imported the same way

CONFIGS = ("default", "workers1", "workers1-spin")


def load(folder: Path, config: str):
    import onnxruntime as ort

    from edge.backends import parallel_runs
    from edge.model import Model

    workers = parallel_runs("onnxruntime") if config == "default" else 1
    model = Model.load(folder, runs=workers)
    if config == "workers1-spin":
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model.backend.session = ort.InferenceSession(str(folder / "model.onnx"), options,
                                                     providers=["CPUExecutionProvider"])
    return model, workers


class Latencies:
    def __init__(self):
        self.values: list[float] = []

    def record(self, stage: str, seconds: float) -> None:
        if stage == "latency":
            self.values.append(seconds * 1000.0)


class NullSink:
    def write(self, line: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_once(model, workers: int, seconds: float) -> dict:
    from edge.runtime.executors import CpuExecutor
    from edge.runtime.loop import Loop
    from edge.runtime.sinks import Results
    from edge.runtime.sources import open_source

    latencies = Latencies()
    loop = Loop(open_source("test://", width=640, height=480, fps=30.0), CpuExecutor(model, workers),
                Results(model), [NullSink()], timings=[latencies])
    timer = threading.Timer(seconds, loop.stop.set)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    timer.start()
    loop.run()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    kept = latencies.values[len(latencies.values) // 5:]  # the first fifth warms up
    return {"frames": loop.stats.frames, "fps": loop.stats.frames / wall,
            "latency_p50_ms": float(np.percentile(kept, 50)), "latency_p90_ms": float(np.percentile(kept, 90)),
            "cpu_ms_per_frame": 1000.0 * cpu / max(loop.stats.frames, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder, model_name = model_folder(Path(tmp))
        models = {config: load(folder, config) for config in CONFIGS}
        rounds = {config: [] for config in CONFIGS}
        for _ in range(args.rounds):
            for config in CONFIGS:
                rounds[config].append(run_once(*models[config], args.seconds))
    median = {config: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
              for config, runs in rounds.items()}
    if args.json:
        print(json.dumps({"model": model_name, "seconds": args.seconds, "rounds": rounds, "median": median}))
        return
    print(f"model {model_name}; test:// 640x480 at 30 fps, {args.seconds:g} s a run, {args.rounds} rounds (medians)")
    print(f"{'config':16} {'fps':>6} {'p50 ms':>7} {'p90 ms':>7} {'CPU ms/frame':>13}")
    for config, m in median.items():
        print(f"{config:16} {m['fps']:6.1f} {m['latency_p50_ms']:7.1f} {m['latency_p90_ms']:7.1f} "
              f"{m['cpu_ms_per_frame']:13.1f}")


if __name__ == "__main__":
    main()
