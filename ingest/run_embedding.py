"""Embedding for one ingest run: each distinct chunk text once, on a worker thread while the next files are parsed.

Sites repeat text: the same footer, navigation or licence chunk on hundreds of pages. Their vectors are remembered
for the run (keyed by a 16-byte digest, at most REMEMBER of them: ~1.6 KB each with a 384-d model) and reused.
The model runs outside the GIL (ONNX Runtime and torch both release it), so parsing HTML on the main thread
overlaps with embedding the previous batch: on 2 cores that is most of the parse time saved
(benchmarks/README.md). One worker keeps batches in order; the caller stages each batch's result itself, on its
own thread, so the index's SQLite connection never changes threads.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ingest.embedding import Embedder

REMEMBER = 100_000


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class RunEmbedder:
    """Vectors for lists of texts, each distinct text embedded once per run; `submit` embeds in the background."""

    def __init__(self, embedder: Embedder, remember: int = REMEMBER) -> None:
        self.embedder = embedder
        self.remember = remember
        self.texts_embedded = 0  # texts the model actually ran on (the rest came from memory)
        self._known: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="groundwork-embed")

    def vectors(self, texts: list[str]) -> np.ndarray:
        """Unit vectors for `texts`, in order; texts seen before in this run (or twice here) are embedded once."""
        keys = [_key(t) for t in texts]
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key not in self._known and key not in missing:
                missing[key] = text
        if missing:
            fresh = self.embedder.encode(list(missing.values()))
            self.texts_embedded += len(missing)
            for key, vector in zip(missing, fresh):
                self._known[key] = vector
        rows = []
        for key in keys:
            self._known.move_to_end(key)
            rows.append(self._known[key])
        while len(self._known) > self.remember:
            self._known.popitem(last=False)
        if not rows:
            return self.embedder.encode([])
        return np.ascontiguousarray(np.stack(rows), dtype=np.float32)

    def submit(self, texts: list[str]) -> Future:
        """`vectors(texts)` on the worker thread; batches run in the order submitted."""
        return self._worker.submit(self.vectors, texts)

    def close(self) -> None:
        """Wait for the batch in progress (it may be staged by nobody: a crash) and stop the worker."""
        self._worker.shutdown(wait=True, cancel_futures=True)
