"""The executors (edge/runtime/executors.py): CpuExecutor's workers, and the path make_executor takes."""

from __future__ import annotations

import json
import sys

from edge.runtime.executors import CpuExecutor
from edge.runtime.loop import Loop
from edge.runtime.sinks import Results
from edge.runtime.sources import open_source

from runtime_support import ListSink, tiny_model_folder, write_video


def test_cpu_executor_with_workers_gives_the_same_results_as_one(model, tmp_path):
    video = write_video(tmp_path / "clip.avi", 23)
    lines = {}
    for workers in (1, 2):
        sink = ListSink()
        Loop(open_source(str(video)), CpuExecutor(model, workers), Results(model, top=3), [sink], batch=2).run()
        lines[workers] = [{k: r[k] for k in ("frame", "position", "top")} for r in map(json.loads, sink.lines)]
    assert len(lines[2]) == 23 and lines[2] == lines[1]


def test_edge_run_takes_the_cpu_path_on_onnxruntime_and_on_a_host_only_backend(tmp_path):
    import contextlib

    from edge import Model
    from edge.backends import parallel_runs
    from edge.runtime.executors import CpuExecutor, make_executor

    model = Model.load(tiny_model_folder(tmp_path))
    with contextlib.ExitStack() as scope:
        executor = make_executor(model, parallel_runs("onnxruntime"), scope)
        assert type(executor) is CpuExecutor and executor.workers == parallel_runs("onnxruntime")
        # A backend that cannot run from device memory keeps the CPU path, one run at a time, and no CUDA context.
        executor = make_executor(model, 1, scope)
        assert type(executor) is CpuExecutor and executor.workers == 1
    assert "pycuda" not in sys.modules
