"""`edge zoo`: the table's facts, and pull against a loopback HTTP server (never the network) holding generated
files whose checksums stand in for the published ones."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from edge import cli
from edge.caffe.reader import read_net
from edge.errors import EdgeError
from edge.folder import Card
from edge.model import Model
from edge.preprocess import Preprocess, preprocess
from edge.zoo import DOWNLOADS, ZooEntry, load_zoo, pull

from caffe_helpers import opencv_forward, random_caffemodel
from tiny_models import tiny_classifier

ZOO = load_zoo()
ONNX_ENTRIES = [name for name, entry in ZOO.items() if entry.kind == "onnx"]
CAFFE_ENTRIES = [name for name, entry in ZOO.items() if entry.kind == "caffe"]


class Server:
    """http.server on 127.0.0.1 in a thread: GET with `Range: bytes=N-`, and files that break off halfway."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drops: dict[str, int] = {}  # path -> how many more responses to cut off halfway
        self.ranges: list[str | None] = []  # the Range header of each request, in order
        self.length: str | None = None  # a Content-Length to send instead of the true one
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.ranges.append(self.headers.get("Range"))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if self.headers["Range"] else 0
                if start >= len(data) and start:
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", server.length or str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.drops.get(self.path, 0) > 0:
                    server.drops[self.path] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def generated_file(entry: ZooEntry, folder: Path, seed: int = 0) -> Path:
    """A file standing in for the entry's download: an ONNX classifier with the entry's input name and layout
    (1000 classes, 224 x 224), or random weights for the entry's shipped deploy.prototxt."""
    fetched = entry.download
    path = folder / fetched.name
    if entry.kind == "onnx":
        return tiny_classifier(path, classes=1000, size=224, nhwc=entry.card["layout"] == "nhwc", seed=seed,
                               input_name=entry.card["input"])
    with resources.as_file(resources.files("edge.zoo").joinpath(shipped(entry))) as prototxt:
        random_caffemodel(prototxt, path, seed=seed, train_layers=False)
    return path


def shipped(entry: ZooEntry) -> str:
    return next(f.package for f in entry.files if f.package)


def serve(entry: ZooEntry, path: Path, server: Server) -> ZooEntry:
    """The entry with its download at the loopback server and the generated file's checksum in place of the
    published one."""
    fetched = entry.download
    server.files[f"/{fetched.name}"] = path.read_bytes()
    checksum = hashlib.new(fetched.algorithm, path.read_bytes()).hexdigest()
    replaced = dataclasses.replace(fetched, url=server.url(fetched.name), checksum=checksum)
    return dataclasses.replace(entry, files=tuple(replaced if f is fetched else f for f in entry.files))


def imagenet_labels(path: Path) -> Path:
    path.write_text("".join(f"n{i:08d} class {i}\n" for i in range(1000)))
    return path


# --- the table ---------------------------------------------------------------------------------------------

def test_every_entry_has_a_published_checksum_a_source_and_a_card_the_importer_takes():
    assert set(CAFFE_ENTRIES) == {"bvlc_googlenet", "bvlc_alexnet", "bvlc_reference_caffenet"}
    for entry in ZOO.values():
        assert entry.source and entry.accuracy["source"] and entry.accuracy["top1"] > 50
        for f in entry.files:
            assert len(f.checksum) == {"sha1": 40, "sha256": 64}[f.algorithm], (entry.name, f.name)
            assert (f.url is None) != (f.package is None)
        assert entry.download.algorithm == ("sha1" if entry.kind == "caffe" else "sha256")
        options = entry.options()
        Preprocess(size=(224, 224), resize=options.resize, resize_size=options.resize_size, color=options.color,
                   mean=options.mean_values, scale=options.scale or 1.0, std=options.std, layout=options.layout)


def test_the_published_bvlc_checksums_are_the_readmes():
    assert ZOO["bvlc_googlenet"].download.checksum == "405fc5acd08a3bb12de8ee5e23a96bec22f08204"
    assert ZOO["bvlc_alexnet"].download.checksum == "9116a64c0fbe4459d18f4bb6b56d647b63920377"
    assert ZOO["bvlc_reference_caffenet"].download.checksum == "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46"


@pytest.mark.parametrize("name", CAFFE_ENTRIES)
def test_the_shipped_deploy_prototxts_are_the_bvlc_networks(name):
    entry = ZOO[name]
    with resources.as_file(resources.files("edge.zoo").joinpath(shipped(entry))) as prototxt:
        net = read_net(prototxt)
    side = 224 if name == "bvlc_googlenet" else 227
    assert net.input_name == "data" and tuple(net.input_shape)[1:] == (3, side, side)
    assert net.layers[-1].type == "Softmax" and net.layers[-2].inner_product_param.num_output == 1000


def test_zoo_list_prints_every_entry(capsys):
    assert cli.main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for name in ZOO:
        assert name in out
    assert "bgr, stretch:256, (x - (104, 117, 123)) * 1" in out


# --- pull --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ONNX_ENTRIES)
def test_pull_every_onnx_entry_end_to_end(name, tmp_path, server, monkeypatch, capsys):
    entry = serve(ZOO[name], generated_file(ZOO[name], tmp_path), server)
    monkeypatch.setattr("edge.zoo.load_zoo", lambda: {name: entry})
    repo = tmp_path / "engines"
    labels = imagenet_labels(tmp_path / "synset_words.txt")
    assert cli.main(["zoo", "pull", name, "--repo", str(repo), "--labels", str(labels)]) == 0
    assert capsys.readouterr().out.strip() == str(repo / name)
    card = Card.read(repo / name)
    assert (card.input_name, card.preprocess.layout) == (entry.card["input"], entry.card["layout"])
    spec, expected = card.preprocess, entry.card
    assert spec.mean == tuple(expected["mean"]) and spec.std == (tuple(expected["std"]) if "std" in expected else None)
    assert spec.scale == expected.get("scale", 1.0)
    assert (spec.color, spec.resize, spec.resize_size) == (expected["color"], expected["resize"],
                                                           expected.get("resize_size"))
    assert card.source["origin"]["zoo"] == name
    assert card.source["origin"][entry.download.name] == f"sha256:{entry.download.checksum}"
    assert sorted(p.name for p in repo.iterdir()) == [name]  # no .downloads left behind
    assert Model.load(name, repo).label(3) == "class 3"
    assert cli.main(["show", name, "--repo", str(repo)]) == 0
    shown = capsys.readouterr().out
    assert "labels       labels.txt: 1000, from 'class 0' to 'class 999'" in shown
    assert f"origin     zoo {name}, from {entry.download.url}" in shown


# GoogLeNet only: random weights for AlexNet and CaffeNet are 240 MB each and take 20-30 s (both passed this test
# on 2026-12-01, against OpenCV 4.x, when it was run for them).
@pytest.mark.parametrize("name", ["bvlc_googlenet"])
def test_pull_caffe_entry_with_bvlc_preprocessing_agrees_with_opencv(name, tmp_path, server, monkeypatch):
    weights = generated_file(ZOO[name], tmp_path)
    entry = serve(ZOO[name], weights, server)
    monkeypatch.setattr("edge.zoo.load_zoo", lambda: {name: entry})
    repo = tmp_path / "engines"
    folder = pull(name, repo, labels=imagenet_labels(tmp_path / "synset_words.txt"))
    model = Model.load(folder)
    spec = model.preprocess
    assert (spec.color, spec.resize, spec.resize_size, spec.scale) == ("bgr", "stretch", 256, 1.0)
    assert spec.mean == tuple(float(v) for v in entry.card["mean"])
    assert model.card.source["origin"][entry.download.name] == f"sha1:{entry.download.checksum}"
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    batch = preprocess(image, spec)[None]
    with resources.as_file(resources.files("edge.zoo").joinpath(shipped(entry))) as prototxt:
        expected = opencv_forward(prototxt, weights, batch).reshape(1, -1)
    np.testing.assert_allclose(model.probabilities(batch), expected, atol=1e-4 * np.abs(expected).max())


@pytest.fixture
def resnet(tmp_path, server, monkeypatch):
    """resnet18-v1-7 with a generated file at the loopback server; returns (entry, the file's bytes, repo)."""
    name = "resnet18-v1-7"
    made = tmp_path / "made"
    made.mkdir()
    path = generated_file(ZOO[name], made)
    entry = serve(ZOO[name], path, server)
    monkeypatch.setattr("edge.zoo.load_zoo", lambda: {name: entry})
    return entry, path.read_bytes(), tmp_path / "engines"


def damaged(data: bytes, how: str, tmp_path: Path) -> bytes:
    if how == "corrupted":
        return data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:]
    if how == "truncated":
        return data[: len(data) * 2 // 3]
    return tiny_classifier(tmp_path / "other.onnx", classes=1000, size=224, seed=7, input_name="data").read_bytes()


@pytest.mark.parametrize("how", ["corrupted", "truncated", "substituted"])
def test_a_file_that_does_not_match_is_refused_in_one_line_and_nothing_is_kept(how, resnet, server, tmp_path, capsys):
    entry, data, repo = resnet
    bad = damaged(data, how, tmp_path)
    server.files[f"/{entry.download.name}"] = bad
    assert cli.main(["zoo", "pull", entry.name, "--repo", str(repo)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and entry.download.checksum in err and hashlib.sha256(bad).hexdigest() in err
    assert err.startswith(f"edge: error: {entry.download.url}: sha256 ")
    assert list(repo.iterdir()) == []  # no model folder, no .downloads, no .part


def test_a_changed_shipped_prototxt_is_refused_too(tmp_path, server, monkeypatch):
    name = "bvlc_googlenet"
    entry = serve(ZOO[name], generated_file(ZOO[name], tmp_path), server)
    prototxt = next(f for f in entry.files if f.package)
    changed = dataclasses.replace(prototxt, checksum="0" * 64)
    entry = dataclasses.replace(entry, files=tuple(changed if f is prototxt else f for f in entry.files))
    monkeypatch.setattr("edge.zoo.load_zoo", lambda: {name: entry})
    with pytest.raises(EdgeError, match=f"{prototxt.package}: sha256 .*, expected 0000"):
        pull(name, tmp_path / "engines")
    assert not (tmp_path / "engines").exists() and server.ranges == []  # found out before the download


def test_an_interrupted_download_resumes_where_it_broke_off(resnet, server):
    entry, data, repo = resnet
    server.drops[f"/{entry.download.name}"] = 1
    folder = pull(entry.name, repo)
    assert server.ranges == [None, f"bytes={len(data) // 2}-"]
    assert Card.read(folder).source["origin"]["from"] == entry.download.url


def test_a_download_that_keeps_breaking_is_resumed_by_the_next_run(resnet, server, capsys):
    entry, data, repo = resnet
    server.drops[f"/{entry.download.name}"] = 3
    assert cli.main(["zoo", "pull", entry.name, "--repo", str(repo)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run the same command again to resume" in err
    part = repo / DOWNLOADS / f"{entry.download.name}.part"
    kept = part.stat().st_size
    assert 0 < kept < len(data) and not (repo / entry.name).exists()
    server.ranges.clear()
    assert cli.main(["zoo", "pull", entry.name, "--repo", str(repo)]) == 0
    assert server.ranges == [f"bytes={kept}-"]
    assert sorted(p.name for p in repo.iterdir()) == [entry.name]
    assert "imported without labels" in capsys.readouterr().err


def test_a_mirror_replaces_the_url_and_the_checksum_still_decides(resnet, server, tmp_path):
    entry, data, repo = resnet
    server.files["/mirror/copy.onnx"] = data
    server.files["/mirror/other.onnx"] = damaged(data, "substituted", tmp_path)
    with pytest.raises(EdgeError, match="refused"):
        pull(entry.name, repo, url=server.url("mirror/other.onnx"))
    folder = pull(entry.name, repo, url=server.url("mirror/copy.onnx"))
    assert Card.read(folder).source["origin"]["from"] == server.url("mirror/copy.onnx")
    assert server.ranges == [None, None]  # the entry's own URL was never asked


def test_a_local_file_replaces_the_download_and_a_wrong_one_is_left_alone(resnet, server, tmp_path):
    entry, data, repo = resnet
    wrong = tmp_path / "wrong.onnx"
    wrong.write_bytes(damaged(data, "corrupted", tmp_path))
    with pytest.raises(EdgeError, match=f"{wrong}: sha256 "):
        pull(entry.name, repo, file=wrong)
    assert wrong.exists() and not repo.exists()
    right = tmp_path / "right.onnx"
    right.write_bytes(data)
    assert pull(entry.name, repo, file=right) == repo / entry.name
    assert server.ranges == []


def test_an_existing_model_is_kept_unless_forced_and_nothing_is_downloaded_first(resnet, server, capsys):
    entry, _, repo = resnet
    pull(entry.name, repo)
    with pytest.raises(EdgeError, match="already exists; pass --force"):
        pull(entry.name, repo)
    assert len(server.ranges) == 1
    (repo / entry.name / "model.fp16.onnx").write_bytes(b"a variant")
    assert cli.main(["zoo", "pull", entry.name, "--repo", str(repo), "--force"]) == 0
    assert len(server.ranges) == 2
    assert "replaced; discarded precision variants (model.fp16.onnx)" in capsys.readouterr().err


def test_an_unknown_name_and_an_unreachable_url_are_one_line(resnet, server, capsys):
    entry, _, repo = resnet
    assert cli.main(["zoo", "pull", "no-such-model", "--repo", str(repo)]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert cli.main(["zoo", "pull", entry.name, "--repo", str(repo), "--url", server.url("missing.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HTTP 404" in err


def test_a_checked_download_whose_import_fails_is_kept_for_the_next_run(resnet, server, tmp_path, capsys):
    entry, data, repo = resnet
    wrong = tmp_path / "wrong_labels.txt"
    wrong.write_text("".join(f"class {i}\n" for i in range(1001)))
    assert cli.main(["zoo", "pull", entry.name, "--repo", str(repo), "--labels", str(wrong)]) == 1
    assert "1001 labels" in capsys.readouterr().err and not (repo / entry.name).exists()
    server.ranges.clear()
    labels = imagenet_labels(tmp_path / "synset_words.txt")
    assert cli.main(["zoo", "pull", entry.name, "--repo", str(repo), "--labels", str(labels)]) == 0
    assert server.ranges == [f"bytes={len(data)}-"]  # nothing fetched again: the file it had was checked again
    assert sorted(p.name for p in repo.iterdir()) == [entry.name]


@pytest.mark.parametrize("url", ["mirror.example/resnet18-v1-7.onnx", "/tmp/resnet18-v1-7.onnx", "http://[::1",
                                 "ftp://mirror.example/resnet18-v1-7.onnx"])
def test_a_mirror_that_is_no_http_url_is_one_line_before_anything_is_made(resnet, url, capsys):
    entry, _, repo = resnet
    assert cli.main(["zoo", "pull", entry.name, "--repo", str(repo), "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"edge: error: {url}: not ") and err.count("\n") == 1, err
    assert not repo.exists()


def test_a_server_sending_a_content_length_that_is_no_number_is_read_to_its_end(resnet, server):
    entry, data, repo = resnet
    server.length = "lots"  # http.client then reads to the connection's close
    folder = pull(entry.name, repo)
    assert (folder / "model.onnx").is_file() and server.ranges == [None]
