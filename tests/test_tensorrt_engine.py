"""Engine files without TensorRT: names, sidecars, staleness decisions and crash-safe replacement (edge/engine.py).

The engine bytes here are placeholders written by the test, never presented as TensorRT output: these tests are
about which file is trusted, not about what is in it.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

from edge.tensorrt.build import (
    BuildSpec,
    Target,
    engine_path,
    install_engine,
    make_sidecar,
    read_sidecar,
    remove_leftovers,
    sidecar_path,
    source_hashes,
    timing_cache_path,
    why_stale,
)
from edge.tensorrt.version import IMPLICIT, STRONGLY_TYPED

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
    remove_leftovers(engine)  # what the next build does first
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
