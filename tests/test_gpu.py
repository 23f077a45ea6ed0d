"""The GPU data path on a real GPU: the compiled kernel against the CPU reference, the three memory modes, the
double-buffered pipeline, and the profiler's GPU path. Marked `gpu`; each skips, with the reason, without pycuda
or a CUDA device (run them with benchmarks/gpu_check.sh on a GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.gpu import cuda_available
from edge.preprocess import Preprocess

from kernel_on_cpu import SPECS, compile_for_cpu, reference, run_kernel_on_cpu, tolerance

pytestmark = pytest.mark.gpu

FRAME_SIZES = [(1080, 1920), (480, 640), (37, 100), (7, 9), (224, 224), (1, 1)]
LITE0 = Preprocess(size=(224, 224), resize="shorter", resize_size=256, color="rgb", mean=(127.0,) * 3, scale=1 / 128)


@pytest.fixture(scope="module")
def gpu():
    usable, reason = cuda_available()
    if not usable:
        pytest.skip(f"needs CUDA and pycuda: {reason}")
    from edge.gpu.buffers import GpuContext

    with GpuContext() as context:
        yield context


@pytest.fixture(scope="module")
def kernel_on_cpu(tmp_path_factory):
    return compile_for_cpu(tmp_path_factory.mktemp("kernel"))


class IdentityEngine:
    """A device 'model' that copies its input to its output, so a pipeline's output is the kernel's output."""

    input_dtype = np.dtype(np.float32)

    def __init__(self, spec: Preprocess):
        self.elements = spec.channels * spec.size[0] * spec.size[1]

    def output_shape(self, batch: int) -> tuple[int, int]:
        return batch, self.elements

    def run_device(self, input_pointer: int, output_pointer: int, batch: int, stream) -> None:
        import pycuda.driver as cuda

        cuda.memcpy_dtod_async(output_pointer, input_pointer, batch * self.elements * 4, stream)


def run_kernel(frames: np.ndarray, spec: Preprocess, dtype) -> np.ndarray:
    """Upload frames, launch the kernel on a NaN-filled output, download it."""
    import pycuda.driver as cuda

    from edge.gpu.kernels import FusedPreprocess, output_shape

    shape = output_shape(spec, len(frames))
    out = np.full(shape, np.nan, dtype=dtype)
    device_frames, device_out = cuda.to_device(np.ascontiguousarray(frames)), cuda.to_device(out)
    stream = cuda.Stream()
    FusedPreprocess(spec, dtype).launch(int(device_frames), frames.shape[1], frames.shape[2], len(frames),
                                        int(device_out), stream)
    stream.synchronize()
    return cuda.from_device_like(device_out, out)


@pytest.mark.parametrize("name", [*SPECS, "lite0"])
@pytest.mark.parametrize("frame_size", FRAME_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_kernel_matches_the_cpu_reference_and_writes_every_element(gpu, kernel_on_cpu, name, frame_size, dtype):
    spec = LITE0 if name == "lite0" else SPECS[name]
    frames = np.random.default_rng().integers(0, 256, (2, *frame_size, 3), dtype=np.uint8)  # fresh every run
    got = run_kernel(frames, spec, dtype)
    assert not np.isnan(got.astype(np.float32)).any(), "an output element was not written"
    expected = reference(frames, spec)
    slack = np.abs(expected).max() * 2**-10 if dtype == np.float16 else 0.0  # float16 rounding
    assert np.abs(got.astype(np.float32) - expected).max() <= tolerance(spec) + slack
    on_cpu = run_kernel_on_cpu(kernel_on_cpu, frames, spec, dtype).astype(np.float32)  # the same source
    assert np.abs(got.astype(np.float32) - on_cpu).max() <= 1e-4 * max(1.0, np.abs(on_cpu).max())


def test_kernel_is_compiled_once_per_device(gpu):
    from edge.gpu.kernels import kernel_function

    assert kernel_function() is kernel_function()


@pytest.mark.parametrize("frame_size", [(1080, 1920), (61, 45)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_memory_modes_give_identical_results(gpu, frame_size):
    from edge.gpu.pipeline import GpuPipeline

    modes = ["pageable", "pinned"] + (["mapped"] if gpu.facts.can_map_host_memory else [])
    frames = np.random.default_rng().integers(0, 256, (3, *frame_size, 3), dtype=np.uint8)
    outputs = {}
    for mode in modes:
        pipeline = GpuPipeline(LITE0, IdentityEngine(LITE0), mode, max_batch=1, slots=2)
        results = []
        for frame in frames:
            pipeline.submit([frame])
            output, times = pipeline.collect()
            assert set(times) == {"upload", "preprocess", "compute", "download"}
            assert all(ms >= 0 for ms in times.values())
            results.append(output.reshape(3, 224, 224))
        outputs[mode] = np.stack(results)
    for mode in modes[1:]:
        assert np.array_equal(outputs[mode], outputs["pageable"]), mode
    assert np.abs(outputs["pageable"] - reference(frames, LITE0)).max() <= tolerance(LITE0)


@pytest.mark.parametrize("mode", ["pinned", "mapped", "pageable"])
def test_double_buffered_pipeline_returns_each_frame_in_order(gpu, mode):
    from edge.gpu.pipeline import GpuPipeline

    if mode == "mapped" and not gpu.facts.can_map_host_memory:
        pytest.skip("this device cannot map host memory")
    frames = np.random.default_rng().integers(0, 256, (7, 480, 640, 3), dtype=np.uint8)
    pipeline = GpuPipeline(LITE0, IdentityEngine(LITE0), mode, max_batch=1, slots=2)
    outputs = []
    pipeline.submit([frames[0]])
    for frame in frames[1:]:
        pipeline.submit([frame])  # frame N+1 is queued before frame N is collected
        outputs.append(pipeline.collect()[0])
    outputs.append(pipeline.collect()[0])
    expected = reference(frames, LITE0).reshape(len(frames), -1)
    assert np.abs(np.concatenate(outputs) - expected).max() <= tolerance(LITE0)
    pipeline.submit([frames[0]])
    pipeline.submit([frames[1]])
    with pytest.raises(RuntimeError):  # both slots in flight: a third frame must wait for collect()
        pipeline.submit([frames[2]])


SPIN_SOURCE = """
extern "C" __global__ void spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) {}
}
"""


class SlowIdentityEngine(IdentityEngine):
    """IdentityEngine behind a one-thread busy-wait of about `ms` on its stream: long enough to see what waits."""

    def __init__(self, spec: Preprocess, ms: float):
        import pycuda.driver as cuda
        from pycuda.compiler import SourceModule

        from edge.gpu.kernels import nvcc_path

        super().__init__(spec)
        self.module = SourceModule(SPIN_SOURCE, nvcc=nvcc_path(), no_extern_c=True)
        self.spin = self.module.get_function("spin")
        clock_khz = cuda.Context.get_device().get_attribute(cuda.device_attribute.CLOCK_RATE)
        self.cycles = np.int64(clock_khz * ms)

    def run_device(self, input_pointer: int, output_pointer: int, batch: int, stream) -> None:
        self.spin(self.cycles, block=(1, 1, 1), grid=(1, 1), stream=stream)
        super().run_device(input_pointer, output_pointer, batch, stream)


@pytest.mark.parametrize("mode", ["pinned", "mapped", "pageable"])
def test_collecting_frame_n_neither_waits_for_nor_times_frame_n_plus_1(gpu, mode):
    """Double buffering: frame N comes back while frame N+1's engine still runs (pinned, mapped), and no stage of
    frame N counts frame N+1's engine (pageable too, whose synchronous copies wait for every stream)."""
    from edge.gpu.pipeline import GpuPipeline

    if mode == "mapped" and not gpu.facts.can_map_host_memory:
        pytest.skip("this device cannot map host memory")
    engine_ms = 50.0
    frames = np.random.default_rng().integers(0, 256, (2, 480, 640, 3), dtype=np.uint8)
    pipeline = GpuPipeline(LITE0, SlowIdentityEngine(LITE0, engine_ms), mode, max_batch=1, slots=2)
    pipeline.submit([frames[0]])
    pipeline.collect()  # warm-up: the kernel's compile, the frame buffers
    pipeline.submit([frames[0]])
    pipeline.submit([frames[1]])
    first, times = pipeline.collect()
    if mode != "pageable":
        assert not pipeline.in_flight[0].events["compute_end"].query(), "collect() waited for the next frame"
    assert times["compute"] >= engine_ms / 2
    assert times["upload"] < engine_ms / 2 and times["download"] < engine_ms / 2, times
    second, times = pipeline.collect()
    assert times["upload"] < engine_ms / 2 and times["download"] < engine_ms / 2, times
    expected = reference(frames, LITE0).reshape(2, -1)
    assert np.abs(np.concatenate([first, second]) - expected).max() <= tolerance(LITE0)


@pytest.mark.parametrize("mode", ["pinned", "mapped"])
def test_the_loop_on_a_double_buffered_executor_returns_each_frame_of_a_file_in_order(gpu, mode):
    """`edge run`'s Loop with two batches in flight on real streams: frame N+1 is copied into the other slot's
    page-locked memory and uploaded while frame N's (slow) engine runs, and each frame still gets its own output."""
    import time
    from types import SimpleNamespace

    from edge.gpu.pipeline import GpuExecutor
    from edge.runtime.loop import Loop
    from edge.runtime.sources import Frame

    if mode == "mapped" and not gpu.facts.can_map_host_memory:
        pytest.skip("this device cannot map host memory")
    frames = np.random.default_rng().integers(0, 256, (7, 480, 640, 3), dtype=np.uint8)

    class Video:
        live, uri = False, "video.mp4"

        def __init__(self):
            self.images = iter(frames)

        def open(self):
            pass

        def read(self):
            image = next(self.images, None)
            return None if image is None else Frame(image, time.time())

        def close(self):
            pass

    model = SimpleNamespace(card=SimpleNamespace(batch=0, probabilities=True), preprocess=LITE0, folder="identity")
    executor = GpuExecutor(model, SlowIdentityEngine(LITE0, 20.0), mode, slots=2)
    assert executor.in_flight == 2
    outputs = []
    rows = SimpleNamespace(make=lambda frame, output: outputs.append(output.copy()), encode=lambda row: "")
    sink = SimpleNamespace(write=lambda line: None, flush=lambda: None, close=lambda: None)
    assert Loop(Video(), executor, rows, [sink]).run() == "end"
    expected = reference(frames, LITE0).reshape(len(frames), -1)
    assert np.abs(np.stack(outputs) - expected).max() <= tolerance(LITE0)


def test_batched_submit(gpu):
    from edge.gpu.pipeline import GpuPipeline

    frames = np.random.default_rng().integers(0, 256, (4, 300, 400, 3), dtype=np.uint8)
    pipeline = GpuPipeline(LITE0, IdentityEngine(LITE0), "pinned", max_batch=4, slots=2)
    pipeline.submit(list(frames))
    output, _ = pipeline.collect()
    assert output.shape == (4, 3 * 224 * 224)
    assert np.abs(output - reference(frames, LITE0).reshape(4, -1)).max() <= tolerance(LITE0)


@pytest.fixture(scope="module")
def torch_model_folder(tmp_path_factory, gpu):
    pytest.importorskip("torch", reason="needs PyTorch for the torch backend")
    pytest.importorskip("onnx2torch", reason="needs onnx2torch for the torch backend")
    from edge.importer import PreprocessOptions, import_model

    from tiny_models import tiny_classifier

    root = tmp_path_factory.mktemp("gpu")
    onnx_path = tiny_classifier(root / "tiny.onnx", classes=5, size=32)
    return import_model(onnx_path, name="tiny", repo=root / "engines", options=PreprocessOptions(
        resize="shorter", resize_size=36, color="rgb", mean_values=(127.0, 127.0, 127.0), scale=1 / 128))


def test_torch_backend_agrees_with_onnxruntime(torch_model_folder):
    from edge.model import Model

    batch = np.random.default_rng().standard_normal((3, 3, 32, 32)).astype(np.float32)
    on_gpu = Model.load(torch_model_folder, backend="torch").backend.run(batch)
    on_cpu = Model.load(torch_model_folder).backend.run(batch)
    assert np.allclose(on_gpu, on_cpu, atol=1e-3, rtol=1e-3)


def test_profile_gpu_path_with_the_torch_backend(torch_model_folder):
    from edge.profiler import profile

    result = profile(str(torch_model_folder), frames=20, warmup=3, memory="pageable,pinned,mapped", backend="torch",
                     telemetry=False)
    assert result.path == "gpu" and result.device["name"]
    assert [run.memory for run in result.runs] == ["pageable", "pinned", "mapped"]
    for run in result.runs:
        assert {"upload", "preprocess", "compute", "download"} <= set(run.stages)
        assert run.transfer_share is not None and 0 <= run.transfer_share < 1
    assert "memory" in result.recommendation


def test_edge_run_on_a_gpu_backend_takes_the_gpu_path_and_agrees_with_onnxruntime(gpu, tmp_path):
    pytest.importorskip("torch", reason="the GPU test machine's executor is PyTorch (--backend torch)")
    pytest.importorskip("onnx2torch", reason="--backend torch needs onnx2torch")
    import contextlib

    from edge import Model
    from edge.gpu.pipeline import GpuExecutor
    from edge.runtime.executors import make_executor

    from runtime_support import tiny_model_folder

    folder = tiny_model_folder(tmp_path, batch=1)
    frames = list(np.random.default_rng().integers(0, 256, (4, 48, 64, 3), dtype=np.uint8))
    cpu = Model.load(folder)
    with contextlib.ExitStack() as scope:
        executor = make_executor(Model.load(folder, backend="torch"), "torch", 1, scope)
        assert isinstance(executor, GpuExecutor)
        for frame in frames:
            got = executor.compute(executor.preprocess([frame]))[:1]
            expected = cpu.classify_batch([frame], top=1000)[0]
            want = np.zeros(len(expected), np.float32)
            for p in expected:
                want[p.class_id] = p.probability
            assert np.abs(got[0] - want).max() < 1e-3
