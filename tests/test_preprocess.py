"""The CPU reference preprocessing against values worked out by hand."""

import numpy as np
import pytest

from edge.errors import EdgeError
from edge.preprocess import Preprocess, oversample, preprocess


def frame(height, width, bgr=(10, 20, 30)):
    image = np.empty((height, width, 3), np.uint8)
    image[:] = bgr
    return image


def test_stretch_halves_by_averaging_2x2_blocks():
    # INTER_LINEAR with half-pixel centres samples output pixel i at source 2i + 0.5: the mean of a 2x2 block.
    image = np.zeros((4, 4, 3), np.uint8)
    image[:, :, 0] = np.array([[0, 4, 8, 12], [4, 8, 12, 16], [40, 44, 48, 52], [44, 48, 52, 56]])
    out = preprocess(image, Preprocess(size=(2, 2), mean=(0, 0, 0)))
    assert out.shape == (3, 2, 2)
    np.testing.assert_array_equal(out[0], [[4, 12], [44, 52]])


def test_stretch_ignores_aspect_ratio():
    spec = Preprocess(size=(224, 224))
    assert spec.resized_shape(480, 640) == (224, 224)
    assert Preprocess(size=(227, 227), resize_size=256).resized_shape(480, 640) == (256, 256)


def test_shorter_side_keeps_aspect_and_truncates_the_longer_side():
    spec = Preprocess(size=(224, 224), resize="shorter", resize_size=256)
    assert spec.resized_shape(300, 400) == (256, 341)  # int(256 * 400 / 300) = int(341.33)
    assert spec.resized_shape(400, 300) == (341, 256)
    assert Preprocess(size=(224, 224), resize="shorter").resized_shape(224, 224) == (256, 256)  # 256/224 default


def test_shorter_side_grows_until_a_non_square_input_fits():
    spec = Preprocess(size=(16, 24), resize="shorter", resize_size=18)
    assert spec.resized_shape(20, 20) == (24, 24)  # 18 x 18 would be narrower than the 24-wide input
    assert preprocess(frame(20, 20), spec).shape == (3, 16, 24)
    assert spec.resized_shape(20, 40) == (18, 36)  # already fits: torchvision's rule holds


def test_centre_crop_rounds_like_torchvision():
    spec = Preprocess(size=(224, 224), resize="shorter", resize_size=256)
    assert spec.crop_origins(256, 341) == [(16, 58)]  # round(58.5) = 58, Python's and torchvision's rounding
    assert spec.crop_origins(256, 343) == [(16, 60)]  # round(59.5) = 60


def test_crop_takes_the_centre_window():
    image = np.zeros((6, 8, 3), np.uint8)
    image[:, :, 0] = np.arange(48).reshape(6, 8)
    # A shorter-side resize to 6 leaves this 6x8 frame as it is, so only the crop acts.
    spec = Preprocess(size=(2, 4), resize="shorter", resize_size=6)
    out = preprocess(image, spec)
    np.testing.assert_array_equal(out[0], image[2:4, 2:6, 0])


def test_colour_order_mean_and_scale():
    image = frame(4, 4, bgr=(10, 20, 30))
    bgr = preprocess(image, Preprocess(size=(4, 4), mean=(1, 2, 3), scale=0.5))
    np.testing.assert_allclose(bgr[:, 0, 0], [(10 - 1) * 0.5, (20 - 2) * 0.5, (30 - 3) * 0.5])
    rgb = preprocess(image, Preprocess(size=(4, 4), color="rgb", mean=(1, 2, 3), std=(2, 4, 8)))
    np.testing.assert_allclose(rgb[:, 0, 0], [(30 - 1) / 2, (20 - 2) / 4, (10 - 3) / 8])


def test_gray_is_one_channel():
    out = preprocess(frame(4, 4, bgr=(100, 100, 100)), Preprocess(size=(4, 4), color="gray", mean=(0,)))
    assert out.shape == (1, 4, 4)
    np.testing.assert_allclose(out, 100)


def test_mean_image_is_resized_with_the_frame_and_cropped_with_it():
    mean_image = np.zeros((3, 4, 4), np.float32)
    mean_image[0] = np.arange(16).reshape(4, 4)  # model channel order (bgr): channel 0 is blue
    spec = Preprocess(size=(2, 2), resize="shorter", resize_size=4, mean=(0, 0, 0), mean_image=mean_image)
    out = preprocess(frame(4, 4, bgr=(100, 0, 0)), spec)
    np.testing.assert_allclose(out[0], 100 - mean_image[0, 1:3, 1:3])
    # A mean image of another size is brought to the resized frame's size first.
    half = Preprocess(size=(2, 2), mean=(0, 0, 0), mean_image=np.full((3, 8, 8), 5, np.float32))
    np.testing.assert_allclose(preprocess(frame(4, 4, bgr=(100, 0, 0)), half)[0], 95)


def test_layouts_hold_the_same_values():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    nchw = preprocess(image, Preprocess(size=(8, 8)))
    nhwc = preprocess(image, Preprocess(size=(8, 8), layout="nhwc"))
    assert nhwc.shape == (8, 8, 3) and nchw.dtype == np.float32
    np.testing.assert_array_equal(nchw.transpose(1, 2, 0), nhwc)
    np.testing.assert_array_equal(nhwc, image.astype(np.float32))


def test_oversample_takes_corners_centre_and_their_mirrors():
    image = np.zeros((4, 4, 3), np.uint8)
    image[:, :, 0] = np.arange(16).reshape(4, 4)
    spec = Preprocess(size=(2, 2), resize="stretch", resize_size=4)
    crops = oversample(image, spec)[:, 0]
    assert crops.shape == (10, 2, 2)
    plane = image[:, :, 0]
    expected = [plane[0:2, 0:2], plane[0:2, 2:4], plane[2:4, 0:2], plane[2:4, 2:4], plane[1:3, 1:3]]
    for i, window in enumerate(expected):
        np.testing.assert_array_equal(crops[i], window)
        np.testing.assert_array_equal(crops[i + 5], window[:, ::-1])


@pytest.mark.parametrize("kwargs", [
    {"resize": "fit"}, {"color": "yuv"}, {"layout": "chw"}, {"mean": (1, 2)}, {"std": (1,)}, {"std": (0, 1, 1)},
    {"resize_size": 100}, {"resize_size": 200, "resize": "shorter"},
])
def test_bad_specs_are_refused(kwargs):
    with pytest.raises(EdgeError):
        Preprocess(size=(224, 224), **kwargs)


def test_a_frame_that_is_not_uint8_bgr_is_refused():
    with pytest.raises(EdgeError, match="uint8 HxWx3"):
        preprocess(np.zeros((4, 4), np.uint8), Preprocess(size=(2, 2)))
