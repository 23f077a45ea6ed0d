"""The benchmark scripts stay runnable: their figures are in docs/benchmarks.md and must be reproducible. Each
Python script answers --help (its imports resolve), and gpu_check.sh, which only ever runs on a GPU machine where
a syntax error would cost a whole device session, parses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmark_script_answers_help(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")


def test_gpu_check_script_parses():
    done = subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu_check.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("frames", [1500, 2000, 5000, 20000])
def test_run_memory_reads_rss_at_the_last_frame_it_reports(frames):
    # --frames 2000 (or 5000, 10000) once dropped the last frame from the marks and ended in a KeyError.
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from run_memory import rss_marks
    finally:
        sys.path.remove(str(BENCHMARKS))
    marks = rss_marks(frames)
    assert marks[0] == 1000 and marks[-1] == frames
    assert marks == sorted(set(marks))


def test_run_memory_refuses_too_few_frames():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "run_memory.py"), "--frames", "500"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--frames 500" in done.stderr.splitlines()[-1]
