"""The on-disk index: SQLite metadata (documents, ACL groups, chunks with their vectors) plus a FAISS file.

SQLite is the source of truth and is only changed in transactions. The FAISS file for generation N is
`vectors.N.faiss`, written aside and renamed into place *before* the transaction that makes N current,
so a crash at any point leaves the last committed generation readable. Chunks of a run in progress are
staged in SQLite under their (path, sha256) and only become visible when `publish` commits; a re-run
after a crash reuses them instead of embedding again. Nothing here uses pickle.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import faiss
import numpy as np
from filelock import FileLock, Timeout

from ingest.documents import Chunk
from ingest.files import fsync_dir
from ingest.errors import GroundworkError

FORMAT_VERSION = 1
DB_NAME = "index.sqlite"
LOCK_NAME = "ingest.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    path TEXT PRIMARY KEY,          -- absolute path: the document's identity
    root TEXT NOT NULL,             -- the ingested folder it was found under
    source TEXT NOT NULL,           -- POSIX path relative to root, shown to users
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    file_type TEXT NOT NULL,
    title TEXT,
    groups TEXT NOT NULL,           -- JSON list of groups allowed to read it
    n_chunks INTEGER NOT NULL,
    ingested_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS doc_groups (
    grp TEXT NOT NULL, path TEXT NOT NULL, PRIMARY KEY (grp, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- also the FAISS id; never reused
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    heading TEXT,
    page INTEGER,
    anchor TEXT,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (path, sha256);
CREATE TABLE IF NOT EXISTS versions (   -- one per staged or published document version
    path TEXT NOT NULL, sha256 TEXT NOT NULL, title TEXT, n_chunks INTEGER NOT NULL,
    PRIMARY KEY (path, sha256)
) WITHOUT ROWID;
"""


class IndexError_(GroundworkError):
    """A problem with the index directory; the message is one line for the user."""


class IndexBusy(IndexError_):
    """Another ingest run holds the index's lock."""


class EmbedderMismatch(IndexError_):
    """The index was built with another embedding model."""


@dataclass(frozen=True)
class DocumentRecord:
    """One indexed document as stored in the metadata."""

    path: str
    root: str
    source: str
    sha256: str
    size: int
    mtime: float
    file_type: str
    title: str | None
    groups: tuple[str, ...]
    n_chunks: int
    ingested_at: float


@dataclass(frozen=True)
class ChunkRecord:
    """A stored chunk with where it came from."""

    id: int
    source: str
    path: str
    text: str
    heading: str | None
    page: int | None
    anchor: str | None
    start: int
    end: int
    ordinal: int
    title: str | None
    groups: tuple[str, ...]
    continues: bool = False  # the previous chunk of the document has the same heading and page: this one starts
    #                          mid-section, so its first sentence is not the section's opening


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    score: float


def _connect(index_dir: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(index_dir / DB_NAME, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _vectors_path(index_dir: Path, generation: int) -> Path:
    return index_dir / f"vectors.{generation}.faiss"


def _empty_faiss(dimension: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))


def _read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def read_index_meta(index_dir: Path) -> dict[str, str]:
    """The metadata (key -> value) of the index at `index_dir`; empty when there is no index there."""
    if not (Path(index_dir) / DB_NAME).exists():
        return {}
    conn = _connect(Path(index_dir))
    try:
        return _read_meta(conn)
    except sqlite3.OperationalError:  # a database without the meta table: not an index (yet)
        return {}
    finally:
        conn.close()


def read_acl_rules(index_dir: Path) -> str | None:
    """The ACL rules (TOML text) stored with the index at `index_dir` by the last ingestion, or None."""
    return read_index_meta(index_dir).get("acl_rules") or None


def _document_from_row(row: Sequence) -> DocumentRecord:
    return DocumentRecord(path=row[0], root=row[1], source=row[2], sha256=row[3], size=row[4], mtime=row[5],
                          file_type=row[6], title=row[7], groups=tuple(json.loads(row[8])), n_chunks=row[9],
                          ingested_at=row[10])


_DOCUMENT_COLUMNS = "path, root, source, sha256, size, mtime, file_type, title, groups, n_chunks, ingested_at"


class IndexLock:
    """Exclusive lock for writers of one index; a second writer gets a clear IndexBusy."""

    def __init__(self, index_dir: Path) -> None:
        self.index_dir = index_dir
        self._lock = FileLock(str(index_dir / LOCK_NAME), timeout=0)

    def __enter__(self) -> "IndexLock":
        try:
            self._lock.acquire()
        except Timeout:
            owner = (self.index_dir / "ingest.owner")
            who = owner.read_text().strip() if owner.exists() else "another process"
            raise IndexBusy(f"index {self.index_dir} is being updated by {who}; wait for it to finish") from None
        (self.index_dir / "ingest.owner").write_text(
            f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}")
        return self

    def __exit__(self, *exc_info) -> None:
        self._lock.release()


class IndexWriter:
    """Changes an index. Use only while holding IndexLock.

    The embedded default of ingest.vector_store.VectorStoreWriter (FAISS + SQLite on local disk)."""

    def __init__(self, index_dir: Path, embedder_name: str) -> None:
        self.index_dir = index_dir
        index_dir.mkdir(parents=True, exist_ok=True)
        self.conn = _connect(index_dir)
        self.conn.executescript(_SCHEMA)
        meta = _read_meta(self.conn)
        version = int(meta.get("format_version", FORMAT_VERSION))
        if version > FORMAT_VERSION:
            raise IndexError_(f"index {index_dir} has format {version}; this Groundwork reads up to {FORMAT_VERSION}")
        stored = meta.get("embedder")
        if stored is not None and stored != embedder_name:
            raise EmbedderMismatch(
                f"index {index_dir} was built with embedder '{stored}', not '{embedder_name}': "
                f"pass --embedder {stored} or ingest into a new --index")
        if stored is None:
            self._set_meta({"format_version": str(FORMAT_VERSION), "embedder": embedder_name,
                            "generation": "0", "created_at": str(time.time())})
        self.meta = _read_meta(self.conn)

    # --- reading the current state -------------------------------------------------------------
    @property
    def generation(self) -> int:
        return int(self.meta.get("generation", "0"))

    def documents(self) -> dict[str, DocumentRecord]:
        rows = self.conn.execute(f"SELECT {_DOCUMENT_COLUMNS} FROM documents").fetchall()
        return {row[0]: _document_from_row(row) for row in rows}

    def staged_version(self, path: str, sha256: str) -> tuple[str | None, int] | None:
        """(title, chunk count) of an already embedded version of this file, e.g. from a crashed run."""
        row = self.conn.execute("SELECT title, n_chunks FROM versions WHERE path=? AND sha256=?",
                                (path, sha256)).fetchone()
        return (row[0], row[1]) if row else None

    def stored_acl_text(self) -> str | None:
        return self.meta.get("acl_rules")

    def totals(self) -> tuple[int, int]:
        """(documents, chunks) published now."""
        row = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(n_chunks), 0) FROM documents").fetchone()
        return int(row[0]), int(row[1])

    # --- staging and publishing ----------------------------------------------------------------
    def check_dimension(self, dimension: int) -> None:
        stored = self.meta.get("dimension")
        if stored is None:
            self._set_meta({"dimension": str(dimension)})
        elif int(stored) != dimension:
            raise EmbedderMismatch(f"index {self.index_dir} holds {stored}-dim vectors; the embedder gives {dimension}")

    def stage(self, path: str, sha256: str, title: str | None, chunks: list[Chunk], vectors: np.ndarray) -> None:
        """Store a document version's chunks and vectors; invisible to readers until publish()."""
        rows = [(path, sha256, c.ordinal, c.text, c.heading, c.page, c.anchor, c.start, c.end,
                 np.ascontiguousarray(v, dtype=np.float32).tobytes()) for c, v in zip(chunks, vectors)]
        with self._transaction():
            self.conn.execute("DELETE FROM chunks WHERE path=? AND sha256=?", (path, sha256))
            self.conn.execute("INSERT OR REPLACE INTO versions (path, sha256, title, n_chunks) VALUES (?,?,?,?)",
                              (path, sha256, title, len(chunks)))
            self.conn.executemany(
                "INSERT INTO chunks (path, sha256, ordinal, text, heading, page, anchor, start_char, end_char, embedding)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)", rows)

    def publish(self, upserts: Iterable[DocumentRecord], removals: Iterable[str], extra_meta: dict[str, str]) -> int:
        """Make staged versions and removals visible as one new generation; return it."""
        upserts, removals = list(upserts), list(removals)
        current = self.documents()
        changed_content = [d for d in upserts if d.path not in current or current[d.path].sha256 != d.sha256]
        old_versions = [(p, current[p].sha256) for p in removals if p in current]
        old_versions += [(d.path, current[d.path].sha256) for d in changed_content if d.path in current]

        regrouped = [d for d in upserts if d.path in current and current[d.path].sha256 == d.sha256
                     and set(current[d.path].groups) != set(d.groups)]

        new_generation = self.generation + 1
        self._publish_vectors(new_generation, old_versions, changed_content, regrouped)

        with self._transaction():
            for path in removals:
                self.conn.execute("DELETE FROM documents WHERE path=?", (path,))
                self.conn.execute("DELETE FROM doc_groups WHERE path=?", (path,))
            for doc in upserts:
                self.conn.execute(
                    f"INSERT OR REPLACE INTO documents ({_DOCUMENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (doc.path, doc.root, doc.source, doc.sha256, doc.size, doc.mtime, doc.file_type, doc.title,
                     json.dumps(sorted(doc.groups)), doc.n_chunks, doc.ingested_at))
                self.conn.execute("DELETE FROM doc_groups WHERE path=?", (doc.path,))
                self.conn.executemany("INSERT INTO doc_groups (grp, path) VALUES (?, ?)",
                                      [(g, doc.path) for g in doc.groups])
            self.conn.execute(  # old versions and leftovers of crashed runs
                "DELETE FROM chunks WHERE NOT EXISTS (SELECT 1 FROM documents d"
                " WHERE d.path = chunks.path AND d.sha256 = chunks.sha256)")
            self.conn.execute(
                "DELETE FROM versions WHERE NOT EXISTS (SELECT 1 FROM documents d"
                " WHERE d.path = versions.path AND d.sha256 = versions.sha256)")
            self._set_meta({"generation": str(new_generation), "updated_at": str(time.time()), **extra_meta},
                           in_transaction=True)
        self.meta = _read_meta(self.conn)
        self._collect_garbage(new_generation)
        return new_generation

    def set_meta(self, values: dict[str, str]) -> None:
        self._set_meta(values)

    def close(self) -> None:
        self.conn.close()

    # --- the vector side (FAISS here; ingest/milvus_store.py overrides these three) ---------------------------
    def _publish_vectors(self, generation: int, old_versions: list[tuple[str, str]],
                         changed_content: list[DocumentRecord], regrouped: list[DocumentRecord]) -> None:
        """Write the vectors of `generation` before the SQLite transaction that makes it current: without the
        chunks of `old_versions` (path, sha256), with the staged chunks of `changed_content`. `regrouped` (same
        content, other groups) needs nothing here: FAISS holds no groups, the ACL lives in SQLite."""
        index = self._load_vectors()
        drop_ids = self._chunk_ids(old_versions)
        if len(drop_ids):
            index.remove_ids(drop_ids)
        for doc in changed_content:
            ids, vectors = self._staged_vectors(doc.path, doc.sha256)
            if len(ids):
                index.add_with_ids(vectors, ids)
        self._write_vectors(index, generation)

    def _collect_garbage(self, generation: int) -> None:
        """After `generation` is committed: drop vectors no reader needs (the previous generation's are kept for
        readers mid-switch)."""
        for old in self.index_dir.glob("vectors.*.faiss"):
            gen = old.name.split(".")[1]
            if gen.isdigit() and int(gen) < generation - 1:
                old.unlink(missing_ok=True)

    # --- helpers --------------------------------------------------------------------------------
    def _set_meta(self, values: dict[str, str], in_transaction: bool = False) -> None:
        statement = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
        if in_transaction:
            self.conn.executemany(statement, values.items())
        else:
            with self._transaction():
                self.conn.executemany(statement, values.items())
        self.meta = _read_meta(self.conn)

    def _transaction(self):
        return _Transaction(self.conn)

    def _chunk_ids(self, versions: list[tuple[str, str]]) -> np.ndarray:
        ids: list[int] = []
        for path, sha in versions:
            ids += [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE path=? AND sha256=?", (path, sha))]
        return np.array(ids, dtype=np.int64)

    def _staged_vectors(self, path: str, sha256: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self.conn.execute("SELECT id, embedding FROM chunks WHERE path=? AND sha256=? ORDER BY id",
                                 (path, sha256)).fetchall()
        return _ids_and_vectors(rows, int(self.meta["dimension"]) if rows else 0)

    def _load_vectors(self) -> faiss.Index:
        dimension = int(self.meta.get("dimension", "0"))
        if self.generation == 0:
            return _empty_faiss(dimension)
        return load_or_rebuild_vectors(self.index_dir, self.conn, self.generation, dimension)

    def _write_vectors(self, index: faiss.Index, generation: int) -> None:
        final = _vectors_path(self.index_dir, generation)
        temporary = final.with_suffix(".faiss.tmp")
        faiss.write_index(index, str(temporary))
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, final)
        fsync_dir(self.index_dir)


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _ids_and_vectors(rows: list[tuple[int, bytes]], dimension: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dimension)
    return ids, vectors


def load_or_rebuild_vectors(index_dir: Path, conn: sqlite3.Connection, generation: int, dimension: int) -> faiss.Index:
    """Read generation's FAISS file; if it is missing or unreadable, rebuild it from the vectors in SQLite."""
    path = _vectors_path(index_dir, generation)
    if path.exists():
        try:
            index = faiss.read_index(str(path))
            published = conn.execute(_PUBLISHED_COUNT).fetchone()[0]
            if index.ntotal == published and index.d == dimension:
                return index
        except RuntimeError:
            pass
    rows = conn.execute("SELECT c.id, c.embedding FROM chunks c JOIN documents d"
                        " ON d.path = c.path AND d.sha256 = c.sha256 ORDER BY c.id").fetchall()
    index = _empty_faiss(dimension)
    if rows:
        ids, vectors = _ids_and_vectors(rows, dimension)
        index.add_with_ids(vectors, ids)
    return index


_PUBLISHED_COUNT = ("SELECT COUNT(*) FROM chunks c JOIN documents d ON d.path = c.path AND d.sha256 = c.sha256")
