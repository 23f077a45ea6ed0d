"""The preprocessing spec and its CPU reference implementation.

One spec, recorded in the model card, says how a decoded frame (uint8, HWC, BGR as OpenCV decodes it) becomes
the model's input. The steps, in order:

1. resize  "stretch": to S x S (S = resize_size, default the input size), ignoring aspect ratio, as Caffe's
           classifiers do; "shorter": the shorter side to S keeping aspect ratio (torchvision's rule: the longer
           side is int(S * long / short)), S defaulting to 256/224 of the input's shorter side, and larger
           when a non-square input would not otherwise fit inside the resized frame.
           Bilinear with half-pixel centres (OpenCV INTER_LINEAR); the GPU kernel follows the same convention.
2. crop    the centre input-size window (torchvision's rounding); oversampling takes the four corners too.
3. colour  reorder to the model's channel order ("bgr", "rgb"), or convert to one "gray" channel.
4. values  (pixel - mean) * scale, or (pixel - mean) / std; mean is per channel or a mean image, both in the
           model's channel order. A mean image is resized to the resized frame and cropped with it, which is
           what Caffe's data layer does when its mean_file matches the resized images.
5. layout  "nchw" or "nhwc", float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .errors import EdgeError
from .imagefile import load_image, max_image_pixels
from .words import plural

RESIZE_MODES = ("stretch", "shorter")
COLORS = ("bgr", "rgb", "gray")
LAYOUTS = ("nchw", "nhwc")
MAX_SIDE = 4096  # an input side; a model's float32 input is then at most 200 MB per image


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int]  # the model input's (height, width)
    resize: str = "stretch"
    resize_size: int | None = None
    color: str = "bgr"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    mean_image: np.ndarray | None = field(default=None, compare=False, repr=False)  # (C, H, W) float32
    scale: float = 1.0
    std: tuple[float, ...] | None = None
    layout: str = "nchw"

    def __post_init__(self) -> None:
        if problems := self.problems():
            raise EdgeError("; ".join(problems))

    def problems(self) -> list[str]:
        """Every way this spec cannot preprocess a frame, one line each."""
        problems = []
        if self.resize not in RESIZE_MODES:
            problems.append(f"resize must be one of {', '.join(RESIZE_MODES)}, not {self.resize!r}")
        if self.color not in COLORS:
            problems.append(f"color must be one of {', '.join(COLORS)}, not {self.color!r}")
        if self.layout not in LAYOUTS:
            problems.append(f"layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        if not all(1 <= side <= MAX_SIDE for side in self.size):
            problems.append(f"input size {self.size}: each side must be 1 to {MAX_SIDE}")
        if len(self.mean) != self.channels:
            problems.append(f"mean has {plural(len(self.mean), 'value')}; the model has "
                            f"{plural(self.channels, 'channel')}")
        if self.std is not None and len(self.std) != self.channels:
            problems.append(f"std has {plural(len(self.std), 'value')}; the model has "
                            f"{plural(self.channels, 'channel')}")
        if self.std is not None and 0 in self.std:  # dividing by it would feed the model inf and NaN
            problems.append(f"std {','.join(f'{s:g}' for s in self.std)}: a divisor of 0")
        for name, values in (("mean", self.mean), ("std", self.std or ()), ("scale", (self.scale,))):
            if not np.isfinite(values).all():  # the model would print NaN probabilities for every frame
                problems.append(f"{name} {','.join(f'{v:g}' for v in values)}: not a finite number")
        if self.mean_image is not None:
            if self.mean_image.ndim != 3 or self.mean_image.shape[0] != self.channels:
                problems.append(f"mean image is shaped {self.mean_image.shape}; expected ({self.channels}, H, W)")
            elif not np.isfinite(self.mean_image).all():
                problems.append("mean image holds values that are not finite numbers")
        smallest = max(self.size) if self.resize == "stretch" else min(self.size)
        if self.resize_size is not None and self.resize_size < smallest:
            problems.append(f"resize size {self.resize_size} is smaller than the input size {self.size}")
        if self.resize_size is not None and self.resize_size > 2 * MAX_SIDE:
            problems.append(f"resize size {self.resize_size}: more than {2 * MAX_SIDE}")
        return problems

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def resized_shape(self, frame_height: int, frame_width: int) -> tuple[int, int]:
        """(height, width) of a frame after step 1."""
        height, width = self.size
        if frame_height < 1 or frame_width < 1:
            raise EdgeError(f"a {frame_width}x{frame_height} frame has no pixels")
        if self.resize == "stretch":
            side = self.resize_size
            return (side, side) if side else (height, width)
        side = self.resize_size or round(min(height, width) * 256 / 224)
        if frame_height <= frame_width:
            resized = side, int(side * frame_width / frame_height)
        else:
            resized = int(side * frame_height / frame_width), side
        if resized[0] < height or resized[1] < width:
            # A non-square input can be wider (or taller) than the frame's resized long side: grow until it fits
            # rather than pad, keeping the aspect ratio (torchvision would pad the crop with zeros instead).
            scale = max(height / frame_height, width / frame_width)
            resized = max(height, int(frame_height * scale)), max(width, int(frame_width * scale))
        # Keeping the aspect ratio of a frame 1 pixel wide would make a resized frame of gigabytes.
        budget = max_image_pixels()
        if resized[0] * resized[1] > budget:
            raise EdgeError(f"a {frame_width}x{frame_height} frame would be resized to {resized[1]}x{resized[0]} "
                            f"keeping its aspect ratio, over the {budget / 1e6:g} MP limit "
                            "(EDGE_MAX_IMAGE_PIXELS)")
        return resized

    def crop_origins(self, resized_height: int, resized_width: int, corners: bool = False) -> list[tuple[int, int]]:
        """Top-left corners of the crop windows: the centre, or the four corners then the centre."""
        height, width = self.size
        centre = (int(round((resized_height - height) / 2.0)), int(round((resized_width - width) / 2.0)))
        if not corners:
            return [centre]
        bottom, right = resized_height - height, resized_width - width
        return [(0, 0), (0, right), (bottom, 0), (bottom, right), centre]


def load_image_for(path: str | Path, spec: Preprocess) -> np.ndarray:
    """load_image, also refusing in one line naming the file an image `spec` would not resize (1 pixel wide)."""
    image = load_image(path)
    try:
        spec.resized_shape(*image.shape[:2])
    except EdgeError as e:
        raise EdgeError(f"{path}: {e}") from None
    return image


def _values(crop_bgr: np.ndarray, spec: Preprocess, mean_image: np.ndarray | None) -> np.ndarray:
    """Steps 3 to 5 for one cropped uint8 BGR window; returns CHW or HWC float32."""
    if spec.color == "rgb":
        pixels = crop_bgr[:, :, ::-1]
    elif spec.color == "gray":
        pixels = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY)[:, :, None]
    else:
        pixels = crop_bgr
    # Reorder the uint8 pixels into the output layout first: moving bytes is cheap, and the float arithmetic
    # below then runs over contiguous memory (about 9x faster than on the strided view, same values).
    nchw = spec.layout == "nchw"
    x = np.ascontiguousarray(pixels.transpose(2, 0, 1) if nchw else pixels).astype(np.float32)
    per_channel = (-1, 1, 1) if nchw else (-1,)
    if mean_image is not None:
        x -= mean_image.transpose(2, 0, 1) if nchw else mean_image
    x -= np.asarray(spec.mean, dtype=np.float32).reshape(per_channel)
    if spec.std is not None:
        x /= np.asarray(spec.std, dtype=np.float32).reshape(per_channel)
    else:
        x *= np.float32(spec.scale)
    return x


def _resize(image: np.ndarray, spec: Preprocess) -> tuple[np.ndarray, np.ndarray | None]:
    """Step 1, and the mean image (HWC) brought to the same size."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise EdgeError(f"expected a uint8 HxWx3 BGR frame, got {image.dtype} {image.shape}")
    height, width = spec.resized_shape(*image.shape[:2])
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    mean_image = None
    if spec.mean_image is not None:
        mean_image = spec.mean_image.transpose(1, 2, 0).astype(np.float32)
        if mean_image.shape[:2] != (height, width):
            mean_image = cv2.resize(mean_image, (width, height), interpolation=cv2.INTER_LINEAR)
        mean_image = mean_image.reshape(height, width, spec.channels)
    return image, mean_image


def _crop(array: np.ndarray | None, origin: tuple[int, int], size: tuple[int, int]) -> np.ndarray | None:
    if array is None:
        return None
    top, left = origin
    return array[top : top + size[0], left : left + size[1]]


def preprocess(image: np.ndarray, spec: Preprocess) -> np.ndarray:
    """One uint8 HWC BGR frame -> one model input (no batch axis)."""
    resized, mean_image = _resize(image, spec)
    (origin,) = spec.crop_origins(*resized.shape[:2])
    return _values(_crop(resized, origin, spec.size), spec, _crop(mean_image, origin, spec.size))


def preprocess_batch(images: list[np.ndarray], spec: Preprocess) -> np.ndarray:
    return np.stack([preprocess(image, spec) for image in images])


def oversample(image: np.ndarray, spec: Preprocess) -> np.ndarray:
    """Caffe's 10-crop oversampling: four corners and the centre, then the same five mirrored left-right.

    Returns a batch of 10 model inputs; the caller averages their probabilities.
    """
    resized, mean_image = _resize(image, spec)
    crops = []
    for origin in spec.crop_origins(*resized.shape[:2], corners=True):
        crops.append((_crop(resized, origin, spec.size), _crop(mean_image, origin, spec.size)))
    crops += [(c[:, ::-1], None if m is None else m[:, ::-1]) for c, m in crops]
    return np.stack([_values(np.ascontiguousarray(c), spec, m) for c, m in crops])
