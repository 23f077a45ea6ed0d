"""`edge profile`: the camera loop of `edge run`, every stage timed, transfer split from compute.

The profiler does not run a pipeline of its own: it builds the same `edge.runtime.loop.Loop` that `edge run`
builds and listens on its stage-timing hook. Each memory mode is run twice:

    serial      the capture thread is held until the previous frame's result is written, so the stages run one
                after another: their times are the per-frame costs, and they add up to each frame's wall time
                from capture start to result written (the report shows how closely: "coverage"). The profiler
                adds one stage of its own, "queue": the hand-off of a frame from the capture thread to the loop.
                Gives "fps without overlap" (frames / the run's wall time).
    overlapped  the loop exactly as `edge run` runs it (capture thread alongside inference; on the GPU path two
                frames in flight, frame N+1's upload and preprocessing overlapping frame N's compute). Gives "fps
                with overlap".

Host stages are timed with time.perf_counter (monotonic); on the GPU path upload, preprocess, compute and
download come from CUDA events recorded around each operation (edge/gpu/pipeline.py). Both runs use the same
executor; in the serial run no next frame is waiting when a frame starts (the capture thread is held), and the
Loop collects a frame as soon as none is, so on the GPU path too it has one frame in flight at a time. Without
CUDA (or with a backend that runs on the host, such as ONNX Runtime) the host path is profiled: capture, queue,
preprocess, compute, postprocess, sink, and the report says so.

JSON (`--json`), schema "edge.profile/1":
    {"schema": "edge.profile/1", "model": str, "input": str, "frame": [height, width], "backend": str,
     "workers": int, "frames": int, "warmup": int, "path": "host" | "gpu", "note": str, "device": {...} | null,
     "runs": [{"memory": "host" | "pageable" | "pinned" | "mapped",
               "stages": {stage: {"mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "n"}},
               "stage_sum_ms": float, "span_ms": float, "wall_ms": float,
               "coverage": float,                                   # stage_sum / span, serial run
               "transfer_share": float | null,                           # (upload + download) / frame, GPU only
               "fps": {"serial": float, "overlapped": float}}],
     "recommendation": str, "telemetry": {...} | null, "telemetry_note": str}
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import telemetry as jetson_telemetry
from .backends import inference_workers
from .errors import EdgeError
from .files import atomic_write_bytes
from .gpu import cuda_available, parse_memory_modes
from .gpu.buffers import GpuContext
from .gpu.pipeline import device_engine
from .model import Model
from .runtime.executors import make_executor
from .runtime.loop import Loop
from .runtime.sinks import Results
from .runtime.sources import open_source, redact
from .words import plural

SCHEMA = "edge.profile/1"
HOST_STAGES = ("capture", "queue", "preprocess", "compute", "postprocess", "sink")
GPU_STAGES = ("capture", "queue", "upload", "preprocess", "compute", "download", "postprocess", "sink")
DEVICE_STAGES = ("upload", "preprocess", "compute", "download")  # timed with CUDA events on the GPU path
TRANSFER_STAGES = ("upload", "download")
TEST_FRAME = (1080, 1920)  # test:// is profiled at 1080p, the size the project's goals are stated for


# --- statistics -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageStats:
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float  # the worst frame: what a camera's result waits for at its unluckiest (trtexec reports it too)
    n: int

    def to_dict(self) -> dict:
        return {"mean_ms": round(self.mean_ms, 4), "p50_ms": round(self.p50_ms, 4), "p90_ms": round(self.p90_ms, 4),
                "p99_ms": round(self.p99_ms, 4), "max_ms": round(self.max_ms, 4), "n": self.n}


def stage_stats(samples_ms) -> StageStats:
    """Mean, percentiles (numpy's linear interpolation between closest ranks) and maximum of one stage's times."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples")
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return StageStats(float(x.mean()), float(p50), float(p90), float(p99), float(x.max()), int(x.size))


@dataclass
class RunProfile:
    """One memory mode: per-stage statistics from the serial run, frame rates from both runs."""

    memory: str
    stages: dict[str, StageStats]
    span_ms: float  # the measured frames' spans added up: capture start to result written, serial run
    wall_ms: float  # the serial run's wall time over the measured frames (spans plus the gaps between frames)
    frames: int
    fps_overlapped: float

    @property
    def stage_sum_ms(self) -> float:
        """Every measured stage time added up: in the serial run, close to its wall time."""
        return sum(s.mean_ms * s.n for s in self.stages.values())

    @property
    def frame_ms(self) -> float:
        """Mean time of one frame through every stage, one after another."""
        return sum(s.mean_ms for s in self.stages.values())

    @property
    def coverage(self) -> float:
        """The share of each frame's wall time (its span) that the stage times account for: close to 1."""
        return self.stage_sum_ms / self.span_ms if self.span_ms else 0.0

    @property
    def fps_serial(self) -> float:
        return self.frames / (self.wall_ms / 1000.0) if self.wall_ms else 0.0

    @property
    def transfer_share(self) -> float | None:
        if not any(stage in self.stages for stage in TRANSFER_STAGES):
            return None
        moved = sum(self.stages[stage].mean_ms for stage in TRANSFER_STAGES if stage in self.stages)
        return moved / self.frame_ms if self.frame_ms else 0.0

    def to_dict(self) -> dict:
        share = self.transfer_share
        return {"memory": self.memory, "stages": {name: s.to_dict() for name, s in self.stages.items()},
                "stage_sum_ms": round(self.stage_sum_ms, 3), "span_ms": round(self.span_ms, 3),
                "wall_ms": round(self.wall_ms, 3),
                "coverage": round(self.coverage, 4), "transfer_share": None if share is None else round(share, 4),
                "fps": {"serial": round(self.fps_serial, 2), "overlapped": round(self.fps_overlapped, 2)}}


@dataclass
class Profile:
    model: str
    input: str
    frame: tuple[int, int]
    backend: str
    workers: int
    frames: int
    warmup: int
    path: str  # "host" or "gpu"
    note: str
    runs: list[RunProfile]
    device: dict | None = None
    telemetry: dict | None = None
    telemetry_note: str = ""
    recommendation: str = field(default="")

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "model": self.model, "input": self.input, "frame": list(self.frame),
                "backend": self.backend, "workers": self.workers, "frames": self.frames, "warmup": self.warmup,
                "path": self.path, "note": self.note, "device": self.device,
                "runs": [run.to_dict() for run in self.runs],
                "recommendation": self.recommendation, "telemetry": self.telemetry,
                "telemetry_note": self.telemetry_note}


# --- the recommendation -----------------------------------------------------------------------------------------

def recommend(profile: Profile) -> str:
    """What to do on this device, from the figures: the memory mode to use and the stage worth working on."""
    lines = []
    if profile.path == "gpu":
        best = max(profile.runs, key=lambda run: run.fps_overlapped)
        device = profile.device or {}
        automatic = "mapped" if device.get("integrated") and device.get("can_map_host_memory") else "pinned"
        kind = "integrated" if device.get("integrated") else "discrete"
        line = f"use {best.memory} memory on this {kind} GPU ({best.fps_overlapped:.1f} fps overlapped"
        if best.transfer_share is not None:
            line += f", transfers {best.transfer_share:.1%} of a frame"
        lines.append(line + ")")
        if best.memory != automatic and len(profile.runs) > 1:
            lines.append(f"edge picks {automatic} by default on {kind} GPUs; here {best.memory} was faster")
        if best.transfer_share is not None and best.transfer_share > 0.05:
            lines.append("transfers exceed 5% of the frame: keep frames in page-locked (pinned or mapped) memory "
                         "and avoid pageable copies")
        run = best
    else:
        run = profile.runs[0]
        lines.append("host figures only (no GPU data path here, see the path line)")
    stage, stats = max(run.stages.items(), key=lambda item: item[1].mean_ms)
    share = stats.mean_ms / run.frame_ms if run.frame_ms else 0.0
    advice = {
        "capture": "the source limits the rate (decode or camera); a faster source or a smaller frame helps most",
        "queue": "handing frames between the capture thread and the loop shows: the model is fast; batch frames",
        "compute": "the model limits the rate: an FP16 or INT8 TensorRT engine is the lever",
        "preprocess": "preprocessing limits the rate: the fused GPU kernel (edge.gpu) takes it off the CPU",
        "upload": "uploading frames limits the rate: use pinned, or mapped on a Jetson",
        "download": "downloading results limits the rate: use pinned or mapped output memory",
        "postprocess": "post-processing limits the rate: lower --top or drop smoothing",
        "sink": "writing results limits the rate: a slow sink (network, disk) is holding the loop",
    }[stage]
    lines.append(f"{stage} takes {share:.0%} of a frame: {advice}")
    if run.fps_overlapped > run.fps_serial * 1.05:
        lines.append(f"the overlapped loop runs {run.fps_overlapped / run.fps_serial:.2f}x the serial rate")
    return "; ".join(lines) + "."


# --- the report ----------------------------------------------------------------------------------------------

def format_report(profile: Profile) -> str:
    height, width = profile.frame
    out = [f"edge profile: {profile.model} on {profile.input} ({width}x{height}), "
           f"{plural(profile.frames, 'frame')} after {profile.warmup} warm-up, backend {profile.backend}, "
           f"workers {profile.workers}",
           f"path: {profile.path}: {profile.note}"]
    if profile.device:
        d = profile.device
        out.append(f"device: {d['name']} (sm {d['compute_capability']}, "
                   f"{'integrated' if d['integrated'] else 'discrete'}, can map host memory: "
                   f"{'yes' if d['can_map_host_memory'] else 'no'})")
    out.append(f"{'memory':9} {'stage':12} {'mean':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  ms")
    for run in profile.runs:
        for i, (name, s) in enumerate(run.stages.items()):
            label = run.memory if i == 0 else ""
            out.append(f"{label:9} {name:12} {s.mean_ms:8.3f} {s.p50_ms:8.3f} {s.p90_ms:8.3f} {s.p99_ms:8.3f} "
                       f"{s.max_ms:8.3f}")
        share = "-" if run.transfer_share is None else f"{run.transfer_share:.1%}"
        out.append(f"{'':9} {'frame':12} {run.frame_ms:8.3f}   the stages cover {run.coverage:.1%} of the frames' "
                   f"wall time (capture start to result written, {run.span_ms:.0f} ms)")
        out.append(f"{'':9} fps: {run.fps_serial:.1f} serial, {run.fps_overlapped:.1f} overlapped; "
                   f"transfer share {share}")
    out.append(f"recommendation: {profile.recommendation}")
    if profile.telemetry:
        t = profile.telemetry
        parts = [f"{k} {v}" for k, v in t.items()]
        out.append("telemetry: " + ", ".join(parts))
        if t.get("jetson_clocks", "on") != "on":  # DVFS moved the clocks under the measurement
            out.append("the clocks were not locked: these times vary from run to run; `sudo jetson_clocks` locks "
                       "them at the power mode's maximum for figures that compare")
    else:
        out.append(f"telemetry: none ({profile.telemetry_note})")
    return "\n".join(out)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, imported only when a plot is asked for."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EdgeError("--plot needs matplotlib: pip install 'edge[plot]'") from None
    return plt


def write_figure(figure, path: Path) -> None:
    """The figure as a PNG, written atomically."""
    import io


    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    pyplot().close(figure)
    try:
        atomic_write_bytes(Path(path), buffer.getvalue())
    except OSError as e:
        raise EdgeError(f"{path}: cannot write the plot: {e.strerror or e}") from None


def plot(profile: Profile, path: Path) -> None:
    """Mean stage times per memory mode as stacked horizontal bars, written to a PNG."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(9, 1.6 + 0.5 * len(profile.runs)))
    stages = list(dict.fromkeys(stage for run in profile.runs for stage in run.stages))
    colours = plt.get_cmap("tab10")
    for row, run in enumerate(profile.runs):
        left = 0.0
        for k, stage in enumerate(stages):
            width = run.stages[stage].mean_ms if stage in run.stages else 0.0
            axes.barh(row, width, left=left, color=colours(k % 10), label=stage if row == 0 else None)
            left += width
    axes.set_yticks(range(len(profile.runs)), [run.memory for run in profile.runs])
    axes.set_xlabel("mean time per frame (ms)")
    axes.set_title(f"{profile.model}: {profile.backend}, {profile.path} path")
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", frameon=False)
    figure.tight_layout()
    write_figure(figure, path)


# --- running the loop ---------------------------------------------------------------------------------------------

class StageRecorder:
    """The Loop's `timings` hook: keeps every stage's times and stops the loop after warmup + frames frames.

    "latency" marks the end of a frame (the Loop records it once per frame, after the sinks). The wall clock of
    the measured window runs from the end of the last warm-up frame to the end of the last measured frame.
    In the serial run (with a GatedSource) it also measures, per frame, "queue" (from the end of the capture to
    the executor's entry: the hand-off between the two threads) and the frame's span (capture start to result
    written), each from clock readings of its own, so the stage times can be checked against the span."""

    def __init__(self, warmup: int, frames: int, gate: GatedSource | None = None):
        self.warmup, self.frames, self.gate = warmup, frames, gate
        self.samples: dict[str, list[float]] = {}
        self.spans_ms: list[float] = []
        self.done = 0
        self.window = [0, 0]  # perf_counter_ns at the window's start and end
        self.loop = None
        self.executor: EntryTimed | None = None

    def record(self, stage: str, seconds: float) -> None:
        if stage == "latency":
            now = time.perf_counter_ns()
            if self.gate is not None:
                capture_start, capture_end = self.gate.capture_ns[self.done]
                self.samples.setdefault("queue", []).append((self.executor.entered_ns - capture_end) / 1e6)
                self.spans_ms.append((now - capture_start) / 1e6)
            self.done += 1
            if self.done == self.warmup:
                self.window[0] = now
            if self.done == self.warmup + self.frames:
                self.window[1] = now
                self.loop.stop.set()
            if self.gate is not None:
                self.gate.turn.release()
            return
        if stage == "capture" and self.gate is not None:
            return  # the Loop's capture time includes the wait at the gate; the gate times the read itself
        self.samples.setdefault(stage, []).append(seconds * 1000.0)

    def measured(self, stage: str) -> list[float]:
        """This stage's times for the measured frames (the warm-up frames' are left out)."""
        return self.samples.get(stage, [])[self.warmup : self.warmup + self.frames]

    @property
    def wall_ms(self) -> float:
        return (self.window[1] - self.window[0]) / 1e6

    @property
    def span_ms(self) -> float:
        return sum(self.spans_ms[self.warmup : self.warmup + self.frames])


class EntryTimed:
    """The executor, unchanged, with the moment the Loop hands it a frame noted (the end of "queue")."""

    def __init__(self, inner, serial: bool):
        self.inner = inner
        # The overlapped run runs the executor as `edge run` does, with its thread pool (ONNX Runtime's runs per
        # core); the serial run calls it on the loop's thread, so no hand-off between threads goes untimed.
        self.workers = 1 if serial else getattr(inner, "workers", 1)
        self.in_flight = getattr(inner, "in_flight", 1)  # the GPU path's double buffering (the gate serialises it)
        self.entered_ns = 0

    def preprocess(self, images):
        self.entered_ns = time.perf_counter_ns()
        return self.inner.preprocess(images)

    def compute(self, prepared):
        return self.inner.compute(prepared)


class GatedSource:
    """Wraps a source so that the capture thread reads a frame only when the previous one is finished (the
    serial run). It times the read itself (perf_counter_ns before and after)."""

    def __init__(self, inner):
        self.inner, self.live, self.uri = inner, inner.live, inner.uri
        self.turn = threading.Semaphore(1)
        self.stopped = threading.Event()
        self.capture_ns: list[tuple[int, int]] = []
        self.frame_size: tuple[int, int] | None = None

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.stopped.set()
        self.inner.close()

    def read(self):
        while not self.turn.acquire(timeout=0.1):
            if self.stopped.is_set():
                return None
        start = time.perf_counter_ns()
        try:
            frame = self.inner.read()
        except BaseException:  # a failed read (the Loop reopens a live source) gives no frame: keep the turn
            self.turn.release()
            raise
        if frame is None:
            return None
        image = frame.image
        if image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            self.turn.release()  # the Loop skips a bad frame (and counts it): the next read needs the turn
            return frame
        self.capture_ns.append((start, time.perf_counter_ns()))
        if self.frame_size is None:
            self.frame_size = tuple(image.shape[:2])
        return frame

    @property
    def capture_ms(self) -> list[float]:
        return [(end - start) / 1e6 for start, end in self.capture_ns]

    @property
    def decode_errors(self) -> int:
        return getattr(self.inner, "decode_errors", 0)


def _run_loop(make_source, new_executor, model, warmup: int, frames: int, serial: bool) -> StageRecorder:
    source = make_source()
    gate = GatedSource(source) if serial else None
    recorder = StageRecorder(warmup, frames, gate)
    recorder.executor = EntryTimed(new_executor(recorder), serial)
    loop = Loop(gate or source, recorder.executor, Results(model), sinks=[], batch=1, timings=[recorder])
    recorder.loop = loop
    try:
        loop.run()
    finally:
        if gate is not None:
            gate.stopped.set()
    if recorder.done < warmup + frames:
        raise EdgeError(f"{source.uri}: the input ended after {plural(recorder.done, 'frame')}; the profile needs "
                        f"{warmup + frames} ({warmup} warm-up): lower --frames, or add --loop")
    if gate is not None:
        recorder.samples["capture"] = gate.capture_ms
    return recorder


def profile_run(memory: str, make_source, new_executor, model, warmup: int, frames: int,
                stages: tuple[str, ...]) -> tuple[RunProfile, tuple[int, int]]:
    """Serial then overlapped run of the loop for one memory mode; also the frames' (height, width)."""
    serial = _run_loop(make_source, new_executor, model, warmup, frames, serial=True)
    overlapped = _run_loop(make_source, new_executor, model, warmup, frames, serial=False)
    stats = {stage: stage_stats(serial.measured(stage)) for stage in stages if serial.measured(stage)}
    run = RunProfile(memory, stats, serial.span_ms, serial.wall_ms, frames, frames / (overlapped.wall_ms / 1000.0))
    return run, serial.loop.source.frame_size


def profile(model_ref: str, repo: str | None = None, input_uri: str = "test://", frames: int = 200,
            warmup: int = 20, memory: str | None = None, backend: str = "onnxruntime",
            precision: str = "fp32", telemetry: bool = True, workers: int = 0, loop: bool = False) -> Profile:
    """Profile a model on this machine: the GPU path per memory mode when CUDA and a GPU backend are there,
    else the host path (and the note says why). `workers` as `edge run --workers` (0: one run per core on ONNX
    Runtime, for throughput; 1: one run on every core, for latency). `loop` starts a file or folder over at its
    end, as `edge run --loop` does."""
    if frames < 1:
        raise EdgeError(f"--frames must be at least 1, not {frames}")
    if warmup < 1:
        raise EdgeError(f"--warmup must be at least 1, not {warmup}")
    if memory:
        parse_memory_modes(memory, integrated=False, can_map_host_memory=True)  # names checked on every machine
    # As `edge run` loads and runs it, so that the overlapped run measures what edge run gets.
    workers = inference_workers(backend, workers)
    model = Model.load(model_ref, repo, backend, precision, runs=workers)
    is_test = input_uri.split("://")[0].lower() == "test"

    def make_source():
        if not is_test:
            return open_source(input_uri, loop=loop)
        pattern = open_source(input_uri, width=TEST_FRAME[1], height=TEST_FRAME[0], fps=0)
        # Unpaced and read like a file (the queue waits rather than drops): every frame made is classified, so
        # the overlapped run measures the loop's capacity instead of a capture thread making frames to drop.
        pattern.live = False
        return pattern

    has_cuda, cuda_reason = cuda_available()
    gpu_backend = has_cuda and _runs_on_device(model.backend)
    if gpu_backend:
        path, note = "gpu", f"CUDA on {cuda_reason}; upload, preprocess, compute, download timed with CUDA events"
    elif has_cuda:
        path, note = "host", (f"backend {backend} runs on the host, so there is no device data path to profile; "
                              "memory modes need a GPU backend")
    else:
        path, note = "host", f"no CUDA ({cuda_reason}): the {backend} path on the host, stages on the host clock"
    if memory and path == "host":
        note += f"; --memory {memory} ignored: memory modes need CUDA and a GPU backend"

    remote_before = model.backend.times() if hasattr(model.backend, "time_split") else None  # a Triton server
    sampler = jetson_telemetry.Sampler() if telemetry else None
    if sampler is not None:
        sampler.start()
    try:
        if path == "host":
            run, frame_size = profile_run("host", make_source, lambda recorder: make_executor(model, workers, None),
                                          model, warmup, frames, HOST_STAGES)
            runs, device = [run], None
        else:
            runs, device, frame_size = _profile_gpu(model, memory, make_source, warmup, frames)
    finally:
        summary, telemetry_note = sampler.stop() if sampler is not None else (None, "not asked for")
    if remote_before is not None:
        note += "; " + model.backend.time_split(remote_before)

    result = Profile(model.card.name, redact(input_uri), frame_size, backend, workers, frames, warmup, path, note, runs,
                     device, summary, telemetry_note)
    result.recommendation = recommend(result)
    return result


def _runs_on_device(backend) -> bool:
    return device_engine(backend) is not None


def _profile_gpu(model, memory: str | None, make_source, warmup: int, frames: int):
    with GpuContext() as gpu:
        facts = gpu.facts
        modes = parse_memory_modes(memory, facts.integrated, facts.can_map_host_memory)
        runs = []
        for mode in modes:
            def make(recorder, mode=mode):  # as edge run makes it, in each memory mode
                return make_executor(model, 1, None, memory=mode, recorders=[recorder])

            run, frame_size = profile_run(mode, make_source, make, model, warmup, frames,
                                          tuple(f"gpu:{s}" if s in DEVICE_STAGES else s for s in GPU_STAGES))
            run.stages = {name.removeprefix("gpu:"): s for name, s in run.stages.items()}
            runs.append(run)
    return runs, facts.to_dict(), frame_size
