"""OpenCV DNN on the CPU (`cv2.dnn.readNetFromONNX`): how classifiers were run before ONNX Runtime, kept as the
baseline row of `edge bench`. It runs the model folder's ONNX graph on edge's own preprocessed batch, so the
two CPU backends are compared on the same input.

OpenCV's importer covers fewer operators than ONNX Runtime (Q/DQ and float16 graphs depend on its version); a
graph it cannot load is refused in one line naming the file and OpenCV's version.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import cv2
import numpy as np

from ..errors import EdgeError, first_line
from ..folder import Card
from .base import run_in_fixed_batches


class OpenCvDnnBackend:
    def __init__(self, onnx_path: Path, card: Card):
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # the refusal below says it in one line
        try:
            self.net = cv2.dnn.readNetFromONNX(str(onnx_path))
        except cv2.error as e:
            raise EdgeError(f"{onnx_path}: OpenCV DNN {cv2.__version__} cannot load it: {_reason(e)}") from None
        finally:
            cv2.utils.logging.setLogLevel(level)
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
    """The innermost of OpenCV's nested messages (`... error: (-2:Unspecified error) Can't create layer "y" of type
    "Hardmax" in function ...`), which names the layer; the first line when none says more."""
    said = [m for m in re.findall(r"error: \(-?\d+:[^)]*\) (.*?) in function", str(error)) if m.strip()]
    return said[-1] if said else first_line(error)
