"""Top-1 / top-5 accuracy over a labelled image list, and agreement between precisions.

The list is Caffe's train.txt / val.txt format: `relative/path.jpg class_id`, one image a line. Images are
decoded and preprocessed once, on worker threads (OpenCV and ONNX Runtime release the GIL), and every model
given sees the same batch.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .backends import parallel_runs
from .errors import EdgeError
from .files import read_text_lines
from .model import Model
from .preprocess import load_image_for, preprocess
from .words import plural


def read_image_list(path: str | Path, root: str | Path | None = None) -> list[tuple[Path, int | None]]:
    """`file [class_id]` lines -> (image path, class id or None); paths are relative to `root`, by default the
    list's folder."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    items = []
    for line in filter(None, (line.strip() for line in read_text_lines(path))):
        name, class_id = (line.rsplit(maxsplit=1) + [""])[:2]  # spaces or tabs between the two
        if not class_id.isdigit():
            name, class_id = line, None
        items.append((root / name, None if class_id is None else int(class_id)))
    return items


def read_label_list(path: str | Path, root: str | Path | None = None) -> list[tuple[Path, int]]:
    """(image path, class id) pairs of Caffe's train.txt / val.txt format, every image labelled."""
    items = read_image_list(path, root)
    for number, (image, class_id) in enumerate(items, 1):
        if class_id is None:
            raise EdgeError(f"{path}: entry {number} ({image.name}) has no class id: expected `file class_id`")
    if not items:
        raise EdgeError(f"{path}: no images listed")
    return items


@dataclass
class Score:
    """Running counts for one model (one precision)."""

    n: int = 0
    top1: int = 0
    top5: int = 0
    agree: int = 0  # top-1 equal to the reference model's
    max_deviation: float = 0.0  # largest |p - p_reference| over every class of every image

    def add(self, probabilities: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> None:
        top5 = np.argsort(-probabilities, axis=1)[:, :5]
        self.n += len(labels)
        self.top1 += int((top5[:, 0] == labels).sum())
        self.top5 += int((top5 == labels[:, None]).any(axis=1).sum())
        self.agree += int((top5[:, 0] == reference.argmax(axis=1)).sum())
        self.max_deviation = max(self.max_deviation, float(np.abs(probabilities - reference).max()))

    def to_dict(self, compared: bool) -> dict:
        """Accuracy, and error as ccv reports it; agreement with the reference when there is one to compare."""
        top1, top5 = self.top1 / self.n, self.top5 / self.n
        scores = {"n": self.n, "top1": round(top1, 6), "top5": round(top5, 6),
                  "top1_error": round(1 - top1, 6), "top5_error": round(1 - top5, 6)}
        if compared:
            scores["top1_agreement"] = round(self.agree / self.n, 6)
            scores["max_probability_deviation"] = round(self.max_deviation, 6)
        return scores


def load_models(model: str | os.PathLike, repo: str | os.PathLike | None, backend: str,
                precisions: list[str]) -> tuple[dict[str, Model], int]:
    """The model at each precision, and how many batches `evaluate` should run at once (parallel_runs)."""
    workers = parallel_runs(backend)
    return {p: Model.load(model, repo, backend, p, runs=workers) for p in precisions}, workers


def in_order(pool: ThreadPoolExecutor, fn, jobs: list, ahead: int):
    """fn(job) for every job on the pool; results in job order, with at most `ahead` jobs in flight."""
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.submit(fn, job))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def evaluate(models: dict[str, Model], items: list[tuple[Path, int]], batch_size: int = 1, workers: int = 1,
             progress: bool = True) -> dict[str, dict]:
    """Score each model on the same images; the first model is the reference for agreement and deviation.

    `workers` threads each decode, preprocess and run a batch; the backends must allow concurrent runs when it
    is above 1 (ONNX Runtime does). Batches are scored in list order, a few ahead of the one being counted.
    """
    reference_model = next(iter(models.values()))
    classes = reference_model.card.classes
    for path, class_id in items:  # an id the model cannot output would only ever score as a miss
        if class_id >= classes:
            raise EdgeError(f"{path}: class id {class_id}, but {reference_model.card.name} has "
                            f"{plural(classes, 'class', 'classes')} (0 to {classes - 1})")
    spec = reference_model.preprocess
    fixed = reference_model.card.batch
    batch_size = fixed or batch_size
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    if fixed and len(batches[-1]) != fixed:
        batches[-1] = batches[-1] + [batches[-1][-1]] * (fixed - len(batches[-1]))  # pad, then drop the extra

    def run(batch: list[tuple[Path, int]]) -> list[np.ndarray]:
        inputs = np.stack([preprocess(load_image_for(path, spec), spec) for path, _ in batch])
        return [model.probabilities(inputs) for model in models.values()]

    scores = {name: Score() for name in models}
    bar = tqdm(total=len(items), unit="img", file=sys.stderr, disable=None if progress else True, leave=False)
    with ThreadPoolExecutor(max_workers=workers) as pool, bar:
        for done, outputs in enumerate(in_order(pool, run, batches, ahead=2 * workers)):
            count = min(batch_size, len(items) - done * batch_size)
            labels = np.array([class_id for _, class_id in batches[done][:count]])
            reference = outputs[0][:count]
            for score, probabilities in zip(scores.values(), outputs):
                score.add(probabilities[:count], labels, reference)
            bar.update(count)
    return {name: score.to_dict(compared=index > 0) for index, (name, score) in enumerate(scores.items())}
