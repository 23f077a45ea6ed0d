"""Crash-safe file writes: Jetsons lose power without warning, so every file is written under a
temporary name in the same folder, flushed to the disk (fsync), and renamed into place (rename is atomic on one
filesystem); the folder is flushed after the rename, so the new name survives a power cut too.

A model folder changes as one unit: it is built aside in a staging folder and swapped with the old one in one
step (`staged_folder`, `updated_folder`). Every temporary name carries the PID of the run that made it,
`.<name>.<pid>.<random>.tmp`, `.<name>.<pid>.<random>.staging` and `.<name>.<pid>.old`, so the next run on the
same folder can tell a killed run's leftovers (`remove_stale`) from those of a run still going.

Every run that writes a model folder holds its lock (`model_lock`) while it reads what it builds from and writes,
so one run's swap never drops a file that another wrote into the folder meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import EdgeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

# mkstemp and mkdtemp make private files; model folders must be readable by the service's own user.
FILE_MODE = 0o644
FOLDER_MODE = 0o755

# atomic_write_* temporaries, staging folders and parked old folders, by the PID of the run that made them
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.(?:[a-z0-9_]+\.(?:tmp|staging)|(?P<old>old))")


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """A file's hex digest by any hashlib algorithm (the zoo's published sums are sha1 or sha256)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's contents, or a one-line EdgeError naming it."""
    try:  # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first line
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise EdgeError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise EdgeError(f"{path}: is a folder, not a text file") from None
    except OSError as e:
        raise EdgeError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise EdgeError(f"{path}: not a UTF-8 text file") from None


def read_text_lines(path: str | os.PathLike) -> list[str]:
    return read_text(path).splitlines()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _name_target(e, path)
        raise


def _name_target(error: BaseException, target: Path) -> None:
    """A full disk's write names no file (OSError ENOSPC, filename None): name what was being written, so the CLI
    says it in one line."""
    if isinstance(error, OSError) and error.filename is None:
        error.filename = str(target)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's bytes, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for parent, _, names in os.walk(folder, topdown=False):
        for name in names:
            fsync_path(os.path.join(parent, name))
        fsync_path(parent)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> None:
    """Swap two paths in one step (Linux's renameat2 with RENAME_EXCHANGE, glibc 2.28+; Python's os has no
    binding); OSError EINVAL or ENOSYS where the C library, kernel or filesystem cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not in this C library", str(a))
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a), None, str(b))


def _replace_folder(staging: Path, final: Path) -> None:
    """Put `staging` in the place of the existing folder `final`; the old folder ends at `staging`, or deleted.

    Where no exchange is possible, two renames: a kill between them leaves `final` missing and the old folder
    parked as .<name>.<pid>.old, which the next run's `remove_stale` puts back.
    """
    try:
        exchange(staging, final)
        return
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
    parked = final.with_name(f".{final.name}.{os.getpid()}.old")
    os.rename(final, parked)
    try:
        os.rename(staging, final)
    except BaseException:
        os.rename(parked, final)
        raise
    shutil.rmtree(parked)


@contextlib.contextmanager
def staged_folder(final: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside `final`; on success it becomes `final` in one step.

    On any error the staging folder is removed, so a half-written model folder never appears. With `replace`, an
    existing `final` stays whole until the new one is complete and flushed, and is then swapped out and deleted.
    """
    final = Path(final).resolve()  # a symlinked model folder: staged, and swapped, where its files are
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".staging", dir=final.parent))
    try:
        os.chmod(staging, FOLDER_MODE)
        yield staging
        _fsync_tree(staging)
        if replace and final.exists():
            _replace_folder(staging, final)
        else:
            try:
                os.rename(staging, final)
            except OSError as e:  # two imports of one name at once: the first to finish keeps it
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                raise EdgeError(f"{final}: made by another run meanwhile; pass --force to replace it") from None
        fsync_path(final.parent)
    except BaseException as e:
        _name_target(e, final)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def updated_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder for new files of the existing `folder`; on success `folder` becomes, in one
    step, those files plus every other file it had (hard-linked: nothing is copied where links work)."""
    folder = Path(folder).resolve()
    with staged_folder(folder, replace=True) as staging:
        yield staging
        kept = folder.stat()  # the folder keeps its permissions, and its owner where this user may give it
        os.chmod(staging, stat.S_IMODE(kept.st_mode))
        if os.geteuid() == 0:
            os.chown(staging, kept.st_uid, kept.st_gid)
        for entry in folder.iterdir():
            if (staging / entry.name).exists() or _LEFTOVER.fullmatch(entry.name):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, staging / entry.name, symlinks=True, copy_function=_link_or_copy)
            else:  # a file, or a symbolic link (to a file or a folder), which stays a link
                _link_or_copy(entry, staging / entry.name)


def _link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    try:
        os.link(source, target)
    except OSError:  # a filesystem without hard links (FAT, exFAT)
        shutil.copy2(source, target)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def remove_stale(final: str | os.PathLike) -> None:
    """Clear what killed runs left beside the folder `final` and inside it: their staging folders and temporary
    files are removed, and an old folder parked by a run killed mid-replacement is put back if `final` is
    missing. Leftovers of a run still alive (by PID) are left alone."""
    final = Path(final)
    for place, name in ((final.parent, final.name), (final, None)):  # the parked folder first: it may be put back
        if not place.is_dir():
            continue
        for entry in sorted(place.iterdir()):
            match = _LEFTOVER.fullmatch(entry.name)
            if match is None or (name is not None and match["name"] != name) or _alive(int(match["pid"])):
                continue
            if match["old"] and not final.exists():
                os.rename(entry, final)
                fsync_path(final.parent)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


# lock files this process holds: a writer that calls another on the same model (zoo pull's import) takes it once
_held: set[Path] = set()


@contextlib.contextmanager
def model_lock(folder: str | os.PathLike, task: str) -> Iterator[None]:
    """Hold the model folder's writer lock, `.<name>.lock` beside it: outside the folder, so that a swap of the
    folder leaves it where it is. Another run that holds it is waited for, with one line on stderr saying which.

    The lock is the kernel's (flock): it goes with its process, even one killed with SIGKILL, so there is no stale
    lock to clear; the file a killed run leaves is locked and then removed by the next. `task` ("edge calibrate")
    is what the waiting message calls this run.
    """
    folder = Path(folder).resolve()  # a symlinked model: locked where its files are, however it is named
    lock = folder.parent / f".{folder.name}.lock"
    if lock in _held:
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _locked(lock, folder)
    try:
        os.ftruncate(fd, 0)  # a killed run's line, if this is the file it left
        os.pwrite(fd, f"{os.getpid()} {task}\n".encode(), 0)
        _held.add(lock)
        yield
    finally:
        _held.discard(lock)
        lock.unlink(missing_ok=True)  # while still held: a run waiting on this file finds it gone, and locks anew
        os.close(fd)


def _locked(lock: Path, folder: Path) -> int:
    """A descriptor of `lock` locked by this process, once any other holder lets go."""
    waited = False
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as e:
            raise EdgeError(f"{lock}: cannot open the model's lock file: {e.strerror or e}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited:
                    holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()  # "<pid> <task>", or not yet
                    pid, _, doing = holder.partition(" ")
                    who = f"{pid}'s {doing}" if doing else "another edge run"
                    print(f"edge: waiting for {who} on {folder}", file=sys.stderr, flush=True)
                    waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(fd), os.stat(lock)):
                    return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed this file as it let go: the lock is now the file of that name


def read_toml(path: Path) -> dict:
    """A TOML file's top-level table; a missing, unreadable or malformed file is a one-line EdgeError naming it."""
    try:
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as e:
        raise EdgeError(f"{path}: not valid TOML: {e}") from None
