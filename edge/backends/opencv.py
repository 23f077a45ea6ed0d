"""OpenCV DNN on the CPU (`cv2.dnn.readNetFromONNX`): how classifiers were run before ONNX Runtime, kept as the
baseline row of `edge bench`. It runs the model folder's ONNX graph on edge's own preprocessed batch, so the
two CPU backends are compared on the same input.

OpenCV's importer covers fewer operators than ONNX Runtime (Q/DQ and float16 graphs depend on its version); a
graph it cannot load is refused in one line naming the file and OpenCV's version.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..errors import EdgeError, first_line
from . import run_in_fixed_batches

if TYPE_CHECKING:
    from ..model import Card


class OpenCvDnnBackend:
    def __init__(self, onnx_path: Path, card: Card):
        try:
            self.net = cv2.dnn.readNetFromONNX(str(onnx_path))
        except cv2.error as e:
            raise EdgeError(f"{onnx_path}: OpenCV DNN {cv2.__version__} cannot load it: {_reason(e)}") from None
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.fixed_batch = card.batch
        # A Net keeps its input between setInput and forward, so two threads must not interleave them; OpenCV
        # spreads one forward over every core itself.
        self.lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        return run_in_fixed_batches(self._run, batch, self.fixed_batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            self.net.setInput(np.ascontiguousarray(batch))
            try:
                return self.net.forward()
            except cv2.error as e:
                raise EdgeError(f"OpenCV DNN {cv2.__version__} cannot run it: {_reason(e)}") from None


def _reason(error: cv2.error) -> str:
    """OpenCV's message without its `OpenCV(4.x) /path/file.cpp:123: error: (-2:Unspecified error)` prefix."""
    text = first_line(error)
    return text.rsplit(" error: ", 1)[-1]
