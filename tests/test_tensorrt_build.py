"""`edge build` (edge/tensorrt/build.py).

Without TensorRT, on every machine: engine names, JSON sidecars, staleness decisions and crash-safe replacement;
what a build reads on each TensorRT version and precision; and the one-line refusals before anything is built.

With real TensorRT: a small model folder's engines built at each precision and held to ONNX Runtime. These run
wherever `import tensorrt`, polygraphy, pycuda and a GPU are there (a Jetson, a GPU workstation) and are skipped
elsewhere, each with its reason. The precision variants are made here on the CPU, the way a workstation would: an
FP16 copy of the graph, a Q/DQ INT8 graph from ONNX Runtime's quantizer, and a TensorRT calibration cache of the
same tensors' ranges for the implicit path; one test checks those inputs with ONNX Runtime alone.
"""

import ctypes
import hashlib
import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge import EdgeError
from edge.backends.onnxruntime import cpu_session
from edge.cli import main
from edge.files import remove_stale
from edge.folder import CALIBRATION_CACHE, Card
from edge.importer import import_model
from edge.tensorrt.build import (
    DYNAMIC_BATCH_PROFILE,
    BuildSpec,
    Target,
    build_engine,
    build_spec,
    engine_path,
    install_engine,
    make_sidecar,
    read_sidecar,
    sidecar_path,
    source_hashes,
    timing_cache_path,
    why_stale,
)
from edge.tensorrt.calibration_cache import format_cache, read_calibration_cache
from edge.tensorrt.runner import TensorRTBackend
from edge.tensorrt.version import IMPLICIT, STRONGLY_TYPED

from tiny_models import tiny_classifier

RNG_SEED = 7


@pytest.fixture
def trt():
    trt = pytest.importorskip("tensorrt", reason="needs TensorRT (import tensorrt): run on a Jetson or GPU machine")
    pytest.importorskip("polygraphy", reason="needs polygraphy, which edge build drives TensorRT with")
    pytest.importorskip("pycuda.driver", reason="needs pycuda to run engines")
    import pycuda.driver as cuda

    try:
        cuda.init()
        cuda.Device(0)
    except cuda.Error as e:
        pytest.skip(f"needs a CUDA GPU: {e}")
    return trt


def _images(n: int, seed: int = RNG_SEED) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 3, 8, 8)).astype(np.float32)


def fp16_variant(fp32_path, out_path) -> None:
    """The graph in FP16 between a Cast in and a Cast out, so its input and output stay float32."""
    model = onnx.load(str(fp32_path))
    graph = model.graph
    graph.ClearField("value_info")
    for i, init in enumerate(graph.initializer):
        graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16),
                                                              init.name))
    image, output = graph.input[0].name, graph.output[0].name
    for node in graph.node:
        node.input[:] = [f"{image}_fp16" if name == image else name for name in node.input]
        node.output[:] = [f"{output}_fp16" if name == output else name for name in node.output]
    graph.node.insert(0, helper.make_node("Cast", [image], [f"{image}_fp16"], to=TensorProto.FLOAT16))
    graph.node.append(helper.make_node("Cast", [f"{output}_fp16"], [output], to=TensorProto.FLOAT))
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))


def int8_variant(fp32_path, out_path, calibration: np.ndarray) -> None:
    """Q/DQ INT8 the way TensorRT takes it: symmetric INT8, per-channel weights, float bias."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["Conv", "Gemm"],
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "AddQDQPairToWeight": True,
                                   "DedicatedQDQPair": True, "QuantizeBias": False})


def calibration_cache(fp32_path, out_path, calibration: np.ndarray, trt_version: str) -> None:
    """TensorRT's cache format: `TRT-<version>-EntropyCalibration2`, then `tensor: <float32 bits of amax/127>`."""
    model = onnx.load(str(fp32_path))
    names = [model.graph.input[0].name] + [out for node in model.graph.node for out in node.output]
    model.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                              for n in names[1:] if n not in {o.name for o in model.graph.output})
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {names[0]: calibration})))
    outputs[names[0]] = calibration
    out_path.write_text(format_cache({n: float(np.abs(outputs[n]).max()) / 127 for n in names}, trt_version))


def model_folder(tmp_path, trt_version: str):
    tiny = tiny_classifier(tmp_path / "tiny.onnx", classes=5)
    folder = import_model(tiny, name="tiny", repo=tmp_path / "engines")
    calibration = _images(32, seed=1)
    fp16_variant(tiny, folder / "model.fp16.onnx")
    int8_variant(tiny, folder / "model.int8.onnx", calibration)
    calibration_cache(tiny, folder / CALIBRATION_CACHE, calibration, trt_version)
    return folder


def reference(folder, batch):
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": batch})[0]


def _paths(trt_version: str):
    """(precision, implicit) pairs this TensorRT builds: 8.x only implicit, 11 only strongly typed, 10 both."""
    major = int(trt_version.split(".")[0])
    implicit = [True] if major in (8, 10) else []
    typed = [False] if major >= 10 else []
    return [(p, i) for p in ("fp32", "fp16", "int8") for i in typed + implicit]


TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2, "int8": 6e-2}  # of the largest reference logit


@pytest.mark.tensorrt
def test_engines_match_onnx_runtime_at_each_precision(trt, tmp_path):
    folder = model_folder(tmp_path, trt.__version__)
    card = Card.read(folder)
    batch = _images(6)
    expected = reference(folder, batch)
    for precision, implicit in _paths(trt.__version__):
        engine = build_engine(folder, precision, implicit=implicit)
        assert read_sidecar(engine)["flags"]["path"] == ("implicit" if implicit else "strongly-typed")
        got = TensorRTBackend.from_model_folder(folder, card, precision).run(batch)
        assert got.shape == expected.shape
        error = np.abs(got - expected).max() / np.abs(expected).max()
        assert error < TOLERANCE[precision], (precision, implicit, error)
    sidecar = read_sidecar(engine)
    target = Target(sidecar["tensorrt"], sidecar["gpu"], sidecar["compute_capability"])
    assert timing_cache_path(folder, target).is_file()


@pytest.mark.tensorrt
def test_engine_is_reused_then_rebuilt_when_its_onnx_changes(trt, tmp_path, capsys):
    folder = model_folder(tmp_path, trt.__version__)
    engine = build_engine(folder, "fp32")
    built = read_sidecar(engine)["built_at"], engine.stat().st_mtime_ns
    assert build_engine(folder, "fp32") == engine
    assert (read_sidecar(engine)["built_at"], engine.stat().st_mtime_ns) == built
    assert "up to date" in capsys.readouterr().err
    model = onnx.load(str(folder / "model.onnx"))
    model.producer_name = "re-exported"
    onnx.save(model, str(folder / "model.onnx"))
    build_engine(folder, "fp32")
    assert "model.onnx changed since the build" in capsys.readouterr().err
    assert engine.stat().st_mtime_ns != built[1]


@pytest.mark.tensorrt
def test_backend_lists_io_and_takes_any_batch(trt, tmp_path):
    folder = model_folder(tmp_path, trt.__version__)
    build_engine(folder, "fp32")
    backend = TensorRTBackend.from_model_folder(folder, Card.read(folder), "fp32")
    by_name = {t.name: t for t in backend.tensors}
    assert by_name["image"].mode == "input" and by_name["logits"].mode == "output"
    assert by_name["image"].shape == (-1, 3, 8, 8) and by_name["image"].dtype == np.float32
    assert backend.set_batch(3) == {"image": (3, 3, 8, 8), "logits": (3, 5)}
    for n in (1, 3, 20):  # 20 is beyond the profile's 16: run() splits it
        batch = _images(n, seed=n)
        np.testing.assert_allclose(backend.run(batch), reference(folder, batch), atol=1e-3, rtol=1e-3)


@pytest.mark.tensorrt
def test_dla_request_is_checked_against_the_device(trt, tmp_path):
    folder = model_folder(tmp_path, trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if builder.num_DLA_cores:
        engine = build_engine(folder, "fp16", dla=0, implicit=trt.__version__.startswith(("8.", "10.")))
        batch = _images(1)
        got = TensorRTBackend.from_model_folder(folder, Card.read(folder), "fp16").run(batch)
        assert read_sidecar(engine)["flags"]["dla_core"] == 0
        assert np.abs(got - reference(folder, batch)).max() / np.abs(reference(folder, batch)).max() < 2e-2
    else:
        with pytest.raises(EdgeError, match=r"--dla 0: this device has 0 DLA core\(s\)"):
            build_engine(folder, "fp16", dla=0, implicit=trt.__version__.startswith(("8.", "10.")))


def test_the_precision_variants_made_here_are_sound(tmp_path):
    """The inputs of the TensorRT tests, checked with ONNX Runtime (no TensorRT needed)."""
    folder = model_folder(tmp_path, "10.3.0")
    batch = _images(6)
    expected = reference(folder, batch)
    for name, tolerance in (("model.fp16.onnx", TOLERANCE["fp16"]), ("model.int8.onnx", TOLERANCE["int8"])):
        got = cpu_session(folder / name).run(None, {"image": batch})[0]  # Q/DQ as TensorRT computes it
        assert np.abs(got - expected).max() / np.abs(expected).max() < tolerance, name
    int8 = onnx.load(str(folder / "model.int8.onnx"))
    zero_points = [numpy_helper.to_array(t) for t in int8.graph.initializer if t.name.endswith("zero_point")]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # what TensorRT accepts
    cache = read_calibration_cache(folder / CALIBRATION_CACHE, "10.3.0").decode().splitlines()
    assert cache[0] == "TRT-100300-EntropyCalibration2" and len(cache) == 7  # header, input, 5 node outputs


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
    import edge.tensorrt.build as tensorrt_build

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setitem(sys.modules, "polygraphy", types.SimpleNamespace())  # a build would fail on this stand-in
    monkeypatch.setattr(tensorrt_build, "gpu_identity", lambda: ("Orin", "8.7"))
    monkeypatch.setattr(tensorrt_build.os, "access", lambda path, mode: Path(path) != folder)
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


ORIN = Target("10.3.0", "Orin", "8.7")


STRONG_FP16 = BuildSpec("fp16", STRONGLY_TYPED, "model.fp16.onnx", None, None, None, (1, 1, 16))


IMPLICIT_INT8 = BuildSpec("int8", IMPLICIT, "model.onnx", "calibration.cache", None, None, (1, 1, 16))


def _folder(tmp_path):
    for name, text in (("model.onnx", "fp32 graph"), ("model.fp16.onnx", "fp16 graph"),
                       ("calibration.cache", "TRT-100300-EntropyCalibration2\nimage: 3c010204\n")):
        (tmp_path / name).write_text(text)
    return tmp_path


def _install(folder, target, spec, payload=b"engine bytes 1"):
    """Records a build the way build_engine does, with `payload` standing in for the serialized engine."""
    engine = engine_path(folder, target, spec.precision)
    sidecar = make_sidecar(engine, target, spec, source_hashes(folder, spec), hashlib.sha256(payload).hexdigest(), 1.0)
    install_engine(engine, payload, sidecar)
    return engine


def test_engine_names_say_gpu_compute_capability_tensorrt_and_precision(tmp_path):
    assert engine_path(tmp_path, ORIN, "fp16").name == "orin-sm87-trt10.3.0-fp16.plan"
    h100 = Target("11.0.0.1", "NVIDIA H100 80GB HBM3", "9.0")
    assert engine_path(tmp_path, h100, "int8").name == "nvidia-h100-80gb-hbm3-sm90-trt11.0.0.1-int8.plan"
    assert sidecar_path(engine_path(tmp_path, ORIN, "fp32")).name == "orin-sm87-trt10.3.0-fp32.json"
    assert timing_cache_path(tmp_path, ORIN).name == "orin-sm87-trt10.3.0.timing.cache"


def test_sidecar_records_what_the_engine_was_built_from(tmp_path):
    folder = _folder(tmp_path)
    engine = _install(folder, ORIN, IMPLICIT_INT8)
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["engine"] == engine.name
    assert sidecar["engine_sha256"] == hashlib.sha256(b"engine bytes 1").hexdigest()
    assert (sidecar["tensorrt"], sidecar["gpu"], sidecar["compute_capability"]) == ("10.3.0", "Orin", "8.7")
    assert sidecar["precision"] == "int8"
    assert sidecar["onnx"] == {"file": "model.onnx", "sha256": hashlib.sha256(b"fp32 graph").hexdigest()}
    assert sidecar["calibration_cache"]["file"] == "calibration.cache"
    cache_sha256 = hashlib.sha256((folder / "calibration.cache").read_bytes()).hexdigest()
    assert sidecar["calibration_cache"]["sha256"] == cache_sha256
    assert sidecar["flags"] == {"path": "implicit", "dla_core": None, "workspace_mib": None,
                                "batch_profile": [1, 1, 16]}
    assert sidecar["build_seconds"] == 1.0 and sidecar["built_at"].endswith("+00:00")
    strong = json.loads(sidecar_path(_install(folder, ORIN, STRONG_FP16)).read_text())
    assert strong["calibration_cache"] is None and strong["onnx"]["file"] == "model.fp16.onnx"


def test_a_fresh_engine_is_reused(tmp_path):
    folder = _folder(tmp_path)
    engine = _install(folder, ORIN, STRONG_FP16)
    assert why_stale(engine, ORIN, STRONG_FP16) is None
    assert why_stale(engine, ORIN) is None  # loading to run: flags are taken as built


def test_no_engine_or_no_sidecar_is_stale(tmp_path):
    folder = _folder(tmp_path)
    engine = engine_path(folder, ORIN, "fp16")
    assert why_stale(engine, ORIN, STRONG_FP16) == "not built yet"
    engine = _install(folder, ORIN, STRONG_FP16)
    sidecar_path(engine).write_text("{not json")
    assert "missing or unreadable" in why_stale(engine, ORIN, STRONG_FP16)
    sidecar_path(engine).unlink()
    assert "missing or unreadable" in why_stale(engine, ORIN)


def test_changed_onnx_makes_the_engine_stale(tmp_path):
    folder = _folder(tmp_path)
    engine = _install(folder, ORIN, STRONG_FP16)
    (folder / "model.fp16.onnx").write_text("fp16 graph, re-exported")
    assert why_stale(engine, ORIN, STRONG_FP16) == "model.fp16.onnx changed since the build"
    assert why_stale(engine, ORIN) == "model.fp16.onnx changed since the build"
    (folder / "model.fp16.onnx").unlink()
    assert why_stale(engine, ORIN) == "model.fp16.onnx, which it was built from, is gone"


def test_changed_calibration_cache_makes_the_implicit_int8_engine_stale(tmp_path):
    folder = _folder(tmp_path)
    engine = _install(folder, ORIN, IMPLICIT_INT8)
    assert why_stale(engine, ORIN, IMPLICIT_INT8) is None
    (folder / "calibration.cache").write_text("TRT-100300-EntropyCalibration2\nimage: 3c020000\n")
    assert why_stale(engine, ORIN, IMPLICIT_INT8) == "calibration.cache changed since the build"


def test_engine_from_another_gpu_or_tensorrt_is_never_taken(tmp_path):
    folder = _folder(tmp_path)
    engine = _install(folder, ORIN, STRONG_FP16)
    xavier = Target("10.3.0", "Xavier", "7.2")
    assert why_stale(engine, xavier) == "built for Orin (compute capability 8.7), this GPU is Xavier (7.2)"
    same_name_other_sm = Target("10.3.0", "Orin", "8.6")
    assert "compute capability 8.7" in why_stale(engine, same_name_other_sm)
    newer = Target("10.7.0", "Orin", "8.7")
    assert why_stale(engine, newer) == "built with TensorRT 10.3.0, this machine has TensorRT 10.7.0"
    # and the names differ, so a machine never even looks at another machine's engine
    assert engine_path(folder, xavier, "fp16") != engine and engine_path(folder, newer, "fp16") != engine


@pytest.mark.parametrize("changed, expected", [
    ({"dla_core": 0}, "dla_core=0"),
    ({"workspace_mib": 512}, "workspace_mib=512"),
    ({"path": IMPLICIT, "onnx": "model.onnx"}, "path=implicit"),
    ({"batch_profile": (1, 1, 1)}, "batch_profile=[1, 1, 1]"),
])
def test_changed_flags_make_the_engine_stale(tmp_path, changed, expected):
    folder = _folder(tmp_path)
    engine = _install(folder, ORIN, STRONG_FP16)
    asked = BuildSpec(**{**STRONG_FP16.__dict__, **changed})
    reason = why_stale(engine, ORIN, asked)
    assert reason.startswith("built with path=strongly-typed, dla_core=None") and "asked for" in reason
    assert expected in reason.split("asked for")[1]


def test_engine_not_matching_its_sidecar_is_stale(tmp_path):
    folder = _folder(tmp_path)
    engine = _install(folder, ORIN, STRONG_FP16)
    engine.write_bytes(b"engine bytes 2")  # as if killed between the engine's rename and the sidecar's
    assert "does not match its sidecar" in why_stale(engine, ORIN, STRONG_FP16)


def test_sidecar_missing_a_key_is_stale_not_an_exception(tmp_path):
    folder = _folder(tmp_path)
    engine = _install(folder, ORIN, STRONG_FP16)
    sidecar = read_sidecar(engine)
    del sidecar["onnx"]
    sidecar_path(engine).write_text(json.dumps(sidecar))
    assert why_stale(engine, ORIN) == f"{sidecar_path(engine).name} lacks 'onnx'"


def test_failed_replacement_leaves_the_previous_engine_usable(tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    engine = _install(folder, ORIN, STRONG_FP16, b"engine bytes 1")
    (folder / "model.fp16.onnx").write_text("fp16 graph v2")
    assert why_stale(engine, ORIN, STRONG_FP16) is not None

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        _install(folder, ORIN, STRONG_FP16, b"engine bytes 2, half written")
    monkeypatch.undo()
    assert engine.read_bytes() == b"engine bytes 1"
    assert read_sidecar(engine)["engine_sha256"] == hashlib.sha256(b"engine bytes 1").hexdigest()
    (folder / "model.fp16.onnx").write_text("fp16 graph")
    assert why_stale(engine, ORIN, STRONG_FP16) is None  # the old pair is intact and still consistent
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # temporaries removed


KILLED_WRITER = """
import hashlib, os, sys, time
from pathlib import Path
from edge.tensorrt.build import BuildSpec, Target, engine_path, install_engine, make_sidecar, source_hashes
folder = Path(sys.argv[1])
spec = BuildSpec("fp16", "strongly-typed", "model.fp16.onnx", None, None, None, (1, 1, 16))
target = Target("10.3.0", "Orin", "8.7")
engine = engine_path(folder, target, "fp16")
payload = b"new engine " * 100000
sidecar = make_sidecar(engine, target, spec, source_hashes(folder, spec), hashlib.sha256(payload).hexdigest(), 1.0)
def stall(fd):  # the new engine's bytes are written but not yet renamed into place: a good moment to die
    print("writing", flush=True)
    time.sleep(60)
os.fsync = stall
install_engine(engine, payload, sidecar)
"""


def test_killed_replacement_leaves_the_previous_engine_usable(tmp_path):
    folder = _folder(tmp_path)
    engine = _install(folder, ORIN, STRONG_FP16, b"engine bytes 1")
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        leftovers = [p for p in folder.iterdir() if p.name.startswith(f".{engine.name}.")]
        assert leftovers and leftovers[0].stat().st_size > 0  # it was killed mid-replacement, not before
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert engine.read_bytes() == b"engine bytes 1"
    assert why_stale(engine, ORIN, STRONG_FP16) is None
    remove_stale(folder)  # what the next build does first
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
