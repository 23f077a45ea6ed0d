"""systemd's side of the service: sd_notify, the watchdog, the journal's log lines, and `edge service
install|uninstall|status` (the unit, the user, /etc/edge/edge.toml).

systemd (Type=notify) is spoken to directly over $NOTIFY_SOCKET, one datagram per message:
READY=1 once the model is loaded and the first frame classified; WATCHDOG=1 from the loop every
--watchdog-interval seconds (default: half of $WATCHDOG_USEC), only while frames flow or the source is being
retried; RELOADING=1 then READY=1 around a SIGHUP reload; STOPPING=1 on SIGTERM or SIGINT (service.py sends
those two). Logs are plain lines on stderr; under the journal each carries its syslog priority (<3>, <4>, <6>)
so `journalctl -p warning` works.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import EdgeError
from ..files import atomic_write_text
from ..folder import CARD
from ..words import plural
from .loop import CAPTURE_STALL_S
from .options import RUN_OPTIONS, read_config, render_config

log = logging.getLogger("edge")

UNIT_PATH = Path("/etc/systemd/system/edge.service")
CONFIG_PATH = Path("/etc/edge/edge.toml")
CONFIG_MODE = 0o640  # owner root, group edge: the service reads it, no other user may (a camera's password)
STATE_DIR = Path("/var/lib/edge")
SERVICE_USER = "edge"
DEVICE_GROUPS = ("video", "render", "jtop")  # camera and GPU device nodes; jetson-stats' socket
STATUS_EVERY_S = 60.0


# --- sd_notify and the watchdog ------------------------------------------------------------------------------

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


class Watchdog:
    """Called by the loop every tick: READY once, WATCHDOG while healthy, a status line now and then."""

    def __init__(self, notifier: Notifier, interval: float, source: str, started: bool = False):
        self.notifier, self.interval, self.source = notifier, interval, source
        self.started = started  # after a reload: systemd already watches, so ping before the new loop's first frame
        self.ready = False
        self.last_ping = self.last_status = time.monotonic()
        self.frames_at_status = 0

    def tick(self, loop) -> None:
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
