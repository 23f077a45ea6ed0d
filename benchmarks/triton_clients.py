"""Frames per second of `edge run` through a Triton server, 1 and 4 clients, against `edge run` on ONNX Runtime.

    local     edge run MODEL --input VIDEO (ONNX Runtime here, edge's defaults)
    triton-1  edge run MODEL --input VIDEO --backend triton+grpc://127.0.0.1:PORT/MODEL, one client
    triton-4  four such clients at once, each on its own copy of the video; the sum of their frames per second

The server is tritonserver 2.51 from nvidia-pytriton (tests/triton_server.py: .venv-triton), serving the ensemble
`edge export --triton --serve-with python` writes (edge's preprocessing and the model on ONNX Runtime, both in
the Python backend), on the same machine as the clients: it measures what the data path costs, not what a GPU
server gives. Each run is a process; its frames per second come from its results' own times (capture timestamp
plus latency), first result to last, so loading and connecting are left out. Rounds interleave the three; the
median is reported, with Triton's own statistics of the batch sizes it ran; the one client's top-1 must be the
local run's for every frame of every round.

    python benchmarks/triton_clients.py [--frames 300] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

EDGE = [sys.executable, "-m", "edge.cli", "run"]


def results_span(path: Path) -> tuple[int, float, float]:
    """(frames, first and last result's time) of one run's JSON lines."""
    done = [r["timestamp"] + r["latency_ms"] / 1000 for r in map(json.loads, path.read_text().splitlines())]
    return len(done), min(done), max(done)


def top1(path: Path) -> list[int]:
    return [r["top"][0]["class_id"] for r in map(json.loads, path.read_text().splitlines())]


def run_clients(folder: Path, videos: list[Path], out: Path, backend: str | None) -> float:
    """Frames per second of len(videos) `edge run` processes at once: all their frames over the span from the
    first result of any to the last of any. The results stay in out/client<i>.jsonl until the next call."""
    outputs = [out / f"client{i}.jsonl" for i in range(len(videos))]
    for output in outputs:  # edge run appends to a file
        output.unlink(missing_ok=True)
    extra = ["--backend", backend] if backend else []
    processes = [subprocess.Popen(EDGE + [str(folder), "--input", str(video), "--output", str(output), *extra],
                                  stderr=subprocess.PIPE, text=True) for video, output in zip(videos, outputs)]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        if process.returncode:
            raise SystemExit(f"edge run failed: {stderr}")
    spans = [results_span(output) for output in outputs]
    return sum(n for n, _, _ in spans) / (max(e for _, _, e in spans) - min(s for _, s, _ in spans))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import tritonclient.grpc as client
    from run_throughput import make_video, model_folder
    from triton_server import TritonServer

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        folder, model_name = model_folder(work)
        video, video_what = make_video(work / "clip.avi", args.frames)
        subprocess.run([sys.executable, "-m", "edge.cli", "export", str(folder), "--triton", str(work / "repo"),
                        "--serve-with", "python"], check=True, capture_output=True)
        name = folder.name
        figures: dict[str, list[float]] = {"local": [], "triton-1": [], "triton-4": []}
        with TritonServer(work / "repo", work / "server", [name]) as server:
            backend = f"triton+grpc://{server.grpc}/{name}"
            for _ in range(args.rounds):
                figures["local"].append(run_clients(folder, [video], work, None))
                local_top1 = top1(work / "client0.jsonl")
                figures["triton-1"].append(run_clients(folder, [video], work, backend))
                remote_top1 = top1(work / "client0.jsonl")
                same = sum(a == b for a, b in zip(local_top1, remote_top1))
                if len(remote_top1) != len(local_top1) or same != len(local_top1):
                    raise SystemExit(f"top-1 through Triton differs from local: {same} of {len(local_top1)} the same")
                figures["triton-4"].append(run_clients(folder, [video] * 4, work, backend))
            stats = client.InferenceServerClient(server.grpc).get_inference_statistics(f"{name}_python",
                                                                                      as_json=True)
        batches = {int(b["batch_size"]): int(b["compute_infer"]["count"])
                   for b in stats["model_stats"][0]["batch_stats"]}
    report = {"model": model_name, "video": video_what, "cpu": cpu_name(), "cores": os.cpu_count(),
              "load_average": os.getloadavg()[0], "rounds": args.rounds, "same_top1": f"{same} of {len(local_top1)}",
              "fps": {k: round(statistics.median(v), 1) for k, v in figures.items()},
              "fps_all": {k: [round(x, 1) for x in v] for k, v in figures.items()},
              "server_batch_sizes": dict(sorted(batches.items()))}
    if args.json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        print(f"{key:20} {value}")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
