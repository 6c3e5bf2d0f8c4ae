"""Retrieval: dense (vector) and keyword (BM25) search over the chunks a user may read, fused by reciprocal rank,
then an optional reranker.

The pipeline is one list of stages, the same for serving (app.engine) and for training data (finetune.data):

    dense ─┐
           ├─► fusion (reciprocal rank) ─► similarity floor ─► rerank (Reranker; none by default) ─► top k
    keyword┘

Both searches apply the user's ACL inside the search (an id selector for FAISS, a weight mask for BM25),
so other people's documents never take a result slot and never reach the prompt. The store behind it is any
ingest.vector_store.VectorStore (ingest.reader.IndexReader by default).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

import numpy as np

from ingest.defaults import TOP_K
from ingest.embedding import Embedder
from ingest.store import ChunkRecord
from ingest.vector_store import VectorStore

STAGES = ("dense", "keyword", "fusion", "rerank")  # in order; RetrievalOptions.mode picks dense and/or keyword


@dataclass(frozen=True)
class RetrievalOptions:
    """How passages are found for a question."""

    top_k: int = TOP_K  # passages handed to the prompt
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"  # dense + BM25 fused, or one of them alone
    candidates: int = 30  # hits taken from each search before fusion
    rrf_k: int = 60  # reciprocal rank fusion constant: score = sum 1 / (rrf_k + rank)
    min_score: float = 0.30  # passages whose cosine similarity to the question is lower are dropped


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk and how it was found."""

    chunk: ChunkRecord
    score: float  # cosine similarity between question and chunk (the relevance shown to users)
    fused: float  # reciprocal-rank-fusion score used for ordering
    dense_rank: int | None
    bm25_rank: int | None


class Reranker(Protocol):
    """Reorders (and may cut) the fused candidates of a question; the first top_k of its result are kept."""

    def rerank(self, question: str, passages: list[Passage]) -> list[Passage]: ...


class NoReranker:
    """The default: keep the fusion order."""

    def rerank(self, question: str, passages: list[Passage]) -> list[Passage]:
        return passages


class _Bm25:
    """A BM25 index over one generation's chunks (built in memory; a few seconds for 100k chunks)."""

    def __init__(self, reader: VectorStore) -> None:
        import bm25s
        import Stemmer

        self._bm25s = bm25s
        self._stemmer = Stemmer.Stemmer("english")
        rows = reader.keyword_texts()
        self.ids = np.array([r[0] for r in rows], dtype=np.int64)
        self.model = bm25s.BM25()
        if rows:
            tokens = bm25s.tokenize([r[1] for r in rows], stopwords="en", stemmer=self._stemmer, show_progress=False)
            self.model.index(tokens, show_progress=False)
        self._masks: dict[frozenset[str], np.ndarray] = {}

    def mask(self, allowed: np.ndarray, groups: frozenset[str]) -> np.ndarray:
        cached = self._masks.get(groups)
        if cached is None:
            cached = np.isin(self.ids, allowed).astype(np.float32)
            self._masks[groups] = cached
        return cached

    def search(self, question: str, k: int, mask: np.ndarray | None) -> list[int]:
        if len(self.ids) == 0:
            return []
        tokens = self._bm25s.tokenize([question], stopwords="en", stemmer=self._stemmer, show_progress=False)
        if not tokens.vocab:
            return []
        k = min(k, len(self.ids))
        docs, scores = self.model.retrieve(tokens, k=k, show_progress=False, weight_mask=mask, n_threads=1)
        return [int(self.ids[d]) for d, s in zip(docs[0], scores[0]) if s > 0]


class Retriever:
    """Finds the passages for a question that a user with given groups may read."""

    def __init__(self, reader: VectorStore, embedder: Embedder, reranker: Reranker | None = None) -> None:
        if reader.embedder != embedder.name:
            raise ValueError(f"index was built with '{reader.embedder}', not '{embedder.name}'")
        self.reader = reader
        self.embedder = embedder
        self.reranker = reranker  # None: the fusion order (NoReranker)
        self._lock = threading.Lock()
        self._bm25: _Bm25 | None = None
        self._bm25_generation = -1

    def _keyword_index(self) -> _Bm25:
        with self._lock:
            if self._bm25 is None or self._bm25_generation != self.reader.generation:
                self._bm25 = _Bm25(self.reader)
                self._bm25_generation = self.reader.generation
            return self._bm25

    # --- stages ------------------------------------------------------------------------------------
    def _dense(self, query: np.ndarray, groups: set[str], options: RetrievalOptions) -> list[int]:
        if options.mode not in ("hybrid", "dense"):
            return []
        return [h.chunk_id for h in self.reader.search(query, options.candidates, groups)[0]]

    def _keyword(self, question: str, allowed: np.ndarray, groups: set[str], options: RetrievalOptions) -> list[int]:
        if options.mode not in ("hybrid", "bm25"):
            return []
        bm25 = self._keyword_index()
        return bm25.search(question, options.candidates, bm25.mask(allowed, frozenset(groups)))

    @staticmethod
    def _fuse(rankings: Sequence[list[int]], options: RetrievalOptions) -> dict[int, float]:
        fused: dict[int, float] = {}
        for ranking in rankings:
            for rank, chunk_id in enumerate(ranking, start=1):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (options.rrf_k + rank)
        return fused

    def retrieve(self, question: str, groups: set[str], options: RetrievalOptions = RetrievalOptions()) -> list[Passage]:
        self.reader.refresh()  # pick up a finished re-ingest; otherwise keep serving the current generation
        query = self.embedder.encode([question])
        allowed = self.reader.allowed_chunk_ids(groups)
        if len(allowed) == 0:
            return []
        dense = self._dense(query, groups, options)
        keyword = self._keyword(question, allowed, groups, options)
        fused = self._fuse((dense, keyword), options)
        order = sorted(fused, key=lambda cid: -fused[cid])
        cosine = self._cosines(query[0], order)
        kept = [cid for cid in order if cosine[cid] >= options.min_score]
        if self.reranker is None:
            kept = kept[: options.top_k]  # only the chunks that will be shown are read
        records = {r.id: r for r in self.reader.chunks(kept, groups)}  # re-checks the ACL on current data
        dense_rank = {cid: i for i, cid in enumerate(dense, start=1)}
        keyword_rank = {cid: i for i, cid in enumerate(keyword, start=1)}
        passages = [Passage(chunk=records[cid], score=cosine[cid], fused=fused[cid], dense_rank=dense_rank.get(cid),
                            bm25_rank=keyword_rank.get(cid)) for cid in kept if cid in records]
        if self.reranker is not None:
            passages = self.reranker.rerank(question, passages)[: options.top_k]
        return passages

    def _cosines(self, query: np.ndarray, ids: list[int]) -> dict[int, float]:
        if not ids:
            return {}
        vectors = self.reader.vectors_for(ids)
        return {cid: float(s) for cid, s in zip(ids, vectors @ query)}
