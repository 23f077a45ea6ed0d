"""Helpers for the runtime and service tests: a tiny generated classifier and a generated video."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.runtime.sources import Frame

from tiny_models import tiny_classifier

CLASSES = 10


def tiny_model_folder(root: Path, batch: int | str = "batch") -> Path:
    """A model folder for a 32x32 tiny classifier (tests/tiny_models.py) with labels class0..class9."""
    from edge.importer import PreprocessOptions, import_model

    root.mkdir(parents=True, exist_ok=True)
    labels = root / "labels.txt"
    labels.write_text("".join(f"class{i}\n" for i in range(CLASSES)))
    onnx_path = tiny_classifier(root / "tiny.onnx", classes=CLASSES, size=32, batch=batch)
    return import_model(onnx_path, name="tiny", repo=root / "engines", labels=labels,
                        options=PreprocessOptions(resize="stretch", color="bgr", scale=1 / 255))


def write_video(path: Path, frames: int, width: int = 64, height: int = 48, fps: float = 25.0) -> Path:
    """An MJPG .avi (pip's OpenCV writes and reads it) whose frames differ from one another."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
    for i in range(frames):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, : (i * 7) % width + 1] = (i * 37 % 256, i * 91 % 256, 255 - i * 13 % 256)
        writer.write(image)
    writer.release()
    return path


def serve_mjpeg(port: int, fps: float = 50.0) -> None:
    """Serve an endless MJPEG stream (multipart/x-mixed-replace) on 127.0.0.1:port until killed.

    OpenCV's FFmpeg backend reads it as http://127.0.0.1:port/: a network camera, without ffmpeg installed."""
    import http.server
    import time

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            count = 0
            while True:
                image = np.full((48, 64, 3), count % 256, np.uint8)
                data = cv2.imencode(".jpg", image)[1].tobytes()
                try:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data))
                    self.wfile.write(data + b"\r\n")
                except OSError:  # the reader went away
                    return
                count += 1
                time.sleep(1.0 / fps)

        def log_message(self, format, *args):
            pass

    http.server.HTTPServer.allow_reuse_address = True
    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    import sys

    serve_mjpeg(int(sys.argv[1]))


class ListSink:
    """A sink that keeps the lines written to it."""

    def __init__(self):
        self.lines: list[str] = []
        self.flushed = 0

    def write(self, line: str) -> None:
        self.lines.append(line)

    def flush(self) -> None:
        self.flushed += 1

    def close(self) -> None:
        pass


class Recorder:
    """A stage recorder that keeps every time recorded, by stage."""

    def __init__(self):
        self.seen: dict[str, list[float]] = {}

    def record(self, stage: str, seconds: float) -> None:
        self.seen.setdefault(stage, []).append(seconds)


def frame(i: int) -> Frame:
    """A 1x1 black frame captured at time i."""
    return Frame(np.zeros((1, 1, 3), np.uint8), float(i), position=float(i))


def probabilities(*pairs) -> np.ndarray:
    """A probability row of CLASSES classes with (class_id, value) pairs set."""
    p = np.zeros(CLASSES, np.float32)
    for class_id, value in pairs:
        p[class_id] = value
    return p
