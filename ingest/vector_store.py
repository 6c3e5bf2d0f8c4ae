"""The vector store seam: what the engine and the training-data builder need from an index.

`ingest.reader.IndexReader` (FAISS vectors + SQLite metadata on local disk) is the embedded default and
satisfies this Protocol. Another backend (e.g. Milvus) implements these methods in one new module and is
chosen where the reader is opened; nothing outside `ingest/` touches a store's connection or private names.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

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
    """Open the index for reading: the one place a backend is chosen (FAISS + SQLite on local disk, the default)."""
    from ingest.reader import IndexReader

    return IndexReader(index_dir)
