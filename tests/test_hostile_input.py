"""Hostile input (issue 13): images whose headers lie or are cut short, cards edited to nonsense, graphs with sizes
of 0, below 0 or 2^31-1, and a model file from another model (issue 14). Every case ends in a result or in one line
`edge: error: ...` naming the file, with exit status 1, never a traceback; decoding is bounded in memory."""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.cli import main
from edge.errors import EdgeError
from edge.files import read_toml
from edge.imagefile import header_size, load_image

from tiny_models import tiny_classifier

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FORMATS = (".jpg", ".png", ".bmp", ".tif", ".webp", ".ppm")
LIES = (0, 1, 2, 7, 300, 30000, 65500, 65535)  # sizes a header can claim


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny model resized like torchvision's (shorter side to 256), so a frame 1 pixel wide would blow up."""
    root = tmp_path_factory.mktemp("fuzz")
    labels = root / "labels.txt"
    labels.write_text("cat\ndog\nbird\nfish\n")
    assert main(["import", str(tiny_classifier(root / "tiny.onnx")), "--repo", str(root / "engines"),
                 "--labels", str(labels), "--resize", "shorter:256"]) == 0
    return root / "engines" / "tiny"


def edge(capsys, *argv) -> tuple[int, str]:
    """`edge ARGV` in this process: 0 and its output, or 1 and one line on stderr (its first fragment returned)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    if code == 1:
        assert err.startswith("edge: error: ") and err.count("\n") == 1, err
        return code, err
    return code, out


def classified(out: str) -> None:
    """classify --json printed probabilities, all of them numbers from 0 to 1."""
    for result in json.loads(out)["results"]:
        assert all(math.isfinite(p["probability"]) and 0 <= p["probability"] <= 1 for p in result["top"]), result


def encode(suffix: str, height: int, width: int) -> bytes:
    pixels = np.random.default_rng(height * 7919 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(suffix, pixels)
    assert ok
    return data.tobytes()


def claim_size(data: bytes, suffix: str, width: int, height: int) -> bytes:
    """The same bytes, with the header claiming width x height (a JPEG's SOF0, a PNG's IHDR, a BMP's header)."""
    patched = bytearray(data)
    if suffix == ".jpg":
        position = 2
        while patched[position + 1] != 0xC0:
            position += 2 + struct.unpack(">H", patched[position + 2 : position + 4])[0]
        patched[position + 5 : position + 9] = struct.pack(">HH", height, width)
    elif suffix == ".png":
        patched[16:24] = struct.pack(">II", width, height)
    elif suffix == ".bmp":
        patched[18:26] = struct.pack("<ii", width, height)
    return bytes(patched)


# --- images --------------------------------------------------------------------------------------------------

def test_header_sizes_match_what_opencv_decodes(tmp_path):
    for suffix in FORMATS:
        assert header_size(encode(suffix, 5, 9)) == (9, 5), suffix


@FUZZ
@given(st.data())
def test_hostile_images_are_classified_or_refused_in_one_line(model, tmp_path, capsys, data) -> None:
    suffix = data.draw(st.sampled_from(FORMATS), label="format")
    height, width = data.draw(st.sampled_from([(1, 1), (1, 3000), (3000, 1), (12, 16), (40, 3)]), label="size")
    image = encode(suffix, height, width)
    if suffix in (".jpg", ".png", ".bmp") and data.draw(st.booleans(), label="lie"):
        image = claim_size(image, suffix, data.draw(st.sampled_from(LIES)), data.draw(st.sampled_from(LIES)))
    if data.draw(st.booleans(), label="truncate"):
        image = image[: data.draw(st.integers(0, len(image) - 1), label="length")]
    path = tmp_path / f"image{suffix}"
    path.write_bytes(image)
    code, out = edge(capsys, "classify", model, path, "--json")
    if code:
        assert str(path) in out
    else:
        classified(out)


def test_a_header_over_the_budget_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    path.write_bytes(claim_size(encode(".jpg", 16, 16), ".jpg", 30000, 30000))
    with pytest.raises(EdgeError, match=f"{path}: 30000x30000 pixels .* over the 100 MP limit"):
        load_image(path)
    small = tmp_path / "small.png"
    small.write_bytes(encode(".png", 20, 30))
    monkeypatch.setenv("EDGE_MAX_IMAGE_PIXELS", "500")
    with pytest.raises(EdgeError, match="20x30|30x20"):
        load_image(small)
    monkeypatch.setenv("EDGE_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(EdgeError, match="EDGE_MAX_IMAGE_PIXELS='lots'"):
        load_image(small)


@pytest.mark.parametrize("header", [b"P6\n#x\r20 30\n8 8\n255\n", b"P5 #c\r20 30\n255\n", b"P6\n#a\n#b\r20\t30\n255\n"])
def test_a_pnm_comment_ended_by_a_carriage_return_is_read_as_opencv_reads_it(header):
    """OpenCV's PxM reader ends a comment at CR or LF: a parser ending it at LF only read `8 8` below a
    20 x 30 image, and the budget judged the wrong size."""
    data = header + bytes(20 * 30 * 3)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (30, 20)
    assert header_size(data) == (20, 30)


def tiff_with_sizes_twice(data: bytes, width: int, height: int) -> bytes:
    """A TIFF whose first directory gives ImageWidth and ImageLength twice, width x height first: libtiff (so
    OpenCV) reads the first of a repeated tag and warns."""
    order = "<" if data[:2] == b"II" else ">"
    (directory,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[directory : directory + 2])
    entries = [data[directory + 2 + 12 * i : directory + 14 + 12 * i] for i in range(count)]
    claimed = [struct.pack(order + "HHII", tag, 4, 1, size) for tag, size in ((256, width), (257, height))]
    rewritten = [*claimed, *entries]
    return (data[:4] + struct.pack(order + "I", len(data)) + data[8:] + struct.pack(order + "H", len(rewritten))
            + b"".join(rewritten) + b"\0\0\0\0")


def test_a_tiff_giving_its_size_twice_is_judged_by_the_size_opencv_decodes(tmp_path):
    path = tmp_path / "twice.tif"
    path.write_bytes(tiff_with_sizes_twice(encode(".tif", 4, 5), 30000, 30000))
    with pytest.raises(EdgeError, match=f"{path}: 30000x30000 pixels .* over the 100 MP limit"):
        load_image(path)
    assert header_size(tiff_with_sizes_twice(encode(".tif", 4, 5), 7, 3)) == (7, 3)
    assert cv2.imdecode(np.frombuffer(tiff_with_sizes_twice(encode(".tif", 4, 5), 7, 3), np.uint8),
                        cv2.IMREAD_COLOR).shape[:2] == (3, 7)  # the first of each, as the header parser takes


@pytest.mark.parametrize("kind", [16, 17])  # LONG8, SLONG8
def test_a_tiff_size_stored_at_an_offset_is_not_read_as_the_offset(tmp_path, kind):
    """libtiff reads an 8-byte size from where the entry points: a parser taking the entry's 4 bytes as the size
    judged a 30000-pixel-wide image by its offset."""
    data = encode(".tif", 4, 5)
    (directory,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[directory : directory + 2])
    entries = [data[directory + 2 + 12 * i : directory + 14 + 12 * i] for i in range(count)]
    offset = len(data)
    width = struct.pack("<HHII", 256, kind, 1, offset)
    entries = [width if e[:2] == struct.pack("<H", 256) else e for e in entries]
    data += struct.pack("<Q", 30000)
    data = (data[:4] + struct.pack("<I", len(data)) + data[8:] + struct.pack("<H", len(entries)) + b"".join(entries)
            + b"\0\0\0\0")
    assert header_size(data) is None or header_size(data)[0] == 30000
    path = tmp_path / "offset.tif"
    path.write_bytes(data)
    with pytest.raises(EdgeError, match=str(path)):
        load_image(path)


def test_hostile_images_stay_within_1_gb_and_edge_run_skips_them(model, tmp_path):
    """Measured in a child process of its own (ru_maxrss): before the pixel budget, the first file took 5.3 GB."""
    folder = tmp_path / "shots"
    folder.mkdir()
    (folder / "a_big.jpg").write_bytes(claim_size(encode(".jpg", 16, 16), ".jpg", 30000, 30000))
    (folder / "b_huge.jpg").write_bytes(claim_size(encode(".jpg", 16, 16), ".jpg", 65500, 65500))
    (folder / "c_thin.png").write_bytes(encode(".png", 1, 20000))  # resized keeping aspect: 256 x 5,120,000
    (folder / "d_good.png").write_bytes(encode(".png", 12, 16))
    (folder / "e_cut.jpg").write_bytes(encode(".jpg", 12, 16)[:40])
    script = textwrap.dedent(f"""
        import json, resource, sys
        from edge.cli import main
        codes = [main(["classify", {str(model)!r}, path]) for path in sys.argv[1:]]
        codes.append(main(["run", {str(model)!r}, "--input", {str(folder)!r}, "--output", {str(tmp_path / "out")!r}]))
        print(json.dumps({{"codes": codes, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
    """)
    paths = sorted(str(p) for p in folder.iterdir())
    done = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["codes"] == [1, 1, 1, 0, 1, 0], done.stderr
    assert report["maxrss_kb"] < 1024 * 1024, report
    assert "Traceback" not in done.stderr
    results = [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]
    assert [Path(r["file"]).name for r in results] == ["d_good.png"]
    assert "4 decode errors" in done.stderr
    assert "c_thin.png: a 20000x1 frame would be resized to" in done.stderr


def test_eval_names_an_image_its_resize_refuses(model, tmp_path, capsys):
    (tmp_path / "thin.png").write_bytes(encode(".png", 1, 20000))
    (tmp_path / "val.txt").write_text("thin.png 0\n")
    code, err = edge(capsys, "eval", model, "--list", tmp_path / "val.txt")
    assert code == 1 and f"{tmp_path / 'thin.png'}: a 20000x1 frame would be resized to 5120000x256" in err, err


# --- cards ---------------------------------------------------------------------------------------------------

def edit_card(folder: Path, *edits: tuple[tuple[str, ...], object]) -> Path:
    """A copy of the model folder with its card's entries set (a value of DELETE removes the entry)."""
    copy = Path(tempfile.mkdtemp(dir=folder.parent.parent, prefix="card."))
    shutil.rmtree(copy)
    shutil.copytree(folder, copy)
    card = read_toml(copy / "model.toml")
    for keys, value in edits:
        table = card
        for key in keys[:-1]:
            table = table.setdefault(key, {}) if isinstance(table, dict) else {}
        if isinstance(table, dict):
            if value is DELETE:
                table.pop(keys[-1], None)
            else:
                table[keys[-1]] = value
    (copy / "model.toml").write_text(tomli_w.dumps(card), encoding="utf-8")
    return copy


DELETE = object()


@pytest.mark.parametrize("edit, fragment", [
    ((("labels", "file"), 5), "labels.file = 5: expected a string"),
    ((("input", "batch"), -3), "batch -3: expected 0 (any) to 256"),
    ((("input", "batch"), 1000000), "batch 1000000: expected 0 (any) to 256"),
    ((("preprocess", "mean"), [float("nan"), 0.0, 0.0]), "mean nan,0,0: not a finite number"),
    ((("preprocess", "scale"), float("inf")), "scale inf: not a finite number"),
    ((("output", "probabilities"), "yes"), "output.probabilities = 'yes': expected true or false"),
    ((("labels", "file"), "/etc/hostname"), "labels.file '/etc/hostname': outside the model folder"),
    ((("labels", "file"), "../labels.txt"), "outside the model folder"),
    ((("output", "classes"), 5), "labels.file labels.txt: 4 labels for 5 classes"),
    ((("preprocess", "resize_sise"), 300), "preprocess.resize_sise: not an entry of a card"),
    ((("input", "shape"), [0, 8, 8]), "input shape [0, 8, 8]: each size must be 1 to 4096"),
    ((("input", "dtype"), "float16"), "input.dtype 'float16'"),
])
def test_a_card_edited_to_nonsense_is_refused_naming_the_entry(model, tmp_path, capsys, edit, fragment):
    image = tmp_path / "a.png"
    image.write_bytes(encode(".png", 12, 16))
    folder = edit_card(model, edit)
    for verb in ("classify", "fp16"):  # every command that reads a card checks it
        code, err = edge(capsys, verb, folder, *([image] if verb == "classify" else []))
        assert code == 1 and f"{folder / 'model.toml'}: " in err and fragment in err, err


@pytest.mark.parametrize("contents", [b"", b"\x93NUM", b"\x93NUMPY\x01\x00\x10\x00{'descr':", b"104,117,123\n"])
def test_a_mean_image_that_is_no_npy_array_is_refused_naming_it(model, tmp_path, capsys, contents):
    image = tmp_path / "a.png"
    image.write_bytes(encode(".png", 12, 16))
    folder = edit_card(model, (("preprocess", "mean_image"), "mean.npy"))
    (folder / "mean.npy").write_bytes(contents)  # empty (a full disk, a kill mid-copy), cut short, or text
    code, err = edge(capsys, "classify", folder, image)
    assert code == 1 and f"{folder / 'mean.npy'}: not a .npy array" in err, err


@pytest.mark.parametrize("edit, fragment", [
    ((("input", "name"), "data"), "input 'data' expected, the graph's inputs are image[N,3,8,8]"),
    ((("output", "name"), "prob"), "output 'prob' expected, the graph's outputs are logits[N,4]"),
    ((("input", "shape"), [8, 8, 3]), "input image[N,3,8,8], the card says [N,8,8,3] (nhwc)"),
    ((("input", "batch"), 1), None),  # the graph takes any batch: a card may fix one
])
def test_a_card_that_disagrees_with_its_graph_is_refused(model, tmp_path, capsys, edit, fragment):
    image = tmp_path / "a.png"
    image.write_bytes(encode(".png", 12, 16))
    folder = edit_card(model, edit)
    if edit[0] == ("input", "shape"):
        folder = edit_card(folder, (("input", "layout"), "nhwc"), (("preprocess", "layout"), "nhwc"))
    for verb in ("classify", "fp16"):
        code, err = edge(capsys, verb, folder, *([image] if verb == "classify" else []))
        if fragment is None:
            assert code == 0
        else:
            assert code == 1 and f"{folder / 'model.onnx'}: does not match model.toml: {fragment}" in err, err


@pytest.mark.parametrize("batch", [0, 2])
def test_a_card_whose_batch_the_graph_does_not_take_is_refused(tmp_path, capsys, batch):
    repo = tmp_path / "engines"
    assert main(["import", str(tiny_classifier(tmp_path / "one.onnx", batch=1)), "--repo", str(repo)]) == 0
    folder = edit_card(repo / "one", (("input", "batch"), batch))
    image = tmp_path / "a.png"
    image.write_bytes(encode(".png", 12, 16))
    code, err = edge(capsys, "classify", folder, image)
    assert code == 1 and f"input image[1,3,8,8], the card says [{batch or 'N'},3,8,8]" in err, err


def test_a_card_whose_batch_takes_over_1_gb_is_refused(model, tmp_path, capsys):
    folder = edit_card(model, (("input", "shape"), [3, 1024, 1024]), (("input", "batch"), 100))
    code, err = edge(capsys, "classify", folder, tmp_path / "a.png")
    assert code == 1 and "batch 100 of [3, 1024, 1024] inputs is 1200 MiB of float32, over 1024 MiB" in err, err


def test_a_model_file_from_another_model_names_the_file_and_the_tensors(model, tmp_path, capsys):
    """Issue 14: model.int8.onnx (or model.onnx) copied from another model was ValueError: Required inputs ..."""
    other = onnx.load(str(tiny_classifier(tmp_path / "other.onnx", classes=7)))
    other.graph.input[0].name = "data"
    for node in other.graph.node:
        node.input[:] = ["data" if name == "image" else name for name in node.input]
    folder = edit_card(model)
    onnx.save(other, str(folder / "model.int8.onnx"))
    image = tmp_path / "a.png"
    image.write_bytes(encode(".png", 12, 16))
    code, err = edge(capsys, "classify", folder, image, "--precision", "int8")
    assert code == 1 and err == (f"edge: error: {folder / 'model.int8.onnx'}: does not match model.toml: input 'image'"
                                 " expected, the graph's inputs are data[N,3,8,8]; output logits[N,7] holds 7 values "
                                 "per image, the card says 4 classes\n")


ENTRIES = [("name",), ("input", "name"), ("input", "shape"), ("input", "batch"), ("input", "layout"),
           ("input", "dtype"), ("output", "name"), ("output", "classes"), ("output", "probabilities"),
           ("preprocess", "resize"), ("preprocess", "resize_size"), ("preprocess", "color"), ("preprocess", "layout"),
           ("preprocess", "mean"), ("preprocess", "scale"), ("preprocess", "std"), ("preprocess", "mean_image"),
           ("labels", "file"), ("source",), ("input",), ("output",), ("preprocess",), ("labels",), ("extra",)]
NUMBERS = st.one_of(st.sampled_from([-3, -1, 0, 1, 3, 4, 8, 255, 1000000, 2**31 - 1, 2**63 - 1, -(2**63)]),
                    st.floats(allow_nan=True, allow_infinity=True))
VALUES = st.one_of(
    NUMBERS, st.booleans(), st.just(DELETE), st.just({}),
    st.sampled_from(["", "yes", "nchw", "nhwc", "rgb", "bgr", "gray", "stretch", "shorter", "image", "logits",
                     "data", "float16", "labels.txt", "model.onnx", "../labels.txt", "/etc/hostname", "mean.npy"]),
    st.text(max_size=8), st.lists(NUMBERS, max_size=4), st.lists(st.sampled_from([1, 3, 8, 224]), max_size=4),
    st.dictionaries(st.sampled_from(["file", "name", "x"]), st.integers(-5, 5), max_size=2))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(ENTRIES), VALUES), min_size=1, max_size=3))
def test_cards_edited_at_random_classify_or_are_refused_in_one_line(model, tmp_path, capsys, edits) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(encode(".png", 12, 16))
    folder = edit_card(model, *edits)
    code, out = edge(capsys, "classify", folder, image, "--json")
    if code:
        assert str(folder) in out
    else:
        classified(out)


# --- graphs --------------------------------------------------------------------------------------------------

SIZES = st.sampled_from([None, 0, -1, -5, 1, 3, 8, 2**31 - 1])


@settings(FUZZ, max_examples=40)
@given(st.lists(SIZES, min_size=4, max_size=4), st.lists(SIZES, min_size=2, max_size=2))
def test_graphs_with_bad_sizes_are_refused_at_import_or_classify(tmp_path_factory, capsys, inputs, outputs) -> None:
    root = tmp_path_factory.mktemp("graph")
    model = onnx.load(str(tiny_classifier(root / "tiny.onnx")))
    for value, size in [*zip(model.graph.input[0].type.tensor_type.shape.dim, inputs),
                        *zip(model.graph.output[0].type.tensor_type.shape.dim, outputs)]:
        if size is None:
            value.dim_param = "N"
        else:
            value.dim_value = size
    onnx.save(model, str(root / "bad.onnx"))
    image = root / "a.png"
    image.write_bytes(encode(".png", 12, 16))
    code, out = edge(capsys, "import", root / "bad.onnx", "--repo", root / "engines")
    if code:
        assert str(root / "bad.onnx") in out
        return
    code, out = edge(capsys, "classify", root / "engines" / "bad", image, "--json")
    if not code:
        classified(out)
