"""Shared fixtures. ../shared (models and data) is optional: tests that need it skip with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "models").is_dir():
        pytest.skip(f"needs the shared models and data at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def onnxruntime_calibrates() -> None:
    """onnxruntime before 1.27 (all there is for Python 3.10) cannot calibrate; edge calibrate says so in one line."""
    from edge.precision.calibrate import calibration_unsupported

    if reason := calibration_unsupported():
        pytest.skip(reason)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A model folder of the tiny generated classifier (tests/runtime_support.py), for the loop and the service."""
    from runtime_support import tiny_model_folder

    return str(tiny_model_folder(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def model(tiny):
    """That model folder loaded on ONNX Runtime."""
    from edge.model import Model

    return Model.load(tiny)
