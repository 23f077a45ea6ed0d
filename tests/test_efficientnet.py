"""The foundation's acceptance on a real model: EfficientNet-Lite0 from ../shared, imported and evaluated."""

import json

import onnx
import pytest

from edge.cli import main
from edge.evaluate import evaluate, read_label_list
from edge.importer import PreprocessOptions, import_model
from edge.model import Model
from edge.precision import calibrate, choose_images, exclude_calibration_images, make_fp16
from edge.precision.calibrate import check_int8_graph
from edge.tensorrt.calibration_cache import read_cache

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


def test_efficientnet_lite0_fp16_and_int8_on_real_images(shared, tmp_path, onnxruntime_calibrates):
    folder = import_model(shared / "models" / "efficientnet_lite0" / "model.onnx", repo=tmp_path, name="lite0",
                          options=PreprocessOptions(resize="shorter", resize_size=256, color="rgb",
                                                    mean_values=(127, 127, 127), scale=1 / 128))
    labels = shared / "data" / "imagenet-sample" / "labels.txt"
    make_fp16(folder)
    chosen = choose_images(labels, 20)
    calibrate(folder, chosen)
    check_int8_graph(onnx.load(str(folder / "model.int8.onnx")))
    record = json.loads((folder / "calibration.json").read_text())
    assert read_cache(folder / "calibration.cache").scales == {k: t["scale"] for k, t in record["tensors"].items()}

    items = exclude_calibration_images(folder, read_label_list(labels))
    assert len(items) == 480 and not {p.resolve() for p, _ in items} & {p.resolve() for p in chosen}
    models = {p: Model.load(folder, precision=p) for p in ("fp32", "fp16", "int8")}
    scores = evaluate(models, items[::12], batch_size=8, progress=False)  # 40 images spread over the classes
    assert scores["fp16"]["top1_agreement"] >= 0.975
    assert scores["int8"]["top1_agreement"] >= 0.85
    assert scores["int8"]["top1"] >= scores["fp32"]["top1"] - 0.1
