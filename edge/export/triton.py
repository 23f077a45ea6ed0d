"""`edge export MODEL --triton REPO`: the model folder as Triton Inference Server models.

    REPO/<name>/               the ensemble: camera frames in (uint8 HWC BGR, any size), the model's output out;
                               preprocessing, then the model named by --serve-with
    REPO/<name>_preprocess/    Python backend: edge's preprocessing of the card (triton_python.PreprocessModel)
    REPO/<name>_onnx/          onnxruntime_onnx: the ONNX variant of --precision, as Triton serves it natively
    REPO/<name>_plan/          tensorrt_plan: the engines `edge build` made at that precision, one per GPU
                               (cc_model_filenames); only where there are some
    REPO/<name>_python/        Python backend: the model folder on ONNX Runtime, where no native backend fits
                               (triton_python.OnnxRuntimeModel)

Each has config.pbtxt, labels.txt where it outputs classes, and version folder --version; the versions already
there stay (Triton serves the newest by default). Each model folder is written staged and swapped in whole.
Dims leave out the batch axis (max_batch_size); a model whose graph takes one fixed batch gets max_batch_size 0
and dims with its batch.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgeError
from ..files import atomic_write_text, staged_folder
from ..folder import (
    CARD,
    MEAN_IMAGE,
    Card,
    find_model_folder,
    graph_tensors,
    load_onnx,
    missing_file_hint,
    precision_named,
    read_labels,
)
from ..tensorrt.build import ENGINE_SUFFIX, read_sidecar
from .triton_python import FRAME

SERVE_WITH = ("onnx", "plan", "python")
MAX_QUEUE_DELAY_US = 2000  # how long the dynamic batcher holds a request for others to join it
LABELS = "labels.txt"
PYTHON_MODEL = """\
# Triton's Python backend runs this file; the model is edge's, so the server's Python needs edge installed.
from edge.export.triton_python import {cls} as TritonPythonModel  # noqa: F401
"""


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # Triton's: TYPE_FP32, TYPE_UINT8
    dims: list[int]  # without the batch axis when max_batch_size > 0; -1: any size
    labels: bool = False  # classes: label_filename beside config.pbtxt

    def pbtxt(self) -> str:
        label = f' label_filename: "{LABELS}"' if self.labels else ""
        return (f"  {{ name: {json.dumps(self.name)} data_type: {self.data_type} "
                f"dims: [ {', '.join(map(str, self.dims))} ]{label} }}")


def config_pbtxt(name: str, kind: str, max_batch: int, inputs: list[Tensor], outputs: list[Tensor],
                 instances: int = 0, device: str = "", extra: str = "") -> str:
    """A config.pbtxt in protobuf text format (Triton's ModelConfig message). `kind`: `platform: "..."` or
    `backend: "..."`; `instances` 0: no instance group nor batcher (an ensemble); `device` KIND_CPU or KIND_GPU,
    empty for Triton's default (the GPUs where there are some, else the CPU)."""
    lines = [f"name: {json.dumps(name)}", kind, f"max_batch_size: {max_batch}",
             "input [", ",\n".join(t.pbtxt() for t in inputs), "]",
             "output [", ",\n".join(t.pbtxt() for t in outputs), "]"]
    if instances:
        lines.append(f"instance_group [ {{ count: {instances}{' kind: ' + device if device else ''} }} ]")
        if max_batch:
            lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US} }}")
    return "\n".join(lines) + ("\n" + extra if extra else "") + "\n"


def plans_by_compute_capability(folder: Path, precision: str) -> tuple[dict[str, str], list[str]]:
    """{compute capability: engine file} of the engines built at `precision`, the newest where one GPU has
    several (each TensorRT version's); and warnings naming those left out."""
    chosen: dict[str, dict] = {}
    warnings = []
    for engine in sorted(folder.glob(f"*{ENGINE_SUFFIX}")):
        sidecar = read_sidecar(engine)
        if not sidecar or sidecar.get("precision") != precision:
            continue
        capability = str(sidecar.get("compute_capability"))
        if capability in chosen:
            older, newer = sorted((chosen[capability], sidecar), key=lambda s: s.get("built_at", ""))
            warnings.append(f"{folder}: {older['engine']} and {newer['engine']} both run on compute capability "
                            f"{capability}; exported {newer['engine']} (Triton's TensorRT must be its version)")
            sidecar = newer
        chosen[capability] = sidecar
    return {capability: sidecar["engine"] for capability, sidecar in sorted(chosen.items())}, warnings


def export_triton(model: str, repo_out: Path, max_batch: int = 8, instances: int = 1, version: int = 1,
                  precision: str = "fp32", serve_with: str = "onnx", repo: str | None = None
                  ) -> tuple[list[Path], list[str]]:
    """Write the Triton models of a model folder into repo_out; returns their folders and warnings."""
    if serve_with not in SERVE_WITH:
        raise EdgeError(f"--serve-with must be one of {', '.join(SERVE_WITH)}, not {serve_with!r}")
    if max_batch < 1 or instances < 1 or version < 1:
        raise EdgeError(f"--max-batch, --instances and --version must be 1 or more, not {max_batch}, {instances}, "
                        f"{version}")
    variant = precision_named(precision)
    folder = find_model_folder(model, repo)
    card = Card.read(folder)
    onnx_path = folder / variant.onnx
    if not onnx_path.is_file():
        raise EdgeError(f"{onnx_path}: no {precision} variant to export; {missing_file_hint(folder, variant.onnx)}")
    plans, warnings = plans_by_compute_capability(folder, precision)
    for engine in plans.values():  # Triton sends the plan batches up to max_batch_size; its profile must take them
        profile = ((read_sidecar(folder / engine) or {}).get("flags") or {}).get("batch_profile")
        if card.batch == 0 and profile and profile[2] < max_batch:
            raise EdgeError(f"--max-batch {max_batch}: {folder / engine} takes batches of up to {profile[2]} (its "
                            f"build profile); export with --max-batch {profile[2]} or rebuild it")
    if serve_with == "plan" and not plans:
        raise EdgeError(f"{folder}: no {precision} engine to serve; build one with `edge build --precision "
                        f"{precision}` on the server's GPU, or --serve-with onnx")

    # A graph that takes any batch is batched by Triton; one with a fixed batch is served as it is.
    batched = card.batch == 0
    max_batch_size = max_batch if batched else 0
    batch_axis = [] if batched else [card.batch]
    _, outputs = graph_tensors(load_onnx(onnx_path))
    if card.output_name not in outputs:
        raise EdgeError(f"{onnx_path}: no output {card.output_name!r}, the card's")
    output_dims = [-1 if d is None else d for d in outputs[card.output_name][0][1:]]  # -1: symbolic
    model_input = Tensor(card.input_name, "TYPE_FP32", batch_axis + list(card.input_shape))
    model_output = Tensor(card.output_name, "TYPE_FP32", batch_axis + output_dims, labels=bool(card.labels))
    frames = Tensor(FRAME, "TYPE_UINT8", batch_axis + [-1, -1, 3])
    labels = "\n".join(read_labels(folder / card.labels)) + "\n" if card.labels else None
    card_files = [CARD] + ([card.labels] if card.labels else []) + \
        ([MEAN_IMAGE] if card.preprocess.mean_image is not None else [])
    name, written = card.name, []

    def write(model_name: str, config: str, files: dict[str, Path], python_class: str | None = None) -> None:
        final = repo_out / model_name
        with staged_folder(final, replace=True) as staging:
            if final.is_dir():  # the other versions stay
                for entry in final.iterdir():
                    if entry.is_dir() and entry.name.isdigit() and entry.name != str(version):
                        shutil.copytree(entry, staging / entry.name)
            version_folder = staging / str(version)
            version_folder.mkdir()
            for target, source in files.items():
                shutil.copy2(source, version_folder / target)
            if python_class:
                atomic_write_text(version_folder / "model.py", PYTHON_MODEL.format(cls=python_class))
            atomic_write_text(staging / "config.pbtxt", config)
            if labels and "label_filename" in config:
                atomic_write_text(staging / LABELS, labels)
        written.append(final)

    card_copies = {file: folder / file for file in card_files}
    write(f"{name}_preprocess", config_pbtxt(
        f"{name}_preprocess", 'backend: "python"', max_batch_size, [frames],
        [Tensor(card.input_name, "TYPE_FP32", model_input.dims)], instances, "KIND_CPU"),
        card_copies, "PreprocessModel")
    write(f"{name}_onnx", config_pbtxt(f"{name}_onnx", 'platform: "onnxruntime_onnx"', max_batch_size,
                                       [model_input], [model_output], instances), {"model.onnx": onnx_path})
    write(f"{name}_python", config_pbtxt(
        f"{name}_python", 'backend: "python"', max_batch_size, [model_input], [model_output], instances, "KIND_CPU",
        f'parameters {{ key: "precision" value {{ string_value: "{precision}" }} }}'),
        {**card_copies, onnx_path.name: onnx_path}, "OnnxRuntimeModel")
    if plans:
        capabilities = ", ".join(f'{{ key: "{cc}" value: "{engine}" }}' for cc, engine in plans.items())
        write(f"{name}_plan", config_pbtxt(f"{name}_plan", 'platform: "tensorrt_plan"', max_batch_size,
                                           [model_input], [model_output], instances, "KIND_GPU",
                                           f"cc_model_filenames [ {capabilities} ]"),
              {engine: folder / engine for engine in plans.values()})
    steps = (f'  {{ model_name: "{name}_preprocess" model_version: -1\n'
             f'    input_map {{ key: "{FRAME}" value: "{FRAME}" }}\n'
             f'    output_map {{ key: {json.dumps(card.input_name)} value: "preprocessed" }} }},\n'
             f'  {{ model_name: "{name}_{serve_with}" model_version: -1\n'
             f'    input_map {{ key: {json.dumps(card.input_name)} value: "preprocessed" }}\n'
             f'    output_map {{ key: {json.dumps(card.output_name)} value: {json.dumps(card.output_name)} }} }}')
    write(name, config_pbtxt(name, 'platform: "ensemble"', max_batch_size, [frames], [model_output],
                             extra=f"ensemble_scheduling {{ step [\n{steps}\n] }}"), {})
    return written, warnings
