"""`edge export MODEL --deepstream DIR`: a Gst-nvinfer configuration for the model as a full-frame classifier.

    DIR/<name>/config_infer_<name>.txt   [property] keys of nvinfer (docs.nvidia.com/deepstream, Gst-nvinfer);
                                         its paths are relative to its folder, as nvinfer reads them
    DIR/<name>/model.onnx                the graph nvinfer builds an engine from (FP16, INT8 by builder flags)
    DIR/<name>/labels_nvinfer.txt        a classifier's labels: one line, separated by ';' (nvinfer's format)
    DIR/<name>/calibration.cache         INT8 only: TensorRT's calibration cache, edge calibrate's
    DIR/<name>/<engine>.plan             the engine `edge build` made at that precision, where there is one

DIR/<name> is written staged and swapped in whole.

nvinfer preprocesses as y = net-scale-factor * (x - offsets[c]) on the frame scaled to the network's size. What
a card says that this cannot (a per-channel std, a mean image, a resize that keeps the aspect ratio and crops,
logits where nvinfer expects probabilities) comes back as warnings saying what nvinfer will do instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..errors import EdgeError
from ..files import atomic_write_text, staged_folder
from ..folder import CALIBRATION_CACHE, FP32, Card, find_model_folder, precision_named, read_labels
from .triton import plans_by_compute_capability

NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}  # nvinfer's network-mode
COLOR_FORMAT = {"rgb": 0, "bgr": 1, "gray": 2}  # nvinfer's model-color-format
LABELS = "labels_nvinfer.txt"


def nvinfer_properties(card: Card, precision: str, batch: int, engine: str) -> tuple[dict[str, str], list[str]]:
    """The [property] keys and values for a card, and warnings where nvinfer's preprocessing differs from it."""
    spec, warnings = card.preprocess, []
    mean = np.asarray(spec.mean, dtype=np.float64)
    if spec.mean_image is not None:
        mean = mean + spec.mean_image.reshape(spec.channels, -1).mean(axis=1)
        warnings.append("the card subtracts a mean image; nvinfer's offsets are per channel: using the image's "
                        f"per-channel average ({', '.join(f'{v:.3f}' for v in mean)})")
    if spec.std is None:
        scale = spec.scale
    else:
        scale = 1.0 / float(np.mean(spec.std))
        if len(set(spec.std)) > 1:
            worst = max(abs(scale * s - 1) for s in spec.std)
            warnings.append(f"the card divides by a per-channel std ({', '.join(f'{s:g}' for s in spec.std)}); "
                            f"nvinfer has one net-scale-factor: using 1/{np.mean(spec.std):g}, up to {worst:.1%} off "
                            "on a channel")
    if spec.resize != "stretch" or (spec.resize_size or max(spec.size)) != max(spec.size):
        warnings.append(f"the card resizes {spec.resize}{':' + str(spec.resize_size) if spec.resize_size else ''} "
                        f"and crops the centre; nvinfer scales the whole frame to {spec.size[1]}x{spec.size[0]} "
                        "without cropping, so objects look wider or narrower than in training")
    if not card.probabilities:
        warnings.append("the model outputs logits; nvinfer's classifier compares them with classifier-threshold "
                        "(0) as probabilities, so a frame whose top logit is negative gets no label")
    properties = {
        "gpu-id": "0",
        "gie-unique-id": "1",
        "process-mode": "1",  # primary: the whole frame
        "network-type": "1",  # classifier
        "onnx-file": "model.onnx",
        "model-engine-file": engine,
        "labelfile-path": LABELS,
        "batch-size": str(batch),
        "network-mode": str(NETWORK_MODE[precision]),
        "model-color-format": str(COLOR_FORMAT[spec.color]),
        "net-scale-factor": repr(float(scale)),
        "offsets": ";".join(repr(float(v)) for v in mean),
        "infer-dims": ";".join(map(str, card.input_shape)),  # C;H;W, or H;W;C with network-input-order=1
        "network-input-order": "0" if spec.layout == "nchw" else "1",
        "output-blob-names": card.output_name,
        "classifier-threshold": "0.0",
    }
    if precision == "int8":
        properties["int8-calib-file"] = CALIBRATION_CACHE
    return properties, warnings


def export_deepstream(model: str, out: Path, precision: str = "fp32", batch: int = 1,
                      repo: str | None = None) -> tuple[Path, list[str]]:
    """Write DIR for nvinfer; returns the configuration file and the warnings."""
    precision_named(precision)
    folder = find_model_folder(model, repo)
    card = Card.read(folder)
    if card.batch and batch != card.batch:
        raise EdgeError(f"--max-batch {batch}: {folder} takes batches of exactly {card.batch}")
    calibration = folder / CALIBRATION_CACHE
    if precision == "int8" and not calibration.is_file():
        raise EdgeError(f"{calibration}: missing; nvinfer's INT8 needs it: make it with `edge calibrate {folder}`")
    plans, warnings = plans_by_compute_capability(folder, precision)
    if len(plans) > 1:
        warnings.append(f"{folder}: engines for several GPUs ({', '.join(plans)}); nvinfer takes one: "
                        f"{next(iter(plans.values()))}; the others' GPUs build theirs from model.onnx")
    # Without an engine of edge's, nvinfer builds one and saves it under this name, its own, beside the config.
    engine = next(iter(plans.values()), f"model.onnx_b{batch}_gpu0_{precision}.engine")
    properties, card_warnings = nvinfer_properties(card, precision, batch, engine)
    labels = read_labels(folder / card.labels) if card.labels else [f"class {i}" for i in range(card.classes)]
    if any(";" in label for label in labels):
        warnings.append("labels with ';' in them: written with ',' in its place (';' separates nvinfer's labels)")
    config = out / card.name / f"config_infer_{card.name}.txt"
    with staged_folder(config.parent, replace=True) as staging:
        shutil.copy2(folder / FP32.onnx, staging / "model.onnx")
        if precision == "int8":
            shutil.copy2(calibration, staging / CALIBRATION_CACHE)
        if plans:
            shutil.copy2(folder / engine, staging / engine)
        atomic_write_text(staging / LABELS, ";".join(label.replace(";", ",") for label in labels) + "\n")
        text = [f"# nvinfer configuration for {card.name}, written by `edge export --deepstream` from {folder}",
                *(f"# note: {warning}" for warning in card_warnings), "[property]",
                *(f"{key}={value}" for key, value in properties.items())]
        atomic_write_text(staging / config.name, "\n".join(text) + "\n")
    return config, card_warnings + warnings
