"""The Model: a model folder (edge/folder.py) loaded on one backend, classifying frames.

    model = Model.load("engines/efficientnet_lite0")
    for p in model.classify(load_image("cat.jpg")):
        print(p.label, p.probability)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends import load_backend
from .folder import Card, find_model_folder, precision_named, read_labels
from .preprocess import Preprocess, oversample, preprocess


@dataclass(frozen=True)
class Prediction:
    class_id: int
    label: str
    probability: float

    def to_dict(self) -> dict:
        return {"class_id": self.class_id, "label": self.label, "probability": round(self.probability, 6)}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


class Model:
    """A model folder loaded on one backend, at one precision."""

    def __init__(self, folder: Path, card: Card, backend):
        self.folder = folder
        self.card = card
        self.backend = backend
        self.labels = read_labels(folder / card.labels) if card.labels else []

    @classmethod
    def load(cls, model: str | os.PathLike, repo: str | os.PathLike | None = None,
             backend: str = "onnxruntime", precision: str = "fp32", runs: int = 1) -> Model:
        folder = find_model_folder(model, repo)
        card = Card.read(folder)
        precision_named(precision)  # refused before the backend is
        return cls(folder, card, load_backend(backend, folder, card, precision, runs))

    @property
    def preprocess(self) -> Preprocess:
        return self.card.preprocess

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if class_id < len(self.labels) else f"class {class_id}"

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Run a preprocessed batch; returns (N, classes) probabilities."""
        return self.to_probabilities(self.backend.run(batch))

    def to_probabilities(self, output: np.ndarray) -> np.ndarray:
        """A backend's raw output for N images -> (N, classes) probabilities (softmax unless the graph has it)."""
        output = output.reshape(len(output), -1).astype(np.float32, copy=False)
        return output if self.card.probabilities else softmax(output)

    def top(self, probabilities: np.ndarray, k: int = 5) -> list[Prediction]:
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [Prediction(int(i), self.label(int(i)), float(probabilities[i])) for i in order]

    def classify(self, image: np.ndarray, top: int = 5, oversampled: bool = False) -> list[Prediction]:
        """Top-k labels for one uint8 HWC BGR frame; `oversampled` averages Caffe's 10 crops."""
        if oversampled:
            return self.top(self.probabilities(oversample(image, self.preprocess)).mean(axis=0), top)
        return self.classify_batch([image], top)[0]

    def classify_batch(self, images: list[np.ndarray], top: int = 5) -> list[list[Prediction]]:
        batch = np.stack([preprocess(image, self.preprocess) for image in images])
        return [self.top(p, top) for p in self.probabilities(batch)]
