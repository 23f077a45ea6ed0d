"""The model repository (engines/ by default): what each model folder holds, described for `edge list` and
`edge show`, and removed whole or in part by `edge rm`.

A folder holds its precision variants (model.onnx, model.fp16.onnx, model.int8.onnx), its calibration
(calibration.cache, calibration.json) and TensorRT engines with their sidecars (edge/tensorrt/build.py). An engine is
"current" when this machine's GPU and TensorRT built it and every file it was built from is unchanged; without
TensorRT here, the sidecar still tells what it was built for and whether its sources changed since.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import EdgeError
from .files import fsync_path, model_lock
from .folder import (
    CALIBRATION_CACHE,
    CALIBRATION_JSON,
    CARD,
    PRECISIONS,
    Card,
    find_model_folder,
    read_labels,
    repo_folder,
)
from .tensorrt.build import ENGINE_SUFFIX, TIMING_CACHE_SUFFIX, Target, read_sidecar, sidecar_path, why_stale
from .tensorrt.version import gpu_identity, import_tensorrt

CALIBRATION_FILES = (CALIBRATION_CACHE, CALIBRATION_JSON)


@dataclass(frozen=True)
class EngineState:
    path: Path
    size: int
    state: str  # "current", or why it would not be run here


@dataclass(frozen=True)
class Contents:
    folder: Path
    variants: dict[str, int]  # precision -> bytes of its ONNX file
    calibration: dict[str, int]  # file name -> bytes
    engines: list[EngineState]
    size: int  # every file in the folder


def this_machine() -> Target | str:
    """The Target engines must match here, or why there is none (no TensorRT, no GPU)."""
    try:
        tensorrt = import_tensorrt()
    except EdgeError:
        return "no TensorRT"
    try:
        return Target(tensorrt.__version__, *gpu_identity())
    except EdgeError:
        return "no usable GPU"


def engine_state(engine: Path, machine: Target | str) -> str:
    if isinstance(machine, Target):
        return why_stale(engine, machine) or "current"
    sidecar = read_sidecar(engine)
    try:  # its own target: only the files it was built from (and the engine's own hash) are then compared
        built_for = Target(sidecar["tensorrt"], sidecar["gpu"], sidecar["compute_capability"])
    except (TypeError, KeyError):
        return f"unusable: {sidecar_path(engine).name} is missing or unreadable"
    stale = why_stale(engine, built_for)
    if stale:
        return f"stale: {stale}"
    return (f"cannot run here ({machine}); built for {built_for.gpu} (compute capability "
            f"{built_for.compute_capability}), TensorRT {built_for.tensorrt}, from files unchanged since")


def contents(folder: Path, machine: Target | str) -> Contents:
    files = [p for p in folder.iterdir() if p.is_file()]
    return Contents(
        folder=folder,
        variants={p.name: (folder / p.onnx).stat().st_size for p in PRECISIONS.values() if (folder / p.onnx).is_file()},
        calibration={name: (folder / name).stat().st_size for name in CALIBRATION_FILES if (folder / name).is_file()},
        engines=[EngineState(p, p.stat().st_size, engine_state(p, machine))
                 for p in sorted(folder.glob(f"*{ENGINE_SUFFIX}"))],
        size=sum(p.stat().st_size for p in files),
    )


def model_folders(repo: str | os.PathLike | None = None) -> list[Path]:
    """Every model folder in the repository, by name; dot folders (downloads, folders being replaced) are not."""
    root = repo_folder(repo)
    if not root.is_dir():
        raise EdgeError(f"{root}: no model repository here (give --repo, or set $EDGE_REPO)")
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and (p / CARD).is_file())


def engine_files(folder: Path) -> list[Path]:
    """Engines, their sidecars and timing caches: everything `edge build` writes, which it can write again."""
    engines = sorted(folder.glob(f"*{ENGINE_SUFFIX}"))
    sidecars = [sidecar_path(e) for e in engines if sidecar_path(e).is_file()]
    return engines + sidecars + sorted(folder.glob(f"*{TIMING_CACHE_SUFFIX}"))


def remove(model: str | os.PathLike, repo: str | os.PathLike | None = None, engines_only: bool = False) -> list[Path]:
    """Remove a model folder (renamed aside first, so it is never seen half-deleted), or only its engines; a model
    that is a symbolic link is removed as the link, never what it points to. Returns what was removed."""
    folder = Path(os.path.abspath(find_model_folder(model, repo)))  # "." names the folder it is: set aside by name
    with model_lock(folder, "edge rm"):  # not removed under a run writing it, which would then fail
        if engines_only:
            removed = engine_files(folder)
            for path in removed:  # each engine before its sidecar: an engine never outlives its sidecar
                path.unlink()
            return removed
        if folder.is_symlink():  # the repository holds the link, not what it points to: that stays where it is
            folder.unlink()
            fsync_path(folder.parent)
            return [folder]
        # Named as files.py names a temporary, so a run killed before the rmtree ends leaves what the next run on
        # this name clears (files.remove_stale), rather than a folder nothing ever removes.
        aside = folder.with_name(f".{folder.name}.{os.getpid()}.removing.tmp")
        os.rename(folder, aside)
        fsync_path(folder.parent)
        shutil.rmtree(aside)
        return [folder]


def size_text(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def describe_contents(found: Contents) -> list[str]:
    """The lines `edge list` and `edge show` print about variants, calibration and engines."""
    lines = ["variants     " + (", ".join(f"{p} {size_text(s)}" for p, s in found.variants.items()) or "none")]
    if found.calibration:
        lines.append("calibration  " + ", ".join(f"{n} {size_text(s)}" for n, s in found.calibration.items()))
    for i, engine in enumerate(found.engines):
        label = "engines      " if i == 0 else "             "
        lines.append(f"{label}{engine.path.name}  {size_text(engine.size)}  {engine.state}")
    if not found.engines:
        lines.append("engines      none")
    return lines


def describe_card(card: Card, folder: Path) -> list[str]:
    """The card in words: input, preprocessing, output, labels and where the files came from."""
    spec = card.preprocess
    height, width = spec.size
    batch = card.batch or "any"
    lines = [f"input        {card.input_name}: {spec.layout.upper()} float32, {spec.channels} x {height} x {width}, "
             f"batch {batch}"]
    if spec.resize == "stretch":
        side = spec.resize_size
        resize = f"stretched to {side} x {side}, centre {height} x {width} cropped" if side else \
            f"stretched to {height} x {width}"
    else:
        resize = (f"shorter side to {spec.resize_size or round(min(height, width) * 256 / 224)}, "
                  f"centre {height} x {width} cropped")
    mean = "the mean image mean.npy" if spec.mean_image is not None else f"({', '.join(f'{v:g}' for v in spec.mean)})"
    if spec.mean_image is not None and any(spec.mean):
        mean += f" and ({', '.join(f'{v:g}' for v in spec.mean)})"
    values = (f"(x - {mean}) / ({', '.join(f'{v:g}' for v in spec.std)})" if spec.std is not None
              else f"(x - {mean}) * {spec.scale:g}")
    lines.append(f"preprocess   {resize}; {spec.color.upper()}; {values}")
    kind = "probabilities" if card.probabilities else "logits (softmax applied by edge)"
    lines.append(f"output       {card.output_name}: {card.classes} classes, {kind}")
    if card.labels:
        labels = read_labels(folder / card.labels)
        lines.append(f"labels       {card.labels}: {len(labels)}, from {labels[0]!r} to {labels[-1]!r}")
    else:
        lines.append("labels       none (classes print as numbers)")
    source = card.source  # a record nothing runs from: an edited one is shown as far as it goes, not refused
    lines.append(f"source       {source.get('kind', '?')}, imported {source.get('imported', '?')} "
                 f"by edge {source.get('edge_version', '?')}")
    files = source.get("files")
    for f in files if isinstance(files, list) else []:
        if isinstance(f, dict):
            lines.append(f"  {str(f.get('role', '?')):10} {f.get('path', '?')}  sha256 {f.get('sha256', '?')}")
    origin = source.get("origin")
    if isinstance(origin, dict) and origin:
        lines.append(f"  {'origin':10} " + ", ".join(f"{key} {value}" for key, value in origin.items()))
    return lines
