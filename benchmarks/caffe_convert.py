"""Caffe -> ONNX conversion time for every shared prototxt, with random weights written as a caffemodel.

For each net: `convert_caffe` (read prototxt and caffemodel, build the ONNX graph in memory) and the whole
`import_model` (conversion, ONNX checker and shape inference, writing the model folder), each timed --rounds
times; the median and the best are printed as a Markdown table for docs/benchmarks.md.

    python benchmarks/caffe_convert.py [--shared ../shared] [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the random-caffemodel writer is a test helper

from edge.caffe import convert_caffe
from edge.importer import import_model

from caffe_helpers import random_caffemodel


def timed(function, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    nets = sorted((args.shared / "models" / "caffe").glob("*/deploy.prototxt"))
    print(f"python {platform.python_version()}, {platform.machine()}, rounds {args.rounds}\n")
    print("| net | prototxt layers | ONNX weights | caffemodel | ONNX nodes | convert_caffe median (best) "
          "| import_model median (best) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for deploy in nets:
            name = deploy.parent.name
            caffemodel = work / f"{name}.caffemodel"
            random_caffemodel(deploy, caffemodel, seed=0)
            model = convert_caffe(deploy, caffemodel).model
            parameters = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
            layers = deploy.read_text().count("layer {")
            convert = timed(lambda d=deploy, c=caffemodel: convert_caffe(d, c), args.rounds)
            imported = timed(lambda d=deploy, c=caffemodel, n=name: import_model(
                d, weights=c, repo=work / "engines", name=n, force=True), args.rounds)
            shutil.rmtree(work / "engines")
            print(f"| {name} | {layers} | {parameters / 1e6:.2f} M | {caffemodel.stat().st_size / 1e6:.1f} MB | "
                  f"{len(model.graph.node)} | {statistics.median(convert) * 1e3:.0f} ms ({min(convert) * 1e3:.0f}) | "
                  f"{statistics.median(imported) * 1e3:.0f} ms ({min(imported) * 1e3:.0f}) |")


if __name__ == "__main__":
    main()
