"""`edge bench`: models x precisions x backends side by side on the same images: accuracy, latency, throughput.

One row per (model, precision, backend). A row that cannot run here is listed with the reason and the command
that would make it (no TensorRT, no CUDA, no INT8 variant yet); a model or variant that fails to load is one row
with its error, and the others go on. Rows are loaded as `edge eval`, `edge run` and `edge profile` load them
(Model.load, the ONNX Runtime backend's own sessions, the runtime's executor), so their figures agree:

    accuracy    one pass over the labelled list: each image is decoded once, preprocessed once per model, and run
                through every row of that model at batch 1, several images at once as `edge eval` does (ONNX
                Runtime loaded for one single-threaded run per core). A model with an INT8 row is scored, in every
                row, without the images it was calibrated on, as `edge eval --precision ...,int8` scores it.
                Top-1 and top-5; top-1 agreement with the model's FP32 row on ONNX Runtime; with groups, accuracy
                per group and the mean confidence of right and wrong group answers.
    latency     per batch size, the inference alone and the whole frame (decode from memory, preprocess,
                inference, top-5), one batch at a time, the model loaded as `edge profile --workers 1` loads it
                (one run on every core). min / mean / p25 / p50 / p75 / p95 / p99 / max, warm-up excluded.
    throughput  the loop of `edge run` (its executor, no sinks) over decoded frames in memory, for every batch
                size and worker setting the backend offers (ONNX Runtime: one run on every core, or one
                single-threaded run per core); the best.

Latency and throughput are measured side by side: `rounds` rounds, each running every configuration once, in an
order that rotates from round to round (schedule), so that a machine whose load changes cannot favour the row
that ran first. The spread of a row's figures (p25 to p75, and the median of each round) says how noisy it was.

JSON (`--json`): schema "edge.bench/1", documented in docs/bench.md (the tests hold this module to it).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .backends import parallel_runs
from .backends.opencv import OpenCvDnnBackend
from .errors import EdgeError, first_line
from .evaluate import Score, in_order, read_label_list
from .files import atomic_write_text
from .folder import PRECISIONS, Card, find_model_folder, precision_named, read_labels
from .gpu import cuda_available
from .imagefile import decode_image, load_image
from .info import cpu
from .model import Model
from .precision.images import exclude_calibration_images
from .preprocess import preprocess
from .runtime.executors import make_executor
from .runtime.loop import Loop
from .runtime.sinks import Results, load_groups
from .runtime.sources import Frame, Source
from .tensorrt.version import import_tensorrt
from .words import plural

SCHEMA = "edge.bench/1"
BACKENDS = ("onnxruntime", "opencv", "tensorrt", "torch")
TOP_K = 5
WARMUP_BATCHES = 2  # per configuration, before the first round


# --- rows ----------------------------------------------------------------------------------------------------

@dataclass
class Row:
    model: str  # as named on the command line
    precision: str
    backend: str
    status: str = "ok"  # "ok", "skipped" (cannot run here) or "failed" (an error)
    reason: str = ""
    command: str = ""  # what would make a skipped row runnable
    file_bytes: int | None = None
    memory_bytes: int | None = None
    models: dict[int, Model] = field(default_factory=dict)  # workers -> the model loaded for that many runs at once
    executors: dict[tuple[int, int], object] = field(default_factory=dict)  # (workers, batch) -> executor
    score: Score | None = None
    groups: GroupScore | None = None
    left_out: int = 0
    # batch -> one (inference ms, whole-frame ms) pair of lists per round
    latency: dict[int, list[tuple[list[float], list[float]]]] = field(default_factory=dict)
    throughput: dict[tuple[int, int], list[float]] = field(default_factory=dict)  # (batch, workers) -> img/s
    compared: bool = False  # its accuracy has an agreement with the model's FP32 ONNX Runtime row
    pareto: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def label(self) -> str:
        return f"{self.model} {self.precision} {self.backend}"

    def fail(self, error: BaseException, during: str) -> None:
        self.status, self.reason = "failed", f"{during}: {first_line(error)}"
        self.models, self.executors = {}, {}

    @property
    def workers(self) -> list[int]:
        return sorted(self.models)

    @property
    def accuracy_executor(self):
        """The executor of the model loaded as `edge eval` loads it (most runs at once), at batch 1."""
        return self.executors[max(self.models), 1]


@dataclass
class GroupScore:
    """Accuracy per label group (the true group: the one holding the image's class; the answer: the group of
    highest summed probability, as `edge run --groups` ranks them), and the confidence of right and wrong answers."""

    groups: dict[str, np.ndarray]
    n: dict[str, int] = field(default_factory=dict)
    correct: dict[str, int] = field(default_factory=dict)
    confidence: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})

    def add(self, probabilities: np.ndarray, class_id: int) -> None:
        truth = [name for name, ids in self.groups.items() if class_id in ids]
        if not truth:  # an image of no group says nothing about group answers
            return
        sums = {name: float(probabilities[ids].sum()) for name, ids in self.groups.items()}
        answer = max(sums, key=sums.get)
        right = answer in truth
        for name in truth:
            self.n[name] = self.n.get(name, 0) + 1
            self.correct[name] = self.correct.get(name, 0) + right
        self.confidence[right].append(sums[answer])

    def to_dict(self) -> dict:
        def mean(values: list[float]) -> float | None:
            return round(float(np.mean(values)), 6) if values else None

        return {"groups": {name: {"n": self.n.get(name, 0),
                                  "accuracy": round(self.correct[name] / self.n[name], 6) if self.n.get(name) else None}
                           for name in self.groups},
                "group_confidence": {"correct": mean(self.confidence[True]), "wrong": mean(self.confidence[False])}}


def skip_reason(model: str, folder: Path, precision: str, backend: str, label_list: Path) -> tuple[str, str]:
    """(why the row cannot run here, the command that would make it), or ("", "") when it can be tried."""
    if backend in ("tensorrt", "torch"):
        has_cuda, why = cuda_available()
        if not has_cuda:
            return f"no CUDA ({why})", f"on an NVIDIA GPU: {_gpu_command(model, precision, backend)}"
        if backend == "tensorrt":
            try:
                import_tensorrt()
            except EdgeError as e:
                return str(e), _gpu_command(model, precision, backend)
        else:
            import importlib.util

            if importlib.util.find_spec("torch") is None:
                return "PyTorch is not installed", _gpu_command(model, precision, backend)
    variant = PRECISIONS[precision]
    if backend != "tensorrt" and variant.made_by and not (folder / variant.onnx).is_file():
        command = f"{variant.made_by} {model}"
        if variant.reads_calibration_cache:  # made by calibrating, on images
            command += f" --images {label_list} --count 100"
        return f"no {precision} variant ({variant.onnx})", command
    return "", ""


def _gpu_command(model: str, precision: str, backend: str) -> str:
    if backend == "tensorrt":
        return f"edge build {model} --precision {precision}"
    return "pip install 'edge[torch]' (PyTorch with CUDA)"


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux
        return None


def load_row(row: Row, folder: Path, card: Card, repo, batches: list[int], gpu_scope: contextlib.ExitStack) -> None:
    """The row's model at every worker setting, with an executor per batch size as the runtime assembles it, each
    run once on a blank frame."""
    before = _resident_bytes()
    blank = np.zeros((*card.preprocess.size, 3), np.uint8)
    for workers in sorted({1, parallel_runs(row.backend)}):
        if row.backend == "opencv":
            model = Model(folder, card, OpenCvDnnBackend(folder / PRECISIONS[row.precision].onnx, card))
        else:
            model = Model.load(folder, repo, row.backend, row.precision, runs=workers)
        row.models[workers] = model
        for batch in sorted({1, *batches}):
            executor = make_executor(model, workers, gpu_scope, batch)
            executor.compute(executor.preprocess([blank]))
            row.executors[workers, batch] = executor
    after = _resident_bytes()
    row.memory_bytes = after - before if before is not None and after is not None else None
    path = folder / PRECISIONS[row.precision].onnx
    row.file_bytes = path.stat().st_size if path.is_file() else None


# --- the schedule ------------------------------------------------------------------------------------------

def schedule(configurations: list, rounds: int) -> list[tuple[int, object]]:
    """(round, configuration) in run order: every round runs each configuration once, round r starting at the
    r-th configuration, so none always runs first (or right after the same neighbour's warm caches)."""
    order = []
    count = len(configurations)
    for r in range(rounds):
        order += [(r, configurations[(r + k) % count]) for k in range(count)]
    return order


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (latency, accuracy) points: True where no other point is as fast and as accurate, and better in one."""
    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] <= b[0] and a[1] >= b[1] and a != b

    return [not any(dominates(other, point) for other in points) for point in points]


def latency_stats(samples_ms: list[float]) -> dict:
    x = np.asarray(samples_ms, dtype=np.float64)
    values = [x.min(), x.mean(), *np.percentile(x, [25, 50, 75, 95, 99]), x.max()]
    names = ("min_ms", "mean_ms", "p25_ms", "p50_ms", "p75_ms", "p95_ms", "p99_ms", "max_ms")
    return {name: round(float(v), 4) for name, v in zip(names, values)} | {"n": int(x.size)}


# --- one batch -----------------------------------------------------------------------------------------------

def time_frames(row: Row, encoded: list[tuple[str, np.ndarray]]) -> tuple[float, float]:
    """(inference ms, whole-frame ms) for one batch: decode from memory, preprocess, inference, top-5."""
    executor, model = row.executors[1, len(encoded)], row.models[1]
    start = time.perf_counter()
    images = [decode_image(data, name) for name, data in encoded]
    prepared = executor.preprocess(images)
    inference_start = time.perf_counter()
    probabilities = executor.compute(prepared)
    inference_end = time.perf_counter()
    for p in probabilities[: len(images)]:
        model.top(p, TOP_K)
    end = time.perf_counter()
    return (inference_end - inference_start) * 1000.0, (end - start) * 1000.0


class MemoryFrames(Source):
    """Decoded frames from memory, read like a file (the loop's queue waits rather than drops), so that the
    loop's rate is measured without the disk and the decoder."""

    uri = "memory://"

    def __init__(self, images: list[np.ndarray]):
        self.images, self.next = images, 0

    def read(self) -> Frame | None:
        if self.next == len(self.images):
            return None
        self.next += 1
        return Frame(self.images[self.next - 1], time.time())


def time_throughput(row: Row, batch: int, workers: int, images: list[np.ndarray]) -> float:
    """Images per second through the loop of `edge run` (batch, workers), no sinks, frames from memory."""
    model = row.models[workers]
    loop = Loop(MemoryFrames(images), row.executors[workers, batch], Results(model, TOP_K), sinks=[], batch=batch)
    start = time.perf_counter()
    loop.run()
    return loop.stats.frames / (time.perf_counter() - start)


# --- the run -------------------------------------------------------------------------------------------------

@dataclass
class Bench:
    rows: list[Row]
    label_list: str
    frames: int
    rounds: int
    batches: list[int]
    groups: str | None
    machine: dict
    date: str
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "date": self.date, "machine": self.machine, "list": self.label_list,
                "frames": self.frames, "rounds": self.rounds, "batches": self.batches, "groups": self.groups,
                "wall_s": round(self.wall_s, 1), "rows": [_row_dict(row) for row in sorted_rows(self.rows)]}


def _row_dict(row: Row) -> dict:
    """The row's figures; a row that failed part way shows none of them (only its error)."""
    if not row.ok:
        row.score, row.latency, row.throughput = None, {}, {}
    accuracy = None
    if row.score is not None and row.score.n:
        accuracy = row.score.to_dict(compared=row.compared) | {"left_out": row.left_out}
        if row.groups is not None:
            accuracy |= row.groups.to_dict()
    latency = {str(b): {"inference": latency_stats([t for times in rounds for t in times[0]]),
                        "frame": latency_stats([t for times in rounds for t in times[1]]),
                        "round_p50_ms": [round(float(np.median(times[1])), 4) for times in rounds]}
               for b, rounds in row.latency.items() if rounds} or None
    throughput = None
    if row.throughput:
        measured = [{"batch": b, "workers": w, "images_per_s": round(float(np.median(rates)), 2)}
                    for (b, w), rates in row.throughput.items()]
        best = max(measured, key=lambda m: m["images_per_s"])
        throughput = {"images_per_s": best["images_per_s"], "batch": best["batch"], "workers": best["workers"],
                      "all": measured}
    def megabytes(n: int | None) -> float | None:
        return None if n is None else round(n / 1e6, 2)

    return {"model": row.model, "precision": row.precision, "backend": row.backend, "status": row.status,
            "reason": row.reason, "command": row.command, "file_mb": megabytes(row.file_bytes),
            "memory_mb": megabytes(row.memory_bytes), "accuracy": accuracy, "latency": latency,
            "throughput": throughput, "pareto": row.pareto}


def sorted_rows(rows: list[Row]) -> list[Row]:
    """Rows that ran, most accurate first (then fastest); then the skipped and failed ones, in the order given."""
    def key(row: Row):
        if not row.ok or row.score is None or not row.score.n:
            return (1, 0.0, 0.0, 0.0)
        return (0, -row.score.top1 / row.score.n, -row.score.top5 / row.score.n, _frame_p50(row) or 0.0)

    return sorted(rows, key=key)


def _frame_p50(row: Row) -> float | None:
    if not row.latency:
        return None
    rounds = next(iter(row.latency.values()))
    return float(np.median([t for times in rounds for t in times[1]])) if rounds else None


def machine() -> dict:
    """The CPU (edge info's reading: its model name and the int8 instructions it has), cores and load."""
    name, int8_flags = cpu()
    return {"cpu": name, "cores": os.cpu_count() or 1, "flags": int8_flags,
            "load_average": [round(os.getloadavg()[0], 2)]}


def run_bench(models: list[str], label_list: Path, root: Path | None = None, repo=None,
              precisions: tuple[str, ...] = tuple(PRECISIONS), backends: tuple[str, ...] = BACKENDS,
              groups: Path | None = None, batches: tuple[int, ...] = (1,), frames: int = 20, rounds: int = 5,
              limit: int | None = None, progress: bool = True, say=print) -> Bench:
    """Load every row, estimate the time, then the accuracy pass and the interleaved timing rounds."""
    for name in precisions:
        precision_named(name)  # refuses an unknown one
    for name in backends:
        if name not in BACKENDS:
            raise EdgeError(f"backend must be one of {', '.join(BACKENDS)}, not {name!r}")
    if frames < 1 or rounds < 1:
        raise EdgeError(f"--frames and --rounds must be at least 1, not {frames} and {rounds}")
    started = time.monotonic()
    listed = read_label_list(label_list, root)
    result = Bench([], str(label_list), frames, rounds, list(batches), None if groups is None else str(groups),
                   machine(), datetime.now(timezone.utc).isoformat(timespec="seconds"))
    rows = result.rows
    items_of: dict[str, list[tuple[Path, int]]] = {}  # model -> the images it is scored on
    group_table: dict[str, dict[str, np.ndarray]] = {}
    specs = {}  # model -> its preprocessing
    with contextlib.ExitStack() as gpu_scope:
        for model in dict.fromkeys(models):  # a model named twice is benched once
            try:
                folder = find_model_folder(model, repo)
                card = Card.read(folder)
                if groups is not None:
                    labels = read_labels(folder / card.labels) if card.labels else []
                    group_table[model] = load_groups(groups, labels, card.classes)
            except EdgeError as e:
                rows.append(Row(model, "-", "-", "failed", first_line(e)))
                continue
            # As `edge eval` with these precisions: an INT8 variant is never scored on its calibration images.
            has_int8 = "int8" in precisions and (folder / PRECISIONS["int8"].onnx).is_file()
            items = exclude_calibration_images(folder, listed) if has_int8 else list(listed)
            items_of[model], specs[model] = items[:limit], card.preprocess
            for precision, backend in itertools.product(precisions, backends):
                row = Row(model, precision, backend, left_out=len(listed) - len(items))
                rows.append(row)
                row.reason, row.command = skip_reason(model, folder, precision, backend, label_list)
                if row.reason:
                    row.status = "skipped"
                    continue
                try:
                    load_row(row, folder, card, repo, list(batches), gpu_scope)
                except EdgeError as e:
                    if backend == "opencv":  # OpenCV's importer lacks operators ONNX Runtime has: a limit, not a fault
                        row.status, row.reason = "skipped", first_line(e)
                    else:
                        row.fail(e, "loading")
                except Exception as e:  # a backend's own error type: this row fails, the others go on
                    row.fail(e, "loading")
        running = [row for row in rows if row.ok]
        if running:
            _measure(result, running, listed[:frames], items_of, specs, group_table, progress, say)
    result.machine["load_average"].append(round(os.getloadavg()[0], 2))
    result.wall_s = time.monotonic() - started
    return result


def _measure(result: Bench, running: list[Row], timing_items: list, items_of: dict, specs: dict, group_table: dict,
             progress: bool, say) -> None:
    """Warm-up and the estimate, the accuracy pass, then the interleaved timing rounds; the Pareto front."""
    batches, rounds = result.batches, result.rounds
    encoded = [(str(path), np.fromfile(path, dtype=np.uint8)) for path, _ in timing_items]
    decoded = [decode_image(data, name) for name, data in encoded]

    def frames_of(batch: int) -> list[list[tuple[str, np.ndarray]]]:
        """The timing images in batches of `batch`, going round the list as often as one batch needs."""
        count = max(1, len(encoded) // batch)
        cycled = list(itertools.islice(itertools.cycle(encoded), count * batch))
        return [cycled[i : i + batch] for i in range(0, len(cycled), batch)]

    # Warm-up: every configuration runs before anything counts, and its last times give the estimate.
    warm: dict[tuple[int, int], tuple[float, float]] = {}  # (row, batch) -> (inference ms, frame ms)
    for row in running:
        try:
            for b in batches:
                for batch in frames_of(b)[:WARMUP_BATCHES]:
                    warm[id(row), b] = time_frames(row, batch)
        except Exception as e:  # noqa: BLE001 (one row's fault is its row's error)
            row.fail(e, "warm-up")
    running[:] = [row for row in running if row.ok]
    accuracy_runs = sum(len(items_of[row.model]) for row in running)
    units = [(row, b) for row in running for b in batches] + \
        [(row, b, w) for row in running for b in batches for w in row.workers]
    say(f"edge bench: {plural(len(running), 'row')} ({len(result.rows) - len(running)} not run), "
        f"{plural(accuracy_runs, 'image run')}, {plural(rounds, 'round')} of {plural(len(encoded), 'frame')} "
        f"at batch {','.join(map(str, batches))}: about "
        f"{_duration(_estimate(running, items_of, warm, units, rounds, len(encoded)))} (from the warm-up; load "
        f"average {result.machine['load_average'][0]} on {result.machine['cores']} cores)", file=sys.stderr)

    order = schedule(units, rounds)
    bar = tqdm(total=accuracy_runs + len(order), unit="run", file=sys.stderr, disable=None if progress else True,
               leave=False)
    with bar:
        _accuracy_pass(running, items_of, specs, group_table, bar)
        for _, unit in order:
            row = unit[0]
            if row.ok:
                try:
                    if len(unit) == 2:
                        times = [time_frames(row, batch) for batch in frames_of(unit[1])]
                        row.latency.setdefault(unit[1], []).append(([t[0] for t in times], [t[1] for t in times]))
                    else:
                        _, b, w = unit
                        row.throughput.setdefault((b, w), []).append(time_throughput(row, b, w, decoded))
                except Exception as e:  # noqa: BLE001
                    row.fail(e, "timing")
            bar.update(1)
    measured = [row for row in result.rows if row.ok and row.score is not None and row.score.n and row.latency]
    front = pareto_front([(_frame_p50(row), row.score.top1 / row.score.n) for row in measured])
    for row, on_front in zip(measured, front):
        row.pareto = on_front


def _estimate(running: list[Row], items_of: dict, warm: dict, units: list, rounds: int, frames: int) -> float:
    """Seconds the measurement will take, from the warm-up times: the accuracy pass (batch-1 inference per image
    and row, spread over the cores as `edge eval` runs it), then every round's latency and throughput units."""
    first = min(b for _, b in warm)
    per_image_ms = {id(row): warm[id(row), first][1] / first for row in running}
    accuracy_ms = sum(len(items_of[row.model]) * per_image_ms[id(row)] for row in running) / (os.cpu_count() or 1)
    timing_ms = 0.0
    for unit in units:
        frame_ms = warm[id(unit[0]), unit[1]][1]
        batches = max(1, frames // unit[1])
        timing_ms += batches * (frame_ms if len(unit) == 2 else frame_ms / unit[2])
    return (accuracy_ms + rounds * timing_ms) / 1000.0


def _accuracy_pass(running: list[Row], items_of: dict, specs: dict, group_table: dict, bar) -> None:
    """Every row's pass over its model's images: each image decoded once, preprocessed once per model; a model's
    rows other than its FP32 ONNX Runtime row are compared with that one (top-1 agreement)."""
    by_model: dict[str, list[Row]] = {}
    for row in running:
        by_model.setdefault(row.model, []).append(row)
        row.score = Score()
        if row.model in group_table:
            row.groups = GroupScore(group_table[row.model])
    reference = {model: next((row for row in rows if row.precision == "fp32" and row.backend == "onnxruntime"), None)
                 for model, rows in by_model.items()}
    wanted: dict[Path, tuple[int, list[str]]] = {}  # image -> (class id, the models scored on it), in list order
    for model, items in items_of.items():
        for path, class_id in items:
            if model in by_model:
                wanted.setdefault(path, (class_id, []))[1].append(model)

    def run(job: tuple[Path, tuple[int, list[str]]]) -> dict[int, np.ndarray | BaseException]:
        path, (_, models) = job
        image = load_image(path)
        outputs: dict[int, np.ndarray | BaseException] = {}
        for model in models:
            try:
                prepared = preprocess(image, specs[model])
            except EdgeError as e:
                raise EdgeError(f"{path}: {e}") from None
            for row in by_model[model]:
                if not row.ok:
                    continue
                executor = row.accuracy_executor
                try:
                    # prepared once per model on the CPU path; the GPU path preprocesses on the device
                    inputs = executor.collate([prepared]) if hasattr(executor, "collate") \
                        else executor.preprocess([image])
                    outputs[id(row)] = executor.compute(inputs)[:1]
                except Exception as e:  # noqa: BLE001 (this row's error; the others go on)
                    outputs[id(row)] = e
        return outputs

    # Several images at once when every row runs on the CPU (ONNX Runtime single-threaded per run, as edge eval;
    # OpenCV DNN one forward at a time); a GPU row's CUDA context is current on this thread only.
    on_cpu = all(hasattr(row.accuracy_executor, "collate") for row in running)
    workers = parallel_runs("onnxruntime") if on_cpu else 1
    jobs = list(wanted.items())
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (path, (class_id, models)), outputs in zip(jobs, in_order(pool, run, jobs, ahead=2 * workers)):
            for model in models:
                for row in by_model[model]:
                    output = outputs.get(id(row))
                    if isinstance(output, BaseException):
                        row.fail(output, str(path))
                    elif output is not None:
                        base = outputs.get(id(reference[model]))
                        row.score.add(output, np.array([class_id]), base if isinstance(base, np.ndarray) else output)
                        if row.groups is not None:
                            row.groups.add(output[0], class_id)
                        bar.update(1)
    for model, rows in by_model.items():
        for row in rows:  # agreement is reported against a reference that ran the whole pass
            row.compared = reference[model] is not None and reference[model].ok and row is not reference[model]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


# --- output --------------------------------------------------------------------------------------------------

def table(result: dict) -> tuple[list[str], list[list[str]]]:
    """The header and the cells of every row that ran, as the terminal, Markdown and CSV show them."""
    batches = result["batches"]
    group_names = list(dict.fromkeys(name for row in result["rows"] if row["accuracy"]
                                     for name in row["accuracy"].get("groups", {})))
    header = ["model", "precision", "backend", "images", "top-1", "top-5", "agree"]
    header += [f"{name} (group)" for name in group_names]
    if group_names:
        header += ["conf right/wrong"]
    for b in batches:
        header += [f"infer@{b} p50 ms (p25-p75)", f"frame@{b} p50 ms"]
    header += [f"frame@{batches[0]} p99 ms", "img/s (batch, workers)", "file MB", "mem MB", "pareto"]
    cells = []
    for row in result["rows"]:
        if row["status"] != "ok":
            continue
        a = row["accuracy"] or {}
        line = [row["model"], row["precision"], row["backend"], str(a.get("n", "-")), _percent(a.get("top1")),
                _percent(a.get("top5")), _percent(a.get("top1_agreement"))]
        line += [_percent(a.get("groups", {}).get(name, {}).get("accuracy")) for name in group_names]
        if group_names:
            confidence = a.get("group_confidence", {})
            line.append(f"{_number(confidence.get('correct'), 2)}/{_number(confidence.get('wrong'), 2)}")
        latency = row["latency"] or {}
        for b in batches:
            stats = latency.get(str(b))
            if stats is None:
                line += ["-", "-"]
                continue
            i = stats["inference"]
            line += [f"{i['p50_ms']:.2f} ({i['p25_ms']:.2f}-{i['p75_ms']:.2f})", f"{stats['frame']['p50_ms']:.2f}"]
        first = latency.get(str(batches[0]))
        line.append(f"{first['frame']['p99_ms']:.2f}" if first else "-")
        t = row["throughput"]
        line.append(f"{t['images_per_s']:.1f} ({t['batch']}, {t['workers']})" if t else "-")
        line += [_number(row["file_mb"], 1), _number(row["memory_mb"], 0), "*" if row["pareto"] else ""]
        cells.append(line)
    return header, cells


def _percent(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def _number(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def not_run(result: dict) -> list[str]:
    """One line per reason a row did not run, naming the rows it kept out and what would make them run (the
    command of the first; the JSON has each row's own)."""
    by_reason: dict[tuple[str, str, str], list[dict]] = {}
    for row in result["rows"]:
        if row["status"] != "ok":
            by_reason.setdefault((row["status"], row["backend"], row["reason"]), []).append(row)
    lines = []
    for (status, backend, reason), rows in by_reason.items():
        if backend == "-":  # the model itself did not load: its error names it
            lines.append(f"{status}: {reason}")
            continue
        named = ", ".join(f"{row['model']} {row['precision']}" for row in rows)
        command = rows[0]["command"]
        if len({row["model"] for row in rows}) > 1:
            command = command.replace(rows[0]["model"], "MODEL")
        if len({row["precision"] for row in rows}) > 1:
            command = command.replace(f"--precision {rows[0]['precision']}", "--precision PRECISION")
        lines.append(f"{status}: {backend} ({named}): {reason}" + (f"; make it: {command}" if command else ""))
    return lines


def machine_line(result: dict) -> str:
    m = result["machine"]
    load = " to ".join(str(v) for v in m["load_average"])
    return (f"{m['cpu']}, {m['cores']} cores ({' '.join(m['flags']) or 'no listed flags'}), load average {load}, "
            f"{result['date']}, {result['wall_s']:.0f} s")


def format_table(result: dict) -> str:
    header, cells = table(result)
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in cells]
    lines += not_run(result)
    lines.append(f"machine: {machine_line(result)}; * on the accuracy / latency Pareto front")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    header, cells = table(result)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    lines += [""] + [f"- {line}" for line in not_run(result)]
    lines += ["", f"Machine: {machine_line(result)}; * on the accuracy / latency Pareto front.", ""]
    return "\n".join(lines)


def csv_text(result: dict) -> str:
    header, cells = table(result)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*header, "status", "reason"])
    writer.writerows([*line, "ok", ""] for line in cells)
    for row in result["rows"]:
        if row["status"] != "ok":
            writer.writerow([row["model"], row["precision"], row["backend"]] + [""] * (len(header) - 3)
                            + [row["status"], row["reason"] + (f" (make it: {row['command']})" if row["command"]
                                                               else "")])
    return out.getvalue()


def write_report(path: Path, text: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise EdgeError(f"{path}: cannot write it: {e.strerror or e}") from None


def plot(result: dict, path: Path) -> None:
    """Top-1 against whole-frame p50 latency (first batch size), one point per row: a colour per model, a marker
    per backend, the precision beside it; the Pareto front joined, its rows named."""
    from .profiler import pyplot, write_figure  # the profiler's: the loop, GPU probing and telemetry, for a plot

    plt = pyplot()
    batch = str(result["batches"][0])
    ran = [row for row in result["rows"] if row["status"] == "ok" and row["accuracy"] and row["latency"]]
    models = list(dict.fromkeys(row["model"] for row in ran))
    markers = dict(zip(BACKENDS, "osD^"))
    figure, axes = plt.subplots(figsize=(9, 6))
    for row in ran:
        x, y = row["latency"][batch]["frame"]["p50_ms"], row["accuracy"]["top1"] * 100
        axes.scatter(x, y, color=plt.get_cmap("tab10")(models.index(row["model"]) % 10),
                     marker=markers[row["backend"]], edgecolors="black" if row["pareto"] else "none", zorder=3)
        name = f"{row['model']} {row['precision']} {row['backend']}" if row["pareto"] else row["precision"]
        axes.annotate(name, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = sorted((row["latency"][batch]["frame"]["p50_ms"], row["accuracy"]["top1"] * 100)
                   for row in ran if row["pareto"])
    if front:
        axes.step(*zip(*front), where="post", color="black", linewidth=0.8, label="Pareto front")
    for k, model in enumerate(models):
        axes.scatter([], [], color=plt.get_cmap("tab10")(k % 10), label=model)
    for backend in dict.fromkeys(row["backend"] for row in ran):
        axes.scatter([], [], color="grey", marker=markers[backend], label=backend)
    axes.legend(loc="best", fontsize="small")
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter("{x:g}")
    axes.xaxis.set_minor_formatter("{x:g}")
    axes.set_xlabel(f"whole frame, p50 (ms, batch {batch}, log scale)")
    axes.set_ylabel("top-1 (%)")
    axes.set_title(f"edge bench: {result['machine']['cpu']}, {result['machine']['cores']} cores, {result['date']}",
                   fontsize=9)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    write_figure(figure, path)
