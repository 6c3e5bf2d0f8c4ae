"""Chunks fit the embedder's window, follow the document's structure, overlap, and point back into the text."""
from __future__ import annotations

from ingest.chunking import Chunker, ChunkingOptions
from ingest.documents import LoadedDocument, Section


def _document() -> LoadedDocument:
    long_section = "\n\n".join(
        f"Paragraph {i}: employees may carry over up to five days of unused leave into the next year, "
        f"provided their manager approves the request before the thirty-first of March." for i in range(40))
    return LoadedDocument(title="Leave policy", sections=[
        Section(text="Short intro about the policy.", heading="Leave policy"),
        Section(text=long_section, heading="Leave policy > Carry-over"),
        Section(text="Sick leave needs a note after three days.", heading="Leave policy > Sick leave"),
    ])


def test_chunks_fit_the_window_and_never_cross_headings(embedder) -> None:
    chunker = Chunker(embedder.tokenizer, ChunkingOptions(chunk_tokens=120, overlap_tokens=20))
    chunks = chunker.chunk(_document())
    window = embedder.model.max_seq_length
    assert all(len(embedder.tokenizer.encode(c.embedding_text())) <= window for c in chunks)
    assert all(len(embedder.tokenizer.encode(c.text)) <= 120 for c in chunks)
    assert chunks[0].text == "Short intro about the policy."
    assert chunks[-1].text == "Sick leave needs a note after three days."
    carry_over = [c for c in chunks if c.heading == "Leave policy > Carry-over"]
    assert len(carry_over) > 5 and all(c.text.startswith("Paragraph") or "Paragraph" in c.text for c in carry_over)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_offsets_point_into_the_document_text_and_neighbours_overlap(embedder) -> None:
    document = _document()
    chunks = Chunker(embedder.tokenizer, ChunkingOptions(chunk_tokens=120, overlap_tokens=40)).chunk(document)
    full = document.full_text()
    for chunk in chunks:
        assert full[chunk.start:chunk.end] == chunk.text
    body = [c for c in chunks if c.heading == "Leave policy > Carry-over"]
    assert any(later.start < earlier.end for earlier, later in zip(body, body[1:])), "no overlap between chunks"


def test_embedding_text_carries_title_and_heading() -> None:
    from ingest.documents import Chunk

    chunk = Chunk(text="Five days.", ordinal=0, start=0, end=10, heading="Carry-over", title="Leave policy")
    assert chunk.embedding_text() == "Leave policy > Carry-over\nFive days."
    nested = Chunk(text="x", ordinal=0, start=0, end=1, heading="Leave policy > Carry-over", title="Leave policy")
    assert nested.embedding_text() == "Leave policy > Carry-over\nx"
