"""Which images calibrate, and the guarantee that they never also evaluate.

choose_images takes a folder of images or a list file (`file [class_id]` a line, paths relative to the list's
folder, like labels.txt), sorts the paths, and picks `count` of them evenly spaced through that order: the same
files every time, spread over the classes when the names follow them (ImageNet's synset order). calibrate()
records the chosen files and their SHA-256 in calibration.json; exclude_calibration_images drops them, by path
or by content, from an evaluation list, so `edge eval` never scores an INT8 variant on its own calibration images.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import EdgeError
from ..evaluate import read_image_list
from ..files import sha256_file
from ..folder import CALIBRATION_JSON
from ..words import plural

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def list_images(source: Path) -> list[Path]:
    """The images of a folder (recursively) or of a list file, sorted by path."""
    source = Path(source)
    try:
        if source.is_dir():
            paths = [p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        elif source.suffix.lower() in IMAGE_SUFFIXES:  # one image says little about a model's activation ranges
            raise EdgeError(f"{source}: an image; calibration takes many (about 100): give a folder of images or a "
                            "list file of `file [class_id]` lines")
        elif source.is_file():
            paths = [p for p, _ in read_image_list(source)]  # `file [class_id]`, like edge eval's --list
        else:
            raise EdgeError(f"{source}: no such folder or image list")
    except OSError as e:
        raise EdgeError(f"{source}: cannot read: {e.strerror or e}") from None
    if not paths:
        raise EdgeError(f"{source}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return sorted(paths, key=lambda p: p.as_posix())


def choose_images(source: Path, count: int) -> list[Path]:
    """`count` images of `source`, evenly spaced through its sorted paths."""
    paths = list_images(source)
    if count < 1:
        raise EdgeError(f"--count must be at least 1, not {count}")
    if len(paths) < count:
        raise EdgeError(f"{source}: {plural(len(paths), 'image')}, fewer than the {count} asked for")
    return [paths[i * len(paths) // count] for i in range(count)]


def calibration_images(folder: Path) -> dict[Path, str]:
    """The images a model folder was calibrated on (resolved path -> SHA-256); empty before calibration."""
    path = Path(folder) / CALIBRATION_JSON
    if not path.is_file():
        return {}
    try:
        return {Path(i["path"]): i["sha256"] for i in json.loads(path.read_text(encoding="utf-8"))["images"]}
    except (ValueError, KeyError, TypeError) as e:
        raise EdgeError(f"{path}: bad or missing entry {e}") from None


def exclude_calibration_images(folder: Path, items: list[tuple[Path, int]]) -> list[tuple[Path, int]]:
    """The (path, class_id) evaluation items that are not calibration images, by path or by content."""
    used = calibration_images(folder)
    if not used:
        return list(items)
    hashes = set(used.values())

    def calibrated(path: Path) -> bool:
        if Path(path).resolve() in used:
            return True
        try:
            return sha256_file(path) in hashes
        except OSError:  # missing or unreadable: not a calibration image; evaluation reports it on its own
            return False

    return [(path, class_id) for path, class_id in items if not calibrated(path)]
