"""The int8 ONNX embedder (the CPU default): close to fp32, cached once, atomic, and the ingest run's reuse of
vectors for repeated texts. Real models throughout: the packaged MiniLM, torch for fp32, onnxruntime for int8."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import ingest.onnx_embedder as onnx_embedder
from ingest.embedding import ENV_BACKEND, Embedder, EmbedderError
from ingest.onnx_embedder import MODEL_FILE, OnnxExportError, OnnxSentenceEncoder, sentence_config
from ingest.pipeline import IngestOptions, ingest
from ingest.reader import IndexReader
from conftest import CountingEmbedder, write_docs

SENTENCES = [
    "Expense claims must be submitted within 30 days of the purchase.",
    "The meal allowance in Austin is 60 USD per day.",
    "Employees get 27 days of annual leave per year.",
    "Connect to vpn.acme.example with the AcmeVPN client before opening the intranet.",
    "The for statement iterates over the items of any sequence, in the order they appear.",
    "Exceptions are raised with the raise statement and handled with try and except clauses.",
    "A dictionary maps hashable keys to arbitrary values; lookups take constant time on average.",
    "Use pathlib.Path.read_text to read a whole file into a string.",
    "The cafeteria opens at 8am and closes at 3pm, except on public holidays when it stays closed.",
    "Passwords must be at least 14 characters long and are rotated once a year.",
    "To print a document, choose the printer on the third floor and badge in at the device.",
    "Generators produce values lazily with yield; a generator expression is written in parentheses.",
]
QUERIES = {  # query -> index of the passage that answers it
    "how long do I have to file an expense claim": 0,
    "daily food budget in Austin": 1,
    "vacation days per year": 2,
    "how do I loop over a list in python": 4,
    "catching errors in python": 5,
    "minimum password length": 9,
    "lazy sequences with yield": 11,
}


@pytest.fixture(scope="module")
def fp32() -> Embedder:
    """The torch fp32 embedder, as on a GPU machine (forced only while it loads: the choice is kept per instance)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_BACKEND, "torch")
        embedder = Embedder()
        embedder.model  # noqa: B018
    return embedder


def test_cpu_default_is_int8_onnx_and_close_to_fp32(_shared_embedder, fp32) -> None:
    assert _shared_embedder.backend == "onnx" and isinstance(_shared_embedder.model, OnnxSentenceEncoder)
    assert fp32.backend == "torch" and not isinstance(fp32.model, OnnxSentenceEncoder)
    assert _shared_embedder.name == fp32.name == "all-MiniLM-L6-v2"  # indexes from either backend interoperate
    int8, full = _shared_embedder.encode(SENTENCES), fp32.encode(SENTENCES)
    assert int8.shape == full.shape == (len(SENTENCES), 384) and int8.dtype == np.float32
    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    cosines = (int8 * full).sum(axis=1)
    assert cosines.min() >= 0.97 and cosines.mean() >= 0.99, cosines


def test_int8_ranks_passages_like_fp32(_shared_embedder, fp32) -> None:
    for model in (_shared_embedder, fp32):
        passages, queries = model.encode(SENTENCES), model.encode(list(QUERIES))
        best = (queries @ passages.T).argmax(axis=1)
        assert dict(zip(QUERIES, best.tolist())) == QUERIES, model.backend


def test_a_text_gets_the_same_vector_alone_or_in_a_batch(_shared_embedder) -> None:
    """int8 activations are scaled per run: batched with longer texts a chunk would not score as its own text."""
    alone = _shared_embedder.encode([SENTENCES[2]])[0]
    batched = _shared_embedder.encode(SENTENCES)[2]
    assert np.allclose(alone, batched, atol=1e-6)


def test_the_export_is_cached_and_reused_without_exporting_again(_shared_embedder, monkeypatch) -> None:
    folder = _shared_embedder.model.folder
    assert folder.parent.parent == Path(os.environ["GROUNDWORK_CACHE"])  # the models cache of the GGUF conversions
    stamp = (folder / MODEL_FILE).stat().st_mtime_ns

    def no_export(*_args) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_embedder, "_export", no_export)
    again = Embedder()
    assert np.allclose(again.encode(SENTENCES[:2]), _shared_embedder.encode(SENTENCES[:2]), atol=1e-6)
    assert again.model.folder == folder and (folder / MODEL_FILE).stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_the_export_is_atomic_leftovers_and_half_folders_are_replaced(tmp_path, _shared_embedder, monkeypatch):
    name, source = _shared_embedder.name, _shared_embedder._source
    monkeypatch.setenv("GROUNDWORK_CACHE", str(tmp_path))
    folder_name = Path(_shared_embedder.model.folder).name
    parent = tmp_path / "embedders"
    parent.mkdir()
    leftover = parent / f".{folder_name}.tmp-killed"  # a process killed mid-export
    leftover.mkdir()
    (leftover / MODEL_FILE).write_bytes(b"half a model")
    half = parent / folder_name  # a folder without its marker: never taken as valid
    half.mkdir()
    (half / MODEL_FILE).write_bytes(b"not a model")

    encoder = OnnxSentenceEncoder(name, source)
    assert encoder.folder == half and not leftover.exists()
    assert np.allclose(encoder.encode(SENTENCES[:3]), _shared_embedder.encode(SENTENCES[:3]), atol=1e-5)


def test_forcing_the_torch_backend_and_rejecting_unknown_ones(monkeypatch) -> None:
    monkeypatch.setenv(ENV_BACKEND, "torch")
    assert Embedder().backend == "torch"
    monkeypatch.setenv(ENV_BACKEND, "onnx")
    assert Embedder().backend == "onnx"
    monkeypatch.setenv(ENV_BACKEND, "tensorflow")
    with pytest.raises(EmbedderError, match="GROUNDWORK_EMBEDDER_BACKEND=tensorflow"):
        Embedder().backend  # noqa: B018


def test_models_with_layers_the_onnx_path_does_not_run_are_refused_before_any_export(tmp_path) -> None:
    """Such a model (e.g. a Dense projection after pooling) falls back to torch: Embedder prints a notice."""
    (tmp_path / "modules.json").write_text('[{"idx": 0, "name": "0", "path": "", "type": '
                                           '"sentence_transformers.models.Transformer"}, {"idx": 1, "name": "1", '
                                           '"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]')
    with pytest.raises(OnnxExportError, match="Dense"):
        sentence_config(tmp_path)
    assert sentence_config(Path(Embedder()._source)) == {"pooling": "mean", "max_seq_length": 256}


FOOTER = "<h2>Contact</h2><p>Questions about this handbook go to the people team at people@acme.example.</p>"


def test_an_ingest_embeds_a_footer_shared_by_many_pages_once(tmp_path) -> None:
    embedder = CountingEmbedder()
    pages = {f"page{i:02}.html": f"<html><head><title>Acme handbook</title></head><body><main><p>Page {i} is "
                                 f"about topic {i} and nothing else.</p>{FOOTER}</main></body></html>"
             for i in range(12)}
    docs = write_docs(tmp_path / "docs", pages)
    summary = ingest([docs], IngestOptions(index_dir=tmp_path / "index", show_progress=False, batch_chunks=8),
                     embedder)
    assert summary.chunks_added == 24  # every page keeps its own footer chunk, searchable and cited per page
    assert embedder.texts_embedded == 13  # 12 page bodies + the footer once (across batches, too)
    reader = IndexReader(tmp_path / "index")
    query = embedder.encode(["who do I ask about the handbook"])
    hits = reader.search(query, 12)[0]
    footer_hits = [h for h in hits if "people team" in reader.chunks([h.chunk_id])[0].text]
    assert len(footer_hits) == 12 and len({round(h.score, 5) for h in footer_hits}) == 1


def test_an_unchanged_rerun_never_loads_the_model(tmp_path, _shared_embedder) -> None:
    docs = write_docs(tmp_path / "docs", {"a.md": "# A\n\nAlpha text.\n", "b.md": "# B\n\nBeta text.\n"})
    options = IngestOptions(index_dir=tmp_path / "index", show_progress=False)
    ingest([docs], options, _shared_embedder)
    fresh = Embedder()
    summary = ingest([docs], options, fresh)
    assert summary.unchanged == 2 and "model" not in fresh.__dict__ and "backend" not in fresh.__dict__
