"""Caffe import end to end: deploy.prototxt + caffemodel (+ mean .binaryproto, labels) -> model folder -> classify."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge import cli
from edge.caffe import read_mean_image, schema
from edge.errors import EdgeError
from edge.importer import PreprocessOptions, import_model
from edge.model import Model
from edge.preprocess import load_image, preprocess

from caffe_helpers import one_layer_net, opencv_forward, random_caffemodel

TINY = one_layer_net("""
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" \
convolution_param { num_output: 8 kernel_size: 3 stride: 2 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 4 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
""", (1, 3, 20, 20))


def write_mean(path: Path, mean: np.ndarray, legacy: bool = True, double: bool = False) -> None:
    blob = schema.BlobProto()
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = 1, *mean.shape
    else:
        blob.shape.dim.extend(mean.shape)
    (blob.double_data if double else blob.data).extend(mean.ravel().tolist())
    path.write_bytes(blob.SerializeToString())


@pytest.mark.parametrize("legacy, double", [(True, False), (False, True)])
def test_read_mean_image_forms(tmp_path: Path, legacy: bool, double: bool) -> None:
    mean = np.random.default_rng(0).uniform(0, 255, (3, 5, 4)).astype(np.float32)
    write_mean(tmp_path / "mean.binaryproto", mean, legacy, double)
    np.testing.assert_array_equal(read_mean_image(tmp_path / "mean.binaryproto"), mean)


def test_read_mean_image_refuses_other_shapes(tmp_path: Path) -> None:
    write_mean(tmp_path / "mean.binaryproto", np.zeros((2, 3, 4, 4), np.float32).reshape(2, 3, 4, 4)[0, 0],
               legacy=False)
    with pytest.raises(EdgeError, match="mean.binaryproto: a mean image is"):
        read_mean_image(tmp_path / "mean.binaryproto")


def test_shared_imagenet_mean(shared: Path) -> None:
    mean = read_mean_image(shared / "data" / "imagenet_mean.binaryproto")
    assert mean.shape == (3, 256, 256) and mean.dtype == np.float32
    # BGR channel means of ILSVRC 2012 as pycaffe's ilsvrc_2012_mean.npy gives them; that file was made separately
    # and its means differ from this binaryproto's by about 0.11
    np.testing.assert_allclose(mean.mean(axis=(1, 2)), [104.00698793, 116.66876762, 122.67891434], atol=0.2)


def test_import_squeezenet_with_mean_file(shared: Path, tmp_path: Path) -> None:
    deploy = shared / "models" / "caffe" / "squeezenet_v1.1" / "deploy.prototxt"
    caffemodel = tmp_path / "squeezenet.caffemodel"
    random_caffemodel(deploy, caffemodel, seed=11)
    mean_file = shared / "data" / "imagenet_mean.binaryproto"
    folder = import_model(deploy, weights=caffemodel, repo=tmp_path / "engines",
                          labels=shared / "data" / "synset_words.txt", options=PreprocessOptions(mean_file=mean_file))
    assert folder.name == "squeezenet_v1.1" and (folder / "mean.npy").is_file()
    model = Model.load(folder)
    spec = model.card.preprocess
    assert ((spec.color, spec.resize, spec.size, tuple(spec.mean), spec.scale)
            == ("bgr", "stretch", (227, 227), (0.0,) * 3, 1.0))
    image = load_image(shared / "data" / "cat.jpg")
    predictions = model.classify(image, top=5)
    assert len(predictions) == 5 and predictions[0].probability >= predictions[-1].probability
    assert all(p.label and not p.label.startswith("n0") for p in predictions)
    # the model folder runs the same numbers as OpenCV's Caffe importer on the same preprocessed pixels
    batch = preprocess(image, spec)[None]
    expected = opencv_forward(deploy, caffemodel, batch).reshape(1, -1)
    np.testing.assert_allclose(model.probabilities(batch), expected, atol=1e-4 * np.abs(expected).max())


def tiny_model(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    prototxt, caffemodel = tmp_path / "deploy.prototxt", tmp_path / "tiny.caffemodel"
    prototxt.write_text(TINY)
    random_caffemodel(prototxt, caffemodel, seed=2, v1=True)
    mean = tmp_path / "mean.binaryproto"
    write_mean(mean, np.random.default_rng(1).uniform(90, 130, (3, 24, 24)).astype(np.float32))
    labels = tmp_path / "labels.txt"
    labels.write_text("zero\none\ntwo\nthree\n")
    return prototxt, caffemodel, mean, labels


def test_cli_import_and_classify(tmp_path: Path, capsys) -> None:
    prototxt, caffemodel, mean, labels = tiny_model(tmp_path)
    repo = tmp_path / "engines"
    code = cli.main(["import", str(prototxt), "--weights", str(caffemodel), "--mean", str(mean), "--labels",
                     str(labels), "--name", "tiny", "--repo", str(repo)])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(repo / "tiny")
    image = tmp_path / "image.png"
    cv2.imwrite(str(image), np.random.default_rng(4).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    assert cli.main(["classify", "tiny", str(image), "--repo", str(repo), "--top", "2", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]["top"]
    names = ["zero", "one", "two", "three"]
    assert len(top) == 2 and all(names[p["class_id"]] == p["label"] for p in top)
    assert top[0]["probability"] >= top[1]["probability"] and sum(p["probability"] for p in top) <= 1 + 1e-6


def test_cli_mean_values_and_transform_defaults(tmp_path: Path, capsys) -> None:
    prototxt, caffemodel, _, labels = tiny_model(tmp_path)
    repo = tmp_path / "engines"
    assert cli.main(["import", str(prototxt), "--weights", str(caffemodel), "--mean-values", "104,117,123",
                     "--labels", str(labels), "--name", "mv", "--repo", str(repo)]) == 0
    spec = Model.load(repo / "mv").card.preprocess
    assert tuple(spec.mean) == (104.0, 117.0, 123.0) and spec.mean_image is None and spec.scale == 1.0


def test_cli_refuses_unsupported_layer_and_writes_nothing(tmp_path: Path, capsys) -> None:
    prototxt, caffemodel, _, _ = tiny_model(tmp_path)
    prototxt.write_text(TINY.replace('type: "ReLU"', 'type: "Threshold"'))
    repo = tmp_path / "engines"
    code = cli.main(["import", str(prototxt), "--weights", str(caffemodel), "--repo", str(repo)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "'relu'" in err and "Threshold" in err and "supported:" in err
    assert len(err.splitlines()) == 1
    assert not repo.exists() or not any(repo.iterdir())


def test_a_mean_file_named_by_transform_param_must_be_given(tmp_path: Path, capsys) -> None:

    prototxt, caffemodel = tmp_path / "deploy.prototxt", tmp_path / "net.caffemodel"
    prototxt.write_text('layer { name: "data" type: "Input" top: "data" transform_param { mean_file: '
                        '"/data/imagenet_mean.binaryproto" } input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }\n'
                        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                        'inner_product_param { num_output: 4 } }\n')
    random_caffemodel(prototxt, caffemodel, seed=1)
    repo = tmp_path / "engines"
    code = cli.main(["import", str(prototxt), "--weights", str(caffemodel), "--repo", str(repo)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "--mean imagenet_mean.binaryproto" in err
    assert not repo.exists() or not any(repo.iterdir())
    assert cli.main(["import", str(prototxt), "--weights", str(caffemodel), "--repo", str(repo),
                     "--mean-values", "104,117,123"]) == 0
