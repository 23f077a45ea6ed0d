"""Input sources (edge/runtime/sources.py): the scheme table and what is made from it, the test pattern, video files,
image folders, looping, one-line errors for bad URIs, and camera passwords kept out of what is shown."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import EdgeError
from edge.runtime.options import OPTIONS_BY_KEY
from edge.runtime.sources import (
    SCHEMES,
    SourceError,
    open_source,
    opencv_has_gstreamer,
    schemes_help,
    schemes_table,
)

from runtime_support import write_video

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_table_is_the_scheme_table():
    assert schemes_table() in (ROOT / "docs" / "service.md").read_text(), \
        "docs/service.md's input table is stale: paste edge.runtime.sources.schemes_table() over it"


def test_edge_run_help_and_the_unknown_scheme_error_name_every_scheme():
    names = [name for scheme in SCHEMES for name in scheme.names if name]
    assert {"gst", "http", "https", "udp", "tcp", "srt"} <= set(names)  # the ones the README once left out
    assert OPTIONS_BY_KEY["input"].help == schemes_help().replace("`", "")
    for name in names:
        assert f"{name}://" in OPTIONS_BY_KEY["input"].help
    with pytest.raises(EdgeError) as refused:
        open_source("nope://x")
    assert str(refused.value) == f"nope://x: unknown input scheme nope:// ({', '.join(names)}, or a path)"


def test_test_pattern_is_a_live_source_of_bgr_frames_that_move():
    source = open_source("test://", width=80, height=60, fps=0)
    assert source.live
    first, second = source.read(), source.read()
    assert first.image.shape == (60, 80, 3) and first.image.dtype == np.uint8
    assert not np.array_equal(first.image, second.image)


def test_test_pattern_is_paced_at_fps():
    source = open_source("test://", width=32, height=32, fps=50)
    start = time.monotonic()
    for _ in range(10):
        source.read()
    assert time.monotonic() - start >= 9 / 50 - 0.01


def test_video_file_reads_every_frame_then_ends(tmp_path):
    video = write_video(tmp_path / "clip.avi", 12)
    for uri in (str(video), f"file://{video}"):
        source = open_source(uri)
        assert not source.live
        source.open()
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame)
        source.close()
        assert len(frames) == 12
        assert [f.position for f in frames] == sorted(f.position for f in frames)


def test_a_source_is_a_context_manager_and_an_iterator_of_frames(tmp_path, model):
    """The Python API's camera loop, as the README shows it, on a video file and on a folder."""
    import edge

    video = write_video(tmp_path / "clip.avi", 5)
    with edge.open_source(str(video)) as clip:
        labels = [model.classify(frame.image)[0].label for frame in clip]
        assert clip.capture is not None  # open inside the block
    assert len(labels) == 5 and clip.capture is None  # closed after it
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((9, 9, 3), 40 * i, np.uint8))
    with edge.open_source(str(tmp_path)) as folder:
        assert [Path(frame.file).name for frame in folder] == ["0.png", "1.png", "2.png"]


def test_looping_a_video_starts_it_over(tmp_path):
    source = open_source(str(write_video(tmp_path / "clip.avi", 3)), loop=True)
    source.open()
    frames = [source.read() for _ in range(7)]
    assert all(f is not None for f in frames)
    assert [f.position for f in frames[:4]] == [frames[0].position, frames[1].position, frames[2].position,
                                                frames[0].position]


def test_image_folder_is_sorted_and_counts_undecodable_files(tmp_path):
    for name in ("b.png", "a.png", "c.jpg"):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), 100, np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_source(str(tmp_path))
    source.open()
    files = []
    while (frame := source.read()) is not None:
        files.append(frame.file.rsplit("/", 1)[1])
    assert files == ["a.png", "b.png", "c.jpg"]
    assert source.decode_errors == 1
    glob_source = open_source(str(tmp_path / "*.png"))
    glob_source.open()
    assert glob_source.read().file.endswith("a.png")


def test_empty_and_unreadable_image_files_are_skipped_and_counted(tmp_path, monkeypatch):
    for name in ("a.png", "c.png"):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), 100, np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"")  # a file still being written: imdecode raises on an empty buffer
    (tmp_path / "d.png").write_bytes(b"x")
    real_fromfile = np.fromfile

    def fromfile(path, *args, **kwargs):  # d.png unreadable (as root, chmod cannot make it so)
        if str(path).endswith("d.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_fromfile(path, *args, **kwargs)

    monkeypatch.setattr(np, "fromfile", fromfile)
    source = open_source(str(tmp_path))
    source.open()
    files = []
    while (frame := source.read()) is not None:
        files.append(frame.file.rsplit("/", 1)[1])
    assert files == ["a.png", "c.png"]
    assert source.decode_errors == 2


@pytest.mark.parametrize("uri, message", [
    ("nope://x", "unknown input scheme"),
    ("/no/such/video.mp4", "no such file"),
    ("v4l2://video0", "expected v4l2:///dev/videoN"),
    ("csi://front", "expected csi://N"),
])
def test_bad_input_uris_are_one_line_errors(uri, message):
    with pytest.raises(EdgeError, match=message):
        open_source(uri)


def test_a_file_that_is_not_a_video_says_so(tmp_path):
    listing = tmp_path / "val.txt"
    listing.write_text("a.jpg 0\n")
    with pytest.raises(SourceError, match="val.txt: not a video OpenCV can open"):
        open_source(str(listing)).open()


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(EdgeError, match="no image files"):
        open_source(str(tmp_path))


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer: csi:// would be tried for real")
@pytest.mark.parametrize("uri", ["csi://0", "gst://videotestsrc ! appsink"])
def test_gstreamer_input_without_gstreamer_says_which_opencv_is_needed(uri):
    with pytest.raises(EdgeError) as error:
        open_source(uri)
    message = str(error.value)
    assert "\n" not in message
    assert "GStreamer" in message and "JetPack" in message and "edge info" in message




@pytest.mark.parametrize("uri", ["/dev/video99", "v4l2:///dev/video99"])
def test_a_camera_that_is_not_there_stops_at_once(uri):
    with pytest.raises(EdgeError, match=r"^/dev/video99: no such device \(video devices here: .*\)$"):
        open_source(uri)


def test_a_device_node_is_a_v4l2_camera(tmp_path):
    source = open_source("/dev/null")  # jetson-inference's `--input /dev/video0`
    assert source.live and source.uri == "/dev/null"
    with pytest.raises(SourceError, match="^/dev/null: opens, but does not capture: busy .* or not a camera$"):
        source.open()
    shm = Path("/dev/shm")
    if shm.is_dir():  # a folder of images kept in memory stays a folder
        with pytest.raises(EdgeError, match="no image files"):
            open_source(str(shm / "no-such-edge-folder" / "*.png"))


@pytest.mark.parametrize("error, reason", [
    (errno.ENOENT, "cannot open: no such device (unplugged?)"),
    (errno.EACCES, "cannot open: permission denied (add the user to the group "),
    (errno.EBUSY, "cannot open: busy (another program is capturing from it)"),
])
def test_a_camera_that_does_not_open_says_why(tmp_path, monkeypatch, error, reason):
    from edge.runtime import sources

    def refuse(path, flags):
        raise OSError(error, os.strerror(error), path)

    node = tmp_path / "video0"
    node.touch()
    monkeypatch.setattr(sources.os, "open", refuse)
    assert sources.device_problem(str(node)).startswith(reason)


def test_a_camera_whose_group_has_no_name_here_says_why(tmp_path, monkeypatch):
    from edge.runtime import sources

    def refuse(path, flags):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)

    def no_name(gid):
        raise KeyError(f"getgrgid(): gid not found: {gid}")  # as grp says it for a gid /etc/group does not list

    node = tmp_path / "video0"
    node.touch()
    monkeypatch.setattr(sources.os, "open", refuse)
    monkeypatch.setattr(sources.grp, "getgrgid", no_name)
    assert sources.device_problem(str(node)) == (f"cannot open: permission denied (the device's group, gid "
                                                 f"{node.stat().st_gid}, has no name here)")


def test_a_looped_clip_keeps_its_frame_rate_for_the_annotated_video(tmp_path):
    video = write_video(tmp_path / "clip.avi", 3, fps=10)
    with open_source(str(video), loop=True) as source:
        assert source.frame_rate() == 10


def test_skipped_files_are_logged_at_the_1st_2nd_4th_8th(caplog):
    from edge.runtime.sources import log_skipped

    with caplog.at_level("WARNING", logger="edge"):
        for count in range(1, 20):
            log_skipped("x.png: broken", count)
    assert [r.getMessage() for r in caplog.records] == [f"x.png: broken; skipped ({n} skipped so far)"
                                                        for n in (1, 2, 4, 8, 16)]
