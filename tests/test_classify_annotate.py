"""`edge classify` over folders and globs, and --annotate: each image written with its top classes drawn."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge import cli
from edge.runtime.sinks import draw_text

from runtime_support import tiny_model_folder


@pytest.fixture
def setup(tmp_path):
    """(repo, a folder of three images and a text file)"""
    tiny_model_folder(tmp_path)
    shots = tmp_path / "shots"
    shots.mkdir()
    rng = np.random.default_rng(0)
    for name in ["b.png", "a.png", "c.jpg"]:
        cv2.imwrite(str(shots / name), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    (shots / "notes.txt").write_text("not an image")
    return tmp_path / "engines", shots


def classify(argv: list[str], capsys) -> dict:
    assert cli.main(["classify", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_folders_and_globs_are_expanded_in_sorted_order(setup, capsys):
    repo, shots = setup
    found = classify(["tiny", str(shots), "--repo", str(repo)], capsys)
    assert [r["image"] for r in found["results"]] == [str(shots / n) for n in ["a.png", "b.png", "c.jpg"]]
    found = classify(["tiny", str(shots / "*.png"), str(shots / "c.jpg"), "--repo", str(repo)], capsys)
    assert [r["image"] for r in found["results"]] == [str(shots / n) for n in ["a.png", "b.png", "c.jpg"]]


def test_annotate_one_image_draws_its_top_classes(setup, tmp_path, capsys):
    repo, shots = setup
    out = tmp_path / "annotated.png"
    found = classify(["tiny", str(shots / "a.png"), "--repo", str(repo), "--top", "3", "--annotate", str(out)],
                     capsys)
    expected = cv2.imread(str(shots / "a.png"))
    draw_text(expected, [f"{p['probability']:6.2%} {p['label']}" for p in found["results"][0]["top"]])
    written = cv2.imread(str(out))
    assert np.array_equal(written, expected)
    assert not np.array_equal(written, cv2.imread(str(shots / "a.png")))


def test_annotate_many_images_writes_a_folder_of_them(setup, tmp_path, capsys):
    repo, shots = setup
    out = tmp_path / "out"
    classify(["tiny", str(shots), "--repo", str(repo), "--annotate", str(out)], capsys)
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.jpg"]
    assert cv2.imread(str(out / "c.jpg")).shape == (48, 64, 3)


@pytest.mark.parametrize("case", ["same name twice", "not an image suffix", "no such folder", "no such image",
                                  "the image itself", "the images' own folder"])
def test_annotate_problems_are_one_line_and_nothing_is_written(case, setup, tmp_path, capsys):
    repo, shots = setup
    other = tmp_path / "other"
    other.mkdir()
    cv2.imwrite(str(other / "a.png"), np.zeros((8, 8, 3), np.uint8))
    images, out = {
        "same name twice": ([str(shots / "a.png"), str(other / "a.png")], tmp_path / "out"),
        "not an image suffix": ([str(shots / "a.png")], tmp_path / "out.txt"),
        "no such folder": ([str(shots / "a.png")], tmp_path / "missing" / "out.png"),
        "no such image": ([str(shots / "zzz.png")], tmp_path / "out.png"),
        "the image itself": ([str(shots / "a.png")], shots / "a.png"),
        "the images' own folder": ([str(shots)], shots),
    }[case]
    before = sorted(tmp_path.rglob("*"))
    originals = {path: path.read_bytes() for path in before if path.is_file()}
    assert cli.main(["classify", "tiny", *images, "--repo", str(repo), "--annotate", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edge: error: ")
    assert sorted(tmp_path.rglob("*")) == before
    assert {path: path.read_bytes() for path in before if path.is_file()} == originals


def test_annotate_writes_every_suffix_it_accepts(setup, tmp_path, capsys):
    from edge.runtime.sources import IMAGE_SUFFIXES

    repo, shots = setup
    for suffix in sorted(IMAGE_SUFFIXES):
        out = tmp_path / f"annotated{suffix}"
        classify(["tiny", str(shots / "a.png"), "--repo", str(repo), "--annotate", str(out)], capsys)
        assert cv2.imread(str(out)).shape == (48, 64, 3), suffix
