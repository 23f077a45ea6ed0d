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

import contextlib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import EdgeError, first_line
from .files import read_text_lines, read_toml, remove_stale
from .preprocess import MAX_SIDE, Preprocess
from .words import plural

CARD = "model.toml"
LABELS = "labels.txt"
MEAN_IMAGE = "mean.npy"
CALIBRATION_CACHE = "calibration.cache"  # TensorRT's text format: edge/tensorrt/calibration_cache.py
CALIBRATION_JSON = "calibration.json"
DEFAULT_REPO = "engines"
# What edge runs: beyond these a card or graph is refused, as a typo (`batch = 1000000` took 9.4 GB) or a hostile file.
MAX_BATCH = 256
MAX_CLASSES = 100_000  # ImageNet-21k has 21,843
MAX_BATCH_BYTES = 1 << 30  # one batch of float32 input


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
        """The card, checked whole: every entry's type and range, and the files it names, which must be inside
        the folder. Every problem found is in the one EdgeError's line."""
        path = folder / CARD
        entries = _Entries(read_toml(path))
        get = entries.get
        name, input_name, output_name = get("name", STRING), get("input.name", STRING), get("output.name", STRING)
        shape, batch = get("input.shape", WHOLE_NUMBERS), get("input.batch", WHOLE)
        classes, probabilities = get("output.classes", WHOLE), get("output.probabilities", BOOLEAN)
        layout, input_layout = get("preprocess.layout", STRING), get("input.layout", STRING, required=False)
        dtype = get("input.dtype", STRING, required=False)
        resize, resize_size = get("preprocess.resize", STRING), get("preprocess.resize_size", WHOLE, required=False)
        color, mean = get("preprocess.color", STRING), get("preprocess.mean", NUMBERS)
        scale, std = get("preprocess.scale", NUMBER, required=False), get("preprocess.std", NUMBERS, required=False)
        mean_image_file = get("preprocess.mean_image", STRING, required=False)
        labels, source = get("labels.file", STRING, required=False), get("source", TABLE, required=False)
        problems = entries.problems
        if input_layout is not None and layout is not None and input_layout != layout:
            problems.append(f"input.layout {input_layout!r} differs from preprocess.layout {layout!r}")
        if dtype not in (None, "float32"):
            problems.append(f"input.dtype {dtype!r}: edge feeds the model float32")
        if shape is not None and len(shape) != 3:
            problems.append(f"input.shape {shape}: expected 3 sizes (the batch axis left out)")
            shape = None
        problems += size_problems(batch, shape, classes)
        mean_image = None
        if mean_image_file is not None and (mean_image_path := _inside(folder, mean_image_file, "preprocess.mean_image",
                                                                       problems)):
            mean_image = _read_mean_image(mean_image_path, problems)
        spec = None
        if None not in (shape, resize, color, mean, layout):
            size = shape[0:2] if layout == "nhwc" else shape[1:3]
            try:
                spec = Preprocess(size=(size[0], size[1]), resize=resize, resize_size=resize_size, color=color,
                                  mean=tuple(float(v) for v in mean), mean_image=mean_image,
                                  scale=float(scale if scale is not None else 1.0),
                                  std=tuple(float(v) for v in std) if std is not None else None, layout=layout)
            except EdgeError as e:
                problems.append(f"preprocess: {e}")
            channels = shape[2] if layout == "nhwc" else shape[0]
            if spec is not None and channels != spec.channels:
                problems.append(f"input.shape {shape} ({layout}) has {plural(channels, 'channel')}; color "
                                f"{color!r} makes {spec.channels}")
        if labels is not None and classes is not None and (labels_path := _inside(folder, labels, "labels.file",
                                                                                  problems)):
            try:
                count = len(read_labels(labels_path))
                if count != classes:
                    problems.append(f"labels.file {labels}: {plural(count, 'label')} for "
                                    f"{plural(classes, 'class', 'classes')}")
            except EdgeError as e:
                problems.append(str(e))
        if problems:
            raise EdgeError(f"{path}: {'; '.join(problems)}")
        return cls(name=name, input_name=input_name, input_shape=tuple(shape), batch=batch, output_name=output_name,
                   classes=classes, probabilities=probabilities, preprocess=spec, labels=labels, source=source or {})


STRING, WHOLE, BOOLEAN, NUMBER, NUMBERS, WHOLE_NUMBERS, TABLE = (
    "a string", "a whole number", "true or false", "a number", "a list of numbers", "a list of whole numbers",
    "a table")
_IS = {
    STRING: lambda v: isinstance(v, str) and v != "",
    WHOLE: lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63,  # TOML's range
    BOOLEAN: lambda v: isinstance(v, bool),
    TABLE: lambda v: isinstance(v, dict),
}
_IS[NUMBER] = lambda v: isinstance(v, float) or _IS[WHOLE](v)
_IS[NUMBERS] = lambda v: isinstance(v, list) and all(_IS[NUMBER](x) for x in v)
_IS[WHOLE_NUMBERS] = lambda v: isinstance(v, list) and all(_IS[WHOLE](x) for x in v)
# The entries of each table of a card: any other is a typo (`resize_sise`) that would silently be ignored.
_KEYS = {
    "": {"name", "input", "output", "preprocess", "labels", "source"},
    "input": {"name", "shape", "batch", "layout", "dtype"},
    "output": {"name", "classes", "probabilities"},
    "preprocess": {"resize", "resize_size", "color", "layout", "mean", "mean_image", "scale", "std"},
    "labels": {"file"},
}


class _Entries:
    """A card's entries, each read with its type checked; the problems are collected, one line each."""

    def __init__(self, data: dict):
        self.data, self.problems = data, []
        for table, keys in _KEYS.items():
            entries = data.get(table, {}) if table else data
            if not isinstance(entries, dict):
                self.problems.append(f"{table} = {_shown(entries)}: expected a table")
                continue
            self.problems += [f"{table}.{key}".lstrip(".") + ": not an entry of a card" for key in entries
                              if key not in keys]

    def get(self, key: str, kind: str, required: bool = True):
        table, _, name = key.rpartition(".")
        entries = self.data.get(table, {}) if table else self.data
        if not isinstance(entries, dict):  # already a problem
            return None
        if name not in entries:
            if required:
                self.problems.append(f"{key}: missing")
            return None
        if not _IS[kind](entries[name]):
            self.problems.append(f"{key} = {_shown(entries[name])}: expected {kind}")
            return None
        return entries[name]


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _inside(folder: Path, name: str, key: str, problems: list[str]) -> Path | None:
    """folder/name, when that is a file inside the folder (a card must not serve /etc/shadow's lines as labels)."""
    path = folder / name
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError):  # a NUL in the name, a symbolic link loop
        inside = False
    if not inside:
        problems.append(f"{key} {name!r}: outside the model folder")
        return None
    if not path.is_file():
        problems.append(f"{key} {name!r}: no such file in the model folder")
        return None
    return path


def _read_mean_image(path: Path, problems: list[str]) -> np.ndarray | None:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)  # the header first: a size is checked unread
    except (OSError, ValueError, EOFError) as e:  # EOFError: an empty file
        problems.append(f"{path}: not a .npy array ({first_line(e)})")
        return None
    if array.ndim != 3 or not all(1 <= d <= MAX_SIDE for d in array.shape) or array.dtype.kind not in "fiu":
        problems.append(f"{path}: a {array.dtype} array shaped {array.shape}; expected numbers shaped (C, H, W)")
        return None
    return np.asarray(array, dtype=np.float32)


def size_problems(batch: int | None, shape: Sequence[int | None] | None, classes: int | None) -> list[str]:
    """The sizes edge refuses to run (None: not known): a batch, input side or class count of zero, below zero, or
    absurd (2^31 - 1), which would fail at every frame or take the machine's memory."""
    problems = []
    if batch is not None and not 0 <= batch <= MAX_BATCH:
        problems.append(f"batch {batch}: expected 0 (any) to {MAX_BATCH}")
    if shape is not None and not all(1 <= d <= MAX_SIDE for d in shape if d is not None):
        problems.append(f"input shape {list(shape)}: each size must be 1 to {MAX_SIDE}")
    elif batch and shape is not None and None not in shape and batch * math.prod(shape) * 4 > MAX_BATCH_BYTES:
        problems.append(f"batch {batch} of {list(shape)} inputs is {batch * math.prod(shape) * 4 >> 20} MiB of "
                        f"float32, over {MAX_BATCH_BYTES >> 20} MiB")
    if classes is not None and not 1 <= classes <= MAX_CLASSES:
        problems.append(f"classes {classes}: expected 1 to {MAX_CLASSES}")
    return problems


Tensors = dict[str, tuple[list[int | None], str]]  # name -> (sizes, None where symbolic; element type)


def check_graph(card: Card, path: Path, inputs: Tensors, outputs: Tensors) -> None:
    """Raise one EdgeError naming `path` when the graph's inputs and outputs are not what the card says (a model
    file copied from another model, say): names, rank, layout, sizes, batch, class count, float32."""
    def listed(tensors: Tensors) -> str:
        return ", ".join(f"{name}{_sizes(dims)}" for name, (dims, _) in tensors.items()) or "none"

    problems = []
    if card.input_name not in inputs:
        problems.append(f"input {card.input_name!r} expected, the graph's inputs are {listed(inputs)}")
    else:
        dims, dtype = inputs[card.input_name]
        expected = [card.batch or None, *card.input_shape]
        if len(dims) != 4 or any(d is not None and d != e for d, e in zip(dims[1:], expected[1:])) \
                or (dims[0] is not None and dims[0] != card.batch):
            problems.append(f"input {card.input_name}{_sizes(dims)}, the card says {_sizes(expected)} "
                            f"({card.preprocess.layout})")
        if dtype != "float32":
            problems.append(f"input {card.input_name} is {dtype}, edge feeds float32")
    if card.input_name in inputs and (others := [name for name in inputs if name != card.input_name]):
        problems.append(f"the graph also takes {', '.join(others)}, which the card does not feed")
    if card.output_name not in outputs:
        problems.append(f"output {card.output_name!r} expected, the graph's outputs are {listed(outputs)}")
    else:
        dims, dtype = outputs[card.output_name]
        if len(dims) >= 2 and None not in dims[1:] and math.prod(dims[1:]) != card.classes:
            problems.append(f"output {card.output_name}{_sizes(dims)} holds {plural(math.prod(dims[1:]), 'value')} "
                            f"per image, the card says {plural(card.classes, 'class', 'classes')}")
        if dtype != "float32":
            problems.append(f"output {card.output_name} is {dtype}, edge reads float32")
    if problems:
        raise EdgeError(f"{path}: does not match {CARD}: {'; '.join(problems)}")


def _sizes(dims: Sequence[int | None]) -> str:
    return "[" + ",".join("N" if d is None else str(d) for d in dims) + "]"


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


def load_checked_onnx(folder: Path, card: Card):
    """A model folder's model.onnx, refused in one line when it is not the graph its card describes."""
    path = folder / FP32.onnx
    model = load_onnx(path)
    check_graph(card, path, *graph_tensors(model))
    return model


def graph_tensors(model) -> tuple[Tensors, Tensors]:
    """An ONNX graph's inputs (less the initializers) and outputs, as check_graph compares them with a card."""
    import onnx  # as in load_onnx

    def tensors(values) -> Tensors:
        return {v.name: (tensor_dims(v), "float32" if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT else
                         onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()) for v in values}

    initializers = {t.name for t in model.graph.initializer}
    return tensors(i for i in model.graph.input if i.name not in initializers), tensors(model.graph.output)


def tensor_dims(value_info) -> list[int | None]:
    """An ONNX tensor's static sizes, None where a dimension is symbolic or unknown."""
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]
