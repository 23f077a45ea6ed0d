"""edge run's options (edge/runtime/options.py): flags over the file over the defaults, one-line errors for bad
values, the shipped systemd/edge.toml, and workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import EdgeError
from edge.runtime.options import RUN_OPTIONS, read_config, render_config, resolve_options

ROOT = Path(__file__).resolve().parents[1]


def test_flags_win_over_the_file_and_the_file_over_defaults(tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text('model = "m"\ninput = "test://"\ntop = 2\nsmoothing = 4\nfps = 10\noutput = "-"\n')
    options = resolve_options(config, {"top": 7, "smoothing": None, "input": None})
    assert options["top"] == 7 and options["smoothing"] == 4 and options["fps"] == 10.0
    assert options["output"] == ["-"] and options["precision"] == "fp32"


@pytest.mark.parametrize("text, message", [
    ('inptu = "x"\n', "unknown key 'inptu'"),
    ('top = "five"\n', "top must be int"),
    ('loop = 1\n', "loop must be bool"),
    ('output = [1]\n', "output must be a list of strings"),
])
def test_bad_configuration_is_a_one_line_error(tmp_path, text, message):
    config = tmp_path / "edge.toml"
    config.write_text(text)
    with pytest.raises(EdgeError, match=message):
        read_config(config)


def test_the_shipped_edge_toml_documents_every_option_and_parses():
    shipped = (ROOT / "systemd" / "edge.toml").read_text()
    assert shipped == render_config(), "systemd/edge.toml is stale: regenerate it from render_config()"
    for option in RUN_OPTIONS:
        assert f"{option.key} = " in shipped
    assert read_config(ROOT / "systemd" / "edge.toml")["input"] == "csi://0"


def test_an_output_edge_cannot_write_is_refused_with_the_options_before_the_model_loads():
    with pytest.raises(EdgeError, match=r"^display://0: unknown output scheme display://"):
        resolve_options(None, {"model": "no-such-model", "input": "test://", "output": ["-", "display://0"]})


def test_a_negative_batch_is_refused_rather_than_waited_for():
    with pytest.raises(EdgeError, match=r"^--batch: batch must be at least 0, not -1$"):
        resolve_options(None, {"model": "m", "input": "test://", "batch": -1})


@pytest.mark.parametrize("backend", ["tensorrt", "torch"])
def test_a_gpu_backend_takes_workers_0_or_1_and_refuses_more(backend):
    options = {"model": "m", "input": "test://", "backend": backend}
    assert resolve_options(None, {**options, "workers": 0})["workers"] == 1
    assert resolve_options(None, {**options, "workers": 1})["workers"] == 1
    with pytest.raises(EdgeError, match=f"workers 2: the {backend} backend runs one batch at a time"):
        resolve_options(None, {**options, "workers": 2})


@pytest.mark.parametrize("text, message", [
    ("workers = -1\n", "edge.toml: workers must be at least 0, not -1"),
    ("workers = 1.5\n", "workers must be int"),
    ('workers = "2"\n', "workers must be int"),
    ('backend = "tensorrtx"\nworkers = 2\n',
     "backend must be one of onnxruntime, tensorrt, torch, or triton://HOST:PORT/MODEL, not 'tensorrtx'"),
])
def test_bad_workers_in_the_file_are_a_one_line_error(tmp_path, text, message):
    config = tmp_path / "edge.toml"
    config.write_text('model = "m"\ninput = "test://"\n' + text)
    with pytest.raises(EdgeError, match=message):
        resolve_options(config, {})
