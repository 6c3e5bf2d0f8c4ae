"""Folder sync: folders registered with an index are re-ingested on a schedule (or on demand).

The registrations live in `sync.json` inside the index directory, so whatever opens index X (`groundwork serve
--index X`, `groundwork sync run --index X`) finds the folders of index X. The file is versioned, rewritten
atomically (temp + os.replace), and read-modify-written under a file lock, so the CLI and the server's scheduler
can both change it. It also holds each folder's last result, so the admin tab shows it after a restart.

A sync run is `ingest.pipeline.ingest` over one folder, with that folder's own ACL file: the same IndexLock,
the same crash safety, the same skipping of unchanged files. A folder's ACL rules apply to that folder only: they
are not saved as the index's rules (IngestOptions.store_acl=False), so folders with different ACL files in one
index keep their own permissions whatever the order of runs. A folder without an ACL file follows the rules
stored with the index (those of `groundwork ingest --acl` or the admin tab's Permissions).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from filelock import FileLock

from ingest.acl import AclRules
from ingest.embedding import DEFAULT_EMBEDDER, Embedder
from ingest.errors import GroundworkError
from ingest.files import atomic_write_json
from ingest.pipeline import IngestOptions, ingest
from ingest.scan import display
from ingest.store import DB_NAME, IndexBusy, IndexLock, read_index_meta
from ingest.vector_store import open_vector_store, open_vector_store_writer

REGISTRY_NAME = "sync.json"
SCHEMA_VERSION = 1
MIN_INTERVAL_S = 60  # a shorter interval would re-hash big folders back to back
DEFAULT_EVERY = "15m"
BUSY_RETRY_S = 30  # a folder skipped because the index was busy is tried again this soon
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SyncError(GroundworkError, ValueError):
    """A sync registration cannot be made or found; the message is one line for the user."""


def parse_interval(text: str, minimum: int = MIN_INTERVAL_S) -> int:
    """Seconds in "30s", "15m", "2h" or "1d" (a whole number and one unit); SyncError otherwise or if too short."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text or "")
    if not match:
        raise SyncError(f"{text!r} is not an interval: use a whole number and s, m, h or d (e.g. 30s, 15m, 2h, 1d)")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds < minimum:
        raise SyncError(f"{text.strip()} is too short: folders are synced at most every {format_interval(minimum)}")
    return seconds


def format_interval(seconds: int) -> str:
    """The shortest exact spelling: 900 -> "15m", 90 -> "90s"."""
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def format_time(timestamp: float | None) -> str:
    """A run's time as shown by `sync list` and the Sync tab (local time), or "never"."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "never"


@dataclass(frozen=True)
class LastRun:
    """The result of a folder's last sync run."""

    started: float
    finished: float
    ok: bool
    message: str  # the run's one-line summary, or the error


@dataclass(frozen=True)
class SyncFolder:
    """One registered folder."""

    path: str  # absolute
    acl: str | None  # absolute path of its ACL file; None: the rules stored with the index
    every_s: int
    added_at: float
    next_run: float  # when it is due (0: at once)
    last_run: LastRun | None = None
    note: str = ""  # why the last attempt did not run (index busy), cleared by the next run

    @property
    def every(self) -> str:
        return format_interval(self.every_s)

    def due(self, now: float) -> bool:
        return self.next_run <= now


class SyncRegistry:
    """The folders registered with one index (`<index>/sync.json`)."""

    def __init__(self, index_dir: Path) -> None:
        self.index_dir = Path(index_dir)
        self.path = self.index_dir / REGISTRY_NAME
        self._lock = FileLock(str(self.index_dir / f"{REGISTRY_NAME}.lock"), timeout=30)

    def folders(self) -> list[SyncFolder]:
        return self._read()

    def get(self, path: Path | str) -> SyncFolder:
        key = _key(path)
        for folder in self._read():
            if folder.path == key:
                return folder
        raise SyncError(f"{key} is not synced into {self.index_dir} (see `groundwork sync list`)")

    def add(self, path: Path | str, acl: Path | str | None = None, every: str = DEFAULT_EVERY,
            minimum: int = MIN_INTERVAL_S) -> tuple[SyncFolder, bool]:
        """Register a folder (due at once) or change an existing registration; returns it and whether it existed.

        The folder must exist, must not be (or hold) the index, and the ACL file must be valid TOML rules."""
        every_s = parse_interval(every, minimum)
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise SyncError(f"{folder}: no such folder" + ("" if not folder.exists() else " (a file, not a folder)"))
        folder = folder.resolve()
        index = self.index_dir.resolve()
        if folder == index or folder in index.parents or index in folder.parents:
            raise SyncError(f"{folder}: a synced folder cannot contain or be inside the index {self.index_dir}")
        for root in _indexed_roots(self.index_dir):
            if _nested(folder, Path(root)):  # its files would be claimed by two runs with different rules
                raise SyncError(f"{folder}: overlaps {root}, which is ingested as a folder of its own; sync "
                                f"{'that folder' if Path(root) in folder.parents else 'this one'} instead, or "
                                f"ingest into another --index")
        acl_path = None
        if acl is not None and str(acl).strip():
            acl_path = Path(acl).expanduser().resolve()
            AclRules.load(acl_path)  # AclError (one line) if missing or malformed
        with self._locked():
            folders = self._read()
            existing = next((f for f in folders if f.path == str(folder)), None)
            for other in folders:
                if _nested(folder, Path(other.path)):
                    raise SyncError(f"{folder}: overlaps the synced folder {other.path}; sync one or the other")
            if existing is not None:
                entry = replace(existing, acl=str(acl_path) if acl_path else None, every_s=every_s, next_run=0.0)
                folders = [entry if f.path == entry.path else f for f in folders]
            else:
                entry = SyncFolder(path=str(folder), acl=str(acl_path) if acl_path else None, every_s=every_s,
                                   added_at=time.time(), next_run=0.0)
                folders.append(entry)
            self._write(folders)
        return entry, existing is not None

    def remove(self, path: Path | str) -> SyncFolder:
        """Unregister a folder (its documents stay in the index; see purge_folder)."""
        key = _key(path)
        with self._locked():
            folders = self._read()
            found = next((f for f in folders if f.path == key), None)
            if found is None:
                raise SyncError(f"{key} is not synced into {self.index_dir} (see `groundwork sync list`)")
            self._write([f for f in folders if f.path != key])
        return found

    def mark_due(self, path: Path | str) -> SyncFolder:
        return self.update(_key(path), lambda f: replace(f, next_run=0.0))

    def update(self, key: str, change: Callable[[SyncFolder], SyncFolder]) -> SyncFolder:
        """Apply `change` to one registration (a no-op, returning the old entry, if it was removed meanwhile)."""
        with self._locked():
            folders = self._read()
            found = next((f for f in folders if f.path == key), None)
            if found is None:
                raise SyncError(f"{key} is not synced into {self.index_dir} (see `groundwork sync list`)")
            changed = change(found)
            self._write([changed if f.path == key else f for f in folders])
        return changed

    def _locked(self) -> FileLock:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        return self._lock

    def _read(self) -> list[SyncFolder]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise SyncError(f"{self.path}: cannot read the sync registrations ({exc})") from None
        if not isinstance(data, dict) or data.get("version") != SCHEMA_VERSION:
            raise SyncError(f"{self.path}: unknown format (expected version {SCHEMA_VERSION})")
        try:
            return [_folder_from(item) for item in data.get("folders", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise SyncError(f"{self.path}: a registration is damaged ({exc})") from None

    def _write(self, folders: list[SyncFolder]) -> None:
        atomic_write_json(self.path, {"version": SCHEMA_VERSION, "folders": [asdict(f) for f in folders]},
                          indent=2)


def _nested(first: Path, second: Path) -> bool:
    """One folder inside the other (not the same folder)."""
    return first in second.parents or second in first.parents


def _indexed_roots(index_dir: Path) -> set[str]:
    """The folders the index's documents were ingested from."""
    if not (Path(index_dir) / DB_NAME).exists():
        return set()
    store = open_vector_store(index_dir)
    try:
        return {doc.root for doc in store.documents()}
    finally:
        store.close()


def _key(path: Path | str) -> str:
    return str(Path(path).expanduser().resolve())


def _folder_from(item: dict) -> SyncFolder:
    last = item.get("last_run")
    return SyncFolder(path=str(item["path"]), acl=item.get("acl"), every_s=int(item["every_s"]),
                      added_at=float(item["added_at"]), next_run=float(item["next_run"]),
                      last_run=LastRun(**last) if last else None, note=str(item.get("note", "")))


@dataclass
class SyncOutcome:
    """What one attempt to sync a folder did."""

    folder: SyncFolder  # the registration after the attempt
    ran: bool  # False: skipped because the index was busy
    ok: bool = False
    message: str = ""
    changed: bool = False  # a new generation was published (documents added, updated or removed)
    failed: list[str] = field(default_factory=list)  # "file: reason" for each file that could not be loaded
    ocr: dict[str, list[int]] = field(default_factory=dict)  # file -> the pages read by OCR in this run


def index_embedder(index_dir: Path) -> str:
    """The embedder the index was built with (DEFAULT_EMBEDDER for a new index)."""
    return read_index_meta(Path(index_dir)).get("embedder", DEFAULT_EMBEDDER)


def sync_folder(registry: SyncRegistry, folder: SyncFolder, embedder: Embedder | None = None,
                show_progress: bool = False) -> SyncOutcome:
    """Run the ingest pipeline over one registered folder now and record the result in the registry.

    Never raises for a failed run (the error is the recorded result), except SyncError if the registry itself is
    unreadable. A busy index is not a failure: the folder is due again in BUSY_RETRY_S, with a note saying why."""
    started = time.time()
    try:
        summary = ingest([Path(folder.path)], IngestOptions(
            index_dir=registry.index_dir, acl_file=Path(folder.acl) if folder.acl else None,
            embedder=embedder.name if embedder is not None else index_embedder(registry.index_dir),
            show_progress=show_progress, store_acl=False), embedder=embedder)
    except IndexBusy as exc:
        note = f"not run at {time.strftime('%H:%M:%S', time.localtime(started))}: {exc}; retrying in {BUSY_RETRY_S}s"
        updated = _record(registry, folder, lambda f: replace(f, next_run=time.time() + BUSY_RETRY_S, note=note))
        return SyncOutcome(updated, ran=False, message=note)
    except Exception as exc:  # recorded and shown; the index keeps its last complete state
        message = str(exc) or type(exc).__name__
        last = LastRun(started=started, finished=time.time(), ok=False, message=message)
        updated = _record(registry, folder, lambda f: replace(f, last_run=last, next_run=started + f.every_s, note=""))
        return SyncOutcome(updated, ran=True, ok=False, message=message)
    last = LastRun(started=started, finished=time.time(), ok=True, message=summary.one_line())
    updated = _record(registry, folder, lambda f: replace(f, last_run=last, next_run=started + f.every_s, note=""))
    changed = bool(summary.added or summary.updated or summary.removed or summary.acl_changed)
    return SyncOutcome(updated, ran=True, ok=True, message=last.message, changed=changed,
                       failed=[f"{p.path}: {p.reason}" for p in summary.failed], ocr=summary.ocr)


def _record(registry: SyncRegistry, folder: SyncFolder, change: Callable[[SyncFolder], SyncFolder]) -> SyncFolder:
    try:
        return registry.update(folder.path, change)
    except SyncError:  # removed while it ran: nothing to record
        return change(folder)


def due_folders(registry: SyncRegistry, now: float | None = None) -> list[SyncFolder]:
    """The registered folders whose next run has come, the longest-waiting first."""
    now = time.time() if now is None else now
    return sorted((f for f in registry.folders() if f.due(now)), key=lambda f: f.next_run)


def purge_folder(index_dir: Path, folder: Path | str) -> int:
    """Remove every document ingested from `folder` from the index, in one new generation; returns how many.

    IndexBusy if an ingest run holds the index."""
    key = display(Path(folder).expanduser().resolve())  # how the pipeline stores a document's root
    if not (Path(index_dir) / DB_NAME).exists():
        return 0
    with IndexLock(Path(index_dir)):
        writer = open_vector_store_writer(Path(index_dir), index_embedder(index_dir))
        try:
            doomed = [path for path, doc in writer.documents().items() if doc.root == key]
            if doomed:
                writer.publish([], doomed, {})
        finally:
            writer.close()
    return len(doomed)
