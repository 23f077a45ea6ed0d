"""The model comparison of README.md's "Choosing a model" and docs/benchmarks.md, from nothing but ../shared.

Imports EfficientNet-Lite0 and -Lite1 (each with its README's preprocessing) and two Caffe zoo networks with
generated weights (tests/caffe_helpers.py: random, so their accuracy is chance; they are here for speed), makes
each one's FP16 and INT8 (100 calibration images) variants, then runs `edge bench` over all four, ONNX Runtime and
OpenCV DNN, on the 500 sample images, writing the Markdown and CSV tables, the JSON (edge.bench/1) and the plot
into --out.
Model folders already made in --repo are reused (delete them to start again).

    python benchmarks/bench_models.py [--shared ../shared] [--repo engines] [--out build/bench] [--limit N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EFFICIENTNET = {  # name -> the shorter side its README resizes to before the centre crop
    "efficientnet_lite0": 256,
    "efficientnet_lite1": 274,
}
CAFFE = {  # name -> the mean (BGR) and scale of the zoo's training (commented out in these deploy.prototxt files)
    "squeezenet_v1.1": ("104,117,123", None),
    "mobilenet_v1": ("103.94,116.78,123.68", "0.017"),
}


def edge(*args: str, stdout=None) -> None:
    print("+ edge", " ".join(args), file=sys.stderr)
    subprocess.run([sys.executable, "-m", "edge.cli", *args], check=True, stdout=stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--repo", type=Path, default=ROOT / "engines")
    parser.add_argument("--out", type=Path, default=ROOT / "build/bench")
    parser.add_argument("--limit", type=int, help="score accuracy on only the first N images")
    parser.add_argument("--frames", default="20")
    parser.add_argument("--rounds", default="5")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from caffe_helpers import random_caffemodel

    labels, images = args.shared / "data/synset_words.txt", args.shared / "data/imagenet-sample/labels.txt"
    repo = ["--repo", str(args.repo)]
    args.repo.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, side in EFFICIENTNET.items():
        if not (args.repo / name).is_dir():
            edge("import", str(args.shared / f"models/{name}/model.onnx"), "--name", name, *repo,
                 "--resize", f"shorter:{side}", "--color", "rgb", "--mean-values", "127,127,127",
                 "--std", "128,128,128", "--labels", str(labels))
    for name, (mean, scale) in CAFFE.items():
        if not (args.repo / name).is_dir():
            weights = args.out / f"{name}.caffemodel"
            random_caffemodel(args.shared / f"models/caffe/{name}/deploy.prototxt", weights, train_layers=False)
            edge("import", str(args.shared / f"models/caffe/{name}/deploy.prototxt"), "--weights", str(weights),
                 "--name", name, *repo, "--mean-values", mean, *(["--scale", scale] if scale else []),
                 "--labels", str(labels))
    names = [*EFFICIENTNET, *CAFFE]
    for name in names:
        if not (args.repo / name / "model.fp16.onnx").is_file():
            edge("fp16", name, *repo)
        if not (args.repo / name / "model.int8.onnx").is_file():
            edge("calibrate", name, *repo, "--images", str(images), "--count", "100")
    limit = ["--limit", str(args.limit)] if args.limit else []
    out = args.out
    with open(out / "bench.json", "w") as json_file:
        edge("bench", *names, *repo, "--list", str(images), "--backend", "onnxruntime,opencv", "--frames",
             args.frames, "--rounds", args.rounds, *limit, "--json", "--markdown", str(out / "bench.md"),
             "--csv", str(out / "bench.csv"), "--plot", str(out / "bench.png"), stdout=json_file)
    print((out / "bench.md").read_text())


if __name__ == "__main__":
    main()
