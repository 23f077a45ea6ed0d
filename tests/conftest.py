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
