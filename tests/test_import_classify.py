"""`edge import`, `edge classify` and `edge eval` on small models made here; bad input refused cleanly."""

import json

import cv2
import numpy as np
import onnx
import pytest

from edge import EdgeError, Model, load_image
from edge.cli import main
from edge.folder import Card

from tiny_models import tiny_classifier


@pytest.fixture
def repo(tmp_path):
    return tmp_path / "engines"


@pytest.fixture
def tiny(tmp_path):
    return tiny_classifier(tmp_path / "tiny.onnx")


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("n01440764 tench, Tinca tinca\ncat\ndog\nbird\n")
    return path


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(5):
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (12 + i, 16, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def edge(*argv):
    return main([str(a) for a in argv])


def assert_refused(capsys, status, *fragments):
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("edge: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err


def test_import_writes_the_folder_and_card(tiny, labels, repo, capsys):
    assert edge("import", tiny, "--repo", repo, "--labels", labels, "--resize", "shorter:10",
                "--mean-values", "1,2,3", "--std", "4,5,6", "--color", "bgr") == 0
    folder = repo / "tiny"
    assert capsys.readouterr().out.strip() == str(folder)
    assert sorted(p.name for p in repo.iterdir()) == ["tiny"]
    assert sorted(p.name for p in folder.iterdir()) == ["labels.txt", "model.onnx", "model.toml"]
    card = Card.read(folder)
    assert (card.input_name, card.input_shape, card.batch) == ("image", (3, 8, 8), 0)
    assert (card.output_name, card.classes, card.probabilities) == ("logits", 4, False)
    spec = card.preprocess
    assert (spec.resize, spec.resize_size, spec.color, spec.layout) == ("shorter", 10, "bgr", "nchw")
    assert spec.mean == (1, 2, 3) and spec.std == (4, 5, 6)
    assert {f["role"] for f in card.source["files"]} == {"model", "labels"}
    assert Model.load(folder).labels[0] == "tench, Tinca tinca"  # the synset id is dropped


def test_import_warns_once_when_the_model_would_get_raw_pixels(tiny, repo, capsys):
    assert edge("import", tiny, "--repo", repo) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(repo / "tiny")
    assert captured.err.startswith(f"edge: warning: {repo / 'tiny'}: no mean, scale or std")
    assert captured.err.count("\n") == 1
    assert edge("import", tiny, "--repo", repo, "--force", "--scale", "0.0039") == 0
    assert capsys.readouterr().err == ""


def test_softmax_output_and_nhwc_layout_are_found(tmp_path, repo):
    tiny_classifier(tmp_path / "soft.onnx", softmax=True, nhwc=True, batch=1)
    assert edge("import", tmp_path / "soft.onnx", "--repo", repo) == 0
    card = Card.read(repo / "soft")
    assert card.probabilities and card.preprocess.layout == "nhwc" and card.batch == 1
    assert card.input_shape == (8, 8, 3)


def test_classify_batches_images_and_prints_json(tiny, labels, repo, images, capsys):
    edge("import", tiny, "--repo", repo, "--labels", labels)
    capsys.readouterr()
    assert edge("classify", "tiny", "--repo", repo, *images, "--top", "3", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in result["results"]] == [str(p) for p in images]
    model = Model.load(repo / "tiny")
    for r, path in zip(result["results"], images):
        top = r["top"]
        assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
        single = model.classify(load_image(path), top=3)
        assert [p.class_id for p in single] == [t["class_id"] for t in top]
        np.testing.assert_allclose([p.probability for p in single], [t["probability"] for t in top], atol=1e-5)


def test_probabilities_sum_to_one_and_are_not_softmaxed_twice(tmp_path, repo, images):
    tiny_classifier(tmp_path / "soft.onnx", softmax=True)
    edge("import", tmp_path / "soft.onnx", "--repo", repo)
    model = Model.load(repo / "soft")
    batch = np.random.default_rng(0).normal(0, 50, (2, 3, 8, 8)).astype(np.float32)
    raw = model.backend.run(batch)
    np.testing.assert_allclose(model.probabilities(batch), raw, rtol=1e-6)
    np.testing.assert_allclose(model.probabilities(batch).sum(axis=1), 1, rtol=1e-5)


def test_oversample_averages_ten_crops(tiny, repo, images):
    edge("import", tiny, "--repo", repo, "--resize", "stretch:12")
    model = Model.load(repo / "tiny")
    image = load_image(images[0])
    from edge.preprocess import oversample

    expected = model.probabilities(oversample(image, model.preprocess)).mean(axis=0)
    top = model.classify(image, top=4, oversampled=True)
    np.testing.assert_allclose([p.probability for p in top], np.sort(expected)[::-1], rtol=1e-5)


def test_eval_counts_top1_and_top5(tiny, repo, images, tmp_path, capsys):
    edge("import", tiny, "--repo", repo)
    model = Model.load(repo / "tiny")
    truth = [model.classify(load_image(p), top=1)[0].class_id for p in images]
    listing = tmp_path / "val.txt"
    wrong = [(c + 1) % 4 for c in truth]
    listing.write_text("".join(f"{p.name} {c}\n" for p, c in zip(images, truth[:3] + wrong[3:])))
    capsys.readouterr()
    assert edge("eval", "tiny", "--repo", repo, "--list", listing, "--json", "--batch", "2") == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["schema"], doc["model"], doc["n"], list(doc["precisions"])) == ("edge.eval/1", "tiny", 5, ["fp32"])
    scores = doc["precisions"]["fp32"]
    assert scores["n"] == 5 and scores["top1"] == pytest.approx(0.6) and scores["top5"] == 1.0
    assert scores["top1_error"] == pytest.approx(0.4) and "top1_agreement" not in scores
    assert edge("eval", "tiny", "--repo", repo, "--list", listing, "--json", "--limit", "2") == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2
    edge("fp16", "tiny", "--repo", repo)
    capsys.readouterr()
    assert edge("eval", "tiny", "--repo", repo, "--list", listing, "--json", "--precision", "fp32,fp16") == 0
    doc = json.loads(capsys.readouterr().out)  # the same shape for two precisions as for one
    assert (doc["schema"], doc["n"], list(doc["precisions"])) == ("edge.eval/1", 5, ["fp32", "fp16"])
    assert doc["precisions"]["fp16"]["top1_agreement"] == pytest.approx(1.0)


def test_eval_refuses_a_class_id_the_model_does_not_have(tiny, repo, images, tmp_path, capsys):
    edge("import", tiny, "--repo", repo)
    listing = tmp_path / "val.txt"
    listing.write_text(f"{images[0].name} 0\n{images[1].name} 4\n")  # tiny has classes 0 to 3
    capsys.readouterr()
    assert_refused(capsys, edge("eval", "tiny", "--repo", repo, "--list", listing), images[1].name, "class id 4",
                   "4 classes")


def test_eval_pads_a_fixed_batch_and_scores_only_real_images(tmp_path, repo, images, capsys):
    tiny_classifier(tmp_path / "fixed.onnx", batch=2)
    edge("import", tmp_path / "fixed.onnx", "--repo", repo)
    listing = tmp_path / "val.txt"
    listing.write_text("".join(f"{p.name} 0\n" for p in images))  # 5 images, batches of 2
    capsys.readouterr()
    assert edge("eval", "fixed", "--repo", repo, "--list", listing, "--json") == 0
    assert json.loads(capsys.readouterr().out)["n"] == 5


# --- bad input: one line, non-zero exit, nothing written ------------------------------------------------------

def test_text_file_renamed_onnx(tmp_path, repo, capsys):
    fake = tmp_path / "fake.onnx"
    fake.write_text("this is not a model\n" * 10)
    assert_refused(capsys, edge("import", fake, "--repo", repo), str(fake), "not an ONNX model")
    assert not repo.exists() or not any(repo.iterdir())


def test_engines_weights_and_uff_are_refused_with_what_to_import_instead(tmp_path, repo, capsys):
    for name, fragment in (("net.engine", "import the .onnx"), ("net.PLAN", "import the .onnx"),
                           ("net.caffemodel", "deploy.prototxt, with --weights net.caffemodel"),
                           ("net.uff", "export the model to ONNX")):
        (tmp_path / name).write_bytes(b"\x08\x01" * 64)
        assert_refused(capsys, edge("import", tmp_path / name, "--repo", repo), str(tmp_path / name), fragment)
    assert not repo.exists() or not any(repo.iterdir())


def test_a_repository_that_cannot_be_written_is_one_line(tiny, tmp_path, capsys):
    # What an unwritable engine folder did to jetson-inference (#1644, #1031) must be a plain line here; a file
    # where the folder should be gives the same OSError as a folder of another user (the tests may run as root).
    (tmp_path / "taken").write_text("")
    assert_refused(capsys, edge("import", tiny, "--repo", tmp_path / "taken" / "repo"), str(tmp_path / "taken"),
                   "Not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken", "tiny.onnx"]


def test_truncated_onnx(tiny, tmp_path, repo, capsys):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(tiny.read_bytes()[: tiny.stat().st_size // 2])
    assert_refused(capsys, edge("import", cut, "--repo", repo), str(cut))
    assert not repo.exists() or not any(repo.iterdir())


def test_labels_of_the_wrong_length(tiny, tmp_path, repo, capsys):
    bad = tmp_path / "three.txt"
    bad.write_text("a\nb\nc\n")
    assert_refused(capsys, edge("import", tiny, "--repo", repo, "--labels", bad), str(bad), "3 labels", "4 classes")
    assert not repo.exists() or not any(repo.iterdir())


@pytest.mark.parametrize("flags, fragment", [
    (["--mean-values", "1,2"], "mean has 2 values; the model has 3 channels"),
    (["--std", "0,1,1"], "std 0,1,1: a divisor of 0"),
    (["--mean-values", "1,nan,3"], "not a finite number"),
])
def test_preprocessing_flags_the_model_cannot_take_name_the_model(tiny, repo, capsys, flags, fragment):
    assert_refused(capsys, edge("import", tiny, "--repo", repo, *flags), f"{tiny}: ", fragment)
    assert not repo.exists() or not any(repo.iterdir())


def test_several_image_inputs(tiny, tmp_path, repo, capsys):
    model = onnx.load(str(tiny))
    second = onnx.helper.make_tensor_value_info("image2", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])
    model.graph.input.append(second)
    path = tmp_path / "two.onnx"
    onnx.save(model, str(path))
    assert_refused(capsys, edge("import", path, "--repo", repo), str(path), "one image input")


def test_no_static_channel_count(tiny, tmp_path, repo, capsys):
    model = onnx.load(str(tiny))
    dim = model.graph.input[0].type.tensor_type.shape.dim[1]
    dim.dim_param = "C"
    path = tmp_path / "dynamic_c.onnx"
    onnx.save(model, str(path))
    assert_refused(capsys, edge("import", path, "--repo", repo), str(path), "static channel count")


def test_existing_folder_needs_force(tiny, repo, capsys):
    assert edge("import", tiny, "--repo", repo) == 0
    capsys.readouterr()
    assert_refused(capsys, edge("import", tiny, "--repo", repo), "already exists")
    assert edge("import", tiny, "--repo", repo, "--force", "--color", "bgr") == 0
    assert Card.read(repo / "tiny").preprocess.color == "bgr"
    assert sorted(p.name for p in repo.iterdir()) == ["tiny"]


def test_missing_image_and_not_an_image(tiny, repo, tmp_path, capsys):
    edge("import", tiny, "--repo", repo)
    capsys.readouterr()
    missing = tmp_path / "missing.jpg"
    assert_refused(capsys, edge("classify", "tiny", "--repo", repo, missing), str(missing), "no such file")
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    assert_refused(capsys, edge("classify", "tiny", "--repo", repo, text), str(text), "not an image")


def test_unknown_model_and_bad_list(tmp_path, repo, capsys):
    assert_refused(capsys, edge("classify", "nothing", "--repo", repo, "x.jpg"), "nothing", "not a model folder")
    listing = tmp_path / "val.txt"
    listing.write_text("a.jpg cat\n")
    with pytest.raises(EdgeError, match="val.txt: entry 1 .* no class id"):
        from edge.evaluate import read_label_list

        read_label_list(listing)


def test_every_argument_of_every_verb_says_what_it_is():
    import argparse

    from edge.cli import VERBS

    verbs = argparse.ArgumentParser().add_subparsers()
    for add, _ in VERBS.values():
        add(verbs)
    silent = [f"{verb} {action.dest}" for verb, parser in verbs.choices.items() for action in parser._actions
              if action.dest != "help" and not action.help]
    assert silent == []


def test_info_reports_every_component(capsys):
    assert edge("info", "--json") == 0
    facts = json.loads(capsys.readouterr().out)
    for key in ("python", "cpu", "int8 path", "numpy", "onnxruntime", "calibrate", "opencv", "cuda", "pycuda",
                "tensorrt", "jetson-stats"):
        assert facts[key]


def test_written_files_are_readable_by_the_service_user(tiny, repo):
    import stat

    from edge.files import atomic_write_text

    edge("import", tiny, "--repo", repo)
    folder = repo / "tiny"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    atomic_write_text(folder / "note.txt", "x")
    assert stat.S_IMODE((folder / "note.txt").stat().st_mode) == 0o644


def test_parallel_evaluation_scores_like_serial(tiny, repo, images, tmp_path):
    from edge.evaluate import evaluate, read_label_list

    edge("import", tiny, "--repo", repo)
    listing = tmp_path / "val.txt"
    listing.write_text("".join(f"{p.name} {i % 4}\n" for i, p in enumerate(images * 3)))
    items = read_label_list(listing)
    model = Model.load(repo / "tiny", runs=3)
    serial = evaluate({"fp32": model}, items, batch_size=2, workers=1, progress=False)
    parallel = evaluate({"fp32": model, "again": model}, items, batch_size=2, workers=3, progress=False)
    assert parallel["fp32"] == serial["fp32"]
    assert parallel["again"]["top1_agreement"] == 1.0


# --- bad input found in review: each must end in one line naming the file, never a traceback ---------------

@pytest.mark.parametrize("edit, fragment", [
    (lambda card: card.replace("shape = [\n    3,\n    8,\n    8,\n]", "shape = [3]"), "input.shape"),
    (lambda card: card.replace('name = "tiny"\n', 'name = "tiny"\nlabels = 3\n', 1).replace(
        '[labels]\nfile = "labels.txt"\n', ""), "labels = 3: expected a table"),
    (lambda card: card.replace('layout = "nchw"', 'layout = "sideways"'), "layout must be one of"),
])
def test_broken_card_is_refused_naming_it(tiny, labels, repo, images, capsys, edit, fragment):
    edge("import", tiny, "--repo", repo, "--labels", labels)
    card = repo / "tiny" / "model.toml"
    card.write_text(edit(card.read_text()))
    capsys.readouterr()
    assert_refused(capsys, edge("classify", "tiny", "--repo", repo, images[0]), str(card), fragment)


def test_labels_with_a_blank_line_in_the_middle_are_refused(tiny, tmp_path, repo, capsys):
    blank = tmp_path / "blank.txt"
    blank.write_text("cat\n\ndog\nbird\n")  # as many lines as classes, but class 1 would have no label
    assert_refused(capsys, edge("import", tiny, "--repo", repo, "--labels", blank), str(blank), "line 2 is blank")
    assert not repo.exists() or not any(repo.iterdir())


def test_unreadable_labels_and_model_are_refused(tiny, labels, tmp_path, repo, capsys, monkeypatch):
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    assert_refused(capsys, edge("import", folder, "--repo", repo), str(folder), "cannot read")
    real_read_text = type(labels).read_text

    def denied(self, *args, **kwargs):  # the tests run as root, where chmod 000 denies nothing
        if self == labels:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(type(labels), "read_text", denied)
    assert_refused(capsys, edge("import", tiny, "--repo", repo, "--labels", labels), str(labels), "Permission denied")
    assert not repo.exists() or not any(repo.iterdir())


def test_counts_below_one_and_no_precision_are_refused(tiny, repo, images, tmp_path, capsys):
    edge("import", tiny, "--repo", repo)
    listing = tmp_path / "val.txt"
    listing.write_text("".join(f"{p.name} 1\n" for p in images))
    for argv in (["classify", "tiny", images[0], "--top", "0"], ["eval", "tiny", "--list", listing, "--limit", "0"],
                 ["eval", "tiny", "--list", listing, "--batch", "0"],
                 ["eval", "tiny", "--list", listing, "--limit", "-1"]):
        with pytest.raises(SystemExit) as exit:
            edge(*argv, "--repo", repo)
        assert exit.value.code == 2
        assert "at least 1" in capsys.readouterr().err
    assert_refused(capsys, edge("eval", "tiny", "--repo", repo, "--list", listing, "--precision", ","), "--precision")


def test_missing_fp32_graph_says_to_import_again(tiny, repo, images, capsys):
    edge("import", tiny, "--repo", repo)
    (repo / "tiny" / "model.onnx").unlink()
    capsys.readouterr()
    assert_refused(capsys, edge("classify", "tiny", "--repo", repo, images[0]), "model.onnx", "edge import")


def test_text_files_with_a_byte_order_mark_read_like_any_other(tiny, repo, images, tmp_path, capsys):
    labels = tmp_path / "bom.txt"
    labels.write_text("\ufeffcat\ndog\nbird\nfish\n", encoding="utf-8")
    assert edge("import", tiny, "--repo", repo, "--labels", labels) == 0
    assert Model.load("tiny", repo).labels[0] == "cat"
    listing = tmp_path / "val.txt"
    listing.write_text(f"\ufeff{images[0].name} 1\n", encoding="utf-8")
    capsys.readouterr()
    assert edge("eval", "tiny", "--repo", repo, "--list", listing, "--json") == 0
    assert json.loads(capsys.readouterr().out)["n"] == 1


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_behind(tiny, repo, monkeypatch, capsys):
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() and fsync() raise it: no file name

    edge("import", tiny, "--repo", repo)
    capsys.readouterr()
    monkeypatch.setattr(os, "fsync", full)
    before = sorted(p.name for p in (repo / "tiny").iterdir())
    assert_refused(capsys, edge("fp16", repo / "tiny"), f"{repo / 'tiny' / 'model.fp16.onnx'}: No space left on device")
    assert sorted(p.name for p in (repo / "tiny").iterdir()) == before
