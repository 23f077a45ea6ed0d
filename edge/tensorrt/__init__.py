"""Everything that touches TensorRT, laid out as Polygraphy lays out its backend/trt (loader.py, runner.py):

    version.py            which TensorRT is here and how edge builds and runs with it; this machine's GPU (edge info)
    build.py              `edge build`: engine names, JSON sidecars, staleness, the build through Polygraphy
    calibration_cache.py  TensorRT's INT8 calibration cache: the text `edge calibrate` writes, the build reads
    runner.py             a built engine, run from host arrays or device memory (the tensorrt backend)

tensorrt, polygraphy and pycuda are imported only inside the functions that need them, so every module here
imports, and most of it is tested, on a machine without them. docs/tensorrt.md lists each TensorRT call by version.
"""
