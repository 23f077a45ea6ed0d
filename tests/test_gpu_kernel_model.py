"""The fused kernel's arithmetic, written again in numpy, held to the CPU reference (edge.preprocess) on the CPU.

`kernel_model` follows edge/gpu/kernels.py SOURCE statement by statement, in float32, and takes its arguments
from the same host code the launch uses (geometry, channel_constants, cropped_mean_image). So the index math
(crop offsets, source coordinates, bilinear weights, edge clamping, layout) and the launch parameters are checked
here without a GPU; tests/test_gpu.py holds the compiled kernel to the same reference on a GPU.

Tolerance: one pixel level after normalisation, i.e. 1/255 of the normalised range (|k| per level). The
reference rounds the resized image to uint8 and the kernel does not; the difference stays under 0.81 levels.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edge.gpu import kernels
from edge.gpu.kernels import (ARGUMENT_FORMAT, COLOR_CODES, FusedPreprocess, channel_constants, cropped_mean_image,
                              geometry, output_shape)
from edge.preprocess import Preprocess, preprocess


def kernel_model(frames: np.ndarray, spec: Preprocess, dtype=np.float32) -> np.ndarray:
    """What the kernel writes for a batch of uint8 (N, H, W, 3) BGR frames, computed for every (n, y, x) at once."""
    batch, frame_height, frame_width, _ = frames.shape
    g = geometry(spec, frame_height, frame_width)
    mean, k = channel_constants(spec)
    mean_image = cropped_mean_image(spec, g)
    f32 = np.float32

    def source(out_index, crop, scale, limit):
        s = (out_index + crop + f32(0.5)).astype(f32) * scale - f32(0.5)
        i0 = np.floor(s).astype(np.int64)
        frac = (s - i0).astype(f32)
        frac[i0 < 0] = 0
        i0[i0 < 0] = 0
        last = i0 >= limit - 1
        frac[last] = 0
        i0[last] = limit - 1
        return i0, np.minimum(i0 + 1, limit - 1), frac

    y0, y1, fy = source(np.arange(g.out_height), g.crop_top, g.scale_y, frame_height)
    x0, x1, fx = source(np.arange(g.out_width), g.crop_left, g.scale_x, frame_width)
    f = frames.astype(f32)
    fx, fy = fx[None, None, :, None], fy[None, :, None, None]
    top = f[:, y0][:, :, x0] * (f32(1) - fx) + f[:, y0][:, :, x1] * fx
    bottom = f[:, y1][:, :, x0] * (f32(1) - fx) + f[:, y1][:, :, x1] * fx
    bgr = top * (f32(1) - fy) + bottom * fy  # (N, out_h, out_w, 3)

    code = COLOR_CODES[spec.color]
    if code == 2:
        pixel = np.rint(f32(0.114) * bgr[..., 0] + f32(0.587) * bgr[..., 1] + f32(0.299) * bgr[..., 2])[..., None]
    elif code == 1:
        pixel = bgr[..., ::-1]
    else:
        pixel = bgr
    channels = pixel.shape[-1]
    value = pixel.astype(f32)
    if mean_image is not None:
        value = value - mean_image.transpose(1, 2, 0)[None]
    value = (value - mean[:channels]) * k[:channels]
    if spec.layout == "nchw":
        value = value.transpose(0, 3, 1, 2)
    out = np.ascontiguousarray(value).astype(dtype)
    assert out.shape == output_shape(spec, batch)
    return out


def reference(frames: np.ndarray, spec: Preprocess) -> np.ndarray:
    return np.stack([preprocess(frame, spec) for frame in frames])


def tolerance(spec: Preprocess) -> float:
    _, k = channel_constants(spec)
    return float(np.abs(k[: spec.channels]).max()) * 1.0001


SPECS = {
    "stretch-bgr-nchw": Preprocess(size=(24, 24), mean=(104.0, 117.0, 123.0)),
    "shorter-rgb-scale": Preprocess(size=(20, 20), resize="shorter", resize_size=27, color="rgb",
                                    mean=(127.0, 127.0, 127.0), scale=1 / 128),
    "shorter-default-std": Preprocess(size=(16, 16), resize="shorter", color="rgb", mean=(123.7, 116.3, 103.5),
                                      std=(58.4, 57.1, 57.4)),
    "stretch-oblong-nhwc": Preprocess(size=(16, 24), color="rgb", mean=(1.0, 2.0, 3.0), scale=0.02, layout="nhwc"),
    "stretch-size-gray": Preprocess(size=(28, 28), resize="stretch", resize_size=32, color="gray", mean=(33.0,),
                                    scale=0.0125),
    "mean-image": Preprocess(size=(18, 18), resize_size=21,
                             mean_image=np.random.default_rng(5).uniform(90, 140, (3, 25, 25)).astype(np.float32)),
}
FRAME_SIZES = [(1, 1), (7, 9), (20, 20), (37, 100), (61, 45), (24, 24), (120, 67)]


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("frame_size", FRAME_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_kernel_model_matches_the_cpu_reference(name, frame_size):
    spec = SPECS[name]
    rng = np.random.default_rng(hash((name, frame_size)) % 2**32)
    frames = rng.integers(0, 256, (2, *frame_size, 3), dtype=np.uint8)
    expected = reference(frames, spec)
    got = kernel_model(frames, spec)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() <= tolerance(spec)


def test_kernel_model_on_a_1080p_frame_like_the_benchmark():
    spec = Preprocess(size=(224, 224), resize="shorter", resize_size=256, color="rgb", mean=(127.0,) * 3,
                      scale=1 / 128)
    frame = np.random.default_rng(1).integers(0, 256, (1, 1080, 1920, 3), dtype=np.uint8)
    difference = np.abs(kernel_model(frame, spec) - reference(frame, spec)).max()
    assert difference <= tolerance(spec)
    assert difference > 0  # the two really are different code paths (float vs uint8 intermediate)


def test_float16_output_rounds_the_float32_values():
    spec = SPECS["shorter-rgb-scale"]
    frames = np.random.default_rng(2).integers(0, 256, (1, 40, 50, 3), dtype=np.uint8)
    half = kernel_model(frames, spec, np.float16)
    assert half.dtype == np.float16
    expected = reference(frames, spec)
    assert np.abs(half.astype(np.float32) - expected).max() <= tolerance(spec) + np.abs(expected).max() * 2**-10


def test_geometry_follows_resized_shape_and_crop_origins():
    spec = Preprocess(size=(224, 224), resize="shorter", resize_size=256)
    g = geometry(spec, 1080, 1920)
    assert (g.resized_height, g.resized_width) == (256, 455)
    assert (g.crop_top, g.crop_left) == spec.crop_origins(256, 455)[0] == (16, 116)
    assert (g.out_height, g.out_width) == (224, 224)
    assert g.scale_x == np.float32(1920 / 455)
    assert kernels.grid(g, 3) == (7, 28, 3)


def test_channel_constants_fold_std_into_a_multiplier_and_pad_gray():
    mean, k = channel_constants(Preprocess(size=(8, 8), mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 8.0)))
    assert mean.tolist() == [1, 2, 3] and k.tolist() == [0.5, 0.25, 0.125]
    mean, k = channel_constants(Preprocess(size=(8, 8), color="gray", mean=(5.0,), scale=0.5))
    assert mean.tolist() == [5, 0, 0] and k.tolist() == [0.5, 1, 1]


def test_argument_format_matches_the_kernel_signature():
    signature = kernels.SOURCE.split("preprocess_frames(")[1].split(")")[0]
    assert len(signature.split(",")) == len(ARGUMENT_FORMAT)


def test_launch_marshals_every_argument_the_kernel_takes(monkeypatch):
    """The host side of a launch, up to the driver call: one packable value per kernel argument."""
    calls = []

    class Recorder:
        def prepared_async_call(self, grid, block, stream, *args):
            calls.append((grid, block, stream, args))

    monkeypatch.setattr(kernels, "kernel_function", lambda: Recorder())
    spec = SPECS["stretch-oblong-nhwc"]
    FusedPreprocess(spec, np.float16).launch(0x1000, 480, 640, 2, 0x2000, stream="s")
    (grid, block, stream, args), = calls
    struct.pack("=" + ARGUMENT_FORMAT.replace("P", "Q"), *args)  # raises if a value has the wrong type
    g = geometry(spec, 480, 640)
    assert grid == kernels.grid(g, 2) and block == kernels.BLOCK and stream == "s"
    assert args[0] == 0x1000 and args[1] == 480 * 640 * 3 and args[2] == 640 * 3
    assert args[7:11] == (g.crop_top, g.crop_left, 16, 24)
    assert args[12] == 0  # no mean image: a null pointer
    assert args[-3:] == (1, 1, 0x2000)  # nhwc, half, the output


def test_fused_preprocess_rejects_other_output_types():
    with pytest.raises(ValueError):
        FusedPreprocess(SPECS["stretch-bgr-nchw"], np.uint8)


def test_the_kernel_keeps_a_bounded_number_of_frame_sizes():
    from edge.gpu.kernels import SIZES_KEPT

    kernel = FusedPreprocess(Preprocess(size=(8, 8), resize="shorter", resize_size=9))
    for side in range(10, 10 + 3 * SIZES_KEPT):
        geometry, _ = kernel._prepared(side, side + 1)
        assert geometry.frame_height == side
    assert len(kernel._per_size) == SIZES_KEPT
    assert next(reversed(kernel._per_size)) == (10 + 3 * SIZES_KEPT - 1, 10 + 3 * SIZES_KEPT)
