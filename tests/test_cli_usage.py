"""What a new user meets first: the commands of README.md and docs/ as written, --help, flag checks, and a
test suite that leaves nothing behind."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).parent


def test_no_test_makes_its_own_temporary_files():
    """A folder made with the tempfile module outlives the run in /tmp; pytest's tmp_path (and _factory) do not."""
    offenders = [path.name for path in sorted(TESTS.glob("*.py"))
                 if re.search(r"\btempfile\.(mkdtemp|mkstemp|NamedTemporaryFile|TemporaryDirectory)\b",
                              path.read_text(encoding="utf-8"))]
    assert offenders == []
