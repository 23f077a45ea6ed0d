"""`edge <verb>`: a thin layer that parses flags, calls the library and prints.

Each verb is one `cmd_<verb>(args)` function and one `add_<verb>(subparsers)` that declares its flags.
Errors the user can fix arrive as EdgeError, or as an OSError naming a path (permissions, a full disk), and are
printed on one line, with exit status 1.

Some verbs import their library when they run, so the others start faster: those that read or write ONNX
graphs (import, eval, fp16, calibrate, info, zoo) for onnx, which `edge run`, `edge build` and `edge --help` never
need; run, profile and bench for the loop and http.server (0.1 to 0.2 s here, more on a Jetson).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import edge

from . import repository
from .backends import check_backend
from .errors import EdgeError
from .export.deepstream import export_deepstream
from .export.triton import SERVE_WITH, export_triton
from .folder import PRECISIONS, Card, find_model_folder, repo_folder
from .model import Model
from .preprocess import load_image_for
from .runtime import systemd
from .runtime.options import RUN_OPTIONS
from .runtime.sinks import annotation_paths, write_annotated
from .runtime.sources import image_paths, redact
from .tensorrt.build import build_engine
from .tensorrt.calibration_cache import DEFAULT_TENSORRT
from .words import plural


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _at_least(minimum: float, kind: type = int):
    """The argparse type of a flag that takes a finite number no less than `minimum`: every verb's counts, sizes
    and rates are checked by it, and `edge run`'s from the bounds in RUN_OPTIONS."""
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {noun} of at least {minimum:g}, got {text!r}")
        return value

    return parse


_positive = _at_least(1)


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.split(","))
        return height, width
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W, got {text!r}") from None


def _resize(text: str) -> tuple[str, int | None]:
    mode, _, size = text.partition(":")
    if mode not in ("stretch", "shorter") or (size and not size.isdigit()):
        raise argparse.ArgumentTypeError(f"expected stretch[:S] or shorter[:S], got {text!r}")
    return mode, int(size) if size else None


def _model_folder_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model folder, or a model's name in the repository")
    parser.add_argument("--repo", help="the model repository (default: $EDGE_REPO or ./engines)")


def _precision_flag(parser: argparse.ArgumentParser) -> None:
    first, *others = PRECISIONS.values()
    made = " and ".join(f"`{p.made_by}`" for p in others)
    parser.add_argument("--precision", default=first.name, choices=tuple(PRECISIONS),
                        help=f"{first.name} (default), {_either(p.name for p in others)}: the variants {made} make")


def _either(names) -> str:
    """fp16 or int8; fp16, int8 or mixed."""
    *rest, last = names
    return f"{', '.join(rest)} or {last}" if rest else last


def _backend(text: str) -> str:
    try:
        check_backend(text)
    except EdgeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _model_flags(parser: argparse.ArgumentParser, precision: bool = True) -> None:
    _model_folder_flags(parser)
    parser.add_argument("--backend", default="onnxruntime", type=_backend,
                        help="onnxruntime (default; the CPU), tensorrt (an engine from `edge build`), torch (CUDA), "
                        "or a model on a Triton server: triton://HOST:PORT/MODEL, triton+grpc://HOST:PORT/MODEL")
    if precision:
        _precision_flag(parser)


# --- import ------------------------------------------------------------------------------------------------

def add_import(sub) -> None:
    p = sub.add_parser("import", help="ONNX or Caffe model -> model folder engines/<name>/",
                       description="pixel -> (pixel - mean) * scale, or (pixel - mean) / std; mean and std in the "
                       "model's channel order. Defaults: ONNX rgb, shorter:256/224 of the input, mean 0, scale 1; "
                       "Caffe bgr, stretch, mean and scale from the prototxt's transform_param.")
    p.add_argument("src", type=Path, help="model.onnx, or a Caffe deploy.prototxt")
    p.add_argument("--weights", type=Path, help="the Caffe .caffemodel")
    mean = p.add_mutually_exclusive_group()
    mean.add_argument("--mean", type=Path, dest="mean_file", help="a Caffe mean image (.binaryproto)")
    mean.add_argument("--mean-values", type=_floats, help="per-channel mean, e.g. 104,117,123")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--scale", type=float, help="multiply after subtracting the mean")
    scale.add_argument("--std", type=_floats, help="per-channel divisor after subtracting the mean")
    p.add_argument("--labels", type=Path, help="one label a line, in class order (synset_words.txt works)")
    p.add_argument("--name", help="the folder's name (default: the file's name; for model.onnx or "
                   "deploy.prototxt, the name of the folder holding it)")
    p.add_argument("--repo", help="the model repository (default: $EDGE_REPO or ./engines)")
    p.add_argument("--size", type=_size, help="H,W when the graph's input size is not static")
    p.add_argument("--resize", type=_resize,
                   help="stretch[:S] (S x S, ignoring aspect) or shorter[:S] (then centre crop)")
    p.add_argument("--color", choices=("bgr", "rgb"), help="the channel order the model expects")
    p.add_argument("--layout", choices=("nchw", "nhwc"), help="override the layout found in the graph")
    p.add_argument("--force", action="store_true", help="replace an existing model folder")


def cmd_import(args) -> int:
    # onnx: see the module's docstring
    from .importer import PreprocessOptions, discarded_by_import, import_model, model_name

    resize, resize_size = args.resize or (None, None)
    options = PreprocessOptions(size=args.size, resize=resize, resize_size=resize_size, color=args.color,
                                layout=args.layout, mean_values=args.mean_values, mean_file=args.mean_file,
                                scale=args.scale, std=args.std)
    discarded = discarded_by_import(repo_folder(args.repo) / model_name(args.src, args.name)) if args.force else None
    folder = import_model(args.src, name=args.name, repo=args.repo, weights=args.weights, labels=args.labels,
                          options=options, force=args.force)
    if discarded:  # said once the new folder is in place: until then the old one was kept whole
        print(f"edge: {folder}: replaced; discarded {discarded}", file=sys.stderr)
    spec = Card.read(folder).preprocess
    if spec.mean_image is None and not any(spec.mean) and spec.std is None and spec.scale == 1.0:
        # Legal (some graphs normalise inside), but far more often a forgotten flag: the zoo's Caffe prototxts
        # often carry their transform_param commented out, and then every label comes out wrong without an error.
        print(f"edge: warning: {folder}: no mean, scale or std: the model gets raw pixel values 0 to 255 (if it "
              "expects normalised input, import again with --force and --mean-values / --scale / --std)",
              file=sys.stderr)
    print(folder)
    return 0


# --- classify ----------------------------------------------------------------------------------------------

def add_classify(sub) -> None:
    p = sub.add_parser("classify", help="top-k labels for images")
    _model_flags(p)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="JPEG, PNG, BMP, TIFF, WebP or PNM files of up to $EDGE_MAX_IMAGE_PIXELS (default: 100 "
                   "megapixels), folders of them, or globs such as 'shots/*.jpg'")
    p.add_argument("--top", type=_positive, default=5, help="labels per image (default: 5)")
    p.add_argument("--annotate", type=Path, metavar="OUT",
                   help="also write each image with its top classes drawn: to OUT for one image, else into the "
                   "folder OUT under the image's own name")
    p.add_argument("--oversample", action="store_true", help="average Caffe's 10 crops (corners, centre, mirrored)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the text")


def cmd_classify(args) -> int:
    paths = [path for argument in args.images for path in (image_paths(argument) or [Path(argument)])]
    model = Model.load(args.model, args.repo, args.backend, args.precision)
    images = [load_image_for(path, model.preprocess) for path in paths]  # every file checked before any inference
    annotations = annotation_paths(paths, args.annotate) if args.annotate else None
    if args.oversample:
        results = [model.classify(image, args.top, oversampled=True) for image in images]
    else:
        results = model.classify_batch(images, args.top)
    for image, top, annotation in zip(images, results, annotations or []):
        write_annotated(image, [f"{p.probability:6.2%} {p.label}" for p in top], annotation)  # as imagenet draws
    if args.json:
        print(json.dumps({"model": model.card.name, "results": [
            {"image": str(path), "top": [p.to_dict() for p in top]} for path, top in zip(paths, results)]}))
        return 0
    for path, top in zip(paths, results):
        print(path)
        for p in top:
            print(f"  {p.probability:7.4f}  {p.class_id:5d}  {p.label}")
    return 0


# --- eval --------------------------------------------------------------------------------------------------

def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="top-1 / top-5 accuracy over a `file class_id` list")
    _model_flags(p, precision=False)
    p.add_argument("--list", required=True, type=Path, dest="label_list",
                   help="lines of `file class_id` (Caffe's val.txt)")
    p.add_argument("--root", type=Path, help="the folder image paths are relative to (default: the list's folder)")
    p.add_argument("--precision", default="fp32", help=f"one or more of {','.join(PRECISIONS)}; the first is the "
                   "reference (default: fp32)")
    p.add_argument("--limit", type=_positive, help="only the first N images")
    p.add_argument("--batch", type=_positive, default=1, help="images per inference run, when the model allows "
                   "(default: 1, the fastest with ONNX Runtime on a CPU: docs/benchmarks.md)")
    p.add_argument("--json", action="store_true",
                   help="the scores as one JSON object instead of the table (schema edge.eval/1, README.md)")


def cmd_eval(args) -> int:
    # onnx: see the module's docstring
    from .evaluate import evaluate, load_models, read_label_list
    from .precision.images import exclude_calibration_images

    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions:
        raise EdgeError(f"--precision names no precision ({args.precision!r}); give one or more of "
                        f"{','.join(PRECISIONS)}")
    listed = read_label_list(args.label_list, args.root)
    # An INT8 variant is never scored on the images it was calibrated on, and the precisions compared with it
    # see the same images; without one, every listed image counts.
    int8 = "int8" in precisions
    items = exclude_calibration_images(find_model_folder(args.model, args.repo), listed) if int8 else listed
    left_out = len(listed) - len(items)
    items = items[: args.limit]
    if not items:
        raise EdgeError(f"{args.label_list}: every listed image was used to calibrate the model")
    models, workers = load_models(args.model, args.repo, args.backend, precisions)
    scores = evaluate(models, items, batch_size=args.batch, workers=workers)
    if args.json:  # one shape however many precisions (README.md, "Classify and evaluate")
        model = next(iter(models.values()))
        print(json.dumps({"schema": "edge.eval/1", "model": model.card.name, "n": len(items),
                          "calibration_images_left_out": left_out, "precisions": scores}))
        return 0
    print(f"{'precision':10} {'images':>7} {'top-1':>7} {'top-5':>7} {'top-1 err':>9} {'agree':>7} {'max |dp|':>9}")
    for name, s in scores.items():
        compared = (f"{s['top1_agreement']:7.2%} {s['max_probability_deviation']:9.4f}" if "top1_agreement" in s
                    else f"{'-':>7} {'-':>9}")
        print(f"{name:10} {s['n']:7d} {s['top1']:7.2%} {s['top5']:7.2%} {s['top1_error']:9.2%} {compared}")
    if int8:
        print(f"left out: the {plural(left_out, 'listed image')} model.int8.onnx was calibrated on, for every "
              "precision")
    return 0


# --- fp16, calibrate -------------------------------------------------------------------------------------

def add_fp16(sub) -> None:
    p = sub.add_parser("fp16", help="model.fp16.onnx: float16 weights and compute, float32 I/O (docs/precision.md)")
    _model_folder_flags(p)


def cmd_fp16(args) -> int:
    from .precision.fp16 import make_fp16  # onnx: see the module's docstring

    print(make_fp16(find_model_folder(args.model, args.repo)))
    return 0


def add_calibrate(sub) -> None:
    from .precision.calibrate import METHODS  # onnx: see the module's docstring

    p = sub.add_parser("calibrate", help="model.int8.onnx (Q/DQ), calibration.cache and calibration.json")
    _model_folder_flags(p)
    p.add_argument("--images", required=True, type=Path, help="a folder of images, or a `file [class_id]` list")
    p.add_argument("--count", type=_positive, default=100,
                   help="images to calibrate on, evenly spaced in path order (default: 100)")
    p.add_argument("--method", default=METHODS[0], choices=METHODS,
                   help=f"how activation ranges are chosen (default: {METHODS[0]}; docs/precision.md)")
    p.add_argument("--tensorrt", default=DEFAULT_TENSORRT, metavar="VERSION",
                   help=f"the TensorRT the calibration.cache is stamped for (default: {DEFAULT_TENSORRT}, JetPack 5; "
                   "JetPack 6: 10.3.0)")


def cmd_calibrate(args) -> int:
    # onnx: see the module's docstring
    from .precision.calibrate import calibrate
    from .precision.images import choose_images

    folder = find_model_folder(args.model, args.repo)
    print(calibrate(folder, choose_images(args.images, args.count), args.method, tensorrt_version=args.tensorrt))
    return 0


# --- build -------------------------------------------------------------------------------------------------

def add_build(sub) -> None:
    p = sub.add_parser("build", help="TensorRT engine for this GPU from a model folder (reused while up to date)")
    _model_folder_flags(p)
    _precision_flag(p)
    p.add_argument("--dla", type=_at_least(0), metavar="N",
                   help="run on DLA core N, layers it cannot run fall back to the GPU")
    p.add_argument("--workspace", type=_positive, metavar="MiB",
                   help="TensorRT's workspace limit (default: TensorRT's)")
    p.add_argument("--implicit", action="store_true",
                   help="TensorRT 10: FP16/INT8 builder flags and calibration.cache instead of the typed ONNX variants")


def cmd_build(args) -> int:
    folder = find_model_folder(args.model, args.repo)
    print(build_engine(folder, args.precision, args.dla, args.workspace, args.implicit))
    return 0


# --- export ------------------------------------------------------------------------------------------------

def add_export(sub) -> None:
    p = sub.add_parser("export", help="a Triton Inference Server model repository, a DeepStream nvinfer config",
                       description="docs/scale-out.md says which server and which JetPack runs which form.")
    _model_folder_flags(p)
    _precision_flag(p)
    p.add_argument("--triton", type=Path, metavar="REPO", help="write the Triton models into this repository")
    p.add_argument("--deepstream", type=Path, metavar="DIR", help="write DIR/<name>/ for Gst-nvinfer")
    p.add_argument("--max-batch", type=_positive, help="Triton's max_batch_size (default 8), nvinfer's batch-size "
                   "(default 1); a graph with a fixed batch keeps its own")
    p.add_argument("--instances", type=_positive, default=1, help="Triton model instances (default: 1)")
    p.add_argument("--version", type=_positive, default=1, help="the Triton version folder (default: 1)")
    p.add_argument("--serve-with", default=SERVE_WITH[0], choices=SERVE_WITH,
                   help="what the ensemble runs after preprocessing: onnx (Triton's ONNX Runtime, default), plan "
                   "(TensorRT engines from `edge build`) or python (ONNX Runtime in the Python backend)")


def cmd_export(args) -> int:

    if not args.triton and not args.deepstream:
        raise EdgeError("export: give --triton REPO, --deepstream DIR, or both")
    warnings, written = [], []
    if args.triton:
        folders, found = export_triton(args.model, args.triton, args.max_batch or 8, args.instances, args.version,
                                       args.precision, args.serve_with, args.repo)
        written += folders
        warnings += found
    if args.deepstream:
        config, found = export_deepstream(args.model, args.deepstream, args.precision, args.max_batch or 1,
                                          args.repo)
        written.append(config)
        warnings += found
    for warning in warnings:
        print(f"edge: warning: {warning}", file=sys.stderr)
    for path in written:
        print(path)
    return 0


# --- info --------------------------------------------------------------------------------------------------

def add_info(sub) -> None:
    p = sub.add_parser("info", help="versions, and whether CUDA, pycuda, TensorRT and jetson-stats are usable")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the text")


def cmd_info(args) -> int:
    from .info import report  # onnx: see the module's docstring

    facts = report()
    if args.json:
        print(json.dumps(facts))
    else:
        for name, value in facts.items():
            print(f"{name:14} {value}")
    return 0


# --- run, service ------------------------------------------------------------------------------------------

def add_run(sub) -> None:
    p = sub.add_parser("run", help="classify a camera, stream, video or image folder; JSON lines out",
                       description="Every option is also a key of the --config TOML file ('-' written '_'; "
                       "systemd/edge.toml documents them); a flag given here wins over the file.")
    p.add_argument("model", nargs="?", help="a model folder, or a model's name in the repository")
    p.add_argument("--config", type=Path, help="a TOML file of these options (the service's /etc/edge/edge.toml)")
    for option in RUN_OPTIONS[1:]:
        flag = "--" + option.key.replace("_", "-")
        if option.kind is bool:
            p.add_argument(flag, action="store_true", default=None, help=option.help)
        elif option.kind is list:
            p.add_argument(flag, action="append", metavar="URI", help=f"{option.help} (repeatable; default: -)")
        else:
            default = "" if option.default in (None, "") else f" (default: {option.default})"
            kind = option.kind if option.minimum is None else _at_least(option.minimum, option.kind)
            p.add_argument(flag, type=kind, help=option.help + default)


def cmd_run(args) -> int:
    from .runtime.service import run  # the loop and http.server: see the module's docstring

    return run(args.config, {option.key: getattr(args, option.key) for option in RUN_OPTIONS})


def add_service(sub) -> None:
    p = sub.add_parser("service", help="install, uninstall or inspect the systemd service edge.service")
    p.add_argument("action", choices=("install", "uninstall", "status"),
                   help="install: the user, /etc/edge/edge.toml (if absent), the unit, enabled; uninstall: disable "
                   "and remove the unit; status: systemctl status")
    p.add_argument("--dry-run", action="store_true", help="print the unit and what would be done; change nothing")


def cmd_service(args) -> int:
    actions = {"install": systemd.install, "uninstall": systemd.uninstall, "status": systemd.status}
    return actions[args.action](args.dry_run)


# --- profile ----------------------------------------------------------------------------------------------

def add_profile(sub) -> None:
    p = sub.add_parser("profile", help="time every stage of the camera loop; transfer split from compute",
                       description="Runs the loop of `edge run` serially (stage costs) and overlapped (throughput). "
                       "Without CUDA and a GPU backend it profiles the host path and says so; --memory then "
                       "has nothing to choose and is ignored with a note.")
    _model_flags(p)
    p.add_argument("--input", default="test://", metavar="URI", help="default: test://, a generated 1080p pattern")
    p.add_argument("--frames", type=_positive, default=200, help="measured frames per run (default: 200)")
    p.add_argument("--warmup", type=_positive, default=20, help="frames run first and left out (default: 20)")
    p.add_argument("--memory", help="pageable,pinned,mapped: host memory modes to compare (default: the device's)")
    p.add_argument("--workers", type=_at_least(0), default=0,
                   help="inferences at once, as `edge run --workers` (default 0: one single-threaded run per core on "
                   "onnxruntime; 1: one run on every core)")
    p.add_argument("--loop", action="store_true", help="start a file or folder input over at its end, for a "
                   "profile longer than the input")
    p.add_argument("--json", action="store_true", help="the profile as one JSON object (schema edge.profile/1)")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw the stage times (needs matplotlib)")


def cmd_profile(args) -> int:
    from .profiler import format_report, plot, profile  # the loop and http.server: see the module's docstring

    if args.plot and not args.plot.parent.is_dir():  # found out now, not after the whole run
        raise EdgeError(f"{args.plot}: no folder {args.plot.parent} to write the plot into")
    result = profile(args.model, args.repo, args.input, args.frames, args.warmup, args.memory, args.backend,
                     args.precision, workers=args.workers, loop=args.loop)
    if args.plot:
        plot(result, args.plot)
    print(json.dumps(result.to_dict()) if args.json else format_report(result))
    return 0


# --- bench ------------------------------------------------------------------------------------------------

def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="models x precisions x backends side by side: accuracy, latency, throughput",
                       description="Rows that cannot run here are listed with the reason and the command that would "
                       "make them. Timing is interleaved: every round runs each row in turn (docs/bench.md).")
    p.add_argument("models", nargs="+", metavar="MODEL", help="model folders, or models' names in the repository")
    p.add_argument("--repo", help="the model repository (default: $EDGE_REPO or ./engines)")
    p.add_argument("--list", required=True, type=Path, dest="label_list",
                   help="lines of `file class_id` (Caffe's val.txt): the accuracy images, and the first --frames timed")
    p.add_argument("--root", type=Path, help="the folder image paths are relative to (default: the list's folder)")
    p.add_argument("--precision", default="fp32,fp16,int8", help="precisions to compare (default: fp32,fp16,int8)")
    p.add_argument("--backend", help="backends to compare (default: onnxruntime,opencv,tensorrt,torch; OpenCV DNN "
                   "is the baseline CPU row)")
    p.add_argument("--groups", type=Path, help="label groups (TOML, as for `edge run --groups`): accuracy per group")
    p.add_argument("--batch", default="1", help="batch sizes to time, comma-separated (default: 1)")
    p.add_argument("--frames", type=_positive, default=20, help="images timed per row and round (default: 20)")
    p.add_argument("--rounds", type=_positive, default=5, help="timing rounds, rows interleaved (default: 5)")
    p.add_argument("--limit", type=_positive, help="score accuracy on only the first N images")
    p.add_argument("--json", action="store_true", help="the results as one JSON object (schema edge.bench/1)")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table as Markdown")
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write the table as CSV")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw accuracy against latency (matplotlib)")


def cmd_bench(args) -> int:
    from .bench import BACKENDS, csv_text, format_table, markdown, plot, run_bench, write_report  # the loop, onnx

    for path in (args.markdown, args.csv, args.plot):  # found out now, not after the whole run
        if path is not None and not path.parent.is_dir():
            raise EdgeError(f"{path}: no folder {path.parent} to write it into")
    try:
        batches = tuple(_positive(v) for v in args.batch.split(","))
    except argparse.ArgumentTypeError as e:
        raise EdgeError(f"--batch: {e}") from None
    backends = _names(args.backend, "--backend") if args.backend else BACKENDS
    result = run_bench(args.models, args.label_list, args.root, args.repo, _names(args.precision, "--precision"),
                       backends, args.groups, batches, args.frames, args.rounds, args.limit).to_dict()
    if args.markdown:
        write_report(args.markdown, markdown(result))
    if args.csv:
        write_report(args.csv, csv_text(result))
    if args.plot:
        plot(result, args.plot)
    print(json.dumps(result) if args.json else format_table(result))
    return 0


def _names(text: str, flag: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise EdgeError(f"{flag} names nothing ({text!r})")
    return names

# --- list, show, rm ---------------------------------------------------------------------------------------

def add_list(sub) -> None:
    p = sub.add_parser("list", help="the models in the repository: variants, calibration, engines, sizes",
                       description="Each engine is marked current when this machine's GPU and TensorRT built it "
                       "and the files it was built from are unchanged; otherwise it says why not.")
    p.add_argument("--repo", help="the model repository (default: $EDGE_REPO or ./engines)")


def cmd_list(args) -> int:
    folders = repository.model_folders(args.repo)
    if not folders:
        print(f"no models in {repo_folder(args.repo)}")
        return 0
    machine = repository.this_machine()
    for folder in folders:
        found = repository.contents(folder, machine)
        print(f"{folder.name}  ({repository.size_text(found.size)}, {folder})")
        for line in repository.describe_contents(found):
            print(f"  {line}")
    return 0


def add_show(sub) -> None:
    p = sub.add_parser("show", help="a model's card in words: input, preprocessing, labels, sources, variants")
    _model_folder_flags(p)


def cmd_show(args) -> int:
    folder = find_model_folder(args.model, args.repo)
    card = Card.read(folder)
    found = repository.contents(folder, repository.this_machine())
    print(f"{card.name}  ({repository.size_text(found.size)}, {folder})")
    for line in repository.describe_card(card, folder) + repository.describe_contents(found):
        print(line)
    return 0


def add_rm(sub) -> None:
    p = sub.add_parser("rm", help="remove a model folder, or only its TensorRT engines")
    _model_folder_flags(p)
    p.add_argument("--engines-only", action="store_true",
                   help="remove the engines, their sidecars and timing caches, keeping the model (`edge build` "
                   "makes them again)")


def cmd_rm(args) -> int:
    removed = repository.remove(args.model, args.repo, args.engines_only)
    for path in removed:
        print(f"removed {path}")
    if not removed:
        print(f"{args.model}: no engines to remove")
    return 0


# --- zoo -------------------------------------------------------------------------------------------------

def add_zoo(sub) -> None:
    p = sub.add_parser("zoo", help="published models by name: list them, or pull one (download, check, import)",
                       description="The zoo's checksums are the authority: a file from the entry's URL, a mirror "
                       "(--url) or a local copy (--file) is imported only when it matches (docs/zoo.md).")
    actions = p.add_subparsers(dest="zoo_action", required=True, metavar="ACTION", help="list or pull")
    actions.add_parser("list", help="the models, their input, preprocessing and published accuracy")
    pull = actions.add_parser("pull", help="download (resuming a broken download), check the checksum, import")
    pull.add_argument("name", help="a name from `edge zoo list`")
    pull.add_argument("--repo", help="the model repository (default: $EDGE_REPO or ./engines)")
    where = pull.add_mutually_exclusive_group()
    where.add_argument("--url", help="download from this mirror instead of the entry's URL")
    where.add_argument("--file", type=Path, help="a local copy of the file, instead of downloading it")
    pull.add_argument("--labels", type=Path, help="one label a line in class order; for the ImageNet models, "
                      "synset_words.txt (1000 ILSVRC-2012 classes; edge ships none)")
    pull.add_argument("--force", action="store_true", help="replace an existing model folder")


def cmd_zoo(args) -> int:
    # onnx: see the module's docstring
    from .importer import discarded_by_import
    from .zoo import find_entry, load_zoo, pull

    if args.zoo_action == "list":
        print(f"{'name':24} {'format':6} {'input':14} {'top-1':>6} {'top-5':>6}  preprocessing")
        for entry in load_zoo().values():
            top1, top5 = (f"{entry.accuracy[k]:g}" if k in entry.accuracy else "-" for k in ("top1", "top5"))
            inputs = f"{entry.card['input']} {entry.card['layout']}"
            print(f"{entry.name:24} {entry.kind:6} {inputs:14} {top1:>6} {top5:>6}  {entry.describe_preprocessing()}")
        return 0
    discarded = discarded_by_import(repo_folder(args.repo) / args.name) if args.force else None
    folder = pull(args.name, args.repo, args.url, args.file, args.labels, args.force)
    if discarded:  # as `edge import --force` says it
        print(f"edge: {folder}: replaced; discarded {discarded}", file=sys.stderr)
    if args.labels is None and find_entry(args.name).labels:
        print(f"edge: note: {folder}: imported without labels, so classes print as numbers; pull again with "
              "--force --labels synset_words.txt to name them", file=sys.stderr)
    print(folder)
    return 0


VERBS = {
    "import": (add_import, cmd_import),
    "classify": (add_classify, cmd_classify),
    "eval": (add_eval, cmd_eval),
    "fp16": (add_fp16, cmd_fp16),
    "calibrate": (add_calibrate, cmd_calibrate),
    "build": (add_build, cmd_build),
    "export": (add_export, cmd_export),
    "run": (add_run, cmd_run),
    "service": (add_service, cmd_service),
    "profile": (add_profile, cmd_profile),
    "bench": (add_bench, cmd_bench),
    "info": (add_info, cmd_info),
    "zoo": (add_zoo, cmd_zoo),
    "list": (add_list, cmd_list),
    "show": (add_show, cmd_show),
    "rm": (add_rm, cmd_rm),
}


def _warn_of_credentials_in_argv(uri: str | None) -> None:
    if uri and redact(uri) != uri and "${" not in uri:
        print("edge: warning: --input holds a credential, which every user of this machine can read in the process "
              "list: write it as ${NAME} and set NAME in the environment, or (edge run) put the input in the --config "
              "file (docs/service.md, \"Credentials\")", file=sys.stderr)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """edge's parser, and each verb's by name."""
    parser = argparse.ArgumentParser(prog="edge", description=edge.__doc__.strip())
    parser.add_argument("--version", action="version", version=f"edge {edge.__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add, _ in VERBS.values():
        add(sub)
    return parser, sub.choices


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags of one verb; a flag the verb does not know is refused with the verb's usage, not edge's."""
    parser, verbs = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        verbs[args.verb].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    _warn_of_credentials_in_argv(getattr(args, "input", None))
    try:
        return VERBS[args.verb][1](args)
    except EdgeError as e:
        print(f"edge: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # a path the system refuses: a folder this user may not write, a full disk
        if e.filename is None:  # not about a file the user named: a fault to see whole
            raise
        print(f"edge: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
