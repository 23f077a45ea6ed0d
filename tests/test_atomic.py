"""A model folder changes whole: kill -9 at every rename of `edge import --force`, `edge fp16` and `edge calibrate`
leaves the old folder or the new one, never a mix, and the next run clears what the killed one left; every rename
moves what was flushed to the disk (fsync) and is itself flushed with its folder."""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge import Model, files
from edge.cli import main
from edge.files import remove_stale
from edge.folder import PRECISIONS, Card
from edge.tensorrt.calibration_cache import read_cache

from tiny_models import tiny_classifier, tiny_images

# Runs `edge ARGV...` and kills itself with SIGKILL at its Kth moment around a rename (os.rename, os.replace or
# the renameat2 exchange): K = 1 just before the first, 2 just after it, 3 before the second...; with "renames"
# the filesystem is taken to have no exchange, as FAT or a kernel older than 3.15.
KILLED_AT = """
import errno, os, signal, sys
import edge.files
from edge.cli import main

kill_at, swap = int(sys.argv[1]), sys.argv[2]
moments = 0

def moment():
    global moments
    moments += 1
    if moments == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

def counted(rename):
    def run(*args):
        moment()
        rename(*args)
        moment()
    return run

def no_exchange(a, b):
    raise OSError(errno.EINVAL, "no RENAME_EXCHANGE here")

os.rename, os.replace = counted(os.rename), counted(os.replace)
edge.files.exchange = counted(edge.files.exchange) if swap == "exchange" else no_exchange
sys.exit(main(sys.argv[3:]))
"""
FAKE_ENGINE = "orin-sm87-trt10.3.0-fp16.plan"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state(folder: Path):
    """What tells an old folder from a new one, and whether its calibration files belong together."""
    if not folder.is_dir():
        return None
    calibration = None
    if (folder / "calibration.json").exists():
        record = json.loads((folder / "calibration.json").read_text())
        scales = {name: t["scale"] for name, t in record["tensors"].items() if t["scale"]}
        calibration = {"count": record["count"],
                       "int8 matches": record["int8_sha256"] == sha256(folder / PRECISIONS["int8"].onnx),
                       "cache matches": read_cache(folder / "calibration.cache").scales == scales}
    fp16 = folder / PRECISIONS["fp16"].onnx
    return {"files": sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")),  # not temporaries
            "color": Card.read(folder).preprocess.color, "fp16": sha256(fp16) if fp16.exists() else None,
            "calibration": calibration}


def leftovers(repo: Path) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in repo.rglob(".*"))


def edge(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture
def images(tmp_path):
    return tiny_images(tmp_path / "images")


@pytest.fixture
def repo(tmp_path):
    return tmp_path / "engines"


def old_folder(verb: str, repo: Path, tmp_path: Path, images: Path) -> Path:
    """The folder the run replaces or updates: for import, one with every kind of file a re-import discards."""
    tiny = tiny_classifier(tmp_path / "tiny.onnx")
    assert edge("import", tiny, "--repo", repo) == 0
    if verb in ("import", "calibrate"):
        assert edge("calibrate", "tiny", "--repo", repo, "--images", images, "--count", 2, "--method", "minmax") == 0
    if verb == "import":
        assert edge("fp16", "tiny", "--repo", repo) == 0
        (repo / "tiny" / FAKE_ENGINE).write_bytes(b"engine")
        (repo / "tiny" / FAKE_ENGINE).with_suffix(".json").write_text("{}")
    return repo / "tiny"


def command(verb: str, repo: Path, tmp_path: Path, images: Path) -> list[str]:
    return [str(a) for a in {
        "import": ("import", tmp_path / "tiny.onnx", "--repo", repo, "--force", "--color", "bgr", "--scale", 0.0039),
        "fp16": ("fp16", "tiny", "--repo", repo),
        "calibrate": ("calibrate", "tiny", "--repo", repo, "--images", images, "--count", 4, "--method", "minmax"),
    }[verb]]


@pytest.mark.parametrize("verb, swap", [("import", "exchange"), ("import", "renames"), ("fp16", "exchange"),
                                        ("calibrate", "exchange"), ("calibrate", "renames")])
def test_kill_at_every_rename_leaves_old_or_new_and_the_next_run_cleans_up(verb, swap, repo, tmp_path, images,
                                                                           request):
    if verb != "fp16":  # the folder import replaces holds a calibration too
        request.getfixturevalue("onnxruntime_calibrates")
    folder = old_folder(verb, repo, tmp_path, images)
    kept = tmp_path / "kept"
    shutil.copytree(folder, kept)
    argv = command(verb, repo, tmp_path, images)
    old = state(folder)
    assert main(argv) == 0
    new = state(folder)
    assert new != old and leftovers(repo) == []
    debris = []
    for kill_at in range(1, 12):
        shutil.rmtree(folder)
        shutil.copytree(kept, folder)
        run = subprocess.run([sys.executable, "-c", KILLED_AT, str(kill_at), swap, *argv],
                             capture_output=True, text=True, timeout=120)
        if run.returncode == 0:  # no Kth moment: every rename has been tried
            break
        assert run.returncode == -signal.SIGKILL, run.stderr
        if swap == "exchange":  # never observable as missing
            assert state(folder) in (old, new), kill_at
        debris += leftovers(repo)
        Model.load(folder)  # finding the folder puts back one parked by the two-rename fallback
        assert state(folder) in (old, new), kill_at
        for precision, name in ((p.name, p.onnx) for p in PRECISIONS.values()):
            if (folder / name).exists():
                Model.load(folder, precision=precision)
        assert main(argv) == 0  # the next run
        assert state(folder) == new and leftovers(repo) == []
    else:
        pytest.fail("the run never completed")
    assert kill_at >= 1 + 2 * (1 if swap == "exchange" or verb == "fp16" else 2)  # one exchange, or two renames
    assert debris  # the killed runs did leave temporaries behind, and they were cleared


def test_import_force_says_what_it_discards(repo, tmp_path, images, capsys, onnxruntime_calibrates):
    folder = old_folder("import", repo, tmp_path, images)
    capsys.readouterr()
    assert main(command("import", repo, tmp_path, images)) == 0
    err = capsys.readouterr().err
    assert err == (f"edge: {folder}: replaced; discarded precision variants (model.fp16.onnx, model.int8.onnx); "
                   f"calibration (calibration.cache, calibration.json); engines ({FAKE_ENGINE})\n")
    assert main(command("import", repo, tmp_path, images)) == 0
    assert capsys.readouterr().err == ""  # nothing left to discard


def test_a_failed_import_force_keeps_the_old_folder(repo, tmp_path, images, capsys):
    folder = old_folder("fp16", repo, tmp_path, images)
    old = state(folder)
    assert edge("import", tmp_path / "tiny.onnx", "--repo", repo, "--force", "--size", "9,9") == 1
    assert "differs from the input's static size" in capsys.readouterr().err
    assert state(folder) == old and leftovers(repo) == []


def test_calibrate_keeps_the_folders_permissions(repo, tmp_path, images, onnxruntime_calibrates):
    folder = old_folder("calibrate", repo, tmp_path, images)
    folder.chmod(0o750)
    assert main(command("calibrate", repo, tmp_path, images)) == 0
    assert folder.stat().st_mode & 0o777 == 0o750


def test_a_symlinked_model_folder_is_replaced_where_its_files_are(repo, tmp_path, images):
    real = old_folder("fp16", tmp_path / "ssd", tmp_path, images)
    repo.mkdir()
    (repo / "tiny").symlink_to(real)
    assert main(command("import", repo, tmp_path, images)) == 0
    assert (repo / "tiny").is_symlink() and Card.read(real).preprocess.color == "bgr"
    assert leftovers(repo) == leftovers(tmp_path / "ssd") == []


def test_leftovers_of_a_live_run_are_left_alone(repo):
    folder = repo / "tiny"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    for pid in (dead, os.getpid()):
        (repo / f".tiny.{pid}.abc123_x.staging").mkdir()
        (repo / f".tiny.{pid}.abc123_x.staging" / "model.onnx").write_bytes(b"half")
        (folder / f".model.int8.onnx.{pid}.k2j4h5g6.tmp").write_bytes(b"half")
    (repo / f".other.{dead}.abc123_x.staging").mkdir()  # another model's: its own next run clears it
    remove_stale(folder)
    assert leftovers(repo) == sorted([f".other.{dead}.abc123_x.staging", f".tiny.{os.getpid()}.abc123_x.staging",
                                      f"tiny/.model.int8.onnx.{os.getpid()}.k2j4h5g6.tmp"])


@pytest.mark.parametrize("swap", ["exchange", "renames"])
def test_what_each_rename_moves_is_flushed_before_it_and_its_folder_after(swap, repo, tmp_path, images, monkeypatch,
                                                                           onnxruntime_calibrates):
    events = []  # ("fsync", path) and ("rename", source, target, every path under the source)
    real_fsync = os.fsync

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def recorded(rename):
        def run(source, target):
            moved = [str(source)] + [os.path.join(parent, name) for parent, folders, names in os.walk(source)
                                     for name in folders + names]
            events.append(("rename", str(source), str(target), moved))
            rename(source, target)
        return run

    def no_exchange(a, b):
        raise OSError(errno.EINVAL, "no RENAME_EXCHANGE here")

    tmp_path = tmp_path.resolve()
    repo, images = tmp_path / "engines", tmp_path / "images"
    old_folder("import", repo, tmp_path, images)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", recorded(os.rename))
    monkeypatch.setattr(os, "replace", recorded(os.replace))
    monkeypatch.setattr(files, "exchange", recorded(files.exchange) if swap == "exchange" else no_exchange)
    for verb in ("import", "fp16", "calibrate"):
        assert main(command(verb, repo, tmp_path, images)) == 0
    ours = (str(repo), str(repo / "tiny"))  # not ONNX Runtime's own, in calibrate's scratch folder
    renames = [(i, e) for i, e in enumerate(events) if e[0] == "rename" and os.path.dirname(e[1]) in ours]
    assert len(renames) >= 3
    for i, (_, source, target, moved) in renames:
        flushed_before = {e[1] for e in events[:i] if e[0] == "fsync"}
        flushed_after = {e[1] for e in events[i:] if e[0] == "fsync"}
        if source.endswith((".tmp", ".staging")):  # new content, not an old folder moved aside
            assert set(moved) <= flushed_before, (source, set(moved) - flushed_before)
        assert str(Path(target).parent) in flushed_after, target


@pytest.mark.parametrize("verb", ["import", "calibrate"])
def test_a_full_disk_is_one_line_naming_the_model_folder_and_leaves_it_as_it_was(verb, repo, tmp_path, images,
                                                                                 monkeypatch, capsys, request):
    if verb == "calibrate":
        request.getfixturevalue("onnxruntime_calibrates")
    folder = old_folder("fp16", repo, tmp_path, images)
    old = state(folder)

    def full(*args, **kwargs):  # as a write to a full disk fails: ENOSPC, naming no file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("onnx.save", full)
    capsys.readouterr()
    assert main(command(verb, repo, tmp_path, images)) == 1
    assert capsys.readouterr().err == f"edge: error: {folder.resolve()}: {os.strerror(errno.ENOSPC)}\n"
    assert state(folder) == old and leftovers(repo) == []


def test_calibrate_on_a_disk_that_fills_says_so_in_one_line(repo, tmp_path, images, monkeypatch, capsys,
                                                            onnxruntime_calibrates):
    folder = old_folder("fp16", repo, tmp_path, images)
    old = state(folder)

    def cut_short(source, target, *args, **kwargs):  # as ONNX's C++ writes on a full disk: short, and no error
        Path(target).write_bytes(Path(source).read_bytes()[:100])

    monkeypatch.setattr("onnx.shape_inference.infer_shapes_path", cut_short)
    capsys.readouterr()
    assert main(command("calibrate", repo, tmp_path, images)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"edge: error: {folder}: ONNX Runtime read back a cut-short working copy") and \
        err.count("\n") == 1, err
    assert state(folder) == old and leftovers(repo) == []


def test_an_update_keeps_symbolic_links_in_the_folder_as_links(tmp_path):
    folder, shared = tmp_path / "tiny", tmp_path / "shared"
    (shared / "inner").mkdir(parents=True)
    (shared / "images.png").write_bytes(b"png")
    folder.mkdir()
    (folder / "model.toml").write_text("card")
    (folder / "images").symlink_to(shared)  # a folder kept elsewhere, linked in
    (folder / "sub").mkdir()
    (folder / "sub" / "inner").symlink_to(shared / "inner")
    with files.updated_folder(folder) as staging:
        (staging / "calibration.json").write_text("{}")
    assert (folder / "images").is_symlink() and os.readlink(folder / "images") == str(shared)
    assert (folder / "sub" / "inner").is_symlink()
    assert sorted(p.name for p in folder.iterdir()) == ["calibration.json", "images", "model.toml", "sub"]


def test_a_folder_made_by_another_run_meanwhile_is_kept_and_named_in_one_line(tmp_path, capsys):
    final = tmp_path / "engines" / "tiny"
    with pytest.raises(files.EdgeError, match=f"^{final}: made by another run meanwhile; pass --force to replace it$"):
        with files.staged_folder(final) as staging:
            (staging / "model.toml").write_text("ours")
            final.mkdir()  # the other `edge import` finished first
            (final / "model.toml").write_text("theirs")
    assert (final / "model.toml").read_text() == "theirs" and leftovers(tmp_path) == []


def test_a_folder_reimported_while_calibrating_gets_no_calibration_of_the_old_model(repo, tmp_path, images,
                                                                                    monkeypatch, capsys,
                                                                                    onnxruntime_calibrates):
    calibrate = sys.modules["edge.precision.calibrate"]  # the module; the package's `calibrate` is the function
    folder = old_folder("fp16", repo, tmp_path, images)
    calibrate_into = calibrate._calibrate_into

    def reimported_meanwhile(*args):
        calibrate_into(*args)  # calibrated on the RGB card's preprocessing...
        assert main(command("import", repo, tmp_path, images)) == 0  # ...then another run makes it BGR

    monkeypatch.setattr(calibrate, "_calibrate_into", reimported_meanwhile)
    capsys.readouterr()
    assert main(command("calibrate", repo, tmp_path, images)) == 1
    assert "model.toml or model.onnx was replaced while calibrating" in capsys.readouterr().err
    reimported = state(folder)
    assert reimported["color"] == "bgr" and reimported["calibration"] is None
    assert "model.int8.onnx" not in reimported["files"] and leftovers(repo) == []
