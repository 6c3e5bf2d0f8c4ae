"""Finding the files to ingest under the given roots, safely: no escaping symlinks, no special files."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ingest.documents import FileProblem
from ingest.loaders import SUPPORTED_EXTENSIONS, LoadError, unsupported_reason


@dataclass(frozen=True)
class Candidate:
    """A file to consider: its real path, the root it was found under and its path relative to that root."""

    path: Path
    root: Path
    source: str
    size: int
    mtime: float
    inode: tuple[int, int] = (0, 0)  # (device, inode) of the content: hard links and symlinks share it


@dataclass
class ScanResult:
    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[FileProblem] = field(default_factory=list)
    present: set[str] = field(default_factory=set)  # every file found, indexable or not, as display(root/relative)


def display(path: Path | str) -> str:
    """A path as text that SQLite and terminals accept, even for undecodable filename bytes."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def scan(roots: list[Path], max_file_bytes: int, exclude: list[Path] = ()) -> ScanResult:
    """Walk each root (a folder or a single file); report what cannot be indexed with a one-line reason."""
    result = ScanResult()
    excluded = [p.resolve() for p in exclude]
    for given in roots:
        root = given.resolve()
        if root.is_file():
            _consider(given, root.parent, given.name, result, max_file_bytes)
            continue
        for directory, dirnames, filenames in os.walk(root, followlinks=False):
            base = Path(directory)
            kept = []
            for name in sorted(dirnames):
                sub = base / name
                if name.startswith(".") or any(_within(sub.resolve(), e) for e in excluded):
                    continue
                if sub.is_symlink():
                    result.skipped.append(FileProblem(display(sub.relative_to(root)),
                                                      "symlinked folder not followed"))
                    continue
                kept.append(name)
            dirnames[:] = kept
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                file = base / name
                _consider(file, root, file.relative_to(root).as_posix(), result, max_file_bytes)
    return result


def _consider(file: Path, root: Path, relative: str, result: ScanResult, max_file_bytes: int) -> None:
    shown = display(relative)
    result.present.add(display(root / relative))

    def skip(reason: str) -> None:
        result.skipped.append(FileProblem(shown, reason))

    if file.suffix.lower() not in SUPPORTED_EXTENSIONS:
        skip(unsupported_reason(file.suffix))
        return
    if file.is_symlink():
        target = file.resolve()
        if not target.exists():
            skip("broken symlink")
            return
        if not _within(target, root):
            skip("symlink points outside the ingested folder; not followed")
            return
    try:
        info = file.stat()
    except OSError as exc:
        skip(f"cannot read: {exc.strerror}")
        return
    if not stat.S_ISREG(info.st_mode):
        skip("not a regular file")
        return
    if info.st_size == 0:
        skip("empty file (0 bytes)")
        return
    if info.st_size > max_file_bytes:
        skip(f"too large: {info.st_size / 1e6:.0f} MB is over the {max_file_bytes / 1e6:.0f} MB limit (--max-file-mb)")
        return
    result.candidates.append(Candidate(path=file, root=root, source=shown, size=info.st_size, mtime=info.st_mtime,
                                       inode=(info.st_dev, info.st_ino)))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ChangedWhileReading(LoadError):
    """The file's bytes no longer match the hash its permissions were decided on."""


@contextlib.contextmanager
def snapshot(path: Path, sha256: str):
    """A private copy of `path` whose bytes are exactly those hashed as `sha256`, for the loader to parse.

    Permissions are decided on the hash; without this a file swapped for a symlink to a restricted one between
    hashing and parsing would be indexed under the first file's groups.
    """
    with tempfile.TemporaryDirectory(prefix="groundwork-load-") as folder:
        copy = Path(folder) / path.name
        digest = hashlib.sha256()
        with open(path, "rb") as source, open(copy, "wb") as target:
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
                target.write(block)
        if digest.hexdigest() != sha256:
            raise ChangedWhileReading("the file changed while it was being ingested; run ingestion again")
        yield copy
