"""The ingest run end to end: incremental updates, permissions, bad input, embedder checks."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import HR_ACL as ACL
from conftest import make_docx, make_pdf, write_docs
from ingest.pipeline import IngestError, IngestOptions, ingest
from ingest.reader import IndexReader
from ingest.store import EmbedderMismatch, IndexWriter
from ingest.vector_store import open_vector_store


def _corpus(root: Path) -> Path:
    write_docs(root, {
        "leave.md": "# Leave\n\n## Annual leave\n\nEveryone gets 27 days of annual leave per year.\n",
        "it/vpn.html": "<html><head><title>VPN</title></head><body><main><h1>VPN</h1>"
                       "<p>Connect to vpn.acme.example with the AcmeVPN client.</p></main></body></html>",
        "offices.csv": "office,city\nHQ,Lyon\nUS,Austin\n",
        "notes.txt": "The cafeteria opens at 8am and closes at 3pm.",
        "hr/salaries.md": "# Salary bands\n\nThe engineering band E4 pays 78,000 EUR.\n",
    })
    make_pdf(root / "travel.pdf", ["Travel\nBook flights through TravelDesk.", "Hotels: 150 EUR per night cap."])
    make_docx(root / "expenses.docx", "Expenses", [("Meals", ["Meals are paid at 45 EUR per day."])],
              table=[["Item", "Limit"], ["Taxi", "60 EUR"]])
    return root


def _options(tmp_path: Path, **overrides) -> IngestOptions:
    acl = tmp_path / "acl.toml"
    if not acl.exists():
        acl.write_text(ACL)
    return IngestOptions(index_dir=tmp_path / "index", acl_file=acl, show_progress=False, **overrides)


def _search_sources(reader: IndexReader, embedder, question: str, groups=None, k: int = 3) -> list[str]:
    hits = reader.search(embedder.encode([question]), k, groups)[0]
    return [c.source for c in reader.chunks([h.chunk_id for h in hits])]


def test_first_run_indexes_every_format_and_search_finds_the_right_file(tmp_path: Path, embedder) -> None:
    docs = _corpus(tmp_path / "docs")
    summary = ingest([docs], _options(tmp_path), embedder)
    assert sorted(summary.added) == sorted(["leave.md", "it/vpn.html", "offices.csv", "notes.txt", "travel.pdf",
                                            "expenses.docx", "hr/salaries.md"])
    assert summary.failed == [] and summary.chunks_total >= 7
    reader = IndexReader(tmp_path / "index")
    assert _search_sources(reader, embedder, "How many days of annual leave?")[0] == "leave.md"
    assert _search_sources(reader, embedder, "hotel price limit per night")[0] == "travel.pdf"
    assert _search_sources(reader, embedder, "taxi reimbursement limit")[0] == "expenses.docx"
    pdf_chunks = [c for c in reader.chunks(list(range(1, 100))) if c.source == "travel.pdf"]
    assert {c.page for c in pdf_chunks} == {1, 2}
    stats = reader.stats()
    assert stats.documents == 7 and stats.embedder == "all-MiniLM-L6-v2" and stats.dimension == 384
    assert stats.by_group == {"everyone": 6, "hr": 1}


def test_rerun_skips_unchanged_updates_changed_and_removes_deleted(tmp_path: Path, embedder) -> None:
    docs = _corpus(tmp_path / "docs")
    ingest([docs], _options(tmp_path), embedder)

    embedder.texts_embedded = 0
    again = ingest([docs], _options(tmp_path), embedder)
    assert again.unchanged == 7 and not again.added and not again.updated and not again.removed
    assert embedder.texts_embedded == 0

    (docs / "notes.txt").write_text("The cafeteria now opens at 7am and closes at 4pm.")
    (docs / "offices.csv").unlink()
    (docs / "new.md").write_text("# Parking\n\nVisitors park on level -2.")
    third = ingest([docs], _options(tmp_path), embedder)
    assert third.updated == ["notes.txt"] and third.added == ["new.md"] and third.removed == ["offices.csv"]
    assert third.unchanged == 5 and embedder.texts_embedded == 2

    reader = IndexReader(tmp_path / "index")
    texts = [c.text for c in reader.chunks(list(range(1, 200)))]
    assert any("7am" in t for t in texts) and not any("8am" in t for t in texts), "old chunks of a changed file remain"
    assert "offices.csv" not in {d.source for d in reader.documents()}
    assert reader.vectors.ntotal == reader.stats().chunks


def test_acl_filter_is_inside_the_search_and_restricted_text_never_returned(tmp_path: Path, embedder,
                                                                           vector_store: str) -> None:
    docs = _corpus(tmp_path / "docs")
    ingest([docs], _options(tmp_path, vector_store=vector_store), embedder)
    reader = open_vector_store(tmp_path / "index")
    question = "What does the engineering band E4 pay?"
    assert _search_sources(reader, embedder, question, {"hr"}, k=1) == ["hr/salaries.md"]
    everyone = _search_sources(reader, embedder, question, {"everyone"}, k=5)
    assert "hr/salaries.md" not in everyone
    assert len(everyone) == 5, "other users' documents took result slots"
    assert _search_sources(reader, embedder, question, {"nobody"}, k=5) == []
    hr_chunk = reader.allowed_chunk_ids({"hr"})[0]
    assert reader.chunks([int(hr_chunk)], groups={"everyone"}) == []


def test_changing_the_acl_file_updates_groups_without_reembedding(tmp_path: Path, embedder, vector_store: str) -> None:
    docs = _corpus(tmp_path / "docs")
    ingest([docs], _options(tmp_path, vector_store=vector_store), embedder)
    (tmp_path / "acl.toml").write_text(ACL + '\n[[rules]]\nglob = "it/*"\ngroups = ["it"]\n')
    embedder.texts_embedded = 0
    summary = ingest([docs], _options(tmp_path), embedder)
    assert summary.acl_changed == 1 and embedder.texts_embedded == 0
    reader = open_vector_store(tmp_path / "index")
    assert "it/vpn.html" not in _search_sources(reader, embedder, "vpn client", {"everyone"}, k=6)
    assert "it/vpn.html" in _search_sources(reader, embedder, "vpn client", {"it"}, k=6)
    # A later run without --acl keeps the stored rules instead of opening everything to everyone.
    ingest([docs], IngestOptions(index_dir=tmp_path / "index", show_progress=False), embedder)
    assert open_vector_store(tmp_path / "index").stats().by_group == {"everyone": 5, "hr": 1, "it": 1}


def test_bad_input_is_reported_one_line_each_and_the_rest_is_indexed(tmp_path: Path, embedder) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nThe office wifi is called AcmeGuest.")
    make_pdf(docs / "locked.pdf", ["Board minutes"], password="pw")
    whole = make_pdf(tmp_path / "whole.pdf", ["A page of text that will be cut short"]).read_bytes()
    (docs / "truncated.pdf").write_bytes(whole[:200])
    (docs / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(3000))
    (docs / "empty.txt").write_bytes(b"")
    (docs / "binary.txt").write_bytes(os.urandom(5000))
    with open(docs / "huge.txt", "wb") as handle:  # 200 MB, sparse: the size check must come before reading
        handle.truncate(200 * 1024 * 1024)
    outside = tmp_path / "outside-secret.md"
    outside.write_text("# Secret\n\nThis file is outside the ingested folder.")
    (docs / "link.md").symlink_to(outside)
    odd = "rapport d'été – Q3 (final) #2.md"
    (docs / odd).write_text("# Summer report\n\nRevenue grew 12% in Q3.")
    os.mkfifo(docs / "pipe.txt")
    (docs / os.fsdecode(b"latin1-\xe9t\xe9.txt")).write_text("Undecodable file names are indexed too.")
    (docs / "image.png").write_bytes(b"\x89PNG\r\n")

    summary = ingest([docs], _options(tmp_path), embedder)

    problems = {p.path: p.reason for p in summary.failed + summary.skipped}
    assert set(problems) == {"locked.pdf", "truncated.pdf", "corrupt.pdf", "empty.txt", "binary.txt", "huge.txt",
                             "link.md", "pipe.txt", "image.png"}
    assert "encrypted" in problems["locked.pdf"] and "PDF" in problems["truncated.pdf"]
    assert "empty" in problems["empty.txt"] and "binary" in problems["binary.txt"]
    assert "too large" in problems["huge.txt"] and "outside" in problems["link.md"]
    assert "not a readable image" in problems["image.png"] and "regular file" in problems["pipe.txt"]
    assert all("\n" not in reason for reason in problems.values())
    assert sorted(summary.added) == sorted(["good.md", odd, "latin1-\\xe9t\\xe9.txt"])
    reader = IndexReader(tmp_path / "index")
    assert "outside" not in " ".join(c.text for c in reader.chunks(list(range(1, 50))))
    # The run stays incremental for names with odd characters too.
    assert ingest([docs], _options(tmp_path), embedder).unchanged == 3


def test_a_file_that_turns_bad_keeps_its_previous_version(tmp_path: Path, embedder) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    make_pdf(docs / "handbook.pdf", ["Holidays: 27 days per year."])
    ingest([docs], _options(tmp_path), embedder)
    (docs / "handbook.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(500))
    summary = ingest([docs], _options(tmp_path), embedder)
    assert summary.failed[0].path == "handbook.pdf" and "previous version kept" in summary.failed[0].reason
    assert not summary.removed
    assert "27 days" in IndexReader(tmp_path / "index").chunks([1])[0].text


def test_another_embedder_is_refused_with_a_clear_message(tmp_path: Path, embedder) -> None:
    docs = _corpus(tmp_path / "docs")
    ingest([docs], _options(tmp_path), embedder)
    with pytest.raises(EmbedderMismatch, match="built with embedder 'all-MiniLM-L6-v2'"):
        IndexWriter(tmp_path / "index", "bge-small-en")


def test_the_default_writer_satisfies_the_write_side_protocol(tmp_path: Path, embedder) -> None:
    from ingest.vector_store import VectorStoreWriter, open_vector_store_writer

    ingest([_corpus(tmp_path / "docs")], _options(tmp_path), embedder)
    writer = open_vector_store_writer(tmp_path / "index", embedder.name)
    try:
        assert isinstance(writer, VectorStoreWriter)
        stats = IndexReader(tmp_path / "index").stats()
        assert writer.totals() == (stats.documents, stats.chunks)
    finally:
        writer.close()


def test_missing_path_is_an_error_before_anything_is_removed(tmp_path: Path, embedder) -> None:
    docs = _corpus(tmp_path / "docs")
    ingest([docs], _options(tmp_path), embedder)
    with pytest.raises(IngestError, match="no such file or folder"):
        ingest([docs, tmp_path / "typo"], _options(tmp_path), embedder)
    assert IndexReader(tmp_path / "index").stats().documents == 7


def test_roots_are_independent_a_run_on_one_folder_keeps_the_other(tmp_path: Path, embedder) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "one.md").write_text("# One\n\nFirst folder.")
    (b / "two.md").write_text("# Two\n\nSecond folder.")
    ingest([a, b], _options(tmp_path), embedder)
    summary = ingest([b], _options(tmp_path), embedder)
    assert summary.removed == [] and summary.documents_total == 2


def test_search_scores_are_cosine_similarities(tmp_path: Path, embedder) -> None:
    docs = _corpus(tmp_path / "docs")
    ingest([docs], _options(tmp_path), embedder)
    reader = IndexReader(tmp_path / "index")
    query = embedder.encode(["annual leave days"])
    hit = reader.search(query, 1)[0][0]
    text = reader.chunks([hit.chunk_id])[0]
    assert -1.0 <= hit.score <= 1.0001
    assert np.isclose(hit.score, float(query[0] @ embedder.encode(
        ["Leave > Annual leave\n" + text.text])[0]), atol=1e-4)
