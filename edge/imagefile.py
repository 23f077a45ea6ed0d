"""Image files decoded under a pixel budget: the size is read from the file's header before anything is decoded.

A 20 KB JPEG can claim to be 30000 x 30000 pixels, and decoding it would take 2.7 GB (5.3 GB with the resize
after it). OpenCV has no call that reads only the header (JetPack's OpenCV 4.x included), and its own limit
(OPENCV_IO_MAX_IMAGE_PIXELS, 2^30 pixels, read once when cv2 is imported) is far above what a Jetson can hold.
So the headers of the formats edge reads are parsed here, a few bytes each, and a file over the budget is
refused with one line before OpenCV sees it. A file in another format is refused too: its size cannot be known
before decoding it.

The budget is MAX_IMAGE_PIXELS (100 megapixels, 300 MB decoded), or the environment's EDGE_MAX_IMAGE_PIXELS.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import cv2
import numpy as np

from .errors import EdgeError, first_line

MAX_IMAGE_PIXELS = 100_000_000
FORMATS = "JPEG, PNG, BMP, TIFF, WebP, PNM"
# A comment ends at CR or LF, as OpenCV's PxM reader ends it (else "#x\r20000 20000\n8 8" would read as 8 x 8)
_PNM = re.compile(rb"P[1-6](?:\s|#[^\r\n]*[\r\n])+(\d+)(?:\s|#[^\r\n]*[\r\n])+(\d+)\s")


def max_image_pixels() -> int:
    """The pixel budget: $EDGE_MAX_IMAGE_PIXELS, else MAX_IMAGE_PIXELS."""
    text = os.environ.get("EDGE_MAX_IMAGE_PIXELS", "").strip()
    if not text:
        return MAX_IMAGE_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise EdgeError(f"EDGE_MAX_IMAGE_PIXELS={text!r}: expected a whole number of pixels, at least 1")
    return int(text)


def header_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) from an image header, or None where the bytes are no header of FORMATS (or cut short)."""
    try:
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"BM":
            if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
                return struct.unpack("<HH", data[18:22])
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)  # a negative height is a top-down bitmap
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if match := _PNM.match(bytes(data[:1024])):
            return int(match.group(1)), int(match.group(2))
    except (struct.error, IndexError):  # a header cut short
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The size in the first SOFn segment, walking the segments that come before it."""
    position = 2
    while True:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            position += 2
            continue
        if marker in (0xD9, 0xDA):  # the end, or the scan, came before any frame header
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0..SOF15 (not DHT, JPG, DAC)
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return width, height
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) from the first image file directory."""
    order = "<" if data[:2] == b"II" else ">"
    (directory,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[directory : directory + 2])
    sizes = {}
    for entry in range(directory + 2, directory + 2 + 12 * count, 12):
        tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
        # Of a tag given twice, libtiff reads the first (and only warns), so the budget must judge that one.
        if tag in (256, 257) and tag not in sizes:
            if kind not in _TIFF_SIZE_TYPES:  # libtiff takes others too (a LONG8's value is at an offset): refused
                return None
            sizes[tag] = struct.unpack_from(order + _TIFF_SIZE_TYPES[kind], data, entry + 8)[0]
    return (sizes[256], sizes[257]) if len(sizes) == 2 else None


_TIFF_SIZE_TYPES = {3: "H", 4: "I"}  # SHORT and LONG, the types writers give sizes in, at the start of the field


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the frame tag and start code
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit sizes minus one, packed after the signature byte
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes minus one
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def decode_image(data: np.ndarray, name: str | Path) -> np.ndarray:
    """Encoded bytes -> uint8 HWC BGR, or a one-line EdgeError naming `name`: not an image of FORMATS, a size
    over the pixel budget or of zero, or a file OpenCV cannot decode."""
    size = header_size(memoryview(data))
    if size is None:
        raise EdgeError(f"{name}: not an image of a format edge reads ({FORMATS}), or its header is cut short")
    width, height = size
    if not width or not height:
        raise EdgeError(f"{name}: its header says {width}x{height} pixels")
    budget = max_image_pixels()
    if width * height > budget:
        raise EdgeError(f"{name}: {width}x{height} pixels ({width * height / 1e6:.0f} MP) is over the "
                        f"{budget / 1e6:g} MP limit on decoded images (EDGE_MAX_IMAGE_PIXELS raises it)")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as e:  # OpenCV's own checks, in a message of several lines
        raise EdgeError(f"{name}: OpenCV cannot decode it: {first_line(e)}") from None
    if image is None:
        raise EdgeError(f"{name}: not an image OpenCV can decode (corrupt or cut short?)")
    return image


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 HWC BGR, or raise a one-line EdgeError naming the file."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise EdgeError(f"{path}: no such file") from None
    except OSError as e:
        raise EdgeError(f"{path}: cannot read: {e.strerror or e}") from None
    return decode_image(data, path)
