"""`edge import`: an ONNX graph or a Caffe model becomes a model folder, engines/<name>/.

Every check runs before anything is written; the folder appears whole, in one rename, or not at all.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import tomli_w

from . import __version__
from .errors import EdgeError, first_line
from .files import model_lock, sha256_file, staged_folder
from .folder import (
    CALIBRATION_CACHE,
    CALIBRATION_JSON,
    CARD,
    FP32,
    LABELS,
    MEAN_IMAGE,
    PRECISIONS,
    Card,
    load_onnx,
    read_labels,
    repo_folder,
    size_problems,
    tensor_dims,
)
from .preprocess import Preprocess
from .tensorrt.build import ENGINE_SUFFIX, TIMING_CACHE_SUFFIX
from .words import plural

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PASS_THROUGH = {"Flatten", "Reshape", "Squeeze", "Identity"}


@dataclass
class PreprocessOptions:
    """What the user said about preprocessing; None leaves the model's default."""

    size: tuple[int, int] | None = None
    resize: str | None = None
    resize_size: int | None = None
    color: str | None = None
    layout: str | None = None
    mean_values: tuple[float, ...] | None = None
    mean_file: Path | None = None  # a Caffe mean .binaryproto
    scale: float | None = None
    std: tuple[float, ...] | None = None


def check_onnx(model: onnx.ModelProto, source: Path) -> onnx.ModelProto:
    """The ONNX checker, then shape inference so every output has a shape we can read."""
    try:
        onnx.checker.check_model(model)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as e:
        raise EdgeError(f"{source}: invalid ONNX graph: {first_line(e)}") from None


def find_image_input(model: onnx.ModelProto, layout: str | None, source: Path) -> tuple[str, list[int | None], str]:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    images = [i for i in inputs if len(tensor_dims(i)) == 4]
    if len(images) != 1 or len(inputs) != 1:
        names = ", ".join(f"{i.name}{tensor_dims(i)}" for i in inputs)
        raise EdgeError(f"{source}: expected one image input of rank 4, found {len(images)} among inputs: {names}")
    image = images[0]
    if image.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise EdgeError(f"{source}: input {image.name} is "
                        f"{onnx.TensorProto.DataType.Name(image.type.tensor_type.elem_type)}, expected FLOAT")
    dims = tensor_dims(image)
    if any(d is not None and d < 1 for d in dims):
        raise EdgeError(f"{source}: input {image.name} {dims}: a size below 1")
    if layout is None:
        layout = "nchw" if dims[1] in (1, 3) else "nhwc" if dims[3] in (1, 3) else None
    channels = None if layout is None else dims[1] if layout == "nchw" else dims[3]
    if channels not in (1, 3):
        raise EdgeError(f"{source}: input {image.name} {dims} has no static channel count of 1 or 3 "
                        "(give --layout if it is there)")
    return image.name, dims, layout


def find_class_output(model: onnx.ModelProto, source: Path) -> tuple[str, int, bool]:
    """The first output shaped (N, classes) or (N, classes, 1, 1), and whether a Softmax made it."""
    producers = {out: node for node in model.graph.node for out in node.output}
    for output in model.graph.output:
        dims = tensor_dims(output)
        if len(dims) in (2, 4) and dims[1] is not None and dims[1] >= 1 and all(d == 1 for d in dims[2:]):
            node = producers.get(output.name)
            while node is not None and node.op_type in _PASS_THROUGH:
                node = producers.get(node.input[0])
            return output.name, dims[1], node is not None and node.op_type == "Softmax"
    shapes = ", ".join(f"{o.name}{tensor_dims(o)}" for o in model.graph.output)
    raise EdgeError(f"{source}: no output shaped (N, classes) with a static class count among: {shapes}")


def _card_preprocess(dims: list[int | None], layout: str, options: PreprocessOptions, defaults: dict,
                     mean_image: np.ndarray | None, source: Path) -> Preprocess:
    spatial = dims[2:4] if layout == "nchw" else dims[1:3]
    if options.size is not None:
        if any(d is not None and d != s for d, s in zip(spatial, options.size)):
            raise EdgeError(f"{source}: --size {options.size} differs from the input's static size {spatial}")
        spatial = list(options.size)
    if None in spatial:
        raise EdgeError(f"{source}: the input's height and width are not static; give --size H,W")
    channels = dims[1] if layout == "nchw" else dims[3]
    color = options.color or defaults["color"]
    if channels == 1:
        color = "gray"
    # A mean image replaces the model's default per-channel mean (Caffe refuses both in one transform_param).
    mean = options.mean_values or (None if mean_image is not None else defaults.get("mean")) or (0.0,) * channels
    scale = next((s for s in (options.scale, defaults.get("scale")) if s is not None), 1.0)
    try:
        return Preprocess(
            size=(spatial[0], spatial[1]), resize=options.resize or defaults["resize"],
            resize_size=options.resize_size, color=color, mean=tuple(mean), mean_image=mean_image,
            scale=scale, std=options.std, layout=layout,
        )
    except EdgeError as e:  # the spec's own words say what is wrong, not with which model
        raise EdgeError(f"{source}: {e}") from None


def model_name(src: Path, name: str | None) -> str:
    """--name, else what SRC is called: deploy.prototxt and model.onnx say nothing, the zoo's folder name does."""
    name = name or (src.resolve().parent.name if src.stem in ("deploy", "model") else src.stem)
    if not _NAME.match(name):
        raise EdgeError(f"{name!r}: a model name is letters, digits, '_', '.' and '-'")
    return name


def discarded_by_import(folder: Path) -> str | None:
    """What `edge import --force` discards from an existing model folder, in words; None when nothing."""
    kinds = {"precision variants": [], "calibration": [], "engines": [], "other files": []}
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        name = path.name
        if name in (CARD, LABELS, MEAN_IMAGE, FP32.onnx) or name.startswith("."):
            continue
        if name in (p.onnx for p in PRECISIONS.values()):
            kinds["precision variants"].append(name)
        elif name in (CALIBRATION_CACHE, CALIBRATION_JSON):
            kinds["calibration"].append(name)
        elif name.endswith(ENGINE_SUFFIX):
            kinds["engines"].append(name)
        elif not (path.with_suffix(ENGINE_SUFFIX).is_file() or name.endswith(TIMING_CACHE_SUFFIX)):
            kinds["other files"].append(name)  # an engine's sidecar and the timing caches go with the engines
    said = [f"{kind} ({', '.join(names)})" for kind, names in kinds.items() if names]
    return "; ".join(said) or None


def import_model(src: str | os.PathLike, *, name: str | None = None, repo: str | os.PathLike | None = None,
                 weights: str | os.PathLike | None = None, labels: str | os.PathLike | None = None,
                 options: PreprocessOptions | None = None, force: bool = False, origin: dict | None = None) -> Path:
    """Import an ONNX model (`model.onnx`) or a Caffe one (`deploy.prototxt` + weights); returns the folder.

    `origin` is recorded in the card's source as it is: where the files came from (`edge zoo pull` names the
    zoo entry, the URL and the published checksums)."""
    src = Path(src)
    options = options or PreprocessOptions()
    if options.std is not None and options.scale is not None:
        raise EdgeError("give --scale or --std, not both")
    kind = src.suffix.lower()
    if kind in (".engine", ".plan", ".trt"):  # jetson-inference takes these; users then pass one to the wrong tool
        raise EdgeError(f"{src}: a TensorRT engine runs only on the GPU and TensorRT version that built it, so it "
                        "cannot be imported; import the .onnx (or Caffe .prototxt) it was built from, and `edge build` "
                        "on the device")
    if kind == ".caffemodel":
        raise EdgeError(f"{src}: Caffe weights; import the network's deploy.prototxt, with --weights {src.name}")
    if kind == ".uff":
        raise EdgeError(f"{src}: UFF models are not supported (TensorRT 10 removed UFF); export the model to ONNX")
    sources = [("model", src)]
    mean_image = None
    if src.suffix == ".prototxt":
        # Caffe's schema is built when edge.caffe is first imported: only a Caffe import pays for it
        from .caffe import convert_caffe, read_mean_image

        if weights is None:
            raise EdgeError(f"{src}: a Caffe model needs its weights: --weights NET.caffemodel")
        caffe = convert_caffe(src, Path(weights))
        model = caffe.model
        sources.append(("weights", Path(weights)))
        # Caffe's classifiers: BGR, stretched to the input size, mean and scale from transform_param.
        defaults = {"color": "bgr", "resize": "stretch", "mean": caffe.mean_values, "scale": caffe.scale}
        if options.mean_file is not None:
            mean_image = read_mean_image(options.mean_file)
            sources.append(("mean", options.mean_file))
        elif caffe.mean_file and options.mean_values is None:  # a silent mean of 0 would give garbage labels
            raise EdgeError(f"{src}: transform_param subtracts the mean image {caffe.mean_file}; give it with "
                            f"--mean {Path(caffe.mean_file).name} (or per-channel --mean-values)")
    else:
        if weights is not None or options.mean_file is not None:
            raise EdgeError(f"{src}: --weights and --mean are for Caffe models (a .prototxt)")
        model = load_onnx(src)
        defaults = {"color": "rgb", "resize": "shorter"}
    name = model_name(src, name)
    model = check_onnx(model, src)
    input_name, dims, layout = find_image_input(model, options.layout, src)
    output_name, classes, probabilities = find_class_output(model, src)
    if problems := size_problems(dims[0] or 0, dims[1:], classes):
        raise EdgeError(f"{src}: {'; '.join(problems)}")
    spec = _card_preprocess(dims, layout, options, defaults, mean_image, src)

    label_lines = None
    if labels is not None:
        label_lines = read_labels(Path(labels))
        if len(label_lines) != classes:
            raise EdgeError(f"{labels}: {plural(len(label_lines), 'label')}, but the model's output {output_name} "
                            f"has {plural(classes, 'class', 'classes')}")
        sources.append(("labels", Path(labels)))

    card = Card(
        name=name, input_name=input_name,
        input_shape=(spec.channels, *spec.size) if layout == "nchw" else (*spec.size, spec.channels),
        batch=dims[0] or 0, output_name=output_name, classes=classes, probabilities=probabilities,
        preprocess=spec, labels=LABELS if label_lines is not None else None,
        source={
            "kind": "caffe" if src.suffix == ".prototxt" else "onnx",
            "imported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "edge_version": __version__,
            "files": [{"role": role, "path": str(p.resolve()), "sha256": sha256_file(p)} for role, p in sources],
            **({"origin": origin} if origin else {}),
        },
    )
    folder = repo_folder(repo) / name
    with model_lock(folder, "edge import"):  # two imports of one name: the second waits, then finds the first's
        if folder.exists() and not force:
            raise EdgeError(f"{folder}: already exists; pass --force to replace it")
        with staged_folder(folder, replace=force) as staging:
            onnx.save(model, str(staging / FP32.onnx))
            (staging / CARD).write_text(tomli_w.dumps(card.to_toml()), encoding="utf-8")
            if label_lines is not None:
                shutil.copyfile(labels, staging / LABELS)
            if mean_image is not None:
                np.save(staging / MEAN_IMAGE, mean_image.astype(np.float32))
    return folder
