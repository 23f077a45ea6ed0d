"""The model folder (engines/<name>/) and its card, model.toml, and the Model that classifies with them.

    model = Model.load("engines/efficientnet_lite0")
    for p in model.classify(load_image("cat.jpg")):
        print(p.label, p.probability)
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import EdgeError
from .files import read_text_lines, read_toml, remove_stale
from .preprocess import Preprocess, oversample, preprocess

CARD = "model.toml"
LABELS = "labels.txt"
MEAN_IMAGE = "mean.npy"
PRECISION_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
DEFAULT_REPO = "engines"


def repo_folder(repo: str | os.PathLike | None = None) -> Path:
    """The model repository: --repo, else $EDGE_REPO, else ./engines."""
    return Path(repo or os.environ.get("EDGE_REPO") or DEFAULT_REPO)


def find_model_folder(model: str | os.PathLike, repo: str | os.PathLike | None = None) -> Path:
    """MODEL is a model folder, or the name of one inside the repository."""
    for folder in (Path(model), repo_folder(repo) / model):
        if not folder.exists() and folder.parent.is_dir():
            # A replacement killed between its two renames (no exchange on this filesystem) parked the folder
            # aside: put it back. A reader that may not write leaves that to the next writer.
            with contextlib.suppress(OSError):
                remove_stale(folder)
        if (folder / CARD).is_file():
            return folder
    raise EdgeError(f"{model}: not a model folder (no {CARD}), nor a model in {repo_folder(repo)}/")


@dataclass
class Card:
    """What model.toml records: enough to feed the graph and read its output without opening it."""

    name: str
    input_name: str
    input_shape: tuple[int, ...]  # without the batch axis, in the model's layout
    batch: int  # fixed batch size, or 0 when the graph takes any
    output_name: str
    classes: int
    probabilities: bool  # the output is already softmaxed
    preprocess: Preprocess
    labels: str | None = LABELS
    source: dict = field(default_factory=dict)

    def to_toml(self) -> dict:
        spec = self.preprocess
        pre = {"resize": spec.resize, "color": spec.color, "layout": spec.layout, "mean": list(spec.mean)}
        if spec.resize_size:
            pre["resize_size"] = spec.resize_size
        if spec.mean_image is not None:
            pre["mean_image"] = MEAN_IMAGE
        if spec.std is not None:
            pre["std"] = list(spec.std)
        else:
            pre["scale"] = spec.scale
        card = {
            "name": self.name,
            "input": {"name": self.input_name, "shape": list(self.input_shape), "batch": self.batch,
                      "layout": spec.layout, "dtype": "float32"},
            "output": {"name": self.output_name, "classes": self.classes, "probabilities": self.probabilities},
            "preprocess": pre,
            "source": self.source,
        }
        if self.labels:
            card["labels"] = {"file": self.labels}
        return card

    @classmethod
    def read(cls, folder: Path) -> Card:
        path = folder / CARD
        data = read_toml(path)
        try:
            inp, out, pre = data["input"], data["output"], data["preprocess"]
            shape = tuple(int(d) for d in inp["shape"])
            if len(shape) != 3:
                raise ValueError(f"input.shape {list(shape)}: expected 3 sizes (the batch axis left out)")
            layout = pre["layout"]
            size = shape[1:3] if layout == "nchw" else shape[0:2]
            mean_image = np.load(folder / pre["mean_image"]) if "mean_image" in pre else None
            spec = Preprocess(
                size=(int(size[0]), int(size[1])), resize=pre["resize"], resize_size=pre.get("resize_size"),
                color=pre["color"], mean=tuple(float(v) for v in pre["mean"]), mean_image=mean_image,
                scale=float(pre.get("scale", 1.0)),
                std=tuple(float(v) for v in pre["std"]) if "std" in pre else None, layout=layout,
            )
            return cls(
                name=data["name"], input_name=inp["name"], input_shape=shape, batch=int(inp["batch"]),
                output_name=out["name"], classes=int(out["classes"]), probabilities=bool(out["probabilities"]),
                preprocess=spec, labels=data.get("labels", {}).get("file"), source=data.get("source", {}),
            )
        except FileNotFoundError as e:
            raise EdgeError(f"{e.filename}: no such file") from None
        except OSError as e:
            raise EdgeError(f"{e.filename or path}: cannot read: {e.strerror or e}") from None
        except EdgeError as e:  # a preprocessing entry Preprocess refuses
            raise EdgeError(f"{path}: {e}") from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise EdgeError(f"{path}: bad or missing entry {e}") from None


_SYNSET_ID = re.compile(r"^n\d{8}\s+")


def read_labels(path: Path) -> list[str]:
    """One label a line; a leading WordNet id (Caffe's synset_words.txt) is dropped, as jetson-inference does."""
    lines = read_text_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line.strip():  # dropping it would shift every later label onto the wrong class
            raise EdgeError(f"{path}: line {number} is blank; every class needs a label, one a line")
    return [_SYNSET_ID.sub("", line.strip()) for line in lines]


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
        from .backends import load_backend

        folder = find_model_folder(model, repo)
        card = Card.read(folder)
        if precision not in PRECISION_FILES:
            raise EdgeError(f"precision must be one of {', '.join(PRECISION_FILES)}, not {precision!r}")
        return cls(folder, card, load_backend(backend, folder, card, precision, runs))

    @property
    def preprocess(self) -> Preprocess:
        return self.card.preprocess

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if class_id < len(self.labels) else f"class {class_id}"

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Run a preprocessed batch; returns (N, classes) probabilities."""
        output = self.backend.run(batch).reshape(len(batch), -1).astype(np.float32, copy=False)
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
