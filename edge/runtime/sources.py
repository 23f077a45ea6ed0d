"""Sources turn an input URI into frames: uint8 HxWx3 BGR arrays, one at a time.

    csi://N                 a Jetson CSI camera, through GStreamer's nvarguscamerasrc (needs JetPack's OpenCV)
    gst://PIPELINE          any GStreamer pipeline ending in appsink (needs an OpenCV built with GStreamer)
    v4l2:///dev/videoN      a USB or V4L2 camera
    rtsp://, rtmp://, http://, https://, udp://, tcp://, srt://   a network stream (OpenCV's FFmpeg backend)
    file://video.mp4, or a plain path   a video file
    a folder, or a glob such as "shots/*.jpg"   image files, in sorted order
    test://                 a generated moving pattern, so the loop can be tried on any machine

Live sources (cameras, streams, test://) produce frames at their own pace; the loop keeps only the latest.
Files and folders are read as fast as the loop takes them and never drop a frame.

Every source has the same small interface: `open()` (raises SourceError when it cannot), `read()` returning
a Frame or None at the end, and `close()`. A live source that fails is reopened by the capture thread with
backoff; a file that fails to open is an EdgeError before the loop starts.
"""

from __future__ import annotations

import glob
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import EdgeError
from ..imagefile import load_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
# A network stream that delivers nothing for this long is treated as failed and reopened.
STREAM_TIMEOUT_MS = 5000

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

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None


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
    if count & (count - 1) == 0:
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

    @property
    def decode_errors(self) -> int:
        return getattr(self.inner, "decode_errors", 0)


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
    """The URI with its password, if any, replaced by ***: what is shown goes to logs, systemd's STATUS and
    /metrics, and a camera's rtsp://user:password@host must not."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", uri)


def open_source(uri: str, width: int | None = None, height: int | None = None, fps: float | None = None,
                loop: bool = False) -> Source:
    """The Source for an input URI. Width, height and fps request a camera's mode and size test://;
    files, folders and streams keep their own. `loop` starts files and folders over at their end."""
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme == "test":
        return TestPattern(uri, width or 640, height or 480, 30.0 if fps is None else fps)
    if scheme == "csi":
        if not rest.isdigit():
            raise EdgeError(f"{uri}: expected csi://N, N the camera's sensor id")
        _require_gstreamer(uri)
        pipeline = csi_pipeline(int(rest), width or 1280, height or 720, fps or 30)
        return Capture(uri, pipeline, cv2.CAP_GSTREAMER, live=True)
    if scheme == "gst":
        _require_gstreamer(uri)
        return Capture(uri, rest, cv2.CAP_GSTREAMER, live=True)
    if scheme == "v4l2":
        if not rest.startswith("/dev/"):
            raise EdgeError(f"{uri}: expected v4l2:///dev/videoN")
        return Capture(uri, rest, cv2.CAP_V4L2, live=True, width=width, height=height, fps=fps)
    if scheme in STREAM_SCHEMES:
        timeouts = (cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS)
        return Capture(redact(uri), uri, cv2.CAP_FFMPEG, live=True, params=timeouts)
    if scheme not in ("", "file"):
        raise EdgeError(f"{uri}: unknown input scheme {scheme}:// (csi, gst, v4l2, {', '.join(STREAM_SCHEMES)}, "
                        "file, test, or a path)")
    path = rest if scheme == "file" else uri
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
