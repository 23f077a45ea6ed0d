"""The CPU path never imports CUDA, TensorRT or jetson-stats: they are absent on most machines, and slow to load."""

import subprocess
import sys

from tiny_models import tiny_classifier


def test_classify_on_the_cpu_imports_nothing_gpu_related(tmp_path):
    tiny_classifier(tmp_path / "tiny.onnx")
    script = f"""
import sys
import numpy as np
from edge.cli import main
assert main(["import", {str(tmp_path / 'tiny.onnx')!r}, "--repo", {str(tmp_path / 'engines')!r}]) == 0
from edge import Model
Model.load({str(tmp_path / 'engines' / 'tiny')!r}).classify(np.zeros((10, 10, 3), np.uint8))
loaded = [m for m in ("pycuda", "tensorrt", "jtop", "cupy", "torch") if m in sys.modules]
print("loaded:" + ",".join(loaded))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "loaded:"
