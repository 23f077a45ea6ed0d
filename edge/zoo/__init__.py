"""`edge zoo`: published models by name, fetched safely and imported with the preprocessing they were trained with.

The table is data, zoo.toml beside this file: per model its files (a URL, or a file shipped here, and the
checksum its publisher gives), its card (preprocessing, input name and layout), its labels and its published
accuracy. `pull` downloads into <repo>/.downloads/<file>.part, resuming what an interrupted run left (an HTTP
Range request), checks the checksum before anything is imported, and imports with the entry's card:

    edge zoo pull resnet50-v1-12 --labels synset_words.txt                  # from the entry's URL
    edge zoo pull resnet50-v1-12 --url https://mirror.example/resnet50-v1-12.onnx
    edge zoo pull bvlc_googlenet --file ~/Downloads/bvlc_googlenet.caffemodel

A mirror or a local copy replaces the URL; the checksum stays the authority. A file that does not match is
refused in one line naming it, the expected and the actual sum, and nothing of it is kept.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import EdgeError
from ..files import file_digest, model_lock, tomllib
from ..folder import repo_folder
from ..importer import PreprocessOptions, import_model

DOWNLOADS = ".downloads"  # in the repository; a dot folder, so `edge list` passes it by
ATTEMPTS = 3  # connections per file in one pull: each resumes where the last one broke off
TIMEOUT_S = 60  # for the connection and for each read: a stalled server is given up on, not waited for forever
HASHES = ("sha256", "sha1")


@dataclass(frozen=True)
class ZooFile:
    role: str  # "model" (the ONNX graph or the Caffe deploy.prototxt) or "weights" (a .caffemodel)
    name: str
    algorithm: str  # "sha1" or "sha256", as the publisher gives it
    checksum: str
    url: str | None = None  # downloaded from here (unless --url or --file says otherwise)
    package: str | None = None  # or shipped in edge/zoo under this name


@dataclass(frozen=True)
class ZooEntry:
    name: str
    summary: str
    source: str
    files: tuple[ZooFile, ...]
    card: dict
    labels: str | None
    accuracy: dict

    @property
    def download(self) -> ZooFile:
        """The one file that is fetched (the ONNX graph, or a Caffe model's weights)."""
        return next(f for f in self.files if f.url is not None)

    @property
    def kind(self) -> str:
        return "caffe" if any(f.role == "weights" for f in self.files) else "onnx"

    def options(self) -> PreprocessOptions:
        card = self.card
        return PreprocessOptions(resize=card["resize"], resize_size=card.get("resize_size"), color=card["color"],
                                 layout=card["layout"], mean_values=tuple(card["mean"]), scale=card.get("scale"),
                                 std=tuple(card["std"]) if "std" in card else None)

    def describe_preprocessing(self) -> str:
        card = self.card
        resize = f"{card['resize']}:{card['resize_size']}" if card.get("resize_size") else card["resize"]
        divide = (f"/ ({', '.join(f'{v:g}' for v in card['std'])})" if "std" in card
                  else f"* {card.get('scale', 1.0):g}")
        return f"{card['color']}, {resize}, (x - ({', '.join(f'{v:g}' for v in card['mean'])})) {divide}"


def _entry(name: str, data: dict) -> ZooEntry:
    files = []
    for f in data["files"]:
        algorithm = next(a for a in HASHES if a in f)
        files.append(ZooFile(role=f["role"], name=f["name"], algorithm=algorithm, checksum=f[algorithm],
                             url=f.get("url"), package=f.get("package")))
    return ZooEntry(name=name, summary=data["summary"], source=data["source"], files=tuple(files), card=data["card"],
                    labels=data.get("labels"), accuracy=data.get("accuracy", {}))


def load_zoo() -> dict[str, ZooEntry]:
    """The table shipped in the package (edge/zoo/zoo.toml), by model name."""
    table = tomllib.loads(resources.files(__package__).joinpath("zoo.toml").read_text(encoding="utf-8"))
    return {name: _entry(name, data) for name, data in table.items()}


def find_entry(name: str, zoo: dict[str, ZooEntry] | None = None) -> ZooEntry:
    zoo = load_zoo() if zoo is None else zoo
    if name not in zoo:
        raise EdgeError(f"{name!r} is not in the zoo; `edge zoo list` names its models: {', '.join(zoo)}")
    return zoo[name]


def verify(path: Path, expected: ZooFile, shown_as: str | os.PathLike) -> None:
    """Refuse a file that is not the published one; `shown_as` names it to the user (its URL, for a download)."""
    actual = file_digest(path, expected.algorithm)
    if actual != expected.checksum:
        raise EdgeError(f"{shown_as}: {expected.algorithm} {actual}, expected {expected.checksum} "
                        f"(the published {expected.name}); refused, nothing imported")


def download(url: str, part: Path) -> None:
    """Fetch `url` into `part`, resuming from the bytes already there. A progress bar on a terminal only."""
    from tqdm import tqdm

    for attempt in range(1, ATTEMPTS + 1):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                if response.status != 206:  # the server sent the whole file: start over
                    have = 0
                length = response.headers.get("Content-Length", "")
                total = have + int(length) if length.isdigit() else None  # else read to the end; the sum decides
                with open(part, "ab" if have else "wb") as f, \
                        tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                             desc=part.name.removesuffix(".part"), disable=not sys.stderr.isatty(), leave=False) as bar:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
                    done = f.tell()
            if total is None or done >= total:
                return
            reason = f"the connection closed at {done} of {total} bytes"
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing past what we have: the part is whole, and the checksum decides
                return
            raise EdgeError(f"{url}: HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            raise EdgeError(f"{url}: cannot download: {e.reason}") from None
        except (ConnectionError, TimeoutError, http.client.HTTPException) as e:  # a connection lost mid-file
            reason = f"{type(e).__name__}: {e}"
        except OSError as e:  # the .part itself: a full disk, say
            raise EdgeError(f"{part}: cannot write the download: {e.strerror or e}") from None
        if attempt == ATTEMPTS:
            raise EdgeError(f"{url}: download interrupted ({reason}); run the same command again to resume from "
                            f"{part}")


def pull(name: str, repo: str | os.PathLike | None = None, url: str | None = None,
         file: str | os.PathLike | None = None, labels: str | os.PathLike | None = None, force: bool = False,
         zoo: dict[str, ZooEntry] | None = None) -> Path:
    """Fetch, check and import one zoo model; returns its model folder."""
    entry = find_entry(name, zoo)
    folder = repo_folder(repo) / name
    for shipped in (f for f in entry.files if f.package is not None):  # the package is checked as downloads are,
        with resources.as_file(resources.files(__package__).joinpath(shipped.package)) as path:  # before them
            verify(path, shipped, path)
    fetched = entry.download
    if file is not None:
        local = Path(file)
        if not local.is_file():
            raise EdgeError(f"{local}: no such file")
        verify(local, fetched, local)
    else:
        source = url or fetched.url
        try:
            scheme = urllib.parse.urlsplit(source).scheme
        except ValueError as e:  # "http://[::1", say
            raise EdgeError(f"{source}: not a URL ({e})") from None
        if scheme not in ("http", "https"):  # a path given to --url, or a host without its scheme
            raise EdgeError(f"{source}: not an http:// or https:// URL; a file on this machine is given with --file")
    # Held from the check to the import: the .part (each entry downloads a file of its own name) is then this
    # run's alone, never appended to by another pull between this one's checksum and its import.
    with model_lock(folder, "edge zoo pull"):
        if folder.exists() and not force:  # found out before a download, not after
            raise EdgeError(f"{folder}: already exists; pass --force to replace it")
        if file is not None:
            return _import(entry, local, repo, labels, force, origin=str(local.resolve()))
        downloads = repo_folder(repo) / DOWNLOADS
        downloads.mkdir(parents=True, exist_ok=True)
        part = downloads / f"{fetched.name}.part"
        complete = downloads / fetched.name
        try:
            download(source, part)
            try:
                verify(part, fetched, source)
            except EdgeError:
                part.unlink()
                raise
            os.replace(part, complete)
            try:
                return _import(entry, complete, repo, labels, force, origin=source)
            except BaseException:  # wrong --labels, say: kept as a whole .part, which the next run checks, not fetches
                os.replace(complete, part)
                raise
        finally:
            complete.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # left in place while an interrupted .part waits to be resumed
                downloads.rmdir()


def _import(entry: ZooEntry, fetched: Path, repo, labels, force: bool, origin: str) -> Path:
    files = {f.role: f for f in entry.files}
    record = {"zoo": entry.name, "from": origin, "published": entry.source,
              **{f.name: f"{f.algorithm}:{f.checksum}" for f in entry.files}}
    with contextlib.ExitStack() as stack:
        shipped = {f.role: stack.enter_context(resources.as_file(resources.files(__package__).joinpath(f.package)))
                   for f in entry.files if f.package is not None}
        model = shipped.get("model", fetched)
        weights = fetched if "weights" in files else None
        return import_model(model, name=entry.name, repo=repo, weights=weights, labels=labels,
                            options=entry.options(), force=force, origin=record)
