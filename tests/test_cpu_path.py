"""The CPU path: it never imports CUDA, TensorRT or jetson-stats (absent on most machines, and slow to load), and
its backend runs any batch a fixed-batch model can take."""

import subprocess
import sys

import numpy as np
import pytest

from edge import Model
from edge.errors import EdgeError
from edge.importer import import_model

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


def test_a_fixed_batch_model_runs_larger_batches_in_chunks_of_its_own(tmp_path):
    folder = import_model(tiny_classifier(tmp_path / "two.onnx", batch=2), name="two", repo=tmp_path / "engines")
    backend = Model.load(folder).backend
    batch = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    together = backend.run(batch)
    assert together.shape == (6, 4)
    np.testing.assert_allclose(together, np.concatenate([backend.run(batch[i:i + 2]) for i in (0, 2, 4)]),
                               rtol=1e-6)
    with pytest.raises(EdgeError, match="batch of 3 does not split into the model's batch 2"):
        backend.run(batch[:3])


def test_one_run_on_the_thread_pool_does_not_spin_and_several_runs_are_single_threaded(tmp_path):
    folder = import_model(tiny_classifier(tmp_path / "tiny.onnx"), name="tiny", repo=tmp_path / "engines")
    pool = Model.load(folder, runs=1).backend.session.get_session_options()
    assert pool.intra_op_num_threads == 0  # ONNX Runtime's default: a thread per core
    assert pool.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert pool.get_session_config_entry("session.disable_quant_qdq") == "1"  # Q/DQ as TensorRT computes it
    assert Model.load(folder, runs=2).backend.session.get_session_options().intra_op_num_threads == 1


XEON = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw " \
       "avx512_vnni avx_vnni\n"
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\nflags\t\t: fpu sse2 avx avx2 fma\n\n" \
       "processor\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\nflags\t\t: fpu sse2 avx avx2 fma\n"
ORIN = "processor\t: 0\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd evtstrm aes crc32 atomics fphp asimdhp asimddp\n"


@pytest.mark.parametrize("cpuinfo, name, flags, saturates", [
    (XEON, "Intel(R) Xeon(R) Processor", ["avx2", "avx512f", "avx512_vnni", "avx_vnni"], False),
    (EPYC, "AMD EPYC 7763 64-Core Processor", ["avx2"], True),
    (ORIN, None, ["asimddp"], False),
    ("", None, [], False),
])
def test_info_names_what_the_cpu_offers_int8_and_the_path_edge_takes(cpuinfo, name, flags, saturates):
    import platform

    from edge.info import cpu_int8_flags, int8_path

    assert cpu_int8_flags(cpuinfo) == (name or platform.machine(), flags)
    path = int8_path(flags)
    assert path.startswith("Q/DQ emulated in float32")  # on every CPU
    assert ("would saturate 16-bit sums" in path) == saturates
