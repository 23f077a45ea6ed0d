"""`edge list`, `edge show`, `edge rm`, `edge --version` on a repository with variants, calibration and engines
(engines faked by name and sidecar: no TensorRT is needed to describe them)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import tomli_w

from edge import __version__, cli
from edge.errors import EdgeError
from edge.files import read_toml
from edge.repository import contents, model_folders
from edge.tensorrt.build import BuildSpec, Target, engine_path, install_engine, make_sidecar, source_hashes

from runtime_support import tiny_model_folder

ORIN = Target("10.3.0", "Orin", "8.7")
THOR = Target("10.13.0", "Thor", "11.0")
FP16 = BuildSpec("fp16", "strongly-typed", "model.fp16.onnx", None, None, None, (1, 1, 16))
FP32 = BuildSpec("fp32", "strongly-typed", "model.onnx", None, None, None, (1, 1, 16))


def fake_engine(folder: Path, target: Target, spec: BuildSpec) -> Path:
    engine = engine_path(folder, target, spec.precision)
    payload = f"engine for {target.stem} {spec.precision}".encode() * 100
    sidecar = make_sidecar(engine, target, spec, source_hashes(folder, spec), hashlib.sha256(payload).hexdigest(), 1.0)
    install_engine(engine, payload, sidecar)
    return engine


@pytest.fixture
def repo(tmp_path) -> Path:
    """engines/tiny with fp16 and int8 variants, calibration, an Orin fp16 and fp32 engine and a Thor fp16 one,
    and engines/other with nothing but its fp32 model."""
    folder = tiny_model_folder(tmp_path)
    shutil.copyfile(folder / "model.onnx", folder / "model.fp16.onnx")
    shutil.copyfile(folder / "model.onnx", folder / "model.int8.onnx")
    (folder / "calibration.cache").write_text("TRT-8601-EntropyCalibration2\n")
    (folder / "calibration.json").write_text("{}\n")
    fake_engine(folder, ORIN, FP16)
    fake_engine(folder, ORIN, FP32)
    fake_engine(folder, THOR, FP16)
    (folder / f"{ORIN.stem}.timing.cache").write_bytes(b"timings")
    shutil.copytree(folder, folder.parent / "other")
    for name in ["model.fp16.onnx", "model.int8.onnx", "calibration.cache", "calibration.json"]:
        (folder.parent / "other" / name).unlink()
    for engine in (folder.parent / "other").glob("*.plan"):
        engine.unlink()
    (folder.parent / ".downloads").mkdir()  # a zoo download in progress: not a model
    return folder.parent


def test_contents_mark_each_engine_current_or_say_why_not(repo):
    (repo / "tiny" / "model.onnx").write_bytes((repo / "tiny" / "model.onnx").read_bytes() + b"\0")  # fp32 changed
    found = contents(repo / "tiny", ORIN)
    assert list(found.variants) == ["fp32", "fp16", "int8"]
    assert list(found.calibration) == ["calibration.cache", "calibration.json"]
    states = {e.path.name: e.state for e in found.engines}
    assert states[f"{ORIN.stem}-fp16.plan"] == "current"
    assert states[f"{ORIN.stem}-fp32.plan"] == "model.onnx changed since the build"
    assert states[f"{THOR.stem}-fp16.plan"] == "built with TensorRT 10.13.0, this machine has TensorRT 10.3.0"
    assert found.size == sum(p.stat().st_size for p in (repo / "tiny").iterdir())


def test_without_tensorrt_the_sidecar_still_says_what_an_engine_is_for_and_whether_it_is_stale(repo):
    (repo / "tiny" / "model.onnx").write_bytes(b"changed")
    states = {e.path.name: e.state for e in contents(repo / "tiny", "no TensorRT").engines}
    assert states[f"{ORIN.stem}-fp32.plan"] == "stale: model.onnx changed since the build"
    assert states[f"{ORIN.stem}-fp16.plan"] == ("cannot run here (no TensorRT); built for Orin (compute capability "
                                                "8.7), TensorRT 10.3.0, from files unchanged since")
    (repo / "tiny" / f"{THOR.stem}-fp16.json").unlink()
    states = {e.path.name: e.state for e in contents(repo / "tiny", "no TensorRT").engines}
    assert states[f"{THOR.stem}-fp16.plan"] == f"unusable: {THOR.stem}-fp16.json is missing or unreadable"


def test_edge_list_prints_every_model_with_variants_calibration_and_engines(repo, monkeypatch, capsys):
    monkeypatch.setattr("edge.repository.this_machine", lambda: ORIN)
    assert cli.main(["list", "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    assert [m.name for m in model_folders(repo)] == ["other", "tiny"]
    assert ".downloads" not in out
    tiny = out[out.index("tiny  ("):]
    assert "variants     fp32 " in tiny and ", fp16 " in tiny and ", int8 " in tiny
    assert "calibration  calibration.cache" in tiny
    assert f"{ORIN.stem}-fp16.plan" in tiny and "current" in tiny and "this machine has TensorRT 10.3.0" in tiny
    other = out[out.index("other  ("):out.index("tiny  (")]
    assert "engines      none" in other and "fp16" not in other


def test_edge_show_says_the_card_in_words(repo, monkeypatch, capsys):
    monkeypatch.setattr("edge.repository.this_machine", lambda: ORIN)
    assert cli.main(["show", "tiny", "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "input        image: NCHW float32, 3 x 32 x 32, batch any" in out
    assert "preprocess   stretched to 32 x 32; BGR; (x - (0, 0, 0)) * 0.00392157" in out
    assert "labels       labels.txt: 10, from 'class0' to 'class9'" in out
    assert "  model      " in out and "sha256 " in out
    assert "variants     fp32 " in out and f"{ORIN.stem}-fp16.plan" in out


def test_edge_rm_engines_only_keeps_the_model(repo, capsys):
    assert cli.main(["rm", "tiny", "--repo", str(repo), "--engines-only"]) == 0
    left = sorted(p.name for p in (repo / "tiny").iterdir())
    assert left == ["calibration.cache", "calibration.json", "labels.txt", "model.fp16.onnx", "model.int8.onnx",
                    "model.onnx", "model.toml"]
    assert capsys.readouterr().out.count("removed ") == 7  # 3 engines, 3 sidecars, 1 timing cache
    assert cli.main(["rm", "tiny", "--repo", str(repo), "--engines-only"]) == 0
    assert "no engines to remove" in capsys.readouterr().out


def test_edge_rm_removes_the_folder_and_leaves_nothing_aside(repo, capsys):
    assert cli.main(["rm", "tiny", "--repo", str(repo)]) == 0
    assert capsys.readouterr().out.strip() == f"removed {repo / 'tiny'}"
    assert sorted(p.name for p in repo.iterdir()) == [".downloads", "other"]


def test_what_a_killed_rm_left_is_cleared_by_the_next_run_on_that_name(repo, monkeypatch):
    from edge.folder import find_model_folder
    from edge.repository import remove

    def killed(path):
        raise KeyboardInterrupt  # as a kill between the rename aside and the end of the rmtree

    with monkeypatch.context() as m:
        m.setattr("edge.repository.shutil.rmtree", killed)
        with pytest.raises(KeyboardInterrupt):
            remove("tiny", repo)
    assert [p.name for p in repo.iterdir() if p.name.startswith(".tiny.")]  # set aside, not yet deleted
    monkeypatch.setattr("edge.files._alive", lambda pid: False)  # that run has ended
    with pytest.raises(EdgeError, match="not a model folder"):
        find_model_folder("tiny", repo)
    assert sorted(p.name for p in repo.iterdir()) == [".downloads", "other"]


@pytest.mark.parametrize("argv", [["rm", "nothing"], ["show", "nothing"], ["list"]])
def test_every_error_is_one_line(argv, tmp_path, capsys):
    assert cli.main([*argv, "--repo", str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edge: error: ")


def test_an_empty_repository_says_so(tmp_path, capsys):
    assert cli.main(["list", "--repo", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"no models in {tmp_path}"


def test_a_broken_card_is_one_line_in_show(repo, capsys):
    (repo / "tiny" / "model.toml").write_text("name = \n")
    assert cli.main(["show", "tiny", "--repo", str(repo)]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"edge {__version__}"


def test_edge_rm_of_a_symlinked_model_removes_the_link_not_the_folder_it_points_to(repo, tmp_path, capsys):
    elsewhere = tmp_path / "ssd" / "tiny"
    elsewhere.parent.mkdir()
    shutil.move(repo / "tiny", elsewhere)
    (repo / "tiny").symlink_to(elsewhere)
    assert cli.main(["rm", "tiny", "--repo", str(repo)]) == 0
    assert capsys.readouterr().out.strip() == f"removed {repo / 'tiny'}"
    assert sorted(p.name for p in repo.iterdir()) == [".downloads", "other"]  # nothing set aside either
    assert (elsewhere / "model.toml").is_file() and (elsewhere / "model.onnx").is_file()


def test_edge_rm_dot_removes_the_model_folder_it_is_run_in(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo / "tiny")
    assert cli.main(["rm", "."]) == 0
    assert capsys.readouterr().out.strip() == f"removed {repo / 'tiny'}"
    assert sorted(p.name for p in repo.iterdir()) == [".downloads", "other"]



@pytest.mark.parametrize("source", [{"files": 5}, {"files": [5]}, {"origin": "zoo"}, {"files": [{"role": "model"}]},
                                    {"files": [{"role": ["model"], "path": "x", "sha256": "0"}]}])
def test_edge_show_prints_an_edited_source_record_as_far_as_it_goes(repo, capsys, source):
    card = read_toml(repo / "tiny" / "model.toml")
    card["source"] = {"kind": "onnx", **source}
    (repo / "tiny" / "model.toml").write_text(tomli_w.dumps(card))
    assert cli.main(["show", "tiny", "--repo", str(repo)]) == 0
    assert "source       onnx, imported ?" in capsys.readouterr().out
