"""The TensorRT module's decisions, tested without TensorRT: which path for which version, which files a build
reads, the calibration cache check, and what a user sees where TensorRT or a GPU is missing.

A few tests put a stand-in `tensorrt` module (a namespace with a __version__, or a stub calibrator base class)
in sys.modules to reach the version dispatch; nothing they produce is, or is presented as, a TensorRT result.
"""

import ctypes
import subprocess
import sys
import types
from pathlib import Path

import pytest

from edge import EdgeError, Model
from edge.cli import main
from edge.folder import CALIBRATION_CACHE, Card
from edge.importer import import_model
from edge.tensorrt.build import DYNAMIC_BATCH_PROFILE, build_engine, build_spec
from edge.tensorrt.calibration_cache import cache_calibrator, read_calibration_cache
from edge.tensorrt.runner import runtime_api
from edge.tensorrt.version import IMPLICIT, STRONGLY_TYPED, build_path, tensorrt_summary, uses_bindings

from tiny_models import tiny_classifier


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


@pytest.fixture
def folder(tmp_path):
    """A model folder with every file a build may read (the variants' contents do not matter here)."""
    folder = import_model(tiny_classifier(tmp_path / "tiny.onnx"), name="tiny", repo=tmp_path / "engines")
    (folder / "model.fp16.onnx").write_bytes((folder / "model.onnx").read_bytes())
    (folder / "model.int8.onnx").write_bytes((folder / "model.onnx").read_bytes())
    (folder / CALIBRATION_CACHE).write_text("TRT-100300-EntropyCalibration2\nimage: 3c010204\nconv: 3d8f5c29\n")
    return folder


def _snapshot(folder):
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


# --- version dispatch ---------------------------------------------------------------------------------------

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


@pytest.mark.parametrize("version, bindings",
                         [("8.5.2.2", True), ("8.6.1", True), ("10.3.0", False), ("11.0.0", False)])
def test_runtime_api_by_version(version, bindings):
    assert uses_bindings(version) is bindings
    stub_trt = types.SimpleNamespace(__version__=version)
    stub_engine = types.SimpleNamespace(num_bindings=0)  # just enough for the adapter's constructor
    api = runtime_api(stub_trt, stub_engine, context=None)
    assert type(api).__name__ == ("_BindingApi" if bindings else "_TensorApi")


# --- what a build reads -------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, precision, implicit, onnx, cache", [
    ("10.3.0", "fp32", False, "model.onnx", None),
    ("10.3.0", "fp16", False, "model.fp16.onnx", None),
    ("10.3.0", "int8", False, "model.int8.onnx", None),
    ("10.3.0", "fp16", True, "model.onnx", None),
    ("10.3.0", "int8", True, "model.onnx", CALIBRATION_CACHE),
    ("11.0.0", "int8", False, "model.int8.onnx", None),
    ("8.5.2.2", "fp16", False, "model.onnx", None),
    ("8.5.2.2", "int8", False, "model.onnx", CALIBRATION_CACHE),
])
def test_build_spec_reads_the_right_files(folder, version, precision, implicit, onnx, cache):
    spec = build_spec(folder, Card.read(folder), version, precision, implicit=implicit)
    assert (spec.onnx, spec.calibration_cache, spec.precision) == (onnx, cache, precision)
    assert spec.batch_profile == DYNAMIC_BATCH_PROFILE  # tiny_classifier's batch is dynamic


def test_build_spec_missing_variant_says_how_to_make_it(folder):
    (folder / "model.fp16.onnx").unlink()
    (folder / CALIBRATION_CACHE).unlink()
    card = Card.read(folder)
    with pytest.raises(EdgeError, match=r"model.fp16.onnx: missing; the fp16 build reads it: make it with `edge fp16"):
        build_spec(folder, card, "11.0.0", "fp16")
    with pytest.raises(EdgeError, match=r"calibration.cache: missing; .* `edge calibrate"):
        build_spec(folder, card, "8.6.1", "int8")


def test_build_spec_dla_and_workspace(folder):
    card = Card.read(folder)
    spec = build_spec(folder, card, "10.3.0", "fp16", dla=1, workspace_mib=256, implicit=True)
    assert (spec.dla_core, spec.workspace_mib, spec.batch_profile) == (1, 256, (1, 1, 1))  # DLA: no dynamic shapes
    with pytest.raises(EdgeError, match="the DLA has no FP32"):
        build_spec(folder, card, "10.3.0", "fp32", dla=0)
    with pytest.raises(EdgeError, match="DLA core number"):
        build_spec(folder, card, "10.3.0", "fp16", dla=-1)
    with pytest.raises(EdgeError, match="--dla on TensorRT 10.3.0 needs --implicit"):
        build_spec(folder, card, "10.3.0", "fp16", dla=0)
    with pytest.raises(EdgeError, match="size in MiB"):
        build_spec(folder, card, "10.3.0", "fp16", workspace_mib=0)
    with pytest.raises(EdgeError, match="precision must be one of"):
        build_spec(folder, card, "10.3.0", "bf16")


def test_fixed_batch_needs_no_profile(tmp_path):
    folder = import_model(tiny_classifier(tmp_path / "fixed.onnx", batch=1), name="fixed", repo=tmp_path)
    assert build_spec(folder, Card.read(folder), "10.3.0", "fp32").batch_profile is None


# --- the calibration cache ----------------------------------------------------------------------------------

def test_calibration_cache_is_read_when_it_matches(folder):
    data = read_calibration_cache(folder / CALIBRATION_CACHE, "10.3.0")
    assert data == (folder / CALIBRATION_CACHE).read_bytes()


@pytest.mark.parametrize("text, message", [
    ("TRT-8502-EntropyCalibration2\nimage: 3c010204\n",
     "stamped for TensorRT version code 8502, this TensorRT 10.3.0 reads 100300; re-run `edge calibrate`"),
    ("TRT-100300-MinMaxCalibration\nimage: 3c010204\n", "written for the MinMaxCalibration calibrator"),
    ("image 0.5\nconv 0.25\n", "not a TensorRT calibration cache"),  # ONNX Runtime's own table is not one
    ("TRT-100300-EntropyCalibration2\nimage: 0.0078\n", "line 2 is not `tensor: hex scale`"),
    ("TRT-100300-EntropyCalibration2\n", "has no tensor scales"),
    ("", "not a TensorRT calibration cache"),
])
def test_calibration_cache_mismatch_is_refused(tmp_path, text, message):
    path = tmp_path / CALIBRATION_CACHE
    path.write_text(text)
    with pytest.raises(EdgeError, match="calibration.cache: ") as error:
        read_calibration_cache(path, "10.3.0")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_binary_calibration_cache_is_refused(tmp_path):
    (tmp_path / CALIBRATION_CACHE).write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(EdgeError, match="not a TensorRT calibration cache"):
        read_calibration_cache(tmp_path / CALIBRATION_CACHE, "8.5.2.2")


def test_cache_calibrator_only_hands_over_the_cache():
    class StubCalibratorBase:  # stands in for tensorrt.IInt8EntropyCalibrator2, a pybind11 class
        def __init__(self):
            self.base_initialised = True

    stub_trt = types.SimpleNamespace(IInt8EntropyCalibrator2=StubCalibratorBase)
    calibrator = cache_calibrator(stub_trt, b"TRT-100300-EntropyCalibration2\nimage: 3c010204\n")
    assert isinstance(calibrator, StubCalibratorBase) and calibrator.base_initialised
    assert calibrator.read_calibration_cache() == b"TRT-100300-EntropyCalibration2\nimage: 3c010204\n"
    assert calibrator.get_batch(["image"]) is None  # never calibrates on the device
    assert calibrator.get_batch_size() == 1
    assert calibrator.write_calibration_cache(b"anything") is None


# --- where TensorRT or the GPU is missing -------------------------------------------------------------------

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


def test_build_without_tensorrt_says_so_and_writes_nothing(folder, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    before = _snapshot(folder)
    with pytest.raises(EdgeError, match=r"^TensorRT is not installed here \(import tensorrt failed: .*\); build "):
        build_engine(folder, "fp16")
    assert main(["build", str(folder), "--precision", "int8"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edge: error: TensorRT is not installed here")
    assert _snapshot(folder) == before


def test_build_in_a_folder_it_cannot_write_stops_before_building(folder, monkeypatch):
    # jetson-inference rebuilt for minutes and then could not save (#1644, #1031). os.access is stood in for
    # because the tests may run as root, who may write anywhere.
    import edge.tensorrt.build as tensorrt_backend

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setitem(sys.modules, "polygraphy", types.SimpleNamespace())  # a build would fail on this stand-in
    monkeypatch.setattr(tensorrt_backend, "gpu_identity", lambda: ("Orin", "8.7"))
    monkeypatch.setattr(tensorrt_backend.os, "access", lambda path, mode: Path(path) != folder)
    before = _snapshot(folder)
    with pytest.raises(EdgeError, match=rf"^{folder}: this user cannot write here, .*\(not built yet\)"):
        build_engine(folder, "fp16")
    assert _snapshot(folder) == before


def test_build_without_gpu_says_so_and_writes_nothing(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setitem(sys.modules, "polygraphy", types.SimpleNamespace())

    def no_driver(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_driver)
    before = _snapshot(folder)
    with pytest.raises(EdgeError, match=r"^no NVIDIA driver here \(libcuda.so.1 not found\); build engines on "):
        build_engine(folder, "fp16")
    assert _snapshot(folder) == before


def test_build_refuses_a_foreign_calibration_cache_before_anything_else(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.5.2.2"))
    monkeypatch.setitem(sys.modules, "polygraphy", types.SimpleNamespace())
    before = _snapshot(folder)
    with pytest.raises(EdgeError, match="stamped for TensorRT version code 100300, this TensorRT 8.5.2.2 reads 8502"):
        build_engine(folder, "int8")
    assert _snapshot(folder) == before


def test_tensorrt_backend_without_tensorrt_says_so(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EdgeError, match="^TensorRT is not installed here"):
        Model.load(folder, backend="tensorrt", precision="fp16")


@pytest.mark.skipif(_tensorrt_importable(), reason="TensorRT is installed here")
def test_edge_build_command_fails_in_one_line_here(folder):
    before = _snapshot(folder)
    result = subprocess.run([sys.executable, "-m", "edge.cli", "build", str(folder), "--precision", "fp16"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "TensorRT is not installed here" in result.stderr
    assert _snapshot(folder) == before


@pytest.mark.skipif(_tensorrt_importable(), reason="TensorRT is installed here")
def test_edge_build_of_efficientnet_fails_in_one_line_and_writes_nothing(shared, tmp_path):
    from edge.importer import PreprocessOptions

    folder = import_model(shared / "models/efficientnet_lite0/model.onnx", name="efficientnet_lite0",
                          repo=tmp_path, options=PreprocessOptions(resize="shorter", resize_size=256, color="rgb",
                                                                   mean_values=(127, 127, 127), scale=1 / 128))
    before = _snapshot(tmp_path)
    result = subprocess.run([sys.executable, "-m", "edge.cli", "build", "efficientnet_lite0", "--repo", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("edge: error: TensorRT is not installed here (import tensorrt failed: ")
    assert _snapshot(tmp_path) == before and folder.is_dir()
