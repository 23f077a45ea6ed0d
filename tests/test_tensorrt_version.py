"""The TensorRT version policy (edge/tensorrt/version.py): which versions build which way, and edge info's line."""

import sys
import types

import pytest

from edge import EdgeError
from edge.tensorrt.version import IMPLICIT, STRONGLY_TYPED, build_path, tensorrt_summary


@pytest.mark.parametrize("version, implicit, path", [
    ("8.5.2.2", False, IMPLICIT),  # JetPack 5: builder flags, the only way 8.x has
    ("8.5.2.2", True, IMPLICIT),
    ("8.6.1", False, IMPLICIT),
    ("8.6.1.6", True, IMPLICIT),
    ("10.3.0", False, STRONGLY_TYPED),  # JetPack 6: typed ONNX variants by default...
    ("10.3.0", True, IMPLICIT),  # ...builder flags and the calibration cache when asked
    ("10.16.1", False, STRONGLY_TYPED),
    ("11.0.0", False, STRONGLY_TYPED),
    ("11.4.1.2", False, STRONGLY_TYPED),
])
def test_build_path_for_each_supported_version(version, implicit, path):
    assert build_path(version, implicit) == path


def test_implicit_is_refused_on_tensorrt_11_with_the_reason():
    with pytest.raises(EdgeError, match=r"--implicit needs TensorRT 8.5 to 10.x: TensorRT 11.0.0 removed"):
        build_path("11.0.0", implicit=True)


@pytest.mark.parametrize("version", ["7.1.3", "8.0.1", "8.4.3.1", "9.2.0", "12.0.0", "1", "tensorrt"])
def test_unknown_or_old_versions_are_refused(version):
    with pytest.raises(EdgeError) as error:
        build_path(version)
    assert "\n" not in str(error.value)
    assert "8.5, 8.6, 10.x and 11.x" in str(error.value) or "cannot read the TensorRT version" in str(error.value)


def test_info_line_names_the_version_and_path(monkeypatch):
    for version, expected in (("8.5.2.2", "8.5.2.2: implicit precision"), ("10.3.0", "10.3.0: strongly typed"),
                              ("11.0.0", "11.0.0: strongly typed")):
        monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
        summary = tensorrt_summary()
        assert summary.startswith(f"yes ({expected}")
        assert ("--implicit" in summary) is (version == "10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="7.1.3"))
    assert tensorrt_summary().startswith("no (TensorRT 7.1.3 is not supported")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    assert tensorrt_summary().startswith("no (TensorRT is not installed here (import tensorrt failed: ")
