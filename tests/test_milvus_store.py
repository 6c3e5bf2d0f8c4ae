"""Milvus as the vector store (issue 16), on a real Milvus Lite file: ingest, ask, the ACL inside the search,
upserts and deletes on a re-run, answers from the last complete generation while a run is publishing (and after it
crashed), a deleted collection rebuilt from SQLite, the store remembered without a flag, one-line errors.

The retrieval and ACL suites (tests/test_retrieval.py, tests/test_ingest.py, tests/security/) also run on Milvus
through conftest's `vector_store` fixture; this file holds what only a second store has."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HR_ACL, HR_DOCS, build_corpus, write_docs
from fakes import FakeGenerator

from ingest.milvus_store import COLLECTION_KEY, STORE_KEY, MilvusReader, MilvusVectors, connect
from ingest.pipeline import IngestOptions, ingest
from ingest.reader import IndexReader
from ingest.retrieval import RetrievalOptions, Retriever
from ingest.store import read_index_meta
from ingest.vector_store import open_vector_store

REPO = Path(__file__).resolve().parents[1]
DENSE = RetrievalOptions(mode="dense", top_k=10, min_score=-1.0)
SALARY = "What does the salary band E4 pay?"


def _url(tmp_path: Path) -> str:
    return f"milvus://{tmp_path}/milvus.db"


def _options(tmp_path: Path, **kw) -> IngestOptions:
    return IngestOptions(index_dir=tmp_path / "index", acl_file=tmp_path / "acl.toml", show_progress=False, **kw)


def _sources(reader, embedder, question: str, groups: set[str]) -> list[str]:
    return [p.chunk.source for p in Retriever(reader, embedder).retrieve(question, groups, DENSE)]


def _dense_ids(reader, embedder, question: str, groups: set[str] | None, k: int = 50) -> list[int]:
    """What the vector store itself returns (no ACL re-check on SQLite, no fusion)."""
    return [h.chunk_id for h in reader.search(embedder.encode([question]), k, groups)[0]]


def test_ingest_into_milvus_lite_answers_with_the_acl_inside_the_search(tmp_path: Path, embedder) -> None:
    index = build_corpus(tmp_path, embedder, vector_store=_url(tmp_path))
    assert (tmp_path / "milvus.db").exists()
    reader = open_vector_store(index)
    assert isinstance(reader, MilvusReader)
    published = reader.stats().chunks
    assert _sources(reader, embedder, SALARY, {"everyone", "hr"})[0] == "hr/bands.md"
    everyone = _dense_ids(reader, embedder, SALARY, {"everyone"})
    hr_only = set(reader.allowed_chunk_ids({"hr"})) - set(reader.allowed_chunk_ids({"everyone"}))
    assert hr_only and not hr_only & set(everyone), "Milvus returned a chunk the user's groups may not read"
    # no slot lost to others' documents: the user gets every chunk they may read, and no more
    assert sorted(everyone) == sorted(reader.allowed_chunk_ids({"everyone"}).tolist())
    assert len(_dense_ids(reader, embedder, SALARY, None)) == published
    assert _dense_ids(reader, embedder, SALARY, {"nobody"}) == []
    assert reader.vectors_for([everyone[0]]).shape == (1, 384)


def test_rerun_upserts_changed_documents_and_deletes_removed_ones(tmp_path: Path, embedder) -> None:
    index = build_corpus(tmp_path, embedder, vector_store=_url(tmp_path))
    (tmp_path / "docs" / "leave.md").write_text("# Leave\n\nEmployees get 31 days of sabbatical leave per year.\n")
    (tmp_path / "docs" / "expenses.md").unlink()
    summary = ingest([tmp_path / "docs"], _options(tmp_path), embedder)
    assert summary.updated == ["leave.md"] and summary.removed == ["expenses.md"]
    reader = open_vector_store(index)
    everyone = _dense_ids(reader, embedder, "How many days of leave?", {"everyone"})
    texts = [c.text for c in reader.chunks(everyone)]
    assert len(texts) == len(everyone), "Milvus returned chunks SQLite no longer holds"
    assert any("31 days" in t for t in texts) and not any("27 days" in t or "Expense" in t for t in texts)
    assert len(_dense_ids(reader, embedder, SALARY, None)) == reader.stats().chunks
    # garbage collected: only the current rows and those the previous generation still needs are kept
    stored = reader.milvus.client.query(reader.milvus.name, filter="pk >= 0", output_fields=["gen_to"])
    assert all(r["gen_to"] >= reader.generation for r in stored)


def test_an_acl_change_without_a_content_change_reaches_milvus(tmp_path: Path, embedder) -> None:
    index = build_corpus(tmp_path, embedder, vector_store=_url(tmp_path))
    (tmp_path / "acl.toml").write_text(HR_ACL + '[[rules]]\nglob = "leave.md"\ngroups = ["hr"]\n')
    embedder.texts_embedded = 0
    summary = ingest([tmp_path / "docs"], _options(tmp_path), embedder)
    assert summary.acl_changed == 1 and embedder.texts_embedded == 0
    reader = open_vector_store(index)
    leave = set(reader.chunk_ids("leave.md"))
    assert not leave & set(_dense_ids(reader, embedder, "annual leave days", {"everyone"}))
    assert leave <= set(_dense_ids(reader, embedder, "annual leave days", {"hr"}))


def test_answers_come_from_the_last_complete_generation_while_publishing_and_after_a_crash(
        tmp_path: Path, embedder, monkeypatch) -> None:
    index = build_corpus(tmp_path, embedder, vector_store=_url(tmp_path))
    reader = open_vector_store(index)
    before = _sources(reader, embedder, "How many days of annual leave?", {"everyone"})
    assert before[0] == "leave.md"
    (tmp_path / "docs" / "leave.md").write_text("# Leave\n\nEmployees get 31 days of sabbatical leave per year.\n")
    (tmp_path / "docs" / "expenses.md").unlink()

    seen_mid_publish = []

    def crash_after_milvus_is_written(self, generation: int) -> None:
        """Milvus holds generation 2's rows; SQLite has not committed it: what readers see, then a crash."""
        original(self, generation)
        fresh = open_vector_store(index)  # a reader opened now must not rebuild or see the new rows
        seen_mid_publish.append((fresh.generation, _sources(fresh, embedder, "days of leave", {"everyone"})))
        fresh.close()
        raise KeyboardInterrupt

    original = MilvusVectors.set_generation
    monkeypatch.setattr(MilvusVectors, "set_generation", crash_after_milvus_is_written)
    with pytest.raises(KeyboardInterrupt):
        ingest([tmp_path / "docs"], _options(tmp_path), embedder)
    monkeypatch.undo()

    generation, sources = seen_mid_publish[0]
    assert generation == 1 and "expenses.md" in sources
    assert reader.refresh() is False and _sources(reader, embedder, "days of leave", {"everyone"}) == sources
    texts = [c.text for c in reader.chunks(_dense_ids(reader, embedder, "leave", {"everyone"}))]
    assert any("27 days" in t for t in texts) and not any("31 days" in t for t in texts)

    summary = ingest([tmp_path / "docs"], _options(tmp_path), embedder)  # the re-run discards the crashed rows
    assert summary.updated == ["leave.md"] and summary.removed == ["expenses.md"]
    assert reader.refresh() is True and reader.generation == 2
    ids = _dense_ids(reader, embedder, "leave", None)
    assert len(ids) == len(set(ids)) == reader.stats().chunks
    assert "expenses.md" not in _sources(reader, embedder, "meal allowance", {"everyone"})


def test_a_deleted_collection_is_rebuilt_from_sqlite_on_open(tmp_path: Path, embedder) -> None:
    index = build_corpus(tmp_path, embedder, vector_store=_url(tmp_path))
    name = read_index_meta(index)[COLLECTION_KEY]
    client = connect(_url(tmp_path))
    client.drop_collection(name)
    assert not client.has_collection(name)
    reader = open_vector_store(index)
    assert client.has_collection(name)
    assert _sources(reader, embedder, SALARY, {"hr"})[0] == "hr/bands.md"
    assert len(_dense_ids(reader, embedder, SALARY, None)) == reader.stats().chunks
    client.close()


def test_the_index_remembers_its_store_and_can_move_back_to_faiss(tmp_path: Path, embedder) -> None:
    from app.engine import Engine, EngineConfig
    from app.users import User

    url = _url(tmp_path)
    index = build_corpus(tmp_path, embedder, vector_store=url)
    assert read_index_meta(index)[STORE_KEY] == url
    ingest([tmp_path / "docs"], IngestOptions(index_dir=index, show_progress=False), embedder)  # no flag: kept
    assert read_index_meta(index)[STORE_KEY] == url and not list(index.glob("vectors.*.faiss"))
    engine = Engine(EngineConfig(index_dir=index), embedder=embedder, generator=FakeGenerator())  # what ask/serve do
    assert isinstance(engine.reader, MilvusReader)
    answer = engine.answer(SALARY, User(name="hanna", groups=("everyone", "hr")))
    assert "hr/bands.md" in {c.source for c in answer.citations}
    outsider = engine.answer(SALARY, User(name="erik", groups=("everyone",)))
    assert "hr/bands.md" not in {p.source for p in outsider.retrieved}

    # another store for an existing index: its vectors move there from SQLite, nothing is embedded again
    embedder.texts_embedded = 0
    ingest([tmp_path / "docs"], IngestOptions(index_dir=index, show_progress=False, vector_store="faiss"), embedder)
    assert embedder.texts_embedded == 0 and read_index_meta(index)[STORE_KEY] == "faiss"
    reader = open_vector_store(index)
    assert isinstance(reader, IndexReader) and not isinstance(reader, MilvusReader)
    assert _sources(reader, embedder, SALARY, {"hr"})[0] == "hr/bands.md"


def test_a_relative_milvus_lite_path_is_stored_absolute(tmp_path: Path, embedder, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_docs(tmp_path / "docs", {"leave.md": HR_DOCS["leave.md"]})
    (tmp_path / "acl.toml").write_text(HR_ACL)
    ingest([tmp_path / "docs"], _options(tmp_path, vector_store="milvus://./stores/m.db"), embedder)
    assert read_index_meta(tmp_path / "index")[STORE_KEY] == f"milvus://{tmp_path}/stores/m.db"


def _groundwork(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("url, message", [
    ("mysql://db:3306", "error: unknown vector store 'mysql://db:3306'"),
    ("milvus://user:secret@db:19530", "error: no credentials or options in the vector store URL"),
    ("milvus:///tmp/milvus.sqlite", "error: a Milvus Lite file must end in .db"),
    ("milvus://milvus.db", "error: 'milvus://milvus.db' names a server; for a Milvus Lite file write milvus://./"),
    ("milvus://127.0.0.1:1", "error: cannot reach Milvus at 127.0.0.1:1"),  # nothing listens there
])
def test_a_bad_or_unreachable_store_is_one_line_quickly(tmp_path: Path, url: str, message: str) -> None:
    write_docs(tmp_path / "docs", {"leave.md": HR_DOCS["leave.md"]})
    started = time.perf_counter()
    result = _groundwork("ingest", str(tmp_path / "docs"), "--index", str(tmp_path / "index"), "-q",
                         "--vector-store", url)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert "secret" not in result.stderr
    assert time.perf_counter() - started < 30


def test_removing_a_document_in_the_admin_tab_removes_its_vectors_from_milvus(tmp_path: Path, embedder) -> None:
    from app.ui.library import remove_document

    index = build_corpus(tmp_path, embedder, vector_store=_url(tmp_path))
    reader = open_vector_store(index)
    bands = next(d for d in reader.documents() if d.source == "hr/bands.md")
    assert "Removed hr/bands.md" in remove_document(index, embedder.name, bands.path, tmp_path / "uploads")
    assert reader.refresh() is True
    assert "hr/bands.md" not in _sources(reader, embedder, SALARY, {"everyone", "hr"})
    assert len(_dense_ids(reader, embedder, SALARY, None)) == reader.stats().chunks


def test_a_copied_index_gets_its_own_collection_on_its_first_ingest(tmp_path: Path, embedder) -> None:
    import shutil

    index = build_corpus(tmp_path, embedder, vector_store=_url(tmp_path))
    copy = tmp_path / "copy"
    shutil.copytree(index, copy)
    (tmp_path / "docs" / "leave.md").unlink()
    ingest([tmp_path / "docs"], IngestOptions(index_dir=copy, show_progress=False), embedder)
    assert read_index_meta(copy)[COLLECTION_KEY] != read_index_meta(index)[COLLECTION_KEY]
    original, copied = open_vector_store(index), open_vector_store(copy)
    assert "leave.md" in _sources(original, embedder, "annual leave days", {"everyone"})
    assert "leave.md" not in _sources(copied, embedder, "annual leave days", {"everyone"})
    assert len(_dense_ids(original, embedder, SALARY, None)) == original.stats().chunks


def test_a_milvus_lite_file_held_by_another_process_is_one_line(tmp_path: Path) -> None:
    """Milvus Lite opens a file in one process: `groundwork ingest` while `groundwork serve` holds it."""
    url = _url(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "from ingest.milvus_store import connect; import sys, time; "
                               f"connect({url!r}); print('holding', flush=True); time.sleep(60)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        write_docs(tmp_path / "docs", {"leave.md": HR_DOCS["leave.md"]})
        result = _groundwork("ingest", str(tmp_path / "docs"), "--index", str(tmp_path / "index"), "-q",
                             "--vector-store", url)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: cannot open Milvus Lite file {tmp_path}/milvus.db")
    assert "one process at a time" in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_the_cli_ingests_into_milvus_lite_and_index_stats_names_the_store_without_a_flag(tmp_path: Path) -> None:
    write_docs(tmp_path / "docs", {"leave.md": HR_DOCS["leave.md"]})
    index = str(tmp_path / "index")
    result = _groundwork("ingest", str(tmp_path / "docs"), "--index", index, "-q",
                         "--vector-store", f"milvus://{tmp_path / 'vectors.db'}")  # tmp_path is absolute: milvus:///...
    assert result.returncode == 0, result.stderr
    stats = _groundwork("index", "stats", "--index", index)
    assert stats.returncode == 0, stats.stderr
    assert f"Vectors:    milvus://{tmp_path / 'vectors.db'}" in stats.stdout
    assert "Documents:  1" in stats.stdout
