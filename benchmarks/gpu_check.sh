#!/usr/bin/env bash
# The GPU check of the data path and the profiler, in one call on a GPU machine (see ../shared/GPU.md).
#
#   1. here, on a machine with PyPI:   bash benchmarks/gpu_check.sh fetch
#      puts into .gpu/ (git-ignored through .git/info/exclude) what the GPU machine lacks and cannot download:
#      pycuda's source distribution, setuptools to build it and its pure-Python needs, siphash24 (compiled,
#      CPython 3.12), onnx2torch for the torch backend, tomli-w for edge itself, and the EfficientNet-Lite0 model
#      from ../shared.
#   2. on the GPU machine (the device tool: carry [".gpu"], command "bash benchmarks/gpu_check.sh"):
#      records the machine (GPU, driver, nvcc, TensorRT or its absence), builds pycuda with the machine's nvcc
#      (or installs .gpu/pycuda-*.whl if a previous run left one), runs the GPU tests, then
#      benchmarks/gpu_profile.py, which prints the table that goes into docs/benchmarks.md.
#      The pycuda wheel it builds is copied to $OUT: put it into .gpu/ and the next run skips the build (if the
#      build and the rest do not fit in one call's 10 minutes, the second call then does).
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu

if [[ "${1:-}" == "fetch" ]]; then
    mkdir -p "$CARRY"
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qx "/$CARRY/" "$exclude" 2>/dev/null || echo "/$CARRY/" >> "$exclude"
    pip download -q --no-deps --no-binary pycuda -d "$CARRY" "pycuda==2026.1"
    pip download -q --no-deps --only-binary=:all: -d "$CARRY" "pytools==2026.1.1" "platformdirs==4.14.7" \
        "mako==1.4.3" "onnx2torch==1.5.15" "tomli-w==1.2.0" "setuptools==84.2.1"
    pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
        -d "$CARRY" siphash24
    mkdir -p "$CARRY/efficientnet_lite0"
    cp ../shared/models/efficientnet_lite0/model.onnx "$CARRY/efficientnet_lite0/"
    ls -la "$CARRY"
    exit 0
fi

OUT="${OUT:-/tmp/edge-gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PATH="/usr/local/cuda/bin:$PATH"
echo "== machine: $(date -u +%Y-%m-%dT%H:%MZ)"
nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current \
    --format=csv,noheader || true
nvcc --version | tail -2
python3 --version
echo "TensorRT: $(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>&1 | tail -1)"
echo "libnvinfer: $(ldconfig -p | grep -c nvinfer || true) entries"
python3 -c 'import torch, cv2, numpy as np; print("torch", torch.__version__, "| opencv", cv2.__version__,
                                                     "| numpy", np.__version__)'

echo "== install (no network: from $CARRY/)"
SITE=/tmp/edge-site
pip_install() { python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$@"; }
pip_install "$CARRY"/pytools-*.whl "$CARRY"/platformdirs-*.whl "$CARRY"/mako-*.whl "$CARRY"/siphash24-*.whl \
    "$CARRY"/onnx2torch-*.whl "$CARRY"/tomli_w-*.whl
if ls "$CARRY"/pycuda-*.whl >/dev/null 2>&1; then
    pip_install "$CARRY"/pycuda-*.whl
else
    start=$(date +%s)
    # The build uses setuptools from $CARRY: one older than 70.1 cannot make a wheel without the `wheel` package.
    python3 -m pip install -q --no-index --no-deps --target /tmp/pycuda-build-site "$CARRY"/setuptools-*.whl
    mkdir -p /tmp/pycuda-src /tmp/pycuda-libcuda
    tar -xzf "$CARRY"/pycuda-*.tar.gz -C /tmp/pycuda-src --strip-components=1
    # Linking needs an unversioned libcuda.so: the toolkit's stub if it has one, else the driver's libcuda.so.1.
    libcuda=$(ldconfig -p | awk '$1 == "libcuda.so.1" && !found {print $NF; found = 1}')
    [[ -n "$libcuda" ]] && ln -sf "$libcuda" /tmp/pycuda-libcuda/libcuda.so
    # Without cuRAND, which edge does not use and whose headers not every toolkit has (pycuda builds it by default).
    (cd /tmp/pycuda-src && python3 configure.py --cuda-root=/usr/local/cuda --no-cuda-enable-curand \
        --cudadrv-lib-dir='${CUDA_ROOT}/lib64/stubs,/tmp/pycuda-libcuda' >/dev/null)
    PYTHONPATH=/tmp/pycuda-build-site python3 -m pip wheel -q --no-index --no-deps --no-build-isolation \
        -w /tmp/pycuda-wheel /tmp/pycuda-src
    echo "pycuda built in $(( $(date +%s) - start )) s"
    cp /tmp/pycuda-wheel/pycuda-*.whl "$OUT/"
    pip_install /tmp/pycuda-wheel/pycuda-*.whl
fi
export PYTHONPATH="$SITE:$PWD"
python3 -c 'import pycuda, pycuda.driver as cuda; cuda.init()
print("pycuda", pycuda.VERSION_TEXT, "| devices", cuda.Device.count())'

echo "== tests"
python3 -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py tests/test_gpu_kernels.py \
    tests/test_gpu_buffers.py tests/test_profiler.py 2>&1 | tee "$OUT/gpu_tests.log" \
    || echo "== SOME GPU TESTS FAILED (above): the figures below are not to be trusted until they pass"

echo "== benchmark"
python3 benchmarks/gpu_profile.py --model "$CARRY/efficientnet_lite0/model.onnx" --json "$OUT/gpu_profile.json" \
    --plot "$OUT/gpu_profile.png"
