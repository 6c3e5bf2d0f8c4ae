"""Read side of the index, for the engine: ACL-filtered vector search and chunk lookup.

A reader serves one committed generation at a time and switches to a newer one on refresh(), so
answers during a re-ingest come from the last complete index.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from ingest.store import (DB_NAME, ChunkRecord, DocumentRecord, Hit, IndexError_, _connect, _document_from_row,
                          _DOCUMENT_COLUMNS, _empty_faiss, _read_meta, load_or_rebuild_vectors)


@dataclass(frozen=True)
class IndexStats:
    documents: int
    chunks: int
    generation: int
    embedder: str
    dimension: int
    by_type: dict[str, int]
    by_group: dict[str, int]
    disk_bytes: int
    updated_at: float | None
    last_run: dict | None


def _locked(method):
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    wrapper.__doc__, wrapper.__name__ = method.__doc__, method.__name__
    return wrapper


class IndexReader:
    """Opens a committed index read-only and answers searches restricted to a user's groups.

    The embedded default of ingest.vector_store.VectorStore (FAISS + SQLite on local disk).
    """

    def __init__(self, index_dir: Path | str) -> None:
        self.index_dir = Path(index_dir)
        if not (self.index_dir / DB_NAME).exists():
            raise IndexError_(f"no index at {self.index_dir}: run `groundwork ingest PATH --index {self.index_dir}` first")
        self.conn = _connect(self.index_dir)
        self._lock = threading.RLock()  # one SQLite connection and FAISS index shared by server threads
        self._allowed_cache: dict[frozenset[str], np.ndarray] = {}
        # Building an IDSelectorBatch costs ~30 ms for 100k allowed ids (benchmarks/retrieval_scale.py): keep it.
        self._selector_cache: dict[frozenset[str], faiss.IDSelector] = {}
        self._load()

    def _load(self) -> None:
        self.conn.execute("BEGIN")  # one snapshot for the generation number and its vectors' count
        try:
            meta = _read_meta(self.conn)
            if "embedder" not in meta:
                raise IndexError_(f"{self.index_dir} is not a Groundwork index (no metadata)")
            self.meta = meta
            self.generation = int(meta.get("generation", "0"))
            self.embedder = meta["embedder"]
            self.dimension = int(meta.get("dimension", "0"))
            self._load_vectors()
        finally:
            self.conn.execute("COMMIT")
        self._allowed_cache.clear()
        self._selector_cache.clear()

    def _load_vectors(self) -> None:
        """Make this generation's vectors searchable (inside _load's snapshot). ingest/milvus_store.py overrides
        this, search() and vectors_for(); everything else a reader does is SQLite, shared by both stores."""
        if self.generation == 0:
            self.vectors = _empty_faiss(max(self.dimension, 1))
        else:
            self.vectors = load_or_rebuild_vectors(self.index_dir, self.conn, self.generation, self.dimension)

    def refresh(self) -> bool:
        """Switch to the newest committed generation; return True if it changed."""
        with self._lock:
            current = int(self.conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
            if current == self.generation:
                return False
            self._load()
            return True

    # --- permissions -------------------------------------------------------------------------------
    @_locked
    def allowed_chunk_ids(self, groups: set[str] | frozenset[str]) -> np.ndarray:
        """Sorted ids of the published chunks a user in `groups` may read (cached per generation)."""
        key = frozenset(groups)
        cached = self._allowed_cache.get(key)
        if cached is not None:
            return cached
        if not key:
            ids = np.zeros(0, dtype=np.int64)
        else:
            marks = ",".join("?" * len(key))
            rows = self.conn.execute(
                "SELECT c.id FROM chunks c JOIN documents d ON d.path = c.path AND d.sha256 = c.sha256"
                f" WHERE c.path IN (SELECT path FROM doc_groups WHERE grp IN ({marks})) ORDER BY c.id",
                tuple(key)).fetchall()
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        self._allowed_cache[key] = ids
        return ids

    # --- search ------------------------------------------------------------------------------------
    @_locked
    def search(self, queries: np.ndarray, k: int, groups: set[str] | None = None) -> list[list[Hit]]:
        """Top-k inner-product hits per query; with groups, only chunks those groups may read.

        The ACL is applied inside FAISS (an id selector), so other users' documents never take a slot.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        params = None
        if groups is not None:
            key = frozenset(groups)
            allowed = self.allowed_chunk_ids(key)
            if len(allowed) == 0:
                return [[] for _ in range(len(queries))]
            selector = self._selector_cache.get(key)
            if selector is None:
                selector = self._selector_cache[key] = faiss.IDSelectorBatch(allowed)
            params = faiss.SearchParameters(sel=selector)
        k = min(k, self.vectors.ntotal)
        if k <= 0:
            return [[] for _ in range(len(queries))]
        scores, ids = self.vectors.search(queries, k, params=params)
        return [[Hit(int(i), float(s)) for i, s in zip(row_ids, row_scores) if i >= 0]
                for row_ids, row_scores in zip(ids, scores)]

    @_locked
    def chunks(self, ids: list[int], groups: set[str] | None = None) -> list[ChunkRecord]:
        """Chunk records for ids, in the given order; with groups, re-checks the ACL against current data."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            "SELECT c.id, d.source, c.path, c.text, c.heading, c.page, c.anchor, c.start_char, c.end_char, c.ordinal,"
            " d.title, d.groups, EXISTS (SELECT 1 FROM chunks p WHERE p.path = c.path AND p.sha256 = c.sha256"
            " AND p.ordinal = c.ordinal - 1 AND p.heading IS c.heading AND p.page IS c.page)"
            " FROM chunks c JOIN documents d ON d.path = c.path AND d.sha256 = c.sha256"
            f" WHERE c.id IN ({marks})", tuple(ids)).fetchall()
        by_id = {r[0]: ChunkRecord(id=r[0], source=r[1], path=r[2], text=r[3], heading=r[4], page=r[5], anchor=r[6],
                                   start=r[7], end=r[8], ordinal=r[9], title=r[10], groups=tuple(json.loads(r[11])),
                                   continues=bool(r[12]))
                 for r in rows}
        records = [by_id[i] for i in ids if i in by_id]
        if groups is not None:
            records = [r for r in records if set(r.groups) & set(groups)]
        return records

    # --- inspection --------------------------------------------------------------------------------
    @_locked
    def chunk_ids(self, source: str | None = None) -> list[int]:
        """Ids of the published chunks (of one document when `source` is given), in reading order."""
        query = ("SELECT c.id FROM chunks c JOIN documents d ON d.path = c.path AND d.sha256 = c.sha256"
                 + (" WHERE d.source = ?" if source is not None else "") + " ORDER BY d.source, c.ordinal")
        return [r[0] for r in self.conn.execute(query, (source,) if source is not None else ()).fetchall()]

    @_locked
    def keyword_texts(self) -> list[tuple[int, str]]:
        """(id, heading + text) of every published chunk, by id: the input of a keyword (BM25) index."""
        rows = self.conn.execute(
            "SELECT c.id, COALESCE(c.heading, '') || ' ' || c.text FROM chunks c JOIN documents d"
            " ON d.path = c.path AND d.sha256 = c.sha256 ORDER BY c.id").fetchall()
        return [(r[0], r[1]) for r in rows]

    @_locked
    def vectors_for(self, ids: Sequence[int]) -> np.ndarray:
        """The stored (normalized) vectors of chunk ids, one row each, in order."""
        return np.vstack([self.vectors.reconstruct(int(cid)) for cid in ids])

    @_locked
    def documents(self) -> list[DocumentRecord]:
        rows = self.conn.execute(f"SELECT {_DOCUMENT_COLUMNS} FROM documents ORDER BY source").fetchall()
        return [_document_from_row(r) for r in rows]

    @_locked
    def stats(self) -> IndexStats:
        docs = self.documents()
        by_type: dict[str, int] = {}
        by_group: dict[str, int] = {}
        for doc in docs:
            by_type[doc.file_type] = by_type.get(doc.file_type, 0) + 1
            for group in doc.groups:
                by_group[group] = by_group.get(group, 0) + 1
        disk = sum(p.stat().st_size for p in self.index_dir.iterdir() if p.is_file())
        # read now, not from this generation's snapshot: a run that changed no document (only failures) writes its
        # report without publishing a new generation, and the admin page must show that report
        last_run = _read_meta(self.conn).get("last_run")
        return IndexStats(documents=len(docs), chunks=sum(d.n_chunks for d in docs), generation=self.generation,
                          embedder=self.embedder, dimension=self.dimension, by_type=dict(sorted(by_type.items())),
                          by_group=dict(sorted(by_group.items())), disk_bytes=disk,
                          updated_at=float(self.meta["updated_at"]) if "updated_at" in self.meta else None,
                          last_run=json.loads(last_run) if last_run else None)

    def close(self) -> None:
        self.conn.close()
