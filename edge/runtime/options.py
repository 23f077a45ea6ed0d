"""`edge run`'s options, one table: each is a flag of `edge run` (--key, '_' written '-') and a key of the TOML
configuration (--config FILE; systemd/edge.toml is the documented example rendered from the table, render_config).
A flag given on the command line wins over the file, the file over the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from ..backends import BACKENDS, inference_workers
from ..errors import EdgeError
from ..files import read_toml
from ..folder import PRECISIONS
from .sinks import output_target
from .sources import schemes_help


@dataclass(frozen=True)
class Option:
    key: str
    kind: type  # str, int, float, bool, or list (of str)
    default: object
    help: str
    example: object = None  # the value systemd/edge.toml sets for a service; None leaves it commented out
    minimum: float | None = None  # the smallest number allowed, for int and float options


RUN_OPTIONS = (
    Option("model", str, None, "a model folder, or a model's name in the repository", "efficientnet_lite0"),
    Option("repo", str, None, "the model repository (default: $EDGE_REPO or ./engines)", "/var/lib/edge/engines"),
    Option("input", str, None, schemes_help().replace("`", ""), "csi://0"),
    Option("output", list, ["-"], "where JSON lines go, any number of: - (stdout), a file path, udp://HOST:PORT "
           "(a video of the frames is --annotate)",
           ["udp://127.0.0.1:5005"]),
    Option("width", int, None, "capture width for cameras and test:// (csi:// default 1280, test:// 640)", 1280,
           minimum=1),
    Option("height", int, None, "capture height for cameras and test:// (csi:// default 720, test:// 480)", 720,
           minimum=1),
    Option("fps", float, None, "capture rate for cameras; test:// paces itself at it (default 30, 0: unpaced)", 30.0,
           minimum=0),
    Option("loop", bool, False, "start files and folders over at their end"),
    Option("top", int, 5, "labels per result", minimum=1),
    Option("batch", int, 0, "frames per inference (0: the model's fixed batch, else 1)", minimum=0),
    Option("http", str, "", "HOST:PORT (or PORT, on 127.0.0.1) to serve /latest, /healthz and /metrics; "
           "empty: off. No authentication: keep it on loopback unless the network is trusted", "127.0.0.1:8080"),
    Option("watchdog_interval", float, 0.0, "seconds between WATCHDOG=1 pings to systemd (0: half of "
           "$WATCHDOG_USEC, which WatchdogSec= sets; no pings without either)", minimum=0),
    Option("backend", str, "onnxruntime", "one of " + ", ".join(BACKENDS) + ", or a Triton server's model: "
           "triton://HOST:PORT/MODEL (HTTP), triton+grpc://HOST:PORT/MODEL (docs/scale-out.md)"),
    Option("precision", str, "fp32", f"{', '.join(list(PRECISIONS)[:-1])} or {list(PRECISIONS)[-1]} (the model folder "
           "must have that variant)"),
    Option("workers", int, 0, "inferences run at once (0: one single-threaded run per core on onnxruntime, the "
           "most frames per second, and one on a GPU; 1: one run using every core, the lowest latency per frame; "
           "N: N single-threaded runs, onnxruntime only)", minimum=0),
    Option("groups", str, "", "a TOML file of label groups ([groups] name = [class ids, \"a-b\" ranges, labels]); "
           "empty: none"),
    Option("min_probability", float, 0.0, "leave out labels and groups below this probability", minimum=0),
    Option("smoothing", int, 1, "average probabilities over the last N frames (1: no smoothing)", minimum=1),
    Option("annotate", str, "", "also write the frames with their top label drawn to this video file (.avi or "
           ".mp4), at the input's frame rate (an input without one, such as a folder: --fps, default 30); empty: off"),
)
OPTIONS_BY_KEY = {option.key: option for option in RUN_OPTIONS}


def _check(option: Option, value, where: str):
    kind = option.kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if option.minimum is not None and isinstance(value, kind) and not isinstance(value, bool) \
            and not (math.isfinite(value) and value >= option.minimum):
        raise EdgeError(f"{where}: {option.key} must be at least {option.minimum:g}, not {value!r}")
    if kind is list:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    elif isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise EdgeError(f"{where}: {option.key} must be {'a list of strings' if kind is list else kind.__name__}, "
                    f"not {value!r}")


def read_config(path: str | Path) -> dict:
    path = Path(path)
    data = read_toml(path)
    for key in data:
        if key not in OPTIONS_BY_KEY:
            raise EdgeError(f"{path}: unknown key {key!r} (known: {', '.join(OPTIONS_BY_KEY)})")
    return {key: _check(OPTIONS_BY_KEY[key], value, str(path)) for key, value in data.items()}


def resolve_options(config: str | Path | None, flags: dict) -> dict:
    """Defaults, then the config file, then the flags given on the command line (None: not given); `workers` 0
    is replaced by the number it stands for (inference_workers)."""
    options = {option.key: option.default for option in RUN_OPTIONS}
    if config:
        options.update(read_config(config))
    options.update({key: _check(OPTIONS_BY_KEY[key], value, "--" + key.replace("_", "-"))
                    for key, value in flags.items() if value is not None})
    for key in ("model", "input"):
        if not options[key]:
            raise EdgeError(f"no {key}: give it {'as MODEL' if key == 'model' else 'with --input'} or in --config")
    for uri in options["output"]:  # refused now, not after the model has loaded (or on SIGHUP, kept running)
        output_target(uri)
    options["workers"] = inference_workers(options["backend"], options["workers"])
    return options


def render_config() -> str:
    """The documented example configuration (systemd/edge.toml)."""
    lines = ["# edge run --config /etc/edge/edge.toml: every key is an `edge run` option (--key, '_' written '-').",
             "# A flag given on the command line wins over this file. Reload after editing: systemctl reload edge.",
             "# Relative paths are relative to the working directory (/var/lib/edge under systemd).", ""]
    for option in RUN_OPTIONS:
        lines.append(f"# {option.help}")
        value = option.example if option.example is not None else option.default
        text = tomli_w.dumps({option.key: value}).strip() if value is not None else f'{option.key} = ""'
        lines.append(text if option.example is not None else f"# {text}")
        lines.append("")
    return "\n".join(lines)
