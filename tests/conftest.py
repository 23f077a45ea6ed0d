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
