"""Results: one JSON object per frame, and the sinks that carry them as JSON lines.

    {"frame": 0, "timestamp": 1764000000.123, "position": 0.04, "latency_ms": 21.4,
     "top": [{"class_id": 207, "label": "golden retriever", "probability": 0.91}, ...],
     "groups": [{"name": "dog", "probability": 0.97}]}

`timestamp` is the wall-clock time the frame was captured; `position` (seconds into a video file) or `file`
(for image folders) says which frame it was; `latency_ms` runs from capture to the result.

Label groups name many classes at once (every ImageNet dog is a "dog"); a group's probability is the sum of
its classes'. A groups file is TOML:

    [groups]
    dog = ["151-268"]                     # inclusive class-id ranges,
    cat = [281, 282, 283, 284, 285]       # class ids,
    ball = ["soccer ball", "tennis ball"] # or labels exactly as in labels.txt

Smoothing averages each class's probability over the last N frames before top-k and groups are taken (a
moving mean: a flicker of one frame moves it by 1/N). Entries below the minimum probability are left out.

Outputs: "-" is stdout, udp://HOST:PORT sends one datagram per line, file://PATH or a plain path is a file
appended to; another scheme, or a path named like a video, is refused. An annotated video (--annotate) is the
one sink that takes frames rather than lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from ..errors import EdgeError
from ..files import atomic_write_bytes, read_toml
from .sources import IMAGE_SUFFIXES

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")

log = logging.getLogger("edge")


def load_groups(path: str | Path, labels: list[str], classes: int) -> dict[str, np.ndarray]:
    """Group name -> the class ids in it, from a groups TOML file; every entry is checked against the model."""
    path = Path(path)
    table = read_toml(path).get("groups")
    if not isinstance(table, dict) or not table:
        raise EdgeError(f"{path}: expected a [groups] table of name = [class ids, \"a-b\" ranges or labels]")
    by_label = {label: i for i, label in enumerate(labels)}
    groups = {}
    for name, members in table.items():
        if not isinstance(members, list) or not members:
            raise EdgeError(f"{path}: group {name!r} must be a non-empty list")
        ids: set[int] = set()
        for member in members:
            found = _RANGE.match(member) if isinstance(member, str) else None
            if isinstance(member, int) and not isinstance(member, bool):
                ids.add(member)
            elif found:
                ids.update(range(int(found.group(1)), int(found.group(2)) + 1))
            elif isinstance(member, str) and member in by_label:
                ids.add(by_label[member])
            else:
                raise EdgeError(f"{path}: group {name!r}: {member!r} is not a class id, an a-b range or a label")
        if not all(0 <= i < classes for i in ids):
            raise EdgeError(f"{path}: group {name!r} has class ids outside 0..{classes - 1}")
        groups[name] = np.array(sorted(ids), dtype=np.intp)
    return groups


class Results:
    """Probabilities of one frame -> its result dict (top-k, groups), with smoothing and a minimum probability."""

    def __init__(self, model, top: int = 5, groups: dict[str, np.ndarray] | None = None,
                 min_probability: float = 0.0, smoothing: int = 1):
        if smoothing < 1:
            raise EdgeError(f"smoothing must be at least 1 frame, not {smoothing}")
        if top < 0:
            raise EdgeError(f"top must be 0 or more, not {top}")
        if not 0.0 <= min_probability <= 1.0:  # above 1 every label and group would be left out
            raise EdgeError(f"min_probability must be between 0 and 1, not {min_probability}")
        self.model, self.top, self.groups = model, top, groups or {}
        self.min_probability = min_probability
        self.window = np.zeros((smoothing, model.card.classes), dtype=np.float32)
        self.seen = 0  # frames smoothed so far

    def smooth(self, probabilities: np.ndarray) -> np.ndarray:
        if len(self.window) == 1:
            return probabilities
        self.window[self.seen % len(self.window)] = probabilities  # a ring: the oldest row is replaced
        self.seen += 1
        return self.window[: min(self.seen, len(self.window))].mean(axis=0)

    def make(self, frame, probabilities: np.ndarray) -> dict:
        p = self.smooth(probabilities)
        result: dict = {"frame": frame.index, "timestamp": round(frame.timestamp, 6)}
        if frame.position is not None:
            result["position"] = round(frame.position, 6)
        if frame.file is not None:
            result["file"] = frame.file
        top = [t.to_dict() for t in self.model.top(p, self.top) if t.probability >= self.min_probability]
        result["top"] = top
        if self.groups:
            scores = ((name, float(p[ids].sum())) for name, ids in self.groups.items())
            result["groups"] = [{"name": name, "probability": round(score, 6)}
                                for name, score in sorted(scores, key=lambda s: -s[1]) if score >= self.min_probability]
        result["latency_ms"] = round((time.time() - frame.timestamp) * 1000.0, 3)
        return result

    @staticmethod
    def encode(result: dict) -> str:
        return json.dumps(result, separators=(",", ":"))


class StreamSink:
    """Lines to stdout or to a file (appended; flushed per line so a reader or a crash loses nothing)."""

    def __init__(self, stream, owned: bool):
        self.stream, self.owned = stream, owned

    def write(self, line: str) -> None:
        with self._errors():
            self.stream.write(line + "\n")
            self.stream.flush()

    def flush(self) -> None:
        with self._errors():
            self.stream.flush()

    def close(self) -> None:
        if self.owned:
            with self._errors():
                self.stream.close()

    @contextlib.contextmanager
    def _errors(self):
        """A full disk or a failing device is one line naming the file; a closed pipe stays BrokenPipeError,
        which `edge run ... | head` ends on quietly (service.run)."""
        try:
            yield
        except BrokenPipeError:
            raise
        except OSError as e:
            name = getattr(self.stream, "name", "output")
            raise EdgeError(f"{name}: cannot write results: {e.strerror or e}") from None


class UdpSink:
    """One datagram per result. A datagram nobody receives is simply lost: the loop never waits on a reader."""

    def __init__(self, host: str, port: int):
        self.address = (host, port)
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)

    def write(self, line: str) -> None:
        try:
            self.socket.sendto(line.encode("utf-8"), self.address)
        except OSError:  # no route, nobody listening, datagram too large: the next result may fare better
            pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.socket.close()


def draw_text(image: np.ndarray, lines: list[str]) -> None:
    """Lines of text in the top-left corner, in place, sized to the image: `edge run --annotate` draws the top
    label of each frame, `edge classify --annotate` the top classes of each image."""
    scale = max(image.shape[0] / 720, 0.4)
    for i, text in enumerate(lines):
        origin = (10, int(30 * scale * (i + 1)) + 5)
        for color, thickness in (((0, 0, 0), 4), ((255, 255, 255), 1)):  # a dark outline keeps it readable
            cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color,
                        max(1, int(thickness * scale * 1.5)), cv2.LINE_AA)


def annotation_paths(images: list[Path], out: Path) -> list[Path]:
    """Where `edge classify --annotate OUT` writes each image: to OUT for one image (unless OUT is a folder),
    else into the folder OUT (made if missing) under each image's own name. Checked before any image is
    classified: an unwritable place, two images of the same name or an image written over itself are found out
    first."""
    if len(images) == 1 and not out.is_dir():
        if out.suffix.lower() not in IMAGE_SUFFIXES:
            raise EdgeError(f"{out}: an annotated image is written as {', '.join(sorted(IMAGE_SUFFIXES))}")
        if not out.parent.is_dir():
            raise EdgeError(f"{out}: no folder {out.parent} to write the annotated image into")
        paths = [out]
    else:
        if out.exists() and not out.is_dir():
            raise EdgeError(f"{out}: {len(images)} annotated images go into a folder, and this is a file")
        paths = [out / image.name for image in images]
        if len(set(paths)) < len(paths):
            twice = next(p for p in paths if paths.count(p) > 1)
            raise EdgeError(f"{out}: two images would both be written as {twice.name}; annotate them separately")
    originals = {image.resolve() for image in images}
    if over := next((p for p in paths if p.resolve() in originals), None):
        raise EdgeError(f"{over}: the annotated copy would replace the image itself; give --annotate another "
                        "file or folder")
    if paths != [out]:
        out.mkdir(parents=True, exist_ok=True)
    return paths


def write_annotated(image: np.ndarray, lines: list[str], path: Path) -> None:
    """A copy of the image with the lines drawn on it, encoded by its suffix and written in one rename."""
    drawn = image.copy()
    draw_text(drawn, lines)
    if path.suffix.lower() == ".pgm":  # the one suffix edge reads that holds grey only
        drawn = cv2.cvtColor(drawn, cv2.COLOR_BGR2GRAY)
    ok, encoded = cv2.imencode(path.suffix, drawn)
    if not ok:
        raise EdgeError(f"{path}: OpenCV cannot encode {path.suffix} images")
    atomic_write_bytes(path, encoded.tobytes())


VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".h264", ".h265"})


class AnnotatedVideo:
    """Each classified frame with its top label (or top group) drawn, to a video file: a look at what the model
    sees. .avi is written as MJPG (any OpenCV can), .mp4 as mp4v; frames of another size are scaled to the first's.
    The video plays at the source's frame rate, so a 10 fps clip gives a 10 fps video; a source without one (an
    image folder, an unpaced test://) gets `fps`, else 30, and the log says so."""

    FOURCC = {".avi": "MJPG", ".mp4": "mp4v"}
    DEFAULT_FPS = 30.0

    def __init__(self, path: str | Path, source, fps: float | None = None):
        self.path, self.source, self.fps = Path(path), source, fps
        if self.path.suffix.lower() not in self.FOURCC:
            raise EdgeError(f"{self.path}: an annotated video must be .avi or .mp4")
        if not self.path.parent.is_dir():  # OpenCV would only refuse at the first frame, after its result is out
            raise EdgeError(f"{self.path}: no folder {self.path.parent} to write the video into")
        self.writer = None
        self.size: tuple[int, int] | None = None

    def write(self, image: np.ndarray, result: dict) -> None:
        if self.writer is None:  # the source is open by now: it has read this frame
            self.size = (image.shape[1], image.shape[0])
            fourcc = cv2.VideoWriter_fourcc(*self.FOURCC[self.path.suffix.lower()])
            fps = self.source.frame_rate()
            if fps is None:
                fps = self.fps or self.DEFAULT_FPS
                log.info("%s: %s has no frame rate of its own; the video plays at %g fps (--fps sets it)", self.path,
                         self.source.uri, fps)
            self.writer = cv2.VideoWriter(str(self.path), fourcc, fps, self.size)
            if not self.writer.isOpened():
                raise EdgeError(f"{self.path}: OpenCV cannot write this video")
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size)
        best = (result.get("groups") or result["top"] or [None])[0]
        if best is not None:
            draw_text(image, [f"{best.get('name') or best['label']} {best['probability']:.2f}"])
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def output_target(uri: str) -> tuple[str, object]:
    """What an --output names: ("stdout", None), ("udp", (host, port)) for udp://HOST:PORT, or ("file", path) for
    file://PATH or a plain path; an EdgeError for anything else, before a model is loaded or a file created."""
    if uri == "-":
        return "stdout", None
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme == "udp":
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise EdgeError(f"{uri}: expected udp://HOST:PORT")
        return "udp", (host.strip("[]"), int(port))
    if scheme not in ("", "file"):  # jetson-inference's display://, rtp://, webrtc:// among them
        raise EdgeError(f"{uri}: unknown output scheme {scheme}:// (outputs are JSON lines: -, a file, file://PATH "
                        "or udp://HOST:PORT)")
    path = rest if scheme else uri
    if Path(path).suffix.lower() in VIDEO_SUFFIXES:  # jetson-inference's --output writes video; edge's, JSON lines
        raise EdgeError(f"{path}: --output writes JSON lines, not video; for the frames with their labels drawn, "
                        f"use --annotate {path}")
    return "file", path


def open_sink(uri: str):
    """The sink of an --output (output_target)."""
    kind, target = output_target(uri)
    if kind == "stdout":
        return StreamSink(sys.stdout, owned=False)
    if kind == "udp":
        return UdpSink(*target)
    try:
        return StreamSink(open(target, "a", encoding="utf-8"), owned=True)
    except OSError as e:
        raise EdgeError(f"{target}: cannot write results: {e.strerror or e}") from None
