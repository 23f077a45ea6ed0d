"""The model folder's contract: what engines/<name>/ holds, what its card (model.toml) says, and its precisions.

Every module that reads or writes a model folder takes the file names, the card and the precision table from here,
and this module imports nothing of edge but errors, files and preprocess, so anything may import it.

    engines/<name>/
      model.toml           the card (Card)
      model.onnx           the canonical float32 graph; model.fp16.onnx, model.int8.onnx: PRECISIONS
      labels.txt           one label a line (read_labels)
      mean.npy             a mean image, when one came from a .binaryproto
      calibration.cache    TensorRT's INT8 scales (`edge calibrate`), for an implicit INT8 build
      calibration.json     how the calibration was made and on which images (`edge eval` leaves them out)
      *.plan + *.json      engines and their sidecars (edge/tensorrt/build.py)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import EdgeError, first_line
from .files import read_text_lines, read_toml
from .preprocess import Preprocess

CARD = "model.toml"
LABELS = "labels.txt"
MEAN_IMAGE = "mean.npy"
CALIBRATION_CACHE = "calibration.cache"  # TensorRT's text format: edge/tensorrt/calibration_cache.py
CALIBRATION_JSON = "calibration.json"
DEFAULT_REPO = "engines"


@dataclass(frozen=True)
class Precision:
    """One precision a model runs at: its ONNX variant in the model folder, and what each consumer needs of it."""

    name: str
    onnx: str  # the variant, made on the workstation and checked with ONNX Runtime on the CPU
    made_by: str | None  # the command that makes it (None: `edge import` itself)
    builder_flags: tuple[str, ...]  # an implicit TensorRT build (8.x, 10 --implicit): model.onnx with these flags
    reads_calibration_cache: bool  # the implicit build takes the INT8 scales from calibration.cache
    dla: bool  # the DLA runs it (the DLA has no FP32)


PRECISIONS = {p.name: p for p in (
    Precision("fp32", "model.onnx", None, builder_flags=(), reads_calibration_cache=False, dla=False),
    Precision("fp16", "model.fp16.onnx", "edge fp16", builder_flags=("fp16",), reads_calibration_cache=False,
              dla=True),
    # INT8 with FP16 for the layers INT8 cannot run
    Precision("int8", "model.int8.onnx", "edge calibrate", builder_flags=("fp16", "int8"),
              reads_calibration_cache=True, dla=True),
)}
FP32 = PRECISIONS["fp32"]


def precision_named(name: str) -> Precision:
    """The precision called `name`, or a one-line refusal naming the ones there are."""
    if name not in PRECISIONS:
        raise EdgeError(f"precision must be one of {', '.join(PRECISIONS)}, not {name!r}")
    return PRECISIONS[name]


def missing_file_hint(folder: Path, name: str) -> str:
    """How to make a model folder's file that is missing: an ONNX variant, or calibration.cache (which the
    precision that reads it makes)."""
    if name == FP32.onnx:
        return "import the model again with `edge import ... --force`"
    made_by = next(p.made_by for p in PRECISIONS.values()
                   if name == p.onnx or (name == CALIBRATION_CACHE and p.reads_calibration_cache))
    return f"make it with `{made_by} {folder}`"


def repo_folder(repo: str | os.PathLike | None = None) -> Path:
    """The model repository: --repo, else $EDGE_REPO, else ./engines."""
    return Path(repo or os.environ.get("EDGE_REPO") or DEFAULT_REPO)


def find_model_folder(model: str | os.PathLike, repo: str | os.PathLike | None = None) -> Path:
    """MODEL is a model folder, or the name of one inside the repository."""
    for folder in (Path(model), repo_folder(repo) / model):
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


def load_onnx(path: Path):
    """An ONNX file of a model folder (or one being imported), read whole; one line naming it when it cannot be."""
    import onnx  # here, not at the top: `import edge` and `edge run` never read a graph, and onnx takes a while

    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise EdgeError(f"{path}: no such file") from None
    except OSError as e:  # a folder, no permission: the bytes were never read
        raise EdgeError(f"{path}: cannot read: {e.strerror or e}") from None
    except Exception as e:  # protobuf's DecodeError and friends: the bytes are not an ONNX model
        raise EdgeError(f"{path}: not an ONNX model ({type(e).__name__}: {first_line(e)})") from None
    if not model.graph.node:
        raise EdgeError(f"{path}: not an ONNX model (no graph nodes)")
    return model
