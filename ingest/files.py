"""Crash-safe file writes: the one home for write-aside, fsync, rename, fsync the folder."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, mode: int | None = None) -> None:
    """Replace `path` with `data` so that a reader or a crash sees the old file or the new one, never a mix.

    `mode` (e.g. 0o600 for secrets) is set on the new file before it takes the name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, data: object, mode: int | None = None, **dump_options) -> None:
    """`atomic_write` of `data` as JSON (dump_options go to json.dumps, e.g. indent=2, sort_keys=True)."""
    atomic_write(path, json.dumps(data, **dump_options) + "\n", mode)
