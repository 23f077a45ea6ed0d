"""Precision variants made on the workstation, without a GPU, and checked on the CPU before any engine is built.

    make_fp16(folder)                      -> folder/model.fp16.onnx  (strongly typed float16, float32 I/O)
    calibrate(folder, images)              -> folder/model.int8.onnx  (Q/DQ for TensorRT)
                                            + folder/calibration.cache (TensorRT's text format)
                                            + folder/calibration.json  (ranges, scales, the images used)
    choose_images(DIR|LIST, count)         -> the calibration images, chosen deterministically
    exclude_calibration_images(folder, items) -> evaluation items with the calibration images taken out

Comparing the precisions on the same images is edge.evaluate.evaluate({"fp32": ..., "fp16": ..., "int8": ...}, items),
on the items exclude_calibration_images leaves.
"""

from .calibrate import METHODS, calibrate
from .fp16 import make_fp16
from .images import calibration_images, choose_images, exclude_calibration_images

__all__ = ["METHODS", "calibrate", "calibration_images", "choose_images", "exclude_calibration_images",
           "make_fp16"]
