"""Real TensorRT: build a small model folder's engines at each precision and hold them to ONNX Runtime.

These run wherever `import tensorrt`, polygraphy, pycuda and a GPU are there (a Jetson, a GPU workstation) and are
skipped elsewhere, each with its reason. The precision variants are made here on the CPU, the way a workstation
would: an FP16 copy of the graph, a Q/DQ INT8 graph from ONNX Runtime's quantizer, and a TensorRT calibration
cache of the same tensors' ranges for the implicit path. The last test checks those inputs with ONNX Runtime alone.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge import EdgeError
from edge.backends.onnxruntime import cpu_session
from edge.backends.tensorrt import CALIBRATION_CACHE, TensorRTBackend, build_engine, read_calibration_cache
from edge.engine import Target, read_sidecar, timing_cache_path
from edge.importer import import_model
from edge.model import Card
from edge.precision.cache import format_cache

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
