"""The models cache: where derived model files live (GGUF conversions, 4-bit weights, int8 ONNX embedders) and the
one way to build a folder there, atomically and once across processes.

Lives in `ingest` because the embedder (ingest) and the generator models (finetune) both cache here and ingest may
import no other layer; finetune re-exports these names.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping

from ingest.errors import GroundworkError
from ingest.files import fsync_dir

ENV_CACHE_DIR = "GROUNDWORK_CACHE"
DEFAULT_CACHE_DIR = Path("groundwork-data/models")  # relative to the working directory, whatever GROUNDWORK_DATA
MARKER_NAME = "groundwork-conversion.json"


class CacheBuildError(GroundworkError):
    """A folder in the models cache could not be built."""


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$GROUNDWORK_CACHE` (unset or empty: `groundwork-data/models`, relative to the working directory).

    The one reader of GROUNDWORK_CACHE: `app.config.Settings.from_env` resolves `models_dir` here, and
    `load_model`/`get_model` and the ONNX embedder fall back to it when given no `cache_dir`.
    `environ` defaults to os.environ.
    """
    env = os.environ if environ is None else environ
    return Path(env.get(ENV_CACHE_DIR) or DEFAULT_CACHE_DIR)


def read_marker(folder: Path) -> dict | None:
    """The marker of a cached folder, or None if it is missing or unreadable."""
    try:
        with open(folder / MARKER_NAME, encoding="utf-8") as handle:
            marker = json.load(handle)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _current_umask() -> int:
    """The process umask, read without changing it (os.umask would, briefly, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _publish_permissions(folder: Path) -> None:
    """mkdtemp makes 0700 folders (and some writers 0600 files); give the cache the usual umask modes."""
    mask = _current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(folder)


def _write_marker(folder: Path, marker: dict) -> None:
    path = folder / MARKER_NAME
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(marker, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def build_atomically(
    target: Path,
    build: Callable[[Path], None],
    marker: dict,
    is_valid: Callable[[Path], bool],
    *,
    lock_timeout: float = 1800.0,
    error: type[GroundworkError] = CacheBuildError,
) -> bool:
    """Make `target` a valid folder, building it with `build(temp_dir)` unless `is_valid(target)` already.

    The build happens in a temporary folder next to `target`, under a file lock; the marker is written
    last, everything is fsynced, and the folder is renamed into place. Returns True if this call built it.
    A lock held past `lock_timeout` raises `error`.
    """
    from filelock import FileLock, Timeout

    if is_valid(target):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f".{target.name}.lock"))
    try:
        lock.acquire(timeout=lock_timeout)
    except Timeout as exc:
        raise error(f"{target}: another process holds the lock for too long") from exc
    try:
        if is_valid(target):  # another process built it while we waited
            return False
        _sweep_leftovers(target)
        temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(temporary)
            _write_marker(temporary, {**marker, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            _publish_permissions(temporary)
            fsync_tree(temporary)
            if target.exists():  # stale or broken: move aside first, so the rename below is atomic
                stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, stale / "folder")
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(temporary, target)
            fsync_dir(target.parent)
        finally:
            if temporary.exists():
                shutil.rmtree(temporary, ignore_errors=True)
    finally:
        lock.release()
    return True


def _sweep_leftovers(target: Path) -> None:
    """Remove temporary folders of builds that crashed (we hold the lock, so none is in progress)."""
    for prefix in (f".{target.name}.tmp-", f".{target.name}.old-"):
        for leftover in target.parent.glob(prefix + "*"):
            shutil.rmtree(leftover, ignore_errors=True)
