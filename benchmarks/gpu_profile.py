"""The GPU data path's figures for docs/benchmarks.md (run by benchmarks/gpu_check.sh on a GPU machine).

    python3 benchmarks/gpu_profile.py --model model.onnx [--frames 300] [--json out.json] [--plot out.png]

Measures, for EfficientNet-Lite0 (224x224) fed 1920x1080 BGR frames, with the torch backend (PyTorch on CUDA;
TensorRT is not on the GPU test machine, and every figure says which executor produced it):

1. correctness: the fused kernel against the CPU reference on fresh random frames of several sizes (largest
   difference in pixel levels, every element written), and the three memory modes giving identical outputs;
2. copy bandwidth: host -> device and back for a 1080p frame from pageable and pinned memory;
3. the fused kernel against OpenCV on the CPU (resize + centre crop + cv2.dnn.blobFromImage) for one 1080p frame;
4. `edge profile` itself (the Loop of `edge run`) per memory mode: per-stage times, transfer share, fps;
5. throughput of the double-buffered GpuPipeline against compute alone (the engine on one stream, fixed input).

Times on the GPU are CUDA event times, medians over many runs after a warm-up; host times are perf_counter.
Random frames are made fresh for every check; nothing is timed on all-zero input.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edge.preprocess import Preprocess, preprocess

SPEC = Preprocess(size=(224, 224), resize="shorter", resize_size=256, color="rgb", mean=(127.0,) * 3, scale=1 / 128)
FULL_HD = (1080, 1920)


def median_event_ms(cuda, stream, action, runs: int, warmup: int = 10) -> float:
    """Median CUDA-event time of `action()` queued on `stream`, each run timed alone."""
    start, end, times = cuda.Event(), cuda.Event(), []
    for i in range(warmup + runs):
        start.record(stream)
        action()
        end.record(stream)
        end.synchronize()
        if i >= warmup:
            times.append(end.time_since(start))
    return statistics.median(times)


def median_host_ms(action, runs: int, warmup: int = 5) -> float:
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter_ns()
        action()
        if i >= warmup:
            times.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(times)


def random_frames(count: int, size=FULL_HD) -> np.ndarray:
    return np.random.default_rng().integers(0, 256, (count, *size, 3), dtype=np.uint8)


def check_kernel(cuda) -> dict:
    """Largest kernel - reference difference in pixel levels, over several sizes; NaN-filled outputs."""
    from edge.gpu.kernels import FusedPreprocess, output_shape

    worst, unwritten = 0.0, 0
    stream = cuda.Stream()
    for size in [FULL_HD, (720, 1280), (480, 640), (333, 517), (37, 100), (7, 9)]:
        frames = random_frames(2, size)
        out = np.full(output_shape(SPEC, 2), np.nan, np.float32)
        device_frames, device_out = cuda.to_device(frames), cuda.to_device(out)
        FusedPreprocess(SPEC).launch(int(device_frames), *size, 2, int(device_out), stream)
        stream.synchronize()
        got = cuda.from_device_like(device_out, out)
        unwritten += int(np.isnan(got).sum())
        expected = np.stack([preprocess(frame, SPEC) for frame in frames])
        worst = max(worst, float(np.nanmax(np.abs(got - expected))) * 128)  # in pixel levels (scale 1/128)
    return {"max_difference_levels": round(worst, 4), "unwritten_elements": unwritten, "within_one_level": worst <= 1}


def check_modes(engine, modes) -> float:
    """The same frames through the pipeline (kernel and model) in every mode: the largest difference between
    any mode's outputs and the first's (0.0: identical; tests/test_gpu.py checks the kernel's alone)."""
    from edge.gpu.pipeline import GpuPipeline

    frames = random_frames(3)
    outputs = []
    for mode in modes:
        pipeline = GpuPipeline(SPEC, engine, mode, max_batch=1, slots=2)
        got = []
        for frame in frames:
            pipeline.submit([frame])
            got.append(pipeline.collect()[0])
        outputs.append(np.stack(got))
    return max(float(np.abs(outputs[0] - other).max()) for other in outputs[1:])


def copy_bandwidth(cuda) -> dict:
    """Median times to move one 1080p BGR frame (6.2 MB) to the device and back, pageable and pinned."""
    from edge.gpu.buffers import DeviceBuffer, HostBuffer, download, upload

    stream = cuda.Stream()
    device = DeviceBuffer((*FULL_HD, 3), np.uint8)
    result = {}
    for mode in ("pageable", "pinned"):
        host = HostBuffer((*FULL_HD, 3), np.uint8, mode)
        host.array[:] = random_frames(1)[0]
        # median_event_ms calls the lambdas before the loop moves on to the next `host`
        up = median_event_ms(cuda, stream, lambda: upload(device, host, stream), runs=100)  # noqa: B023
        down = median_event_ms(cuda, stream, lambda: download(host, device, stream), runs=100)  # noqa: B023
        nbytes = host.array.nbytes
        result[mode] = {"h2d_ms": round(up, 4), "d2h_ms": round(down, 4),
                        "h2d_gb_s": round(nbytes / up / 1e6, 2), "d2h_gb_s": round(nbytes / down / 1e6, 2)}
    return result


def kernel_against_opencv(cuda) -> dict:
    """One 1080p frame -> the 224x224 input: the fused kernel (from device memory; and with a pinned upload)
    against OpenCV on the CPU: resize, centre crop, cv2.dnn.blobFromImage (swap to RGB, mean, scale, NCHW)."""
    from edge.gpu.buffers import DeviceBuffer, HostBuffer, upload
    from edge.gpu.kernels import FusedPreprocess, geometry, output_shape

    frame = random_frames(1)[0]
    g = geometry(SPEC, *FULL_HD)

    def opencv():
        resized = cv2.resize(frame, (g.resized_width, g.resized_height), interpolation=cv2.INTER_LINEAR)
        crop = resized[g.crop_top : g.crop_top + 224, g.crop_left : g.crop_left + 224]
        return cv2.dnn.blobFromImage(crop, scalefactor=1 / 128, mean=(127, 127, 127), swapRB=True)

    cpu_ms = median_host_ms(opencv, runs=100)
    reference_ms = median_host_ms(lambda: preprocess(frame, SPEC), runs=100)
    stream = cuda.Stream()
    host = HostBuffer((1, *FULL_HD, 3), np.uint8, "pinned")
    host.array[0] = frame
    device_frame = DeviceBuffer((1, *FULL_HD, 3), np.uint8)
    device_out = DeviceBuffer(output_shape(SPEC, 1), np.float32)
    kernel = FusedPreprocess(SPEC)
    upload(device_frame, host, stream)
    launch = lambda: kernel.launch(device_frame.pointer, *FULL_HD, 1, device_out.pointer, stream)  # noqa: E731
    kernel_ms = median_event_ms(cuda, stream, launch, runs=500, warmup=50)

    def upload_and_launch():
        upload(device_frame, host, stream)
        launch()

    with_upload_ms = median_event_ms(cuda, stream, upload_and_launch, runs=200, warmup=20)
    blob = opencv()
    got = np.empty(output_shape(SPEC, 1), np.float32)
    stream.synchronize()
    cuda.memcpy_dtoh(got, device_out.allocation)
    return {"opencv_cpu_ms": round(cpu_ms, 4), "opencv_threads": cv2.getNumThreads(),
            "edge_cpu_reference_ms": round(reference_ms, 4), "kernel_ms": round(kernel_ms, 4),
            "pinned_upload_and_kernel_ms": round(with_upload_ms, 4),
            "speedup_kernel": round(cpu_ms / kernel_ms, 1), "speedup_with_upload": round(cpu_ms / with_upload_ms, 1),
            "max_difference_to_opencv_levels": round(float(np.abs(got - blob).max()) * 128, 4)}


def overlap(cuda, engine, mode: str, frames: int) -> dict:
    """Frames per second: compute alone, the pipeline serial (one frame at a time), double-buffered."""
    from edge.gpu.buffers import DeviceBuffer
    from edge.gpu.kernels import output_shape
    from edge.gpu.pipeline import GpuPipeline

    stream = cuda.Stream()
    device_input = DeviceBuffer(output_shape(SPEC, 1), engine.input_dtype)
    cuda.memcpy_htod(device_input.allocation, np.random.default_rng().standard_normal(
        output_shape(SPEC, 1)).astype(engine.input_dtype))
    device_output = DeviceBuffer(engine.output_shape(1), np.float32)
    run = lambda: engine.run_device(device_input.pointer, device_output.pointer, 1, stream)  # noqa: E731
    for _ in range(20):
        run()
    stream.synchronize()
    start = time.perf_counter_ns()
    for _ in range(frames):
        run()
    stream.synchronize()
    compute_fps = frames / ((time.perf_counter_ns() - start) / 1e9)

    pool = random_frames(8)
    results = {"compute_only_fps": round(compute_fps, 1)}
    for slots, name in ((1, "serial_fps"), (2, "double_buffered_fps")):
        pipeline = GpuPipeline(SPEC, engine, mode, max_batch=1, slots=slots)
        for i in range(10):  # warm-up
            pipeline.submit([pool[i % 8]])
            pipeline.collect()
        start = time.perf_counter_ns()
        for i in range(frames):
            if len(pipeline.in_flight) == slots:
                pipeline.collect()
            pipeline.submit([pool[i % 8]])
        while pipeline.in_flight:
            pipeline.collect()
        results[name] = round(frames / ((time.perf_counter_ns() - start) / 1e9), 1)
    results["double_buffered_over_compute"] = round(results["double_buffered_fps"] / compute_fps, 3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="EfficientNet-Lite0 model.onnx")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()

    from edge.gpu import cuda_available

    usable, reason = cuda_available()
    if not usable:
        raise SystemExit(f"gpu_profile: needs CUDA and pycuda: {reason}")
    from edge.importer import PreprocessOptions, import_model
    from edge.model import Model
    from edge.profiler import format_report, plot, profile

    repo = Path(tempfile.mkdtemp()) / "engines"
    folder = import_model(args.model, name="efficientnet_lite0", repo=repo, options=PreprocessOptions(
        resize="shorter", resize_size=256, color="rgb", mean_values=(127.0, 127.0, 127.0), scale=1 / 128))
    model = Model.load(folder, backend="torch")  # loads PyTorch on CUDA first; pycuda joins its primary context
    engine = model.backend
    probe = np.stack([preprocess(frame, SPEC) for frame in random_frames(2)])
    agreement = float(np.abs(engine.run(probe) - Model.load(folder).backend.run(probe)).max())

    import pycuda.driver as cuda

    from edge.gpu.buffers import GpuContext

    with GpuContext() as gpu:
        modes = ["pageable", "pinned"] + (["mapped"] if gpu.facts.can_map_host_memory else [])
        figures = {"device": gpu.facts.to_dict(), "executor": engine.name,
                   "torch_vs_onnxruntime_max_abs_difference": round(agreement, 6),
                   "kernel_check": check_kernel(cuda), "modes_max_difference": check_modes(engine, modes),
                   "copies_1080p": copy_bandwidth(cuda), "preprocess_1080p": kernel_against_opencv(cuda),
                   "overlap": {mode: overlap(cuda, engine, mode, args.frames) for mode in modes}}
    result = profile(str(folder), frames=args.frames, warmup=30, memory=",".join(modes), backend="torch")
    figures["profile"] = result.to_dict()
    print(format_report(result))
    if args.plot:
        plot(result, args.plot)

    p, k, o = figures["profile"], figures["preprocess_1080p"], figures["overlap"]
    pinned = next(run for run in p["runs"] if run["memory"] == "pinned")
    print(f"\n== summary ({figures['device']['name']}, executor: {engine.name})")
    print(f"kernel vs CPU reference: max {figures['kernel_check']['max_difference_levels']} levels, "
          f"unwritten {figures['kernel_check']['unwritten_elements']}; largest output difference between memory modes "
          f"{figures['modes_max_difference']}; "
          f"torch vs onnxruntime max |diff| {figures['torch_vs_onnxruntime_max_abs_difference']}")
    for mode, c in figures["copies_1080p"].items():
        print(f"1080p frame copy {mode:8}: H2D {c['h2d_ms']:.3f} ms ({c['h2d_gb_s']} GB/s), "
              f"D2H {c['d2h_ms']:.3f} ms ({c['d2h_gb_s']} GB/s)")
    print(f"1080p -> 224 preprocessing: OpenCV CPU {k['opencv_cpu_ms']:.3f} ms ({k['opencv_threads']} threads), "
          f"kernel {k['kernel_ms']:.4f} ms ({k['speedup_kernel']}x), pinned upload + kernel "
          f"{k['pinned_upload_and_kernel_ms']:.3f} ms ({k['speedup_with_upload']}x)")
    print(f"transfer share, pinned, profile loop: {pinned['transfer_share']:.2%}")
    for mode, figures_mode in o.items():
        print(f"overlap {mode:8}: compute only {figures_mode['compute_only_fps']} fps, serial "
              f"{figures_mode['serial_fps']}, double-buffered {figures_mode['double_buffered_fps']} "
              f"({figures_mode['double_buffered_over_compute']:.1%} of compute only)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
