"""Memory over a long `edge run`: resident set size (RSS) at frame 1,000 and frame 20,000 of a test:// run.

Runs the real command as a child process, unpaced (--fps 0), with results on stdout and the HTTP endpoint on
(scraped every 1,000 frames, so its code is in the loop too), and reads VmRSS from /proc/PID/status when the
results for those frames arrive. Goal: less than 5 MB of growth between frame 1,000 and 20,000.

Model: the tests' tiny generated classifier by default, so that 20,000 frames take a minute, not twenty;
--efficientnet uses EfficientNet-Lite0 from ../shared instead.

    python benchmarks/run_memory.py [--frames 20000] [--efficientnet] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def rss_marks(frames: int) -> list[int]:
    """The frames whose RSS is read: 1,000, the last one, and the round numbers in between."""
    return sorted({1000, frames} | {m for m in (2000, 5000, 10000) if m < frames})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--efficientnet", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.frames <= 1000:
        parser.error(f"--frames {args.frames}: growth is measured from frame 1,000, so give more than 1000")
    marks = rss_marks(args.frames)

    with tempfile.TemporaryDirectory() as tmp:
        if args.efficientnet:
            from run_throughput import model_folder

            folder, model_name = model_folder(Path(tmp))
        else:
            from runtime_support import tiny_model_folder

            folder, model_name = tiny_model_folder(Path(tmp) / "tiny"), "tiny generated classifier"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [sys.executable, "-m", "edge.cli", "run", str(folder), "--input", "test://", "--fps", "0",
                   "--http", f"127.0.0.1:{port}"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        rss, start = {}, time.monotonic()
        try:
            for line in process.stdout:
                frame = int(line[len('{"frame":'):line.index(",")])
                if frame in marks:
                    rss[frame] = rss_kib(process.pid)
                if frame % 1000 == 0 and frame:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
                if frame >= args.frames:
                    break
        finally:
            process.terminate()
            process.wait(timeout=10)
        elapsed = time.monotonic() - start
    growth = (rss[args.frames] - rss[1000]) / 1024
    report = {"model": model_name, "frames": args.frames, "rss_kib": rss, "growth_mib": round(growth, 3),
              "seconds": round(elapsed, 1)}
    if args.json:
        print(json.dumps(report))
        return
    print(f"model {model_name}, test:// 640x480 unpaced, {args.frames} frames in {elapsed:.0f} s")
    for frame, kib in rss.items():
        print(f"frame {frame:6d}  RSS {kib / 1024:8.2f} MiB")
    print(f"growth from frame 1,000 to {args.frames:,}: {growth:+.2f} MiB (goal < 5 MB)")


if __name__ == "__main__":
    main()
