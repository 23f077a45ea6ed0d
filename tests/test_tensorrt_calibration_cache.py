"""TensorRT's calibration cache (edge/tensorrt/calibration_cache.py): the format, the header stamped for a
TensorRT version, the checks before a build reads one, and the calibrator that only hands it over."""

from __future__ import annotations

import types

import numpy as np
import pytest

from edge.errors import EdgeError
from edge.folder import CALIBRATION_CACHE
from edge.tensorrt.calibration_cache import (
    cache_calibrator,
    cache_header,
    format_cache,
    hex_to_scale,
    parse_cache,
    read_calibration_cache,
    scale_to_hex,
    tensorrt_version_number,
)


def test_cache_format_matches_tensorrt():
    assert hex_to_scale("3c009976") == pytest.approx(0.997 / 127, rel=1e-3)  # the reference sheet's example
    assert scale_to_hex(hex_to_scale("3c009976")) == "3c009976"
    assert tensorrt_version_number("8.5.2") == 8502 and tensorrt_version_number("10.3.0") == 100300
    text = format_cache({"input": 1 / 127, "conv:0": 0.5}, tensorrt_version="10.3.0")
    assert text.splitlines()[0] == "TRT-100300-EntropyCalibration2"
    cache = parse_cache(text)
    assert cache.tensorrt_version == 100300 and cache.algorithm == "EntropyCalibration2"
    assert cache.scales == {"input": np.float32(1 / 127), "conv:0": 0.5}


@pytest.mark.parametrize("version", ["8.4.1", "9.0", "11.0.0"])
def test_cache_is_stamped_only_for_a_tensorrt_that_reads_one(version):
    with pytest.raises(EdgeError, match=f"TensorRT {version}: only TensorRT 8.5, 8.6 and 10.x read a calibration"):
        cache_header(version)
    assert cache_header("8.6.2") == "TRT-8602-EntropyCalibration2"


@pytest.mark.parametrize("text", ["", "input: 3c009976\n", "TRT-8502-EntropyCalibration2\ninput 3c009976\n",
                                  "TRT-8502-EntropyCalibration2\ninput: zz\n"])
def test_cache_parse_errors(text):
    with pytest.raises(EdgeError, match="calibration cache"):
        parse_cache(text)


def test_calibration_cache_is_read_when_it_matches(tmp_path):
    path = tmp_path / CALIBRATION_CACHE
    path.write_text("TRT-100300-EntropyCalibration2\nimage: 3c010204\nconv: 3d8f5c29\n")
    assert read_calibration_cache(path, "10.3.0") == path.read_bytes()


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
