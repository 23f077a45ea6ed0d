"""edge export --triton, and edge run --backend triton://: every config.pbtxt parsed into Triton's own ModelConfig;
the Python-backend and ensemble models loaded by a real tritonserver on loopback (tests/triton_server.py), which
then serves `edge run` the same top-1 as the local run, batches four clients together, and is killed and
restarted under a running client without a frame lost."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from triton_server import TritonServer, free_port

from runtime_support import tiny_model_folder, write_video
from tiny_models import tiny_classifier

EDGE = [sys.executable, "-m", "edge.cli"]
RUN_S = 120  # the longest an `edge run` here may take


def edge(*args: str, timeout: float = RUN_S) -> subprocess.CompletedProcess:
    return subprocess.run(EDGE + list(args), capture_output=True, text=True, timeout=timeout)


def pb2():
    """Triton's model configuration messages, which tritonclient ships."""
    return pytest.importorskip("tritonclient.grpc.model_config_pb2",
                               reason="needs tritonclient (pip install -e '.[triton]')")


def model_config(folder: Path):
    """config.pbtxt parsed into Triton's own ModelConfig message."""
    from google.protobuf import text_format

    return text_format.Parse((folder / "config.pbtxt").read_text(), pb2().ModelConfig())


def fake_engine(folder: Path, stem: str, capability: str, precision: str, built_at: str) -> None:
    """An engine file and its sidecar as `edge build` leaves them (no TensorRT here: the bytes are not a plan)."""
    (folder / f"{stem}-{precision}.plan").write_bytes(b"not a plan")
    (folder / f"{stem}-{precision}.json").write_text(json.dumps(
        {"engine": f"{stem}-{precision}.plan", "compute_capability": capability, "precision": precision,
         "built_at": built_at}))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("tiny"))


def test_every_config_parses_into_triton_model_config_and_says_what_the_issue_asks(tiny, tmp_path):
    fake_engine(tiny, "orin-sm87-trt10.3.0", "8.7", "fp32", "2026-11-01T00:00:00+00:00")
    fake_engine(tiny, "a100-sm80-trt10.3.0", "8.0", "fp32", "2026-11-01T00:00:00+00:00")
    try:
        done = edge("export", str(tiny), "--triton", str(tmp_path / "repo"), "--max-batch", "16", "--instances", "2",
                    "--version", "3")
    finally:
        for engine in [*tiny.glob("*.plan"), *tiny.glob("*-fp32.json")]:
            engine.unlink()
    assert done.returncode == 0, done.stderr
    repo = tmp_path / "repo"
    assert sorted(p.name for p in repo.iterdir()) == ["tiny", "tiny_onnx", "tiny_plan", "tiny_preprocess",
                                                      "tiny_python"]
    configs = {folder.name: model_config(folder) for folder in repo.iterdir()}
    for name, config in configs.items():
        assert config.name == name and config.max_batch_size == 16
        assert (repo / name / "3").is_dir()
    onnx_model = configs["tiny_onnx"]
    assert onnx_model.platform == "onnxruntime_onnx" and (repo / "tiny_onnx/3/model.onnx").is_file()
    assert [(t.name, list(t.dims), t.data_type) for t in onnx_model.input] == \
        [("image", [3, 32, 32], pb2().TYPE_FP32)]
    assert [(t.name, list(t.dims), t.label_filename) for t in onnx_model.output] == [("logits", [10], "labels.txt")]
    assert (repo / "tiny_onnx/labels.txt").read_text().splitlines() == [f"class{i}" for i in range(10)]
    assert onnx_model.dynamic_batching.max_queue_delay_microseconds > 0
    assert [g.count for g in onnx_model.instance_group] == [2]
    plan = configs["tiny_plan"]
    assert plan.platform == "tensorrt_plan" and dict(plan.cc_model_filenames) == {
        "8.0": "a100-sm80-trt10.3.0-fp32.plan", "8.7": "orin-sm87-trt10.3.0-fp32.plan"}
    assert {p.name for p in (repo / "tiny_plan/3").iterdir()} == set(plan.cc_model_filenames.values())
    assert plan.instance_group[0].kind == pb2().ModelInstanceGroup.KIND_GPU
    python = configs["tiny_python"]
    assert python.backend == "python" and python.parameters["precision"].string_value == "fp32"
    assert {"model.py", "model.toml", "model.onnx", "labels.txt"} <= {p.name for p in
                                                                      (repo / "tiny_python/3").iterdir()}
    preprocess = configs["tiny_preprocess"]
    assert [(t.name, list(t.dims), t.data_type) for t in preprocess.input] == \
        [("frame", [-1, -1, 3], pb2().TYPE_UINT8)]
    ensemble = configs["tiny"]
    assert ensemble.platform == "ensemble" and not ensemble.HasField("dynamic_batching")
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["tiny_preprocess", "tiny_onnx"]
    assert steps[0].output_map["image"] == steps[1].input_map["image"]


def test_serve_with_chooses_the_ensembles_model_and_plan_needs_an_engine(tiny, tmp_path):
    assert edge("export", str(tiny), "--triton", str(tmp_path), "--serve-with", "python").returncode == 0
    assert model_config(tmp_path / "tiny").ensemble_scheduling.step[1].model_name == "tiny_python"
    assert not (tmp_path / "tiny_plan").exists()
    done = edge("export", str(tiny), "--triton", str(tmp_path), "--serve-with", "plan")
    assert done.returncode == 1 and "no fp32 engine to serve" in done.stderr and "Traceback" not in done.stderr


def test_a_plan_whose_profile_takes_smaller_batches_than_max_batch_is_refused(tiny, tmp_path):
    fake_engine(tiny, "orin-sm87-trt10.3.0", "8.7", "fp16", "2026-11-01T00:00:00+00:00")
    sidecar = tiny / "orin-sm87-trt10.3.0-fp16.json"
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "flags": {"batch_profile": [1, 4, 4]}}))
    (tiny / "model.fp16.onnx").write_bytes((tiny / "model.onnx").read_bytes())
    try:
        refused = edge("export", str(tiny), "--triton", str(tmp_path), "--precision", "fp16")
        done = edge("export", str(tiny), "--triton", str(tmp_path), "--precision", "fp16", "--max-batch", "4")
    finally:
        for name in ("orin-sm87-trt10.3.0-fp16.plan", "orin-sm87-trt10.3.0-fp16.json", "model.fp16.onnx"):
            (tiny / name).unlink()
    assert refused.returncode == 1 and "takes batches of up to 4 (its build profile)" in refused.stderr
    assert done.returncode == 0, done.stderr
    assert model_config(tmp_path / "tiny_plan").max_batch_size == 4


def test_a_fixed_batch_graph_is_served_with_max_batch_size_0_and_its_batch_in_the_dims(tmp_path):
    folder = tiny_model_folder(tmp_path / "fixed", batch=2)
    assert edge("export", str(folder), "--triton", str(tmp_path / "repo")).returncode == 0
    config = model_config(tmp_path / "repo/tiny_onnx")
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [2, 3, 32, 32]
    assert not config.HasField("dynamic_batching")
    assert list(model_config(tmp_path / "repo/tiny").input[0].dims) == [2, -1, -1, 3]


def test_a_new_version_keeps_the_old_one(tiny, tmp_path):
    for version in ("1", "2"):
        assert edge("export", str(tiny), "--triton", str(tmp_path), "--version", version).returncode == 0
    assert sorted(p.name for p in (tmp_path / "tiny_onnx").iterdir() if p.is_dir()) == ["1", "2"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_export_needs_a_destination_and_names_a_missing_variant(tiny, tmp_path):
    done = edge("export", str(tiny))
    assert done.returncode == 1 and "--triton REPO, --deepstream DIR" in done.stderr
    done = edge("export", str(tiny), "--triton", str(tmp_path), "--precision", "fp16")
    assert done.returncode == 1 and "model.fp16.onnx" in done.stderr and not list(tmp_path.iterdir())


@pytest.mark.parametrize("uri", ["triton://host/m", "triton://:8000/m", "triton://host:port/m", "triton://h:1/",
                                 "triton://h:1/a/b", "triton+http://h:1/m"])
def test_a_triton_uri_is_checked_before_anything_connects(uri):
    from edge.backends import check_backend
    from edge.errors import EdgeError

    with pytest.raises(EdgeError, match="triton://HOST:PORT/MODEL"):
        check_backend(uri)


def test_a_triton_uri_names_its_protocol_address_and_model():
    from edge.backends.triton import Endpoint

    assert Endpoint.parse("triton://10.0.0.2:8000/resnet") == Endpoint("http", "10.0.0.2:8000", "resnet")
    assert Endpoint.parse("triton+grpc://[::1]:8001/m_1") == Endpoint("grpc", "[::1]:8001", "m_1")


def test_padding_of_a_fixed_batch_is_dropped_from_what_comes_back():
    """A graph of fixed batch 4 sent 2 frames of one size and 1 of another: each request is padded to 4, and each
    frame gets its own row back, not a padding row."""
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from edge.backends.triton import TritonBackend

    backend = object.__new__(TritonBackend)
    backend.card, backend.raw_frames, backend.request_batch = SimpleNamespace(batch=4), True, 4
    backend.pool = ThreadPoolExecutor(1)
    backend._infer = lambda chunk: chunk[:, 0, 0, :1].astype(np.float32)  # a frame's first byte is its row
    frames = [np.full((2, 2, 3), value, np.uint8) for value in (7, 8)] + [np.full((3, 3, 3), 9, np.uint8)]
    try:
        assert backend.receive(backend.send(frames)).ravel().tolist() == [7, 8, 9]
        assert backend.receive(backend.send(frames[:2])).ravel().tolist() == [7, 8]
    finally:
        backend.pool.shutdown()


# --- DeepStream -----------------------------------------------------------------------------------------------

# Gst-nvinfer's [property] keys, from the "Gst-nvinfer Property Group Supported Keys" table of NVIDIA's plugin
# manual (docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html, DeepStream 6.x-7.x) and
# the CONFIG_GROUP_INFER_* keys of sources/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.h.
NVINFER_KEYS = {
    "num-detected-classes", "net-scale-factor", "model-file", "proto-file", "int8-calib-file", "batch-size",
    "model-engine-file", "uff-file", "onnx-file", "enable-dbscan", "labelfile-path", "mean-file", "gie-unique-id",
    "operate-on-gie-id", "operate-on-class-ids", "interval", "input-object-min-width", "input-object-min-height",
    "input-object-max-width", "input-object-max-height", "uff-input-dims", "uff-input-order", "uff-input-blob-name",
    "network-mode", "offsets", "output-blob-names", "output-tensor-meta", "parse-bbox-func-name", "custom-lib-path",
    "model-color-format", "classifier-async-mode", "process-mode", "classifier-threshold",
    "secondary-reinfer-interval", "output-instance-mask", "enable-dla", "use-dla-core", "network-type",
    "maintain-aspect-ratio", "symmetric-padding", "parse-classifier-func-name", "custom-network-config",
    "tlt-encoded-model", "tlt-model-key", "segmentation-threshold", "segmentation-output-order", "workspace-size",
    "force-implicit-batch-dim", "infer-dims", "engine-create-func-name", "cluster-mode", "filter-out-class-ids",
    "scaling-filter", "scaling-compute-hw", "output-io-formats", "layer-device-precision", "network-input-order",
    "gpu-id", "is-classifier", "classifier-type", "crop-objects-to-roi-boundary", "disable-output-host-copy",
    "dump-input-tensor", "dump-output-tensor",
}


def read_nvinfer(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "[property]"
    return dict(line.split("=", 1) for line in lines[1:])


def test_the_deepstream_config_uses_only_nvinfers_keys_with_values_nvinfer_reads(tmp_path):
    onnx_path = tiny_classifier(tmp_path / "net.onnx", classes=3, size=16, softmax=True)
    labels = tmp_path / "labels.txt"
    labels.write_text("n01440764 tench, Tinca tinca\ngold;fish\ncat\n")
    assert edge("import", str(onnx_path), "--name", "net", "--repo", str(tmp_path / "engines"), "--labels",
                str(labels), "--resize", "stretch", "--color", "bgr", "--mean-values", "104,117,123",
                "--std", "58,58,58").returncode == 0
    done = edge("export", "net", "--repo", str(tmp_path / "engines"), "--deepstream", str(tmp_path / "ds"),
                "--max-batch", "4")
    assert done.returncode == 0, done.stderr
    config = tmp_path / "ds/net/config_infer_net.txt"
    assert done.stdout.split() == [str(config)]
    properties = read_nvinfer(config)
    assert set(properties) <= NVINFER_KEYS, set(properties) - NVINFER_KEYS
    assert {"onnx-file", "model-engine-file", "labelfile-path", "network-type", "network-mode", "model-color-format",
            "net-scale-factor", "offsets", "infer-dims", "batch-size", "classifier-threshold"} <= set(properties)
    assert properties["network-type"] == "1" and properties["network-mode"] == "0"
    assert properties["model-color-format"] == "1" and properties["infer-dims"] == "3;16;16"
    assert [float(v) for v in properties["offsets"].split(";")] == [104, 117, 123]
    assert float(properties["net-scale-factor"]) == pytest.approx(1 / 58)
    assert properties["batch-size"] == "4" and 0 <= float(properties["classifier-threshold"]) <= 1
    assert properties["model-engine-file"] == "model.onnx_b4_gpu0_fp32.engine"  # nvinfer's own name for its build
    for key in ("onnx-file", "labelfile-path"):
        assert (config.parent / properties[key]).is_file()
    # a classifier's labels: one line, ';' between them, the WordNet id dropped, a ';' inside a label replaced
    assert (config.parent / properties["labelfile-path"]).read_text() == "tench, Tinca tinca;gold,fish;cat\n"
    assert "';' separates nvinfer's labels" in done.stderr and "std" not in done.stderr  # equal std: exact


def test_what_nvinfer_cannot_express_is_a_warning_saying_what_it_does_instead(tiny, tmp_path):
    (tiny / "calibration.cache").write_text("TRT-10030-EntropyCalibration2\n")
    try:
        done = edge("export", str(tiny), "--deepstream", str(tmp_path), "--precision", "int8")
    finally:
        (tiny / "calibration.cache").unlink()
    assert done.returncode == 0, done.stderr
    properties = read_nvinfer(tmp_path / "tiny/config_infer_tiny.txt")
    assert properties["network-mode"] == "1" and properties["int8-calib-file"] == "calibration.cache"
    assert (tmp_path / "tiny/calibration.cache").is_file()
    assert "logits" in done.stderr  # the tiny model outputs logits, not probabilities

    onnx_path = tiny_classifier(tmp_path / "rgb.onnx", classes=3, size=16, softmax=True)
    assert edge("import", str(onnx_path), "--name", "rgb", "--repo", str(tmp_path / "engines"), "--resize",
                "shorter", "--color", "rgb", "--std", "50,60,70").returncode == 0
    done = edge("export", "rgb", "--repo", str(tmp_path / "engines"), "--deepstream", str(tmp_path))
    assert "per-channel std (50, 60, 70)" in done.stderr and "using 1/60, up to 16.7% off" in done.stderr
    assert "without cropping" in done.stderr
    properties = read_nvinfer(tmp_path / "rgb/config_infer_rgb.txt")
    assert properties["model-color-format"] == "0" and float(properties["net-scale-factor"]) == pytest.approx(1 / 60)


def test_an_nhwc_model_gets_its_infer_dims_in_its_own_order(tmp_path):
    onnx_path = tiny_classifier(tmp_path / "nhwc.onnx", classes=3, size=16, softmax=True, nhwc=True)
    assert edge("import", str(onnx_path), "--name", "nhwc", "--repo", str(tmp_path / "engines"), "--layout", "nhwc",
                "--resize", "stretch").returncode == 0
    assert edge("export", "nhwc", "--repo", str(tmp_path / "engines"), "--deepstream", str(tmp_path)).returncode == 0
    properties = read_nvinfer(tmp_path / "nhwc/config_infer_nhwc.txt")
    assert properties["infer-dims"] == "16;16;3" and properties["network-input-order"] == "1"


# --- a real server ---------------------------------------------------------------------------------------------

def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return {line.split()[0]: float(line.split()[1]) for line in response.read().decode().splitlines()
                if line and not line.startswith("#") and "{" not in line}


def run_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def repo(tiny, tmp_path_factory) -> Path:
    """The tiny model exported with --serve-with python: nvidia-pytriton has no ONNX Runtime backend, so the
    ensemble runs the model folder in the Python backend."""
    repo = tmp_path_factory.mktemp("triton_repo")
    assert edge("export", str(tiny), "--triton", str(repo), "--serve-with", "python", "--max-batch", "8")\
        .returncode == 0
    return repo


@pytest.fixture(scope="module")
def served(repo, tmp_path_factory):
    with TritonServer(repo, tmp_path_factory.mktemp("triton_server"), ["tiny", "tiny_python"]) as server:
        yield server


@pytest.mark.parametrize("scheme", ["triton", "triton+grpc"])
def test_edge_run_through_triton_gives_the_local_top_1_for_every_frame(tiny, served, tmp_path, scheme):
    video = write_video(tmp_path / "clip.avi", 60)
    local = edge("run", str(tiny), "--input", str(video), "--top", "3", "--batch", "4")
    assert local.returncode == 0, local.stderr
    address = served.http if scheme == "triton" else served.grpc
    for model in ("tiny", "tiny_python"):  # frames to the ensemble; to the model alone, preprocessed here
        remote = edge("run", str(tiny), "--input", str(video), "--top", "3", "--batch", "4", "--backend",
                      f"{scheme}://{address}/{model}")
        assert remote.returncode == 0, remote.stderr
        expected = [json.loads(line) for line in local.stdout.splitlines()]
        got = [json.loads(line) for line in remote.stdout.splitlines()]
        assert [r["frame"] for r in got] == list(range(60))
        assert [r["top"][0]["class_id"] for r in got] == [r["top"][0]["class_id"] for r in expected]
        assert np.allclose([[p["probability"] for p in r["top"]] for r in got],
                           [[p["probability"] for p in r["top"]] for r in expected], atol=1e-5)


def test_edge_classify_through_triton_gives_the_local_labels(tiny, served, tmp_path):
    import cv2

    images = []
    for i in range(3):
        images.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(images[-1], np.random.default_rng(i).integers(0, 255, (40 + i, 50, 3), dtype=np.uint8))
    local = edge("classify", str(tiny), *images, "--json")
    remote = edge("classify", str(tiny), *images, "--json", "--backend", f"triton+grpc://{served.grpc}/tiny_python")
    assert remote.returncode == 0, remote.stderr
    labels = [[p["class_id"] for p in r["top"]] for r in json.loads(local.stdout)["results"]]
    assert [[p["class_id"] for p in r["top"]] for r in json.loads(remote.stdout)["results"]] == labels
    done = edge("classify", str(tiny), *images, "--backend", f"triton://{served.http}/tiny")  # frames in: run's
    assert done.returncode == 1 and "takes camera frames" in done.stderr


def test_edge_profile_through_triton_splits_the_round_trip_into_server_and_network(tiny, served):
    done = edge("profile", str(tiny), "--backend", f"triton://{served.http}/tiny_python", "--frames", "20",
                "--warmup", "5", "--json")
    assert done.returncode == 0, done.stderr
    note = json.loads(done.stdout)["note"]
    found = re.search(r"Triton: (\d+) requests, ([\d.]+) ms a round trip: server ([\d.]+) ms .* network and client "
                      r"(-?[\d.]+) ms", note)
    assert found, note
    requests, round_trip, server, rest = int(found[1]), *map(float, found.groups()[1:])
    assert requests >= 40 and 0 < server <= round_trip  # serial and overlapped runs, 25 frames each
    assert rest == pytest.approx(round_trip - server, abs=0.02)


def test_a_wrong_triton_backend_is_one_line(tiny, served):
    for backend, message in ((f"triton://{served.http}/nothing", "nothing"),
                             ("triton://127.0.0.1/tiny", "expected triton://HOST:PORT/MODEL")):
        done = edge("run", str(tiny), "--input", "test://", "--backend", backend, timeout=60)
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr


def test_four_clients_are_batched_together_by_the_server(tiny, repo, tmp_path):
    client = pytest.importorskip("tritonclient.http", reason="needs tritonclient (pip install -e '.[triton]')")

    served = TritonServer(repo, tmp_path / "server", ["tiny"]).start()  # its statistics this test's alone
    video = write_video(tmp_path / "clip.avi", 150)
    clients = [subprocess.Popen(EDGE + ["run", str(tiny), "--input", str(video), "--output",
                                        str(tmp_path / f"{i}.jsonl"), "--backend", f"triton://{served.http}/tiny"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    try:
        for process in clients:
            _, stderr = process.communicate(timeout=RUN_S)
            assert process.returncode == 0, stderr
        stats = client.InferenceServerClient(served.http).get_inference_statistics("tiny_python")
    finally:
        for process in clients:
            process.kill()
        served.stop()
    assert all(len(run_lines(tmp_path / f"{i}.jsonl")) == 150 for i in range(4))
    sizes = {batch["batch_size"]: batch["compute_infer"]["count"] for batch in stats["model_stats"][0]["batch_stats"]}
    assert max(sizes) > 1, sizes  # Triton's dynamic batcher put requests of several clients in one execution


def test_a_server_killed_and_restarted_mid_run_loses_no_frame_of_a_file(tiny, repo, tmp_path):
    server = TritonServer(repo, tmp_path / "server", ["tiny"]).start()
    video = write_video(tmp_path / "clip.avi", 400)
    output = tmp_path / "out.jsonl"
    port = free_port()
    client = subprocess.Popen(EDGE + ["run", str(tiny), "--input", str(video), "--output", str(output), "--backend",
                                      f"triton+grpc://{server.grpc}/tiny", "--http", str(port), "--loop"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + RUN_S
        while len(run_lines(output)) < 20 and time.monotonic() < deadline and client.poll() is None:
            time.sleep(0.02)
        server.stop(signal.SIGKILL)  # mid-run: no goodbye to the client
        assert client.poll() is None, "the client finished before the server was killed; make the video longer"
        time.sleep(1.0)
        threading.Thread(target=server.start, daemon=True).start()
        while len(run_lines(output)) < 400 and time.monotonic() < deadline and client.poll() is None:
            time.sleep(0.05)
        remote = metrics(port)
        client.send_signal(signal.SIGTERM)
        _, stderr = client.communicate(timeout=RUN_S)
    finally:
        client.kill()
        server.stop()
    assert client.returncode == 0, stderr
    assert [r["frame"] for r in run_lines(output)][:400] == list(range(400))
    assert "sending again" in stderr and "Traceback" not in stderr
    assert remote["edge_remote_errors_total"] >= 1 and remote["edge_remote_round_trip_seconds_count"] >= 100


@pytest.mark.shared
def test_the_readme_model_through_triton_has_the_local_top_1_for_every_frame(shared, tmp_path):
    """The issue's acceptance on EfficientNet-Lite0, imported as the README does: a video of ImageNet photographs,
    the ensemble served by a real tritonserver, every frame's top-1 the local run's."""
    import cv2

    assert edge("import", str(shared / "models/efficientnet_lite0/model.onnx"), "--repo", str(tmp_path / "engines"),
                "--resize", "shorter:256", "--color", "rgb", "--mean-values", "127,127,127", "--std", "128,128,128",
                "--labels", str(shared / "data/synset_words.txt")).returncode == 0
    folder = str(tmp_path / "engines/efficientnet_lite0")
    assert edge("export", folder, "--triton", str(tmp_path / "repo"), "--serve-with", "python").returncode == 0
    video = tmp_path / "photos.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    for image in sorted((shared / "data/imagenet-sample").glob("*.jpg"))[:40]:
        writer.write(cv2.resize(cv2.imread(str(image)), (640, 480)))
    writer.release()
    local = edge("run", folder, "--input", str(video))
    assert local.returncode == 0, local.stderr
    with TritonServer(tmp_path / "repo", tmp_path / "server", ["efficientnet_lite0"]) as server:
        remote = edge("run", folder, "--input", str(video), "--backend",
                      f"triton+grpc://{server.grpc}/efficientnet_lite0")
    assert remote.returncode == 0, remote.stderr
    expected = [json.loads(line)["top"][0]["class_id"] for line in local.stdout.splitlines()]
    assert len(expected) == 40
    assert [json.loads(line)["top"][0]["class_id"] for line in remote.stdout.splitlines()] == expected
