"""Milvus as the vector store: the second implementation of ingest/vector_store.py's seam.

SQLite (ingest/store.py) stays the source of truth for documents, chunks, ACL groups AND vectors; a Milvus
collection replaces the FAISS file. `MilvusWriter` and `MilvusReader` subclass `IndexWriter` / `IndexReader` and
override only their vector side, so every SQLite read and write is shared with the FAISS store.

Store URLs (`groundwork ingest --vector-store URL`, kept in the index's meta under "vector_store"):
- `faiss` (the default),
- `milvus:///abs/path/milvus.db` or `milvus://./rel/milvus.db`: Milvus Lite, embedded; a relative path is made
  absolute against the current folder when the index is created. Milvus Lite lets one process open a file.
- `milvus://host:19530` (`milvus+https://host:443` for TLS): a Milvus server or cluster. The token comes from
  GROUNDWORK_MILVUS_TOKEN at connect time and is never part of the stored URL.

Generations: every row carries `gen_from` (the generation that published it) and `gen_to` (the one that retired
it; LIVE while current), and every search filters on the reader's generation. A publish inserts the new rows and
retires the old ones *before* the SQLite transaction that makes the generation current, so readers keep answering
from the last complete generation; rows no reader can see are deleted after the commit. An ACL change (same
content, other groups) retires a chunk's row and inserts it again with the new groups, so the primary key is
(chunk id, gen_from) packed into one int64.

Permissions: each row carries its document's `groups` (ARRAY) and `acl`, an int64 id of that group set, which is
also the partition key. Searches filter with `acl in [ids of the group sets sharing a group with the user]` inside
Milvus (no group name ever enters a filter expression), so other users' documents never take a slot and only the
partitions of those sets are scanned. Measured in Milvus Lite 3.2 (benchmarks/retrieval_scale.py, 10% ACL):
`array_contains_any(groups, [...])`, which has no scalar index on arrays, took 0.6 s per query at 10k rows and
14-18 s at 100k, ~85x this filter (0.21 s at 100k); the partition key alone made the filtered query ~5x faster
(10 vs 50 ms at 20k rows).

A copied index folder shares the original's collection until its first ingest, which gives it its own (the
collection records the folder that wrote it).

Limits: Milvus Lite opens a file in one process (the CLI cannot ingest while `groundwork serve` holds it; the admin
tab's ingest runs inside serve and can); a server needs Milvus >= 2.6 (partial upserts retire rows).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from ingest.store import DocumentRecord, Hit, IndexError_, IndexLock, IndexWriter, _ids_and_vectors, read_index_meta
from ingest.reader import IndexReader

STORE_KEY = "vector_store"  # meta key: "faiss" (also when absent) or a milvus URL
COLLECTION_KEY = "milvus_collection"  # meta key: the collection's name, fixed when the index first uses Milvus
TOKEN_ENV = "GROUNDWORK_MILVUS_TOKEN"  # read at connect time only (never stored): see docs/ARCHITECTURE.md
GENERATION_PROPERTY = "groundwork.generation"  # collection property: the last generation written to it
OWNER_PROPERTY = "groundwork.index"  # collection property: the index folder that last wrote it
LIVE = 2 ** 62  # gen_to of rows not retired
CONNECT_TIMEOUT_S = 10.0
PARTITIONS = 16  # partitions the group-set id (`acl`, the partition key) is hashed into
_PK_SHIFT = 24  # pk = chunk id << 24 | gen_from mod 2**24: two rows of one chunk only clash after 16M generations
_BATCH = 2000  # rows per insert / ids per query
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$")


class MilvusStoreError(IndexError_):
    """A bad store URL or an unreachable Milvus; the message is one line for the user."""


def normalize_store_url(url: str) -> str:
    """The canonical form stored with the index: `faiss`, `milvus:///abs/file.db` or `milvus[+https]://host:port`.

    MilvusStoreError (one line) for anything else."""
    url = url.strip()
    if url.lower() == "faiss":
        return "faiss"
    usage = "use faiss, milvus:///path/to/milvus.db, milvus://./milvus.db or milvus://host:19530"
    for scheme in ("milvus://", "milvus+https://"):
        if url.startswith(scheme):
            rest = url[len(scheme):]
            break
    else:
        raise MilvusStoreError(f"unknown vector store '{url}': {usage}")
    if "@" in rest or "?" in rest:
        raise MilvusStoreError(f"no credentials or options in the vector store URL: put the token in {TOKEN_ENV}")
    if scheme == "milvus://" and rest.startswith(("/", "./", "../", "~")):
        path = Path(rest).expanduser().resolve()
        if path.suffix != ".db":
            raise MilvusStoreError(f"a Milvus Lite file must end in .db, not '{path.name}': {usage}")
        return f"milvus://{path}"
    host = rest.rstrip("/")
    if not _HOST.match(host):
        raise MilvusStoreError(f"bad Milvus address '{url}': {usage}")
    if host.endswith(".db"):  # milvus://milvus.db: surely a file, not a host named like one
        raise MilvusStoreError(f"'{url}' names a server; for a Milvus Lite file write milvus://./{host} "
                               f"or milvus:///absolute/path/{host}")
    return f"{scheme}{host if ':' in host else host + ':19530'}"


def is_milvus(url: str) -> bool:
    return url.startswith(("milvus://", "milvus+https://"))


def connect(url: str):
    """A pymilvus MilvusClient for a normalized store URL; MilvusStoreError (one line, quickly) if it fails."""
    from pymilvus import MilvusClient

    if url.startswith("milvus:///"):
        path = Path(url[len("milvus://"):])
        log = logging.getLogger("milvus_lite.server_manager")  # it logs a traceback before pymilvus raises
        quiet = log.disabled
        log.disabled = True
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return MilvusClient(str(path))
        except Exception as exc:  # pymilvus wraps the cause (often: another process holds the file) in one type
            raise MilvusStoreError(
                f"cannot open Milvus Lite file {path} ({type(exc).__name__}); Milvus Lite serves one process at a"
                " time: stop the other one (e.g. `groundwork serve`) or use a Milvus server"
                " (--vector-store milvus://host:19530)") from None
        finally:
            log.disabled = quiet
    scheme, host = url.split("://", 1)
    uri = ("https://" if scheme == "milvus+https" else "http://") + host
    try:
        return MilvusClient(uri=uri, token=os.environ.get(TOKEN_ENV, ""), timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:
        reason = str(getattr(exc, "message", "") or exc).splitlines()[0][:200]
        raise MilvusStoreError(f"cannot reach Milvus at {host}: {reason}") from None


def acl_id(groups: Sequence[str]) -> int:
    """A stable positive int64 naming a set of groups (the `acl` field searches filter on)."""
    digest = hashlib.sha256("\n".join(sorted(set(groups))).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _pk(chunk_id: int, gen_from: int) -> int:
    return (int(chunk_id) << _PK_SHIFT) | (gen_from % (1 << _PK_SHIFT))


def _visible(generation: int) -> str:
    return f"gen_from <= {generation} and gen_to > {generation}"


class MilvusVectors:
    """One index's collection: create, rebuild from SQLite, insert, retire, garbage-collect, search."""

    def __init__(self, client, name: str, owner: Path) -> None:
        self.client = client
        self.name = name
        self.owner = str(Path(owner).resolve())  # the index folder this collection belongs to

    # --- lifecycle ---------------------------------------------------------------------------------
    def create(self, dimension: int) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, description="Groundwork chunk vectors")
        schema.add_field("pk", DataType.INT64, is_primary=True)
        schema.add_field("chunk", DataType.INT64)
        schema.add_field("gen_from", DataType.INT64)
        schema.add_field("gen_to", DataType.INT64)
        schema.add_field("acl", DataType.INT64, is_partition_key=True)  # a query's `acl in [...]` prunes partitions
        schema.add_field("groups", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=256, max_length=256)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="IP")  # exact, like the FAISS default
        # Strong: a search right after a publish must see its rows (the default, Bounded, may not)
        self.client.create_collection(self.name, schema=schema, index_params=index, consistency_level="Strong",
                                      num_partitions=PARTITIONS)
        scalar = self.client.prepare_index_params()
        for field in ("chunk", "acl", "gen_to"):
            scalar.add_index(field, index_type="INVERTED")
        # sync=False: waiting asks for a timestamp, which Milvus Lite does not implement (it logs a traceback)
        self.client.create_index(self.name, scalar, sync=False)

    def generation(self) -> int | None:
        """The generation last written to the collection; None if the collection is missing."""
        if not self.client.has_collection(self.name):
            return None
        properties = self.client.describe_collection(self.name).get("properties") or {}
        return int(properties.get(GENERATION_PROPERTY, "0"))

    def set_generation(self, generation: int) -> None:
        self.client.alter_collection_properties(self.name, properties={GENERATION_PROPERTY: str(generation),
                                                                       OWNER_PROPERTY: self.owner})

    def owned_by_another_index(self) -> bool:
        """True when the collection belongs to another index folder that still uses it: this index is a copy."""
        if not self.client.has_collection(self.name):
            return False
        owner = (self.client.describe_collection(self.name).get("properties") or {}).get(OWNER_PROPERTY)
        return bool(owner) and owner != self.owner and read_index_meta(Path(owner)).get(COLLECTION_KEY) == self.name

    def ensure_current(self, conn: sqlite3.Connection, generation: int, dimension: int,
                       lock: IndexLock | None = None, show_progress: bool = True) -> None:
        """Rebuild the collection from SQLite if it is missing or stale for `generation`.

        A collection one generation ahead is current: a writer wrote it and the SQLite commit is pending (or it
        crashed; the next writer discards those rows). With `lock`, the rebuild runs under it (readers)."""
        if dimension <= 0:
            return
        if self.generation() in (generation, generation + 1):
            self.client.load_collection(self.name)
            return
        if lock is None:
            self.rebuild(conn, generation, dimension, show_progress)
            return
        with lock:
            if self.generation() not in (generation, generation + 1):
                self.rebuild(conn, generation, dimension, show_progress)
        self.client.load_collection(self.name)

    def rebuild(self, conn: sqlite3.Connection, generation: int, dimension: int, show_progress: bool = True) -> None:
        """Drop and refill the collection with the published chunks of `generation`, read from SQLite."""
        if self.client.has_collection(self.name):
            self.client.drop_collection(self.name)
        self.create(dimension)
        total = conn.execute("SELECT COUNT(*) FROM chunks c JOIN documents d"
                             " ON d.path = c.path AND d.sha256 = c.sha256").fetchone()[0]
        cursor = conn.execute("SELECT c.id, c.embedding, d.groups FROM chunks c JOIN documents d"
                              " ON d.path = c.path AND d.sha256 = c.sha256 ORDER BY c.id")
        with tqdm(total=total, desc="Rebuilding Milvus collection", unit="chunk", disable=not show_progress,
                  leave=False) as bar:
            while rows := cursor.fetchmany(_BATCH):
                ids, vectors = _ids_and_vectors([(r[0], r[1]) for r in rows], dimension)
                groups = [tuple(json.loads(r[2])) for r in rows]
                self.insert(ids, vectors, groups, generation)
                bar.update(len(rows))
        self.seal()
        self.set_generation(generation)
        self.client.load_collection(self.name)

    # --- writing -----------------------------------------------------------------------------------
    def insert(self, ids: np.ndarray, vectors: np.ndarray, groups: list[tuple[str, ...]], generation: int) -> None:
        """Rows for chunk `ids` (groups per row), visible from `generation` on."""
        for start in range(0, len(ids), _BATCH):
            self.client.insert(self.name, [
                {"pk": _pk(cid, generation), "chunk": int(cid), "gen_from": generation, "gen_to": LIVE,
                 "acl": acl_id(grp), "groups": list(grp), "vector": vec.tolist()}
                for cid, vec, grp in zip(ids[start:start + _BATCH], vectors[start:start + _BATCH],
                                         groups[start:start + _BATCH])])

    def visible_rows(self, chunk_ids: Sequence[int], generation: int) -> list[tuple[int, int]]:
        """(primary key, partition key) of the rows of `chunk_ids` that readers of `generation` see."""
        rows: list[tuple[int, int]] = []
        chunk_ids = [int(c) for c in chunk_ids]
        for start in range(0, len(chunk_ids), _BATCH):
            batch = chunk_ids[start:start + _BATCH]
            found = self.client.query(self.name, filter=f"chunk in {batch} and {_visible(generation)}",
                                      output_fields=["pk", "acl"], limit=len(batch))  # one visible row per chunk
            rows += [(int(r["pk"]), int(r["acl"])) for r in found]
        return rows

    def retire(self, rows: Sequence[tuple[int, int]], generation: int) -> None:
        """Rows (pk, acl) invisible from `generation` on (still seen by readers of earlier generations)."""
        self._set_gen_to(rows, generation)

    def _set_gen_to(self, rows: Sequence[tuple[int, int]], gen_to: int) -> None:
        for start in range(0, len(rows), _BATCH):  # a partial upsert names the partition key to find the row
            self.client.upsert(self.name, [{"pk": pk, "acl": acl, "gen_to": gen_to}
                                           for pk, acl in rows[start:start + _BATCH]], partial_update=True)

    def discard_unpublished(self, generation: int) -> None:
        """Undo what a crashed writer did after `generation`: its new rows deleted, its retirements revoked."""
        self.client.delete(self.name, filter=f"gen_from > {generation}")
        while rows := self.client.query(self.name, filter=f"gen_to > {generation} and gen_to < {LIVE}",
                                        output_fields=["pk", "acl"], limit=_BATCH):
            self._set_gen_to([(int(r["pk"]), int(r["acl"])) for r in rows], LIVE)

    def seal(self) -> None:
        """Flush what was written into sealed, indexed segments. Without it Milvus Lite searched its unsealed
        rows at ~1.4 s a query on the 12k python-docs chunks in the process that wrote them (35 ms once sealed)."""
        self.client.flush(self.name)

    def collect_garbage(self, generation: int) -> None:
        """After `generation` is committed: delete rows neither it nor the previous generation can see."""
        self.client.delete(self.name, filter=f"gen_to < {generation}")

    # --- reading -----------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, generation: int, acl_ids: list[int] | None) -> list[list[Hit]]:
        expression = _visible(generation) + (f" and acl in {acl_ids}" if acl_ids is not None else "")
        results = self.client.search(self.name, data=[q.tolist() for q in queries], limit=min(k, 16384),
                                     filter=expression, output_fields=["chunk"],
                                     search_params={"metric_type": "IP"})
        return [[Hit(int(h["entity"]["chunk"]), float(h["distance"])) for h in row] for row in results]

    def close(self) -> None:
        self.client.close()


def _collection_name(meta: dict[str, str]) -> str:
    return meta.get(COLLECTION_KEY) or f"groundwork_{uuid.uuid4().hex[:16]}"


class MilvusWriter(IndexWriter):
    """IndexWriter whose vectors go to Milvus instead of a FAISS file. Use only while holding IndexLock."""

    def __init__(self, index_dir: Path, embedder_name: str, url: str, show_progress: bool = True) -> None:
        super().__init__(index_dir, embedder_name)
        self.url = url
        self.show_progress = show_progress
        name = _collection_name(self.meta)
        self.milvus = MilvusVectors(connect(url), name, index_dir)
        if self.milvus.owned_by_another_index():  # a copied index folder: its own collection, filled from its SQLite
            name = _collection_name({})
            self.milvus = MilvusVectors(self.milvus.client, name, index_dir)
        if self.meta.get(STORE_KEY) != url or self.meta.get(COLLECTION_KEY) != name:
            self._set_meta({STORE_KEY: url, COLLECTION_KEY: name})
        # a new store for an existing index, a deleted or stale collection: rebuilt from SQLite, not re-embedded
        self.milvus.ensure_current(self.conn, self.generation, self._dimension(), show_progress=show_progress)

    def _dimension(self) -> int:
        return int(self.meta.get("dimension", "0"))

    def _publish_vectors(self, generation: int, old_versions: list[tuple[str, str]],
                         changed_content: list[DocumentRecord], regrouped: list[DocumentRecord]) -> None:
        dimension = self._dimension()
        if dimension <= 0:  # nothing was ever embedded: no collection to write
            return
        previous = generation - 1
        if self.milvus.generation() is None:
            self.milvus.rebuild(self.conn, previous, dimension, self.show_progress)
        self.milvus.discard_unpublished(previous)
        retiring = [int(i) for i in self._chunk_ids(old_versions + [(d.path, d.sha256) for d in regrouped])]
        retired = self.milvus.visible_rows(retiring, previous)
        for doc in changed_content + regrouped:
            ids, vectors = self._staged_vectors(doc.path, doc.sha256)
            if len(ids):
                self.milvus.insert(ids, vectors, [tuple(doc.groups)] * len(ids), generation)
        self.milvus.retire(retired, generation)
        self.milvus.seal()
        self.milvus.set_generation(generation)

    def _collect_garbage(self, generation: int) -> None:
        super()._collect_garbage(generation)  # FAISS files of the time before this index moved to Milvus
        if self._dimension() > 0:
            self.milvus.collect_garbage(generation)

    def close(self) -> None:
        super().close()
        self.milvus.close()


class MilvusReader(IndexReader):
    """IndexReader whose vector search runs in Milvus, filtered by generation and ACL group set."""

    def __init__(self, index_dir: Path | str, url: str, show_progress: bool = True) -> None:
        self.url = url
        self.show_progress = show_progress
        self.milvus: MilvusVectors | None = None
        self._acl_ids: dict[frozenset[str], list[int]] = {}
        super().__init__(index_dir)

    def _load_vectors(self) -> None:
        if self.milvus is None:
            if COLLECTION_KEY not in self.meta:
                raise IndexError_(f"{self.index_dir} names no Milvus collection: ingest it again with --vector-store")
            self.milvus = MilvusVectors(connect(self.url), self.meta[COLLECTION_KEY], self.index_dir)
        self._acl_ids = {}
        self.vectors = None
        if self.generation > 0:
            self.milvus.ensure_current(self.conn, self.generation, self.dimension, IndexLock(self.index_dir),
                                       self.show_progress)

    def _acl_ids_for(self, groups: frozenset[str]) -> list[int]:
        """Ids of the group sets in the index that share a group with `groups` (cached per generation)."""
        cached = self._acl_ids.get(groups)
        if cached is None:
            sets = [tuple(json.loads(r[0])) for r in self.conn.execute("SELECT DISTINCT groups FROM documents")]
            cached = self._acl_ids[groups] = sorted(acl_id(s) for s in sets if groups & set(s))
        return cached

    def search(self, queries: np.ndarray, k: int, groups: set[str] | None = None) -> list[list[Hit]]:
        """Top-k inner-product hits per query; with groups, the ACL filter runs inside Milvus."""
        with self._lock:
            queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
            acl_ids = None if groups is None else self._acl_ids_for(frozenset(groups))
            if k <= 0 or self.generation == 0 or self.dimension <= 0 or acl_ids == []:
                return [[] for _ in range(len(queries))]
            return self.milvus.search(queries, k, self.generation, acl_ids)

    def vectors_for(self, ids: Sequence[int]) -> np.ndarray:
        """The stored (normalized) vectors of chunk ids, one row each, in order (read from SQLite)."""
        with self._lock:
            wanted = [int(i) for i in ids]
            found: dict[int, bytes] = {}
            for start in range(0, len(wanted), 500):
                batch = wanted[start:start + 500]
                found.update(self.conn.execute(
                    f"SELECT id, embedding FROM chunks WHERE id IN ({','.join('?' * len(batch))})", batch).fetchall())
            _, vectors = _ids_and_vectors([(i, found[i]) for i in wanted], self.dimension)
            return vectors

    def close(self) -> None:
        super().close()
        if self.milvus is not None:
            self.milvus.close()
