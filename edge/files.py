"""Crash-safe file writes: Jetsons lose power without warning, so every file is written under a
temporary name in the same folder and renamed into place (rename is atomic on one filesystem)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
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


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a full disk's write names no file: name the target
            e.filename = str(path)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_folder(final: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; on success it becomes `final` in one rename.

    On any error the temporary folder is removed, so a half-written model folder never appears.
    With `replace`, an existing `final` is moved aside first and deleted only after the new one is in place.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
    try:
        os.chmod(staging, FOLDER_MODE)
        yield staging
        old = None
        if replace and final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.rename(staging, final)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_toml(path: Path) -> dict:
    """A TOML file's top-level table; a missing, unreadable or malformed file is a one-line EdgeError naming it."""
    try:
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as e:
        raise EdgeError(f"{path}: not valid TOML: {e}") from None
