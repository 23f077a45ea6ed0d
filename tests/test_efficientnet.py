"""The foundation's acceptance on a real model: EfficientNet-Lite0 from ../shared, imported and evaluated."""

import json

import pytest

from edge.cli import main

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def effnet(shared, tmp_path_factory):
    repo = tmp_path_factory.mktemp("engines")
    # The model's README: RGB, shorter side to 256 (bilinear), centre crop 224, (pixel - 127) / 128.
    status = main(["import", str(shared / "models/efficientnet_lite0/model.onnx"), "--repo", str(repo),
                   "--name", "effnet", "--resize", "shorter:256", "--color", "rgb",
                   "--mean-values", "127,127,127", "--std", "128,128,128",
                   "--labels", str(shared / "data/synset_words.txt")])
    assert status == 0
    return repo


def test_a_cat_is_a_cat(effnet, shared, capsys):
    capsys.readouterr()
    assert main(["classify", "effnet", "--repo", str(effnet), str(shared / "data/cat.jpg"), "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]["top"]
    assert 281 <= top[0]["class_id"] <= 285


def test_imagenet_sample_accuracy_matches_the_model_card(effnet, shared, capsys):
    capsys.readouterr()
    assert main(["eval", "effnet", "--repo", str(effnet), "--list",
                 str(shared / "data/imagenet-sample/labels.txt"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["precisions"]["fp32"]
    assert scores["n"] == 500
    assert abs(scores["top1"] - 0.870) <= 0.01 and abs(scores["top5"] - 0.970) <= 0.01
