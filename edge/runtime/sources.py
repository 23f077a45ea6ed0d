"""Sources turn an input URI into frames: uint8 HxWx3 BGR arrays, one at a time.

The input schemes are one table, SCHEMES (at the end): each says how it is written, what it reads, whether it is
live, and which function opens it. `edge run --help` (and so systemd/edge.toml), the error for an unknown scheme and
the table in docs/service.md are all made from it (schemes_help, schemes_table; tests keep the files equal to it):
csi://N, gst://PIPELINE, v4l2:///dev/videoN (or /dev/videoN), the network streams (rtsp://, http://, ...), file://
or a plain path (a video, an image, a folder, a glob) and test://, a generated pattern.

${NAME} anywhere in a URI is read from the environment variable NAME, so that a password need not be on the
command line; wherever a URI is shown, redact() hides its credentials.

Live sources (cameras, streams, test://) produce frames at their own pace; the loop keeps only the latest.
Files and folders are read as fast as the loop takes them and never drop a frame.

Every source has the same small interface: `open()` (raises SourceError when it cannot), `read()` returning
a Frame or None at the end, `close()`, and `frame_rate()`, the frames per second it says it delivers, once open.
A live source that fails is reopened by the capture thread with backoff; a file that fails to open is an
EdgeError before the loop starts.
"""

from __future__ import annotations

import errno
import glob
import grp
import logging
import os
import re
import socket
import stat
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import EdgeError
from ..imagefile import load_image
from ..retry import worth_logging

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
# A network stream that delivers nothing for this long is treated as failed and reopened.
STREAM_TIMEOUT_MS = 5000
STREAM_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "http": 80, "https": 443}  # when the URI names none
PROBE_TIMEOUT_S = 2.0  # connecting to a stream's server to say why it did not open
# Query parameters and GStreamer properties whose value is a credential, by a part of their name.
_SECRET_VALUE = re.compile(r"(?i)((?:^|[?&;\s])[\w.-]*(?:token|key|pass|pw|auth|secret|sig|cred)[\w.-]*=)[^&;#\s]*")

# FFmpeg logs each failed connection itself, on every retry, past edge's throttled log (about 720 lines an hour
# while a camera is down); NetworkStream says why instead. OpenCV reads this when its FFmpeg backend first starts.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

log = logging.getLogger("edge")


class SourceError(Exception):
    """A source could not open or stopped delivering frames (a live source is reopened after it)."""


@dataclass
class Frame:
    image: np.ndarray  # uint8 HxWx3 BGR
    timestamp: float  # wall-clock time (Unix seconds) when the frame was captured
    position: float | None = None  # seconds into a video file
    file: str | None = None  # the image file, for folder sources
    index: int = 0  # set by the loop: 0, 1, 2... in the order frames are classified
    prepared: object = None  # the executor's per-frame preparation, when the loop prepares ahead (loop.py)


def opencv_has_gstreamer() -> bool:
    build = cv2.getBuildInformation()
    found = re.search(r"GStreamer:\s*(\S+)", build)
    return bool(found and found.group(1).upper().startswith("YES"))


def _require_gstreamer(uri: str) -> None:
    if not opencv_has_gstreamer():
        raise EdgeError(
            f"{uri}: needs an OpenCV built with GStreamer (on a Jetson, JetPack's python3-opencv); this one "
            f"(cv2 {cv2.__version__} at {Path(cv2.__file__).parent}) has none, as pip's opencv-python never does: "
            "check with `edge info`")


class Source:
    """open(), then read() until it returns None (the end of a file or folder), then close(). From Python, also
    `with open_source(uri) as camera: for frame in camera: ...`; `edge run`'s loop adds reconnecting on top."""

    live = False
    uri = ""

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def frame_rate(self) -> float | None:
        """Frames per second, as the source says once open (a video file's, a camera's); None when it has none."""
        return None

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, *exception) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        """Frames until the source ends; a live source that fails raises SourceError."""
        while (frame := self.read()) is not None:
            yield frame


class TestPattern(Source):
    """test://: colour bars and a gradient scrolling sideways, paced at `fps` (0: as fast as taken)."""

    live = True

    def __init__(self, uri: str, width: int, height: int, fps: float):
        self.uri, self.fps = uri, fps
        bars = np.array([[255, 255, 255], [0, 255, 255], [255, 255, 0], [0, 255, 0], [255, 0, 255],
                         [0, 0, 255], [255, 0, 0], [0, 0, 0]], dtype=np.uint8)
        columns = bars[np.arange(width) * len(bars) // width]  # (width, 3)
        ramp = np.linspace(0.25, 1.0, height, dtype=np.float32)[:, None, None]
        self.pattern = (columns[None, :, :] * ramp).astype(np.uint8)
        self.count = 0
        self.next_time = 0.0

    def read(self) -> Frame:
        if self.fps > 0:
            now = time.monotonic()
            self.next_time = max(self.next_time + 1.0 / self.fps, now)
            time.sleep(self.next_time - now)
        shift = (self.count * 4) % self.pattern.shape[1]
        self.count += 1
        return Frame(np.roll(self.pattern, shift, axis=1), time.time())

    def frame_rate(self) -> float | None:
        return self.fps or None  # unpaced: no rate


class Capture(Source):
    """Anything cv2.VideoCapture opens: cameras, network streams, GStreamer pipelines, video files."""

    def __init__(self, uri: str, target, api: int, live: bool, params: tuple = (),
                 width: int | None = None, height: int | None = None, fps: float | None = None):
        self.uri, self.target, self.api, self.live, self.params = uri, target, api, live, list(params)
        self.width, self.height, self.fps = width, height, fps
        self.capture: cv2.VideoCapture | None = None

    def open(self) -> None:
        self.close()
        capture = cv2.VideoCapture(self.target, self.api, self.params)
        if not capture.isOpened():
            capture.release()
            if self.api == cv2.CAP_V4L2:
                raise SourceError(f"{self.uri}: {device_problem(self.target)}")
            raise SourceError(f"{self.uri}: cannot open" if self.live else f"{self.uri}: not a video OpenCV can open")
        if self.api == cv2.CAP_V4L2:
            for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
                                (cv2.CAP_PROP_FPS, self.fps)):
                if value:
                    capture.set(prop, value)
        self.capture = capture

    def read(self) -> Frame | None:
        ok, image = self.capture.read()
        if not ok:
            if self.live:
                raise SourceError(f"{self.uri}: no frame (stream ended, failed or silent)")
            return None
        position = None if self.live else self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        return Frame(image, time.time(), position=position)

    def frame_rate(self) -> float | None:
        rate = self.capture.get(cv2.CAP_PROP_FPS) if self.capture is not None else 0.0
        # 0 when the container does not say; FFmpeg gives some streams' time base instead (90000)
        return rate if 0 < rate < 1000 else None

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None


class NetworkStream(Capture):
    """A network stream through OpenCV's FFmpeg backend, whose failures to open say why (FFmpeg's own log
    lines are silenced at the top of this module: they would bypass edge's throttled log on every retry)."""

    def open(self) -> None:
        try:
            super().open()
        except SourceError as e:
            raise SourceError(f"{e}: {_why_unreachable(self.target)}") from None


class ImageFiles(Source):
    """A folder's images or a glob's matches, in sorted order. A file that cannot be read, decoded, or is over the
    pixel budget (edge/imagefile.py) is skipped, counted and logged."""

    def __init__(self, uri: str, paths: list[Path]):
        self.uri, self.paths = uri, paths
        self.position = 0
        self.decode_errors = 0  # read by the loop after each frame

    def open(self) -> None:
        self.position = 0

    def read(self) -> Frame | None:
        while self.position < len(self.paths):
            path = self.paths[self.position]
            self.position += 1
            try:
                return Frame(load_image(path), time.time(), file=str(path))
            except EdgeError as e:  # removed since listed, unreadable, still being written, not an image, too big
                self.decode_errors += 1
                log_skipped(str(e), self.decode_errors)
        return None


def log_skipped(reason: str, count: int) -> None:
    """Log a skipped file or frame: the 1st, 2nd, 4th, 8th... so that a folder of a million bad files, or one
    bad file under --loop, keeps the journal readable."""
    if worth_logging(count):
        log.warning("%s; skipped (%d skipped so far)", reason, count)


class Looping(Source):
    """Starts a file or folder source over at its end, for demos and soak tests."""

    def __init__(self, inner: Source):
        self.inner, self.uri, self.live = inner, inner.uri, inner.live

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is None:
            self.inner.open()
            frame = self.inner.read()
        return frame

    def close(self) -> None:
        self.inner.close()

    def frame_rate(self) -> float | None:
        return self.inner.frame_rate()

    @property
    def decode_errors(self) -> int:
        return getattr(self.inner, "decode_errors", 0)


def is_camera_node(path: str) -> bool:
    """/dev/videoN, there or not, or any other character device; not an image folder in /dev/shm."""
    if re.fullmatch(r"/dev/video\d+", path):
        return True
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def device_problem(path: str) -> str:
    """Why OpenCV could not open a V4L2 device node, as far as the kernel tells it."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_NONBLOCK))
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            return "cannot open: no such device (unplugged?)"
        if e.errno in (errno.EACCES, errno.EPERM):
            gid = os.stat(path).st_gid
            try:
                group = grp.getgrgid(gid).gr_name
            except KeyError:  # a container whose /etc/group lacks the host's video group
                return f"cannot open: permission denied (the device's group, gid {gid}, has no name here)"
            return f"cannot open: permission denied (add the user to the group {group}: usermod -aG {group} USER)"
        if e.errno == errno.EBUSY:
            return "cannot open: busy (another program is capturing from it)"
        return f"cannot open: {e.strerror or e}"
    return "opens, but does not capture: busy (another program capturing from it?) or not a camera"


def csi_pipeline(sensor: int, width: int, height: int, fps: float) -> str:
    """nvarguscamerasrc in NVMM memory, converted to BGR by the VIC; appsink keeps only the newest buffer."""
    return (f"nvarguscamerasrc sensor-id={sensor} ! "
            f"video/x-raw(memory:NVMM),width={width},height={height},framerate={round(fps)}/1 ! "
            "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
            "appsink drop=true max-buffers=1 sync=false")


def image_paths(uri: str) -> list[Path] | None:
    """A folder's images, a glob's matches or one image file, sorted; None when `uri` is none of these."""
    path = Path(uri)
    if path.is_dir():
        paths = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    elif path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
        paths = [path]
    elif glob.has_magic(uri):
        paths = [Path(p) for p in glob.glob(uri)]
    else:
        return None
    paths.sort()
    if not paths:
        raise EdgeError(f"{uri}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


def redact(uri: str) -> str:
    """The URI as it may be shown (logs, systemd's STATUS, /healthz, /metrics, JSON): its user information
    (user:password@, or a token@) and the values of credential-like parameters (token=, access_token=, key=,
    password=, auth=, sig=, a GStreamer user-pw=...) replaced by ***. A password may hold '@' or '/' unescaped,
    so everything from :// to the last '@' counts as user information: an '@' further on hides too much, never
    too little."""
    uri = re.sub(r"(?s)(?<=://)(?!/).*@", "***@", uri, count=1)
    return _SECRET_VALUE.sub(r"\1***", uri)


def expand_environment(uri: str) -> str:
    """${NAME} in an input URI replaced by the environment variable NAME: how a credential reaches edge without
    being on its command line, which every user of the machine can read (/proc/PID/cmdline)."""
    def value(match: re.Match) -> str:
        if match.group(1) not in os.environ:
            raise EdgeError(f"{redact(uri)}: ${{{match.group(1)}}} is not set in the environment")
        return os.environ[match.group(1)]

    return re.sub(r"\$\{(\w+)\}", value, uri)


def _why_unreachable(url: str) -> str:
    """Why a network stream may not have opened, found by connecting to its server (FFmpeg's own reasons are
    silenced): refused, no answer, no such host; else the server answers and the stream itself is at fault."""
    scheme, _, rest = url.partition("://")
    user_information, _, after = rest.rpartition("@")
    if re.search(r"[/?#]", user_information):  # FFmpeg ends the host part at the first of them, as RFC 3986 does
        return "a '/', '?' or '#' in the user information (password) must be written %2F, %3F or %23"
    authority = re.split(r"[/?#]", after, maxsplit=1)[0]
    try:
        parts = urllib.parse.urlsplit("//" + authority)
        host, port = parts.hostname, parts.port or STREAM_PORTS.get(scheme.lower())
    except ValueError:
        host = port = None
    if not host or not port:
        return "no stream arrived"  # udp:// and srt:// have no server to ask
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except socket.gaierror:
        return f"no such host {host}"
    except TimeoutError:
        return f"no answer from {host}:{port} within {PROBE_TIMEOUT_S:g} s"
    except OSError as e:  # connection refused, no route to host, network is unreachable
        return (e.strerror or str(e)).lower()
    return f"{host}:{port} answers but sends no stream (check the path and the credentials)"


def _open_test(uri: str, shown: str, rest: str, width, height, fps, loop: bool) -> Source:
    return TestPattern(uri, width or 640, height or 480, 30.0 if fps is None else fps)


def _open_csi(uri: str, shown: str, rest: str, width, height, fps, loop: bool) -> Source:
    if not rest.isdigit():
        raise EdgeError(f"{uri}: expected csi://N, N the camera's sensor id")
    _require_gstreamer(uri)
    return Capture(uri, csi_pipeline(int(rest), width or 1280, height or 720, fps or 30), cv2.CAP_GSTREAMER, live=True)


def _open_gst(uri: str, shown: str, rest: str, width, height, fps, loop: bool) -> Source:
    _require_gstreamer(shown)
    return Capture(shown, rest, cv2.CAP_GSTREAMER, live=True)


def _open_v4l2(uri: str, shown: str, rest: str, width, height, fps, loop: bool) -> Source:
    if not rest.startswith("/dev/"):
        raise EdgeError(f"{uri}: expected v4l2:///dev/videoN")
    if not os.path.exists(rest):  # a camera unplugged later is retried; one never there is a mistake
        cameras = ", ".join(sorted(glob.glob("/dev/video*"))) or "none"
        raise EdgeError(f"{rest}: no such device (video devices here: {cameras})")
    return Capture(uri, rest, cv2.CAP_V4L2, live=True, width=width, height=height, fps=fps)


def _open_stream(uri: str, shown: str, rest: str, width, height, fps, loop: bool) -> Source:
    timeouts = (cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS)
    return NetworkStream(shown, uri, cv2.CAP_FFMPEG, live=True, params=timeouts)


def _open_path(uri: str, shown: str, rest: str, width, height, fps, loop: bool) -> Source:
    path = rest if uri.lower().startswith("file://") else uri
    images = image_paths(path)
    if images is not None:
        source: Source = ImageFiles(uri, images)
    else:
        if not Path(path).is_file():
            raise EdgeError(f"{path}: no such file or folder")
        # One decoding thread: a file is read as fast as the loop classifies, and FFmpeg's own thread pool would
        # only contend with the inference workers that already keep every core busy (docs/benchmarks.md).
        source = Capture(uri, path, cv2.CAP_ANY, live=False, params=(cv2.CAP_PROP_N_THREADS, 1))
    return Looping(source) if loop else source


@dataclass(frozen=True)
class Scheme:
    """One way to name an input: `names` are its URI schemes ("" for a plain path)."""

    names: tuple[str, ...]
    written: str  # how a user writes it (Markdown)
    short: str  # for --help, after `written`; may be empty
    how: str  # how it is read (docs/service.md)
    live: bool  # frames at the source's own pace, the latest kept; else every frame, never dropped
    open: Callable[..., Source]  # (uri, uri as shown, the rest after "://", width, height, fps, loop) -> Source


SCHEMES = (
    Scheme(("csi",), "`csi://N`", "", "GStreamer: `nvarguscamerasrc sensor-id=N` -> `nvvidconv` -> BGR appsink "
           "(drop=true, max-buffers=1)", True, _open_csi),
    Scheme(("gst",), "`gst://PIPELINE`", "", "any GStreamer pipeline ending in `appsink`", True, _open_gst),
    Scheme(("v4l2",), "`v4l2:///dev/videoN` (or `/dev/videoN`)", "",
           "OpenCV's V4L2 backend; `--width/--height/--fps` request the mode. A device that is not there stops "
           "`edge run` at once; one that fails later is retried, the log saying why (unplugged, permission, busy)",
           True, _open_v4l2),
    Scheme(STREAM_SCHEMES, ", ".join(f"`{name}://`" for name in STREAM_SCHEMES), "network streams",
           "OpenCV's FFmpeg backend, 5 s open and read timeouts", True, _open_stream),
    Scheme(("file", ""), "a path (a video file, an image, a folder, or a glob such as `\"shots/*.jpg\"`) or "
           "`file://PATH`", "", "a video: OpenCV; images: in sorted file-name order, an undecodable file skipped, "
           "counted and named in the log (the 1st, 2nd, 4th... skip)", False, _open_path),
    Scheme(("test",), "`test://`", "a generated pattern", "moving colour bars, `--width x --height` (640x480), paced "
           "at `--fps` (30; 0: unpaced)", True, _open_test),
)
_BY_NAME = {name: scheme for scheme in SCHEMES for name in scheme.names}


def schemes_help() -> str:
    """The inputs, for --help: each as it is written (in Markdown)."""
    written = [f"{s.written} ({s.short})" if s.short else s.written for s in SCHEMES]
    return ", ".join(written[:-1]) + ", or " + written[-1]


def schemes_table() -> str:
    """The inputs as the Markdown table in docs/service.md."""
    rows = ["| input | how it is read | live? |", "|---|---|---|"]
    rows += [f"| {s.written} | {s.how} | {'yes' if s.live else 'no'} |" for s in SCHEMES]
    return "\n".join(rows) + "\n"


def open_source(uri: str, width: int | None = None, height: int | None = None, fps: float | None = None,
                loop: bool = False) -> Source:
    """The Source for an input URI. Width, height and fps request a camera's mode and size test://;
    files, folders and streams keep their own. `loop` starts files and folders over at their end."""
    shown, uri = redact(uri), expand_environment(uri)
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower() if sep else ""
    if not scheme and is_camera_node(uri):  # jetson-inference's habit: `--input /dev/video0`
        scheme, rest = "v4l2", uri
    if scheme not in _BY_NAME:
        known = ", ".join(name for s in SCHEMES for name in s.names if name)
        raise EdgeError(f"{shown}: unknown input scheme {scheme}:// ({known}, or a path)")
    return _BY_NAME[scheme].open(uri, shown, rest, width, height, fps, loop)
