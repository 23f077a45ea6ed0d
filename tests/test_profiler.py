"""The profiler on the CPU: statistics, the recommendation, the report, the JSON schema, the plot, and the host
path end to end through the same Loop `edge run` uses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge import telemetry
from edge.cli import main
from edge.errors import EdgeError
from edge.profiler import (
    SCHEMA,
    GatedSource,
    Profile,
    RunProfile,
    StageStats,
    format_report,
    profile,
    recommend,
    stage_stats,
)

from tiny_models import tiny_classifier


def stats(mean: float, n: int = 10) -> StageStats:
    return StageStats(mean, mean, mean, mean, mean, n)


def gpu_profile(integrated: bool, runs: list[RunProfile]) -> Profile:
    device = {"name": "test device", "compute_capability": "8.7", "integrated": integrated,
              "can_map_host_memory": True, "total_memory_mib": 8192}
    result = Profile("m", "test://", (1080, 1920), "tensorrt", 1, 10, 2, "gpu", "CUDA", runs, device)
    result.recommendation = recommend(result)
    return result


def gpu_run(memory: str, upload: float, download: float, fps: float, compute: float = 5.0) -> RunProfile:
    stages = {"capture": stats(1.0), "upload": stats(upload), "preprocess": stats(0.2), "compute": stats(compute),
              "download": stats(download), "postprocess": stats(0.1), "sink": stats(0.05)}
    frame_ms = sum(s.mean_ms for s in stages.values())
    return RunProfile(memory, stages, span_ms=frame_ms * 10 * 1.02, wall_ms=frame_ms * 10 * 1.1, frames=10,
                      fps_overlapped=fps)


# --- statistics ----------------------------------------------------------------------------------------------

def test_stage_stats_are_numpy_mean_and_percentiles():
    samples = np.random.default_rng(0).gamma(2.0, 3.0, 501)
    s = stage_stats(samples)
    assert s.n == 501
    assert s.mean_ms == pytest.approx(samples.mean())
    assert (s.p50_ms, s.p90_ms, s.p99_ms) == pytest.approx(tuple(np.percentile(samples, [50, 90, 99])))
    assert s.p50_ms <= s.p90_ms <= s.p99_ms


def test_stage_stats_of_known_values():
    s = stage_stats(list(range(1, 101)))  # 1..100
    assert (s.mean_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms) == pytest.approx((50.5, 50.5, 90.1, 99.01, 100.0))
    with pytest.raises(ValueError):
        stage_stats([])


def test_run_profile_derived_figures():
    run = gpu_run("pinned", upload=0.5, download=0.25, fps=200.0)
    assert run.frame_ms == pytest.approx(1.0 + 0.5 + 0.2 + 5.0 + 0.25 + 0.1 + 0.05)
    assert run.transfer_share == pytest.approx(0.75 / run.frame_ms)
    assert run.stage_sum_ms == pytest.approx(run.frame_ms * 10)
    assert run.coverage == pytest.approx(1 / 1.02)
    assert run.fps_serial == pytest.approx(10 / (run.frame_ms * 10 * 1.1 / 1000))
    assert run.fps_serial == pytest.approx(10 / (run.wall_ms / 1000))
    host = RunProfile("host", {"capture": stats(1.0), "compute": stats(4.0)}, 50.0, 55.0, 10, 210.0)
    assert host.transfer_share is None


# --- the recommendation -----------------------------------------------------------------------------------------

def test_recommends_the_fastest_mode_and_says_when_it_is_not_the_default():
    result = gpu_profile(False, [gpu_run("pageable", 4.0, 1.0, 100.0), gpu_run("pinned", 0.3, 0.1, 170.0),
                                 gpu_run("mapped", 0.0, 0.0, 160.0)])
    assert result.recommendation.startswith("use pinned memory on this discrete GPU")
    assert "edge picks" not in result.recommendation  # pinned is the discrete default
    result = gpu_profile(True, [gpu_run("pinned", 0.3, 0.1, 170.0), gpu_run("mapped", 0.0, 0.0, 160.0)])
    assert "use pinned memory on this integrated GPU" in result.recommendation
    assert "edge picks mapped by default on integrated GPUs; here pinned was faster" in result.recommendation


def test_recommendation_flags_transfers_over_five_percent_and_the_dominant_stage():
    result = gpu_profile(True, [gpu_run("pageable", 6.0, 2.0, 90.0, compute=3.0)])
    assert "transfers exceed 5% of the frame" in result.recommendation
    assert "upload takes" in result.recommendation
    result = gpu_profile(True, [gpu_run("mapped", 0.0, 0.0, 180.0)])
    assert "transfers exceed" not in result.recommendation
    assert "compute takes" in result.recommendation and "TensorRT engine" in result.recommendation


@pytest.mark.parametrize("stage", ["capture", "queue", "preprocess", "compute", "postprocess", "sink"])
def test_there_is_advice_for_every_host_stage(stage):
    stages = {name: stats(9.0 if name == stage else 1.0) for name in
              ("capture", "queue", "preprocess", "compute", "postprocess", "sink")}
    result = Profile("m", "test://", (1080, 1920), "onnxruntime", 2, 10, 2, "host", "no CUDA",
                     [RunProfile("host", stages, 140.0, 150.0, 10, 80.0)])
    assert f"; {stage} takes 64% of a frame: " in recommend(result)


def test_host_recommendation_points_at_the_largest_stage():
    run = RunProfile("host", {"capture": stats(1.0), "preprocess": stats(9.0), "compute": stats(4.0)}, 140.0, 150.0,
                     10, 80.0)
    result = Profile("m", "test://", (1080, 1920), "onnxruntime", 2, 10, 2, "host", "no CUDA", [run])
    text = recommend(result)
    assert text.startswith("host figures only")
    assert "preprocess takes 64% of a frame" in text and "fused GPU kernel" in text


# --- report, JSON, plot -------------------------------------------------------------------------------------------

def test_report_lists_every_stage_of_every_mode():
    result = gpu_profile(True, [gpu_run("pinned", 0.3, 0.1, 170.0), gpu_run("mapped", 0.0, 0.0, 160.0)])
    text = format_report(result)
    assert "test device (sm 8.7, integrated, can map host memory: yes)" in text
    for memory in ("pinned", "mapped"):
        assert any(line.startswith(memory) for line in text.splitlines())
    rows = [line.split() for line in text.splitlines()]
    for stage in ("capture", "upload", "preprocess", "compute", "download", "postprocess", "sink"):
        assert sum(1 for row in rows if stage in row[:2] and len(row) in (6, 7)) == 2, stage
    assert "recommendation: use pinned memory" in text
    assert "telemetry: none" in text


def check_profile_json(doc: dict) -> None:
    """The documented schema, edge.profile/1 (see edge/profiler.py)."""
    assert doc["schema"] == SCHEMA
    assert set(doc) == {"schema", "model", "input", "frame", "backend", "workers", "frames", "warmup", "path", "note",
                        "device", "runs", "recommendation", "telemetry", "telemetry_note"}
    assert isinstance(doc["workers"], int) and doc["workers"] >= 1
    assert doc["path"] in ("host", "gpu") and isinstance(doc["recommendation"], str) and doc["recommendation"]
    assert len(doc["frame"]) == 2 and all(isinstance(v, int) for v in doc["frame"])
    assert doc["runs"]
    for run in doc["runs"]:
        assert set(run) == {"memory", "stages", "stage_sum_ms", "span_ms", "wall_ms", "coverage", "transfer_share",
                            "fps"}
        assert run["span_ms"] <= run["wall_ms"]
        assert run["memory"] in ("host", "pageable", "pinned", "mapped")
        assert set(run["fps"]) == {"serial", "overlapped"}
        for s in run["stages"].values():
            assert set(s) == {"mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "n"}
            assert s["n"] == doc["frames"] and s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
        assert run["transfer_share"] is None or 0 <= run["transfer_share"] <= 1


def test_json_follows_the_schema():
    result = gpu_profile(False, [gpu_run("pinned", 0.3, 0.1, 170.0)])
    doc = json.loads(json.dumps(result.to_dict()))
    check_profile_json(doc)
    assert doc["device"]["integrated"] is False


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (pip install 'edge[plot]')")
    from edge.profiler import plot

    path = tmp_path / "profile.png"
    plot(gpu_profile(True, [gpu_run("pinned", 0.3, 0.1, 170.0), gpu_run("mapped", 0.0, 0.0, 160.0)]), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(EdgeError, match="profile.png/x.png: cannot write the plot"):
        plot(gpu_profile(True, [gpu_run("pinned", 0.3, 0.1, 170.0)]), path / "x.png")  # a file, not a folder


# --- telemetry ------------------------------------------------------------------------------------------------

def test_telemetry_summary_of_samples():
    samples = [{"power_mw": 5000, "gpu_load_percent": 40.0, "temperatures_c": {"gpu": 50.0, "cpu": 45.0}},
               {"power_mw": 7000, "gpu_load_percent": 60.0, "temperatures_c": {"gpu": 53.5}}]
    assert telemetry.summarize(samples) == {"samples": 2, "power_mean_w": 6.0, "gpu_load_mean_percent": 50.0,
                                            "temperature_max_c": {"cpu": 45.0, "gpu": 53.5}}


def test_telemetry_records_the_clock_settings_and_the_report_flags_unlocked_clocks():
    class Mode:
        name = "15W"

    class Jtop:  # jetson-stats 4.x: jetson_clocks is truthy while running, nvpmodel has the mode's name
        power = {"tot": {"power": 6000}}
        gpu = {"gpu": {"status": {"load": 50.0}}}
        temperature = {"gpu": {"temp": 50.0, "online": True}}
        jetson_clocks = False
        nvpmodel = Mode()

    off = telemetry.read_sample(Jtop())
    assert (off["jetson_clocks"], off["nvpmodel"]) == (False, "15W")
    summary = telemetry.summarize([off, dict(off, jetson_clocks=True), dict(off, jetson_clocks=True)])
    assert (summary["jetson_clocks"], summary["nvpmodel"]) == ("off then on", "15W")
    result = gpu_profile(True, [gpu_run("pinned", 0.3, 0.1, 170.0)])
    result.telemetry = summary
    assert "sudo jetson_clocks" in format_report(result)
    result.telemetry = telemetry.summarize([dict(off, jetson_clocks=True)])
    assert "jetson_clocks on, nvpmodel 15W" in format_report(result) and "sudo" not in format_report(result)


def test_telemetry_names_every_change_of_the_clock_settings_in_order():
    samples = [{"jetson_clocks": on, "nvpmodel": mode} for on, mode in
               ((True, "MAXN"), (False, "MAXN"), (False, "15W"), (True, "MAXN"))]
    summary = telemetry.summarize(samples)
    assert (summary["jetson_clocks"], summary["nvpmodel"]) == ("on then off then on", "MAXN then 15W then MAXN")


def test_telemetry_without_jetson_stats_is_none_with_a_reason():
    try:
        import jtop  # noqa: F401
        pytest.skip("jetson-stats is installed here")
    except ImportError:
        pass
    usable, reason = telemetry.availability()
    assert not usable and "jetson-stats is not installed" in reason
    sampler = telemetry.Sampler()
    sampler.start()
    assert sampler.stop() == (None, reason)


# --- the host path end to end ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    from edge.importer import PreprocessOptions, import_model

    root = tmp_path_factory.mktemp("profile")
    onnx_path = tiny_classifier(root / "tiny.onnx", classes=5, size=32)
    return import_model(onnx_path, name="tiny", repo=root / "engines", options=PreprocessOptions(
        resize="shorter", resize_size=36, color="rgb", mean_values=(127.0, 127.0, 127.0), scale=1 / 128))


def test_host_profile_end_to_end_stage_times_add_up_to_the_wall_time(model_folder):
    result = profile(str(model_folder), frames=40, warmup=5, telemetry=False)
    assert result.path == "host" and result.device is None
    (run,) = result.runs
    assert run.memory == "host"
    assert list(run.stages) == ["capture", "queue", "preprocess", "compute", "postprocess", "sink"]
    assert all(s.n == 40 for s in run.stages.values())
    assert result.frame == (1080, 1920)  # test:// is profiled at 1080p
    assert abs(run.stage_sum_ms - run.span_ms) <= 0.05 * run.span_ms, (run.stage_sum_ms, run.span_ms)
    assert run.span_ms <= run.wall_ms
    assert run.fps_serial > 0 and run.fps_overlapped > 0
    check_profile_json(json.loads(json.dumps(result.to_dict())))


def test_the_host_path_loads_and_runs_the_model_as_edge_run_does(model_folder, monkeypatch):
    from edge import profiler
    from edge.runtime import executors, loop

    made = []

    class Recorded(executors.CpuExecutor):
        def __init__(self, model, workers=1):
            super().__init__(model, workers)
            made.append((workers, model.backend.session.get_session_options().intra_op_num_threads))

    loops = []

    class RecordedLoop(loop.Loop):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loops.append(self.workers)

    monkeypatch.setattr(executors, "CpuExecutor", Recorded)
    monkeypatch.setattr(profiler, "Loop", RecordedLoop)
    monkeypatch.setattr("edge.backends.parallel_runs", lambda backend: 3)  # as if on 3 cores
    result = profile(str(model_folder), frames=4, warmup=1, telemetry=False)
    assert made == [(3, 1), (3, 1)]  # serial and overlapped: 3 single-threaded runs, as edge run makes
    assert loops == [1, 3]  # the serial run one at a time on the loop's thread; the overlapped run 3 at once
    assert result.workers == 3 and "workers 3" in format_report(result)
    made.clear()
    profile(str(model_folder), frames=4, warmup=1, telemetry=False, workers=1)
    assert made == [(1, 0), (1, 0)]  # --workers 1: one run on ONNX Runtime's own thread pool (0: its default)


def test_profile_of_an_image_folder_reports_its_frame_size(model_folder, tmp_path):
    import cv2

    rng = np.random.default_rng(3)
    for i in range(12):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    result = profile(str(model_folder), input_uri=str(tmp_path), frames=8, warmup=2, telemetry=False)
    assert result.frame == (60, 80)
    with pytest.raises(EdgeError, match="the input ended after 12 frames; .*: lower --frames, or add --loop$"):
        profile(str(model_folder), input_uri=str(tmp_path), frames=20, warmup=2, telemetry=False)
    looped = profile(str(model_folder), input_uri=str(tmp_path), frames=20, warmup=2, telemetry=False, loop=True)
    assert looped.runs[0].frames == 20
    assert main(["profile", str(model_folder), "--input", str(tmp_path), "--frames", "20", "--warmup", "2",
                 "--loop", "--json"]) == 0


def test_cli_profile_json_and_the_memory_note_without_cuda(model_folder, capsys):
    from edge.gpu import cuda_available

    if cuda_available()[0]:
        pytest.skip("this machine has CUDA: the note is about machines without it")
    assert main(["profile", str(model_folder), "--frames", "10", "--warmup", "2", "--memory", "pinned,mapped",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    check_profile_json(doc)
    assert doc["path"] == "host"
    assert doc["note"].startswith("no CUDA (") and "--memory pinned,mapped ignored" in doc["note"]


def test_cli_profile_report_and_bad_arguments(model_folder, capsys):
    assert main(["profile", str(model_folder), "--frames", "5", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("edge profile: tiny on test:// (1920x1080), 5 frames after 1 warm-up")
    assert "recommendation: " in out
    for flag in ("--frames", "--warmup"):
        with pytest.raises(SystemExit):
            main(["profile", str(model_folder), flag, "0"])
        assert f"error: argument {flag}: expected a whole number of at least 1, got '0'" in capsys.readouterr().err
    assert main(["profile", str(model_folder), "--memory", "pinned,zero-copy"]) == 1
    assert "memory mode must be one of pageable, pinned, mapped, not 'zero-copy'" in capsys.readouterr().err
    plot_path = model_folder / "no-such-folder" / "stages.png"
    assert main(["profile", str(model_folder), "--plot", str(plot_path)]) == 1
    assert capsys.readouterr().err == (f"edge: error: {plot_path}: no folder {plot_path.parent} to write the plot "
                                       "into\n")


def test_gated_source_reads_one_frame_per_turn():
    from edge.runtime.sources import open_source

    gate = GatedSource(open_source("test://", width=64, height=48, fps=0))
    gate.open()
    assert gate.read().image.shape == (48, 64, 3)
    assert not gate.turn.acquire(timeout=0.05)  # the next read would wait for the turn
    gate.turn.release()
    gate.read()
    gate.close()
    assert gate.read() is None  # a closed gate lets a waiting capture thread finish
    assert len(gate.capture_ms) == 2 and gate.frame_size == (48, 64)


def test_a_failed_read_gives_the_turn_back():
    from edge.runtime.sources import Frame, Source, SourceError

    frame = Frame(np.full((2, 3, 3), 7, np.uint8), 0.0)

    class Flaky(Source):
        live, uri, reads = True, "flaky://", 0

        def read(self):
            self.reads += 1
            if self.reads == 1:
                raise SourceError("flaky://: no frame")
            if self.reads == 2:
                return Frame(np.zeros((2, 3), np.uint8), 0.0)  # not HxWx3: the Loop skips it
            return frame

    gate = GatedSource(Flaky())
    with pytest.raises(SourceError):
        gate.read()
    assert gate.read().image.ndim == 2
    assert gate.read() is frame  # without the turn back after each, this read would wait for ever
    assert len(gate.capture_ns) == 1
