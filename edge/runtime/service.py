"""`edge run` as a long-lived process, and `edge service install|uninstall|status`.

Options come from one table, RUN_OPTIONS: each is a flag of `edge run` (--key, '_' written '-') and a key of
the TOML configuration (--config FILE; systemd/edge.toml is the documented example rendered from the table).
A flag given on the command line wins over the file, the file over the default.

systemd (Type=notify) is spoken to directly over $NOTIFY_SOCKET, one datagram per message:
READY=1 once the model is loaded and the first frame classified; WATCHDOG=1 from the loop every
--watchdog-interval seconds (default: half of $WATCHDOG_USEC), only while frames flow or the source is being
retried; RELOADING=1 then READY=1 around a SIGHUP reload; STOPPING=1 on SIGTERM or SIGINT, after which the loop
finishes the batch in hand, flushes the sinks and exits 0. Logs are plain lines on stderr; under the journal
each carries its syslog priority (<3>, <4>, <6>) so `journalctl -p warning` works.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import math
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from ..backends import BACKENDS, inference_workers
from ..errors import EdgeError
from ..files import atomic_write_text, read_toml
from ..words import plural

log = logging.getLogger("edge")

UNIT_PATH = Path("/etc/systemd/system/edge.service")
CONFIG_PATH = Path("/etc/edge/edge.toml")
CONFIG_MODE = 0o640  # owner root, group edge: the service reads it, no other user may (a camera's password)
STATE_DIR = Path("/var/lib/edge")
SERVICE_USER = "edge"
DEVICE_GROUPS = ("video", "render", "jtop")  # camera and GPU device nodes; jetson-stats' socket
STATUS_EVERY_S = 60.0


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
    Option("input", str, None, "csi://N, v4l2:///dev/videoN (or /dev/videoN), rtsp://..., http(s)://..., a video "
           "file (or file://), an image folder or glob, gst://PIPELINE, or test:// (a generated pattern)", "csi://0"),
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
    Option("backend", str, "onnxruntime", "one of " + ", ".join(BACKENDS)),
    Option("precision", str, "fp32", "fp32, fp16 or int8 (the model folder must have that variant)"),
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


# --- configuration -------------------------------------------------------------------------------------------

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
    from .sinks import output_target

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


# --- sd_notify -----------------------------------------------------------------------------------------------

class Notifier:
    """sd_notify(3) without libsystemd: datagrams to $NOTIFY_SOCKET; silent when it is not set."""

    def __init__(self, address: str | None):
        self.address = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address  # '@': abstract namespace
            self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def send(self, message: str) -> None:
        if self.address is None:
            return
        try:
            self.socket.sendto(message.encode("utf-8"), self.address)
        except OSError as e:  # systemd gone or the socket removed: nothing a service can do but carry on
            log.warning("sd_notify %s: %s", message.split("=")[0], e.strerror or e)


def watchdog_interval(configured: float) -> float:
    """Seconds between pings: the configured interval, else half of systemd's WatchdogSec; 0: none."""
    if configured > 0:
        return configured
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
        return int(usec) / 2e6
    return 0.0


# --- logging -------------------------------------------------------------------------------------------------

class _LineFormat(logging.Formatter):
    """`edge: message`, `edge: warning: message`; under the journal prefixed with the syslog priority."""

    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def __init__(self, journal: bool):
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        prefix = f"<{self.PRIORITY.get(record.levelno, 6)}>" if self.journal else ""
        return f"{prefix}edge: {level}{record.getMessage()}"


def setup_logging() -> None:
    if log.handlers:
        return
    import cv2

    # OpenCV's and FFmpeg's own warnings would repeat, on every retry, what our one line per failure says.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormat(journal=bool(os.environ.get("JOURNAL_STREAM"))))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


# --- the running process -------------------------------------------------------------------------------------

class Runner:
    """Runs the loop with one set of options; SIGHUP rebuilds it from the re-read configuration."""

    def __init__(self, config: str | None, flags: dict):
        self.config, self.flags = config, flags
        self.notifier = Notifier(os.environ.get("NOTIFY_SOCKET"))
        self.loop = None
        self.stopping = self.reloading = False
        self.model_key = self.model = None
        self.started = False  # READY=1 has been sent once: systemd's watchdog runs from then on, reloads included

    def handle_signal(self, signum, frame) -> None:
        if signum == signal.SIGHUP:
            self.reloading = True
        else:
            if not self.stopping:
                self.notifier.send("STOPPING=1")
                log.info("%s: stopping", signal.Signals(signum).name)
            self.stopping = True
        if self.loop is not None:
            self.loop.stop.set()
        elif signum != signal.SIGHUP:
            raise SystemExit(0)  # still starting (loading the model): nothing to flush

    def run(self) -> int:
        options = resolve_options(self.config, self.flags)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.handle_signal)
        while True:
            reason = self.run_once(options)
            if self.stopping or reason == "end" or not self.reloading:
                return 0
            self.reloading = False
            self.notifier.send(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
            try:
                options = resolve_options(self.config, self.flags)
                log.info("SIGHUP: configuration reloaded%s", f" from {self.config}" if self.config else "")
            except EdgeError as e:
                log.error("SIGHUP: %s; keeping the running configuration", e)

    def load_model(self, options: dict):
        from ..model import Model

        key = (options["model"], options["repo"], options["backend"], options["precision"], options["workers"])
        if key != self.model_key:  # a reload that keeps the model keeps it loaded (an engine can take a while)
            self.model = None
            model, repo, backend, precision, workers = key
            self.model = Model.load(model, repo, backend, precision, runs=workers)
            self.model_key = key
        return self.model

    def run_once(self, options: dict) -> str:
        from .http import Metrics, parse_address, serve
        from .loop import Loop
        from .sinks import AnnotatedVideo, Results, load_groups, open_sink
        from .sources import open_source, redact

        model = self.load_model(options)
        card = model.card
        batch = options["batch"] or card.batch or 1
        if card.batch and batch % card.batch:
            raise EdgeError(f"batch {batch}: {model.folder} takes batches of exactly {card.batch}")
        groups = load_groups(options["groups"], model.labels, card.classes) if options["groups"] else None
        results = Results(model, options["top"], groups, options["min_probability"], options["smoothing"])
        address = parse_address(options["http"]) if options["http"] else None
        source = open_source(options["input"], options["width"], options["height"], options["fps"], options["loop"])
        sinks = [open_sink(uri) for uri in options["output"]]
        annotate = AnnotatedVideo(options["annotate"], source, options["fps"]) if options["annotate"] else None
        shown = redact(options["input"])  # no camera password in logs, STATUS or /metrics
        watchdog = Watchdog(self.notifier, watchdog_interval(options["watchdog_interval"]), shown,
                            self.started)
        with contextlib.ExitStack() as gpu_scope:  # the CUDA context, while the GPU path runs
            executor = make_executor(model, options["backend"], options["workers"], gpu_scope, batch)
            loop = Loop(source, executor, results, sinks, batch, on_tick=watchdog.tick, annotate=annotate)
            metrics = Metrics(loop.stats, {"model": card.name, "backend": options["backend"],
                                           "precision": options["precision"], "input": shown})
            loop.timings.append(metrics)
            server = serve(address, metrics) if address else None
            log.info("%s (%s, %s) on %s, batch %d, workers %d", card.name, options["backend"],
                     options["precision"], shown, batch, options["workers"])
            self.loop = loop
            try:
                if self.stopping or self.reloading:  # the signal came while the model was loading
                    return "stopped"
                reason = loop.run()
            finally:
                self.loop = None
                self.started = self.started or watchdog.ready
                if server is not None:
                    server.close()
                metrics.close()
                for sink in sinks:
                    sink.close()
                if annotate is not None:
                    annotate.close()
        s = loop.stats
        log.info("%s: %s", reason, counts(s))
        return reason


def make_executor(model, backend: str, workers: int, gpu_scope: contextlib.ExitStack, batch: int = 1):
    """The GPU data path (upload, the fused kernel, the engine on device memory) when the backend runs from device
    memory, with the CUDA context held current in `gpu_scope` on this thread, the loop's calling thread; otherwise
    the CPU path, with `workers` runs at once on ONNX Runtime (inference_workers). The host memory mode is the
    device's: mapped on an integrated GPU (zero-copy), pinned on a discrete one. The GPU path keeps two batches in
    flight: the next is uploaded and preprocessed while the engine computes the last."""
    from .loop import CpuExecutor

    if backend == "onnxruntime":
        return CpuExecutor(model, workers)
    from ..gpu.buffers import GpuContext, default_memory_mode
    from ..gpu.pipeline import GpuExecutor, device_engine

    engine = device_engine(model.backend)
    if engine is None:
        return CpuExecutor(model)
    facts = gpu_scope.enter_context(GpuContext()).facts
    return GpuExecutor(model, engine, default_memory_mode(facts.integrated, facts.can_map_host_memory), batch=batch,
                       slots=2)


class Watchdog:
    """Called by the loop every tick: READY once, WATCHDOG while healthy, a status line now and then."""

    def __init__(self, notifier: Notifier, interval: float, source: str, started: bool = False):
        self.notifier, self.interval, self.source = notifier, interval, source
        self.started = started  # after a reload: systemd already watches, so ping before the new loop's first frame
        self.ready = False
        self.last_ping = self.last_status = time.monotonic()
        self.frames_at_status = 0

    def tick(self, loop) -> None:
        from .loop import CAPTURE_STALL_S

        now, stats = time.monotonic(), loop.stats
        if not self.ready:
            if stats.frames:
                self.notifier.send(f"READY=1\nSTATUS=classifying {self.source}")
                log.info("ready: first frame classified")
                self.ready = True
            elif not self.started:
                return
        if self.interval and now - self.last_ping >= self.interval and now - stats.capture_alive_at < CAPTURE_STALL_S:
            self.notifier.send("WATCHDOG=1")
            self.last_ping = now
        if now - self.last_status >= STATUS_EVERY_S:
            fps = (stats.frames - self.frames_at_status) / (now - self.last_status)
            status = counts(stats, f" ({fps:.1f}/s)")
            self.notifier.send(f"STATUS={status}")
            log.info("%s", status)
            self.last_status, self.frames_at_status = now, stats.frames


def counts(stats, rate: str = "") -> str:
    """The loop's counters for the log and systemd's STATUS: `12 frames, 0 dropped, 1 reconnect, 0 decode errors`."""
    return (f"{plural(stats.frames, 'frame')}{rate}, {stats.dropped} dropped, {plural(stats.reconnects, 'reconnect')}, "
            f"{plural(stats.decode_errors, 'decode error')}")


def run(config: str | None, flags: dict) -> int:
    setup_logging()
    try:
        return Runner(config, flags).run()
    except BrokenPipeError:  # `edge run ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush stays quiet
        return 0


# --- edge service install | uninstall | status ---------------------------------------------------------------

UNIT_TEMPLATE = """\
# edge: classify camera frames, under systemd. Installed by `edge service install`; configured in
# /etc/edge/edge.toml (reload with `systemctl reload edge`); results on http://127.0.0.1:8080 by default.
[Unit]
Description=edge image classifier on a camera
Wants=network-online.target
After=network-online.target nvargus-daemon.service jtop.service

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start} run --config /etc/edge/edge.toml
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
# The loop pings every 15 s while frames flow; a stuck pipeline is killed and restarted.
WatchdogSec=30
# READY comes once the model is loaded and the first frame classified; engines are built beforehand
# (`edge build`), so this covers deserializing one and a CSI camera's start.
TimeoutStartSec=120
TimeoutStopSec=10
User={user}
Group={user}
SupplementaryGroups={groups}
WorkingDirectory=/var/lib/edge
StateDirectory=edge
ConfigurationDirectory=edge
Environment=EDGE_REPO=/var/lib/edge/engines
# ProtectSystem=strict leaves /tmp read-only; nvcc and pycuda write their scratch files to $TMPDIR when the
# GPU path compiles its preprocessing kernel (once per device and CUDA version; then from pycuda's cache).
RuntimeDirectory=edge
Environment=TMPDIR=/run/edge
UMask=0027
# Hardening that leaves the GPU (/dev/nvhost-*, /dev/nvmap, /dev/nvidia*, /dev/dri) and cameras
# (/dev/video*) reachable: no PrivateDevices= or DevicePolicy=; no PrivateTmp= either, because
# nvargus-daemon (csi://) talks to its clients through /tmp/argus_socket; no MemoryDenyWriteExecute=,
# which CUDA's JIT breaks; no SystemCallFilter=, not yet checked against CUDA and Argus on a Jetson; no
# ProtectClock=, which implies DeviceAllow=char-rtc r and so, under DevicePolicy=auto, denies every other device.
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=read-only
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""


def edge_executable() -> str:
    """This installation's `edge` script (a virtual environment's own first), else this Python running edge.cli."""
    beside = Path(sys.executable).parent / "edge"
    if beside.is_file():
        return str(beside.absolute())
    found = shutil.which("edge")
    return str(Path(found).absolute()) if found else f"{sys.executable} -m edge.cli"


def render_unit(exec_start: str | None = None, groups: list[str] | None = None) -> str:
    """The unit for this machine: this `edge`, and those of the device groups that exist here."""
    if groups is None:
        groups = []
        for name in DEVICE_GROUPS:
            try:
                grp.getgrnam(name)
                groups.append(name)
            except KeyError:
                pass
    return UNIT_TEMPLATE.format(exec_start=exec_start or edge_executable(), user=SERVICE_USER,
                                groups=" ".join(groups))


def _plan() -> list[list[str]]:
    """The group and user the unit names (the group also owns the configuration), then reload and enable."""
    commands = []
    try:
        grp.getgrnam(SERVICE_USER)
    except KeyError:
        commands.append(["groupadd", "--system", SERVICE_USER])
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        commands.append(["useradd", "--system", "--gid", SERVICE_USER, "--home-dir", str(STATE_DIR),
                         "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER])
    return commands + [["systemctl", "daemon-reload"], ["systemctl", "enable", "edge.service"]]


def _systemd_ready() -> None:
    if os.geteuid() != 0:
        raise EdgeError("edge service install/uninstall must run as root (sudo), or with --dry-run to see what it does")
    if not Path("/run/systemd/system").is_dir() or not shutil.which("systemctl"):
        raise EdgeError("systemd is not running on this machine (no /run/systemd/system): nothing to install into")


def _run(command: list[str]) -> None:
    log.info("%s", " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise EdgeError(f"{' '.join(command)} failed: {message[-1] if message else f'exit {done.returncode}'}")


def missing_model() -> str | None:
    """What the service would fail on at start for want of its model, from the configuration it will read (the
    example's model while there is none); None when the model folder is in place."""
    from ..model import CARD

    if CONFIG_PATH.exists():
        try:
            options = read_config(CONFIG_PATH)
        except EdgeError as e:
            return f"{e}: the service would fail at start"
    else:  # install writes the example
        options = {option.key: option.example for option in RUN_OPTIONS if option.example is not None}
    model = options.get("model")
    if not model:
        return f"{CONFIG_PATH} names no model: the service would fail at start"
    repo = STATE_DIR / (options.get("repo") or "engines")  # the unit's EDGE_REPO; paths relative to STATE_DIR
    if any((folder / CARD).is_file() for folder in (STATE_DIR / model, repo / model)):
        return None
    return (f"the model {model!r} ({CONFIG_PATH}) is not in {repo}: the service would fail at start; copy the "
            f"model folder there (sudo cp -r engines/{model} {repo}/) or set model in {CONFIG_PATH}")


def install(dry_run: bool) -> int:

    setup_logging()
    unit = render_unit()
    write_config = not CONFIG_PATH.exists()
    if dry_run:
        print(unit, end="")
        steps = [f"would run: {' '.join(command)}" for command in _plan()]
        # in the order install takes them: the files are written before systemd reloads and enables the unit
        steps[-2:-2] = ([f"would write: {CONFIG_PATH} (the example)"] if write_config else []) + [
            f"would set: {CONFIG_PATH} to mode {CONFIG_MODE:04o}, owner root:{SERVICE_USER}",
            f"would write: {UNIT_PATH}"]
        if problem := missing_model():
            steps.append(f"edge: warning: {problem}")
        print("\n".join(steps), file=sys.stderr)
        return 0
    _systemd_ready()
    for command in _plan()[:-2]:  # the group and user first: the configuration and the unit name them
        _run(command)
    if write_config:
        CONFIG_PATH.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(CONFIG_PATH, render_config())  # the example holds no credentials while it is 0644
        log.info("wrote %s (the example: edit model and input)", CONFIG_PATH)
    os.chmod(CONFIG_PATH, CONFIG_MODE)
    os.chown(CONFIG_PATH, 0, grp.getgrnam(SERVICE_USER).gr_gid)
    log.info("%s: mode %04o, owner root:%s", CONFIG_PATH, CONFIG_MODE, SERVICE_USER)
    atomic_write_text(UNIT_PATH, unit)
    log.info("wrote %s", UNIT_PATH)
    for command in _plan()[-2:]:
        _run(command)
    if problem := missing_model():
        log.warning("%s", problem)
    log.info("installed; put the model in %s/engines, check %s, then: systemctl start edge", STATE_DIR, CONFIG_PATH)
    return 0


def uninstall(dry_run: bool) -> int:
    setup_logging()
    commands = [["systemctl", "disable", "--now", "edge.service"], ["systemctl", "daemon-reload"]]
    if dry_run:  # what uninstall below would do on this machine
        steps = ([f"would run: {' '.join(commands[0])}", f"would remove: {UNIT_PATH}"] if UNIT_PATH.exists()
                 else [f"{UNIT_PATH}: not installed; nothing to disable or remove"])
        print("\n".join([*steps, f"would run: {' '.join(commands[1])}"]), file=sys.stderr)
        return 0
    _systemd_ready()
    if UNIT_PATH.exists():
        _run(commands[0])
        UNIT_PATH.unlink()
        log.info("removed %s", UNIT_PATH)
    _run(commands[1])
    log.info("kept %s, %s and the user %s: remove them by hand if they are no longer wanted", CONFIG_PATH.parent,
             STATE_DIR, SERVICE_USER)
    return 0


def status(dry_run: bool) -> int:
    command = ["systemctl", "status", "edge.service", "--no-pager", "--lines=20"]
    if dry_run:
        print(f"would run: {' '.join(command)}", file=sys.stderr)
        return 0
    if not shutil.which("systemctl"):
        raise EdgeError("systemctl not found: systemd is not installed on this machine")
    return subprocess.run(command).returncode
