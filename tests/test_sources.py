"""Input sources (edge/runtime/sources.py): the scheme table, and the documents and messages made from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import EdgeError
from edge.runtime.options import OPTIONS_BY_KEY
from edge.runtime.sources import SCHEMES, open_source, schemes_help, schemes_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_table_is_the_scheme_table():
    assert schemes_table() in (ROOT / "docs" / "service.md").read_text(), \
        "docs/service.md's input table is stale: paste edge.runtime.sources.schemes_table() over it"


def test_edge_run_help_and_the_unknown_scheme_error_name_every_scheme():
    names = [name for scheme in SCHEMES for name in scheme.names if name]
    assert {"gst", "http", "https", "udp", "tcp", "srt"} <= set(names)  # the ones the README once left out
    assert OPTIONS_BY_KEY["input"].help == schemes_help().replace("`", "")
    for name in names:
        assert f"{name}://" in OPTIONS_BY_KEY["input"].help
    with pytest.raises(EdgeError) as refused:
        open_source("nope://x")
    assert str(refused.value) == f"nope://x: unknown input scheme nope:// ({', '.join(names)}, or a path)"
