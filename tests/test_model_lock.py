"""The model folder's writer lock (files.model_lock): a second writer of one model waits for the first, saying whose
run it waits for, so calibrate's folder swap keeps a file that `edge fp16` writes meanwhile; a killed holder's lock
is free."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge import files
from edge.cli import main
from edge.folder import PRECISIONS

from tiny_models import tiny_classifier, tiny_images

EDGE = "import sys; from edge.cli import main; sys.exit(main(sys.argv[1:]))"


def edge_cli(*argv) -> subprocess.Popen:
    """`edge ARGV...` in a process of its own, its stderr read by the test."""
    return subprocess.Popen([sys.executable, "-c", EDGE, *map(str, argv)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def folder(tmp_path) -> Path:
    repo = tmp_path / "engines"
    assert main(["import", str(tiny_classifier(tmp_path / "tiny.onnx")), "--repo", str(repo)]) == 0
    return repo / "tiny"


@pytest.fixture
def images(tmp_path) -> Path:
    return tiny_images(tmp_path / "images")


def test_fp16_run_during_calibrates_swap_keeps_both_files(folder, images, monkeypatch, onnxruntime_calibrates):
    exchange = files.exchange
    seen = {}

    def fp16_meanwhile(staging, final):
        # Calibrate has linked the folder's files into its staging folder and is about to swap it in: the moment an
        # unlocked fp16 would write model.fp16.onnx into the folder on its way out. With the lock, fp16 says it
        # waits (and writes once calibrate is done); without it, it finishes here and its file is lost.
        seen["fp16"] = edge_cli("fp16", folder)
        seen["first line"] = seen["fp16"].stderr.readline()  # "" once it ends, having said nothing
        if "waiting for" not in seen["first line"]:
            seen["fp16"].wait(timeout=60)
        exchange(staging, final)

    monkeypatch.setattr(files, "exchange", fp16_meanwhile)
    assert main(["calibrate", str(folder), "--images", str(images), "--count", "2", "--method", "minmax"]) == 0
    assert seen["fp16"].wait(timeout=60) == 0
    assert (folder / PRECISIONS["int8"].onnx).is_file() and (folder / PRECISIONS["fp16"].onnx).is_file()
    assert seen["first line"] == f"edge: waiting for {os.getpid()}'s edge calibrate on {folder}\n"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny"]  # no lock file left behind


def test_a_held_lock_makes_the_second_writer_wait_then_go_on(folder):
    with files.model_lock(folder, "edge calibrate"):
        fp16 = edge_cli("fp16", "tiny", "--repo", folder.parent)
        assert fp16.stderr.readline() == f"edge: waiting for {os.getpid()}'s edge calibrate on {folder}\n"
        assert not (folder / PRECISIONS["fp16"].onnx).exists()
    # The file fp16 waits on is removed as the lock is let go: it locks the file of that name made next
    assert fp16.wait(timeout=60) == 0 and fp16.stderr.read() == ""
    assert (folder / PRECISIONS["fp16"].onnx).is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny"]


def test_a_killed_holders_lock_is_free(folder, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from edge import files\n"
                               "with files.model_lock(sys.argv[1], 'edge build'):\n"
                               "    print('held', flush=True); time.sleep(600)", str(folder)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    lock = folder.parent / ".tiny.lock"
    assert lock.read_text() == f"{holder.pid} edge build\n"
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=60) == -signal.SIGKILL
    assert lock.exists()  # left by the killed run, but no longer locked
    capsys.readouterr()
    assert main(["fp16", str(folder)]) == 0
    assert "waiting" not in capsys.readouterr().err
    assert (folder / PRECISIONS["fp16"].onnx).is_file() and not lock.exists()
