"""The vector store seam: what the engine and the training-data builder need from an index (`VectorStore`),
and what ingestion needs to change one (`VectorStoreWriter`).

`ingest.reader.IndexReader` and `ingest.store.IndexWriter` (FAISS vectors + SQLite metadata on local disk) are
the embedded default and satisfy these Protocols. Another backend (e.g. Milvus) implements both in one new
module and is chosen in `open_vector_store` and `open_vector_store_writer` below; nothing outside `ingest/`
touches a store's connection or private names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from ingest.documents import Chunk
from ingest.store import ChunkRecord, DocumentRecord, Hit


@runtime_checkable
class VectorStore(Protocol):
    """A read-only view of one committed index generation, searched under a user's ACL groups."""

    embedder: str  # name of the embedding model the vectors were made with
    dimension: int  # vector size
    generation: int  # the committed generation served now

    def refresh(self) -> bool:
        """Switch to the newest committed generation; True if it changed."""

    def search(self, queries: np.ndarray, k: int, groups: set[str] | None = None) -> list[list[Hit]]:
        """Top-k inner-product hits per query; with groups, only chunks those groups may read (in the search)."""

    def chunks(self, ids: list[int], groups: set[str] | None = None) -> list[ChunkRecord]:
        """Chunk records for ids, in order; with groups, the ACL is re-checked against current data."""

    def allowed_chunk_ids(self, groups: set[str] | frozenset[str]) -> np.ndarray:
        """Sorted ids of the published chunks a user in `groups` may read."""

    def chunk_ids(self, source: str | None = None) -> list[int]:
        """Ids of the published chunks (of one document when given), in reading order."""

    def keyword_texts(self) -> list[tuple[int, str]]:
        """(id, heading + text) of every published chunk, by id: the input of a keyword (BM25) index."""

    def vectors_for(self, ids: Sequence[int]) -> np.ndarray:
        """The stored (normalized) vectors of chunk ids, one row each, in order."""

    def documents(self) -> list[DocumentRecord]:
        """The indexed documents, by source."""

    def stats(self):
        """An ingest.reader.IndexStats summary."""


def open_vector_store(index_dir) -> VectorStore:
    """Open the index for reading: the one place a backend is chosen, from the store the index remembers (FAISS +
    SQLite on local disk by default; Milvus when ingested with --vector-store milvus://...)."""
    from ingest.milvus_store import STORE_KEY, MilvusReader, is_milvus
    from ingest.reader import IndexReader
    from ingest.store import read_index_meta

    url = read_index_meta(Path(index_dir)).get(STORE_KEY, "faiss")
    return MilvusReader(index_dir, url) if is_milvus(url) else IndexReader(index_dir)


@runtime_checkable
class VectorStoreWriter(Protocol):
    """Changes one index: document versions are staged (invisible to readers), then published together as one
    new generation. Used only while holding `ingest.store.IndexLock` (ingest/pipeline.py, the admin tab)."""

    def documents(self) -> dict[str, DocumentRecord]:
        """The published documents, by path."""

    def staged_version(self, path: str, sha256: str) -> tuple[str | None, int] | None:
        """(title, chunk count) of an already staged version of this file (e.g. from a crashed run), or None."""

    def stored_acl_text(self) -> str | None:
        """The ACL rules (TOML text) stored with the index by the last ingestion, or None."""

    def check_dimension(self, dimension: int) -> None:
        """Record the vector size on first use; EmbedderMismatch if the index holds vectors of another size."""

    def stage(self, path: str, sha256: str, title: str | None, chunks: list[Chunk], vectors: np.ndarray) -> None:
        """Store a document version's chunks and vectors; invisible to readers until publish()."""

    def publish(self, upserts: Iterable[DocumentRecord], removals: Iterable[str], extra_meta: dict[str, str]) -> int:
        """Make staged versions (upserts) and removals (paths) visible as one new generation; return it."""

    def set_meta(self, values: dict[str, str]) -> None:
        """Store run metadata (e.g. "last_run", "acl_rules") without a new generation."""

    def totals(self) -> tuple[int, int]:
        """(documents, chunks) published now."""

    def close(self) -> None:
        """Release the store's connection."""


def open_vector_store_writer(index_dir: Path, embedder_name: str, vector_store: str | None = None,
                             show_progress: bool = True) -> VectorStoreWriter:
    """Open the index for changing (created if missing): the one place a writer backend is chosen.

    `vector_store` ("faiss", "milvus:///path/x.db", "milvus://host:19530"; see ingest/milvus_store.py) is
    remembered by the index; None keeps the index's store (FAISS for a new index). Naming another store for an
    existing index moves its vectors there from SQLite (no re-embedding). EmbedderMismatch if the index was built
    with another embedder; MilvusStoreError for a bad URL or an unreachable Milvus."""
    from ingest.milvus_store import STORE_KEY, MilvusWriter, is_milvus, normalize_store_url
    from ingest.store import IndexWriter, read_index_meta

    stored = read_index_meta(Path(index_dir)).get(STORE_KEY, "faiss")
    url = stored if vector_store is None else normalize_store_url(vector_store)
    if is_milvus(url):
        return MilvusWriter(Path(index_dir), embedder_name, url, show_progress)
    writer = IndexWriter(Path(index_dir), embedder_name)
    if stored != "faiss":  # back from Milvus: the FAISS file is rebuilt from SQLite when it is missing or stale
        writer.set_meta({STORE_KEY: "faiss"})
    return writer
