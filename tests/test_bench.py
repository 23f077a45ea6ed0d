"""`edge bench` on tiny models made here: the schema, the interleaving, the Pareto front, rows that cannot run
listed with their reasons, a model that fails to load, and accuracy that agrees with `edge eval` to the image."""

import csv
import io
import json

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge import bench
from edge.bench import pareto_front, run_bench, schedule
from edge.cli import main
from edge.evaluate import evaluate, load_models, read_label_list
from edge.importer import PreprocessOptions, import_model
from edge.precision import make_fp16

from tiny_models import tiny_classifier

STATS = {"min_ms", "mean_ms", "p25_ms", "p50_ms", "p75_ms", "p95_ms", "p99_ms", "max_ms", "n"}


@pytest.fixture
def repo(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("tench\ncat\ndog\nbird\n")
    for name, seed in (("alpha", 0), ("beta", 1)):
        import_model(tiny_classifier(tmp_path / f"{name}.onnx", seed=seed), name=name, repo=tmp_path / "engines",
                     labels=labels, options=PreprocessOptions(resize="stretch"))
    make_fp16(tmp_path / "engines" / "alpha")  # beta has no fp16 variant: its fp16 rows are skipped
    return tmp_path / "engines"


@pytest.fixture
def label_list(tmp_path):
    rng = np.random.default_rng(2)
    lines = []
    for i in range(12):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), rng.integers(0, 256, (10 + i, 14, 3), dtype=np.uint8))
        lines.append(f"img{i}.png {i % 4}")
    path = tmp_path / "val.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def quick(models, label_list, repo, **options):
    options = {"precisions": ("fp32", "fp16"), "backends": ("onnxruntime", "opencv"), "frames": 3, "rounds": 2,
               "progress": False, "say": lambda *a, **k: None} | options
    return run_bench(models, label_list, repo=repo, **options)


def rows_by_key(result: dict) -> dict:
    return {(r["model"], r["precision"], r["backend"]): r for r in result["rows"]}


def test_json_follows_the_documented_schema(repo, label_list, tmp_path, capsys):
    groups = tmp_path / "groups.toml"
    groups.write_text('[groups]\nfish = [0]\npets = ["cat", "dog"]\n')
    assert main(["bench", "alpha", "beta", "--repo", str(repo), "--list", str(label_list), "--precision", "fp32,fp16",
                 "--backend", "onnxruntime,opencv,tensorrt", "--frames", "3", "--rounds", "2", "--batch", "1,2",
                 "--groups", str(groups), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["schema"] == "edge.bench/1"
    assert {"date", "machine", "list", "frames", "rounds", "batches", "groups", "wall_s", "rows"} <= set(result)
    assert result["batches"] == [1, 2] and result["machine"]["cores"] >= 1
    assert len(result["machine"]["load_average"]) == 2
    assert len(result["rows"]) == 2 * 2 * 3
    for row in result["rows"]:
        assert row["status"] in ("ok", "skipped", "failed")
        assert {"model", "precision", "backend", "reason", "command", "file_mb", "memory_mb", "accuracy",
                "latency", "throughput", "pareto"} <= set(row)
        if row["status"] != "ok":
            assert row["reason"] and row["accuracy"] is None
            continue
        accuracy = row["accuracy"]
        assert accuracy["n"] == 12 and 0 <= accuracy["top1"] <= accuracy["top5"] <= 1
        assert set(accuracy["groups"]) == {"fish", "pets"}
        assert accuracy["groups"]["pets"]["n"] == 6  # classes 1 and 2: half of the 12 images
        assert set(accuracy["group_confidence"]) == {"correct", "wrong"}
        assert set(row["latency"]) == {"1", "2"}
        for size, batch in row["latency"].items():
            assert set(batch["inference"]) == STATS and set(batch["frame"]) == STATS
            assert batch["frame"]["p50_ms"] >= batch["inference"]["p50_ms"] > 0
            assert len(batch["round_p50_ms"]) == 2
            assert batch["inference"]["n"] == {"1": 2 * 3, "2": 2 * 1}[size]  # rounds x batches of the 3 frames
        assert row["throughput"]["images_per_s"] == max(t["images_per_s"] for t in row["throughput"]["all"])
        assert row["file_mb"] is not None and row["memory_mb"] is not None
    ran = [row for row in result["rows"] if row["status"] == "ok"]
    assert any(row["pareto"] for row in ran)
    # sorted by accuracy, rows that did not run last
    top1 = [row["accuracy"]["top1"] for row in ran]
    assert top1 == sorted(top1, reverse=True)
    assert [row["status"] for row in result["rows"]][: len(ran)] == ["ok"] * len(ran)


def test_rows_are_timed_round_robin(repo, label_list, monkeypatch):
    timed = []
    real = bench.time_frames

    def recording(row, batch):
        timed.append(row.label)
        return real(row, batch)

    monkeypatch.setattr(bench, "time_frames", recording)
    quick(["alpha"], label_list, repo, precisions=("fp32",), backends=("onnxruntime", "opencv"), frames=2, rounds=3)
    measured = timed[2 * bench.WARMUP_BATCHES :]  # after the warm-up of the two rows
    per_unit = measured[::2]  # each unit times the 2 frames of one row, one at a time
    assert len(per_unit) == 2 * 3
    for round_start in range(0, 6, 2):
        assert set(per_unit[round_start : round_start + 2]) == {"alpha fp32 onnxruntime", "alpha fp32 opencv"}
    assert per_unit[0] != per_unit[2]  # the row timed first changes from round to round


def test_schedule_runs_every_configuration_once_a_round_starting_elsewhere():
    order = schedule(["a", "b", "c"], 3)
    assert [r for r, _ in order] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    rounds = [[c for r, c in order if r == k] for k in range(3)]
    assert all(sorted(one) == ["a", "b", "c"] for one in rounds)
    assert [one[0] for one in rounds] == ["a", "b", "c"]


def test_pareto_front():
    points = [(10.0, 0.70), (20.0, 0.80), (15.0, 0.60), (30.0, 0.80), (5.0, 0.50), (20.0, 0.75)]
    assert pareto_front(points) == [True, True, False, False, True, False]
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [True, True]  # equal points do not dominate each other


def test_rows_that_cannot_run_say_why_and_what_would_make_them(repo, label_list, monkeypatch):
    import edge.gpu

    monkeypatch.setattr(edge.gpu, "cuda_available", lambda: (False, "no CUDA device"))
    result = quick(["beta"], label_list, repo, precisions=("fp32", "fp16", "int8"),
                   backends=("onnxruntime", "tensorrt", "torch")).to_dict()
    rows = rows_by_key(result)
    assert rows["beta", "fp32", "onnxruntime"]["status"] == "ok"
    fp16 = rows["beta", "fp16", "onnxruntime"]
    assert fp16["status"] == "skipped" and "no fp16 variant" in fp16["reason"]
    assert fp16["command"] == "edge fp16 beta"
    int8 = rows["beta", "int8", "onnxruntime"]
    assert int8["status"] == "skipped" and int8["command"].startswith(f"edge calibrate beta --images {label_list}")
    for precision in ("fp32", "fp16", "int8"):
        trt = rows["beta", precision, "tensorrt"]
        assert trt["status"] == "skipped" and "no CUDA" in trt["reason"]
        assert f"edge build beta --precision {precision}" in trt["command"]
        assert "no CUDA" in rows["beta", precision, "torch"]["reason"]
    lines = bench.not_run(result)
    assert any(line.startswith("skipped: tensorrt (beta fp32, beta fp16, beta int8): no CUDA") for line in lines)
    assert "edge build beta --precision PRECISION" in "\n".join(lines)


def test_a_graph_opencv_cannot_load_is_a_skipped_row(repo, label_list):
    """Hardmax: ONNX Runtime runs it, OpenCV DNN 4.x has no such layer."""
    folder = repo / "alpha"
    graph = onnx.load(str(folder / "model.onnx"))
    output = graph.graph.output[0].name
    graph.graph.node.append(helper.make_node("Hardmax", [output], ["hard"], axis=1))
    graph.graph.output[0].CopyFrom(helper.make_tensor_value_info("hard", TensorProto.FLOAT, ["N", 4]))
    onnx.save(graph, str(folder / "model.onnx"))
    (folder / "model.toml").write_text((folder / "model.toml").read_text().replace(f'"{output}"', '"hard"'))
    rows = rows_by_key(quick(["alpha"], label_list, repo, precisions=("fp32",)).to_dict())
    assert rows["alpha", "fp32", "onnxruntime"]["status"] == "ok"
    opencv = rows["alpha", "fp32", "opencv"]
    assert opencv["status"] == "skipped"
    assert "OpenCV DNN" in opencv["reason"] and "Hardmax" in opencv["reason"] and "\n" not in opencv["reason"]


def test_a_model_that_fails_to_load_is_one_row_and_the_others_run(repo, label_list):
    (repo / "broken").mkdir()
    (repo / "broken" / "model.toml").write_text("name = 'broken'\n")
    (repo / "alpha" / "model.fp16.onnx").write_bytes(b"not an onnx file")
    result = quick(["broken", "alpha", "missing"], label_list, repo, backends=("onnxruntime",)).to_dict()
    rows = rows_by_key(result)
    broken = rows["broken", "-", "-"]
    assert broken["status"] == "failed" and "model.toml" in broken["reason"]
    assert rows["missing", "-", "-"]["status"] == "failed"
    corrupt = rows["alpha", "fp16", "onnxruntime"]
    assert corrupt["status"] == "failed" and "model.fp16.onnx" in corrupt["reason"]
    assert rows["alpha", "fp32", "onnxruntime"]["status"] == "ok"
    assert rows["alpha", "fp32", "onnxruntime"]["accuracy"]["n"] == 12
    assert any("broken" in line for line in bench.not_run(result))


# OpenCV's runs: 2 at loading (one per batch size), 3 at warm-up (2 at batch 1, 1 at batch 2), 12 in the accuracy
# pass, then the timing rounds.
@pytest.mark.parametrize(("runs_before", "during"), [(2, "warm-up"), (5, "img"), (17, "timing")])
def test_a_row_that_fails_while_running_is_its_own_error(repo, label_list, monkeypatch, runs_before, during):
    from edge.backends.opencv import OpenCvDnnBackend

    real, calls = OpenCvDnnBackend.run, []

    def failing_later(self, batch):
        calls.append(len(batch))
        if len(calls) > runs_before:
            raise RuntimeError("the forward broke")
        return real(self, batch)

    monkeypatch.setattr(OpenCvDnnBackend, "run", failing_later)
    rows = rows_by_key(quick(["alpha"], label_list, repo, precisions=("fp32",), batches=(1, 2)).to_dict())
    opencv = rows["alpha", "fp32", "opencv"]
    assert opencv["status"] == "failed" and during in opencv["reason"].split(": ")[0]
    assert opencv["reason"].endswith("the forward broke")
    assert opencv["accuracy"] is None and opencv["latency"] is None and opencv["throughput"] is None
    assert rows["alpha", "fp32", "onnxruntime"]["status"] == "ok"
    assert rows["alpha", "fp32", "onnxruntime"]["accuracy"]["n"] == 12


def test_accuracy_agrees_with_edge_eval(repo, label_list):
    """Same preprocessing, same sessions, same images: the same counts, and the same agreement with FP32."""
    result = quick(["alpha"], label_list, repo, backends=("onnxruntime",)).to_dict()
    rows = rows_by_key(result)
    models, workers = load_models("alpha", repo, "onnxruntime", ["fp32", "fp16"])
    scores = evaluate(models, read_label_list(label_list), workers=workers, progress=False)
    for precision in ("fp32", "fp16"):
        accuracy = rows["alpha", precision, "onnxruntime"]["accuracy"]
        for key, value in scores[precision].items():
            assert accuracy[key] == value, (precision, key)


def test_reports_are_written(repo, label_list, tmp_path, capsys):
    md, table_csv, png = tmp_path / "b.md", tmp_path / "b.csv", tmp_path / "b.png"
    assert main(["bench", "alpha", "--repo", str(repo), "--list", str(label_list), "--precision", "fp32",
                 "--backend", "onnxruntime,opencv", "--frames", "2", "--rounds", "1", "--markdown", str(md),
                 "--csv", str(table_csv), "--plot", str(png)]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0].startswith("edge bench: 2 rows") and "about" in err.splitlines()[0]
    assert out.splitlines()[0].split()[:3] == ["model", "precision", "backend"]
    assert "machine:" in out
    assert md.read_text().startswith("| model | precision | backend |")
    rows = list(csv.reader(io.StringIO(table_csv.read_text())))
    assert rows[0][:3] == ["model", "precision", "backend"] and len(rows) == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".b.*"))  # no temporary left beside them


def test_bad_flags_are_refused_in_one_line(repo, label_list, capsys):
    for argv in (["--precision", "fp64"], ["--backend", "cuda"], ["--batch", "0"], ["--markdown", "/no/such/b.md"]):
        assert main(["bench", "alpha", "--repo", str(repo), "--list", str(label_list), *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("edge: error: ") and err.count("\n") == 1, err
