"""Hybrid retrieval: ACL applied inside both searches, fusion, the relevance threshold; on both vector stores
(FAISS and Milvus Lite: conftest's `vector_store` fixture)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ingest.retrieval import RetrievalOptions, Retriever
from ingest.pipeline import IngestOptions, ingest
from ingest.vector_store import open_vector_store

ACL = """
default = ["everyone"]
[[rules]]
glob = "hr/*"
groups = ["hr"]
[[rules]]
glob = "it/only-it.md"
groups = ["it"]
"""


@pytest.fixture
def retriever(tmp_path: Path, embedder, vector_store: str) -> Retriever:
    docs = tmp_path / "docs"
    (docs / "hr").mkdir(parents=True)
    (docs / "it").mkdir()
    for i, topic in enumerate(["parking", "badges", "printers", "payroll dates", "wifi", "meals", "laptops"]):
        (docs / f"public-{i}.md").write_text(f"# {topic.title()}\n\nInformation about {topic} for all staff. "
                                             f"Questions about {topic} go to the service desk.")
    (docs / "hr" / "bands.md").write_text("# Salary bands\n\nZebracorn band E4 pays 78,000 EUR a year.")
    (docs / "it" / "only-it.md").write_text("# Firewall\n\nThe firewall admin password rotates every Monday.")
    (tmp_path / "acl.toml").write_text(ACL)
    ingest([docs], IngestOptions(index_dir=tmp_path / "index", acl_file=tmp_path / "acl.toml", show_progress=False,
                                 vector_store=vector_store), embedder)
    return Retriever(open_vector_store(tmp_path / "index"), embedder)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_restricted_document_never_returned_and_slots_not_lost(retriever: Retriever, mode: str) -> None:
    question = "What does zebracorn band E4 pay?"  # a rare keyword that only the HR file contains
    options = RetrievalOptions(mode=mode, top_k=5, min_score=-1.0)
    hr = retriever.retrieve(question, {"everyone", "hr"}, options)
    assert hr[0].chunk.source == "hr/bands.md"
    public = retriever.retrieve(question, {"everyone"}, options)
    assert "hr/bands.md" not in {p.chunk.source for p in public}
    if mode != "bm25":  # BM25 only returns documents sharing a word with the question
        assert len(public) == 5


def test_user_who_can_read_almost_nothing(retriever: Retriever) -> None:
    passages = retriever.retrieve("Where do I park my car?", {"it"}, RetrievalOptions(min_score=-1.0))
    assert [p.chunk.source for p in passages] == ["it/only-it.md"]
    assert retriever.retrieve("Where do I park my car?", set(), RetrievalOptions(min_score=-1.0)) == []


def test_hybrid_fuses_both_rankings(retriever: Retriever) -> None:
    passages = retriever.retrieve("payroll dates", {"everyone"}, RetrievalOptions(min_score=-1.0))
    top = passages[0]
    assert top.chunk.source == "public-3.md" and top.dense_rank == 1 and top.bm25_rank == 1
    assert passages == sorted(passages, key=lambda p: -p.fused)


def test_relevance_threshold_drops_unrelated_passages(retriever: Retriever) -> None:
    strict = RetrievalOptions(min_score=0.3)
    assert retriever.retrieve("What is the boiling point of liquid nitrogen on Jupiter?", {"everyone"}, strict) == []
    assert retriever.retrieve("where can staff park", {"everyone"}, strict)[0].chunk.source == "public-0.md"


def test_new_generation_is_picked_up_after_a_reingest(retriever: Retriever, tmp_path: Path, embedder) -> None:
    (tmp_path / "docs" / "new.md").write_text("# Canteen\n\nThe canteen serves ramen on Fridays.")
    ingest([tmp_path / "docs"], IngestOptions(index_dir=tmp_path / "index", show_progress=False), embedder)
    passages = retriever.retrieve("When is ramen served?", {"everyone"}, RetrievalOptions(top_k=1))
    assert passages[0].chunk.source == "new.md"


def test_searches_keep_working_during_a_reingest_and_then_switch_to_it(retriever: Retriever, tmp_path: Path, embedder) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    def ask() -> str:
        return retriever.retrieve("where can staff park", {"everyone"}, RetrievalOptions(top_k=1))[0].chunk.source

    done = threading.Event()

    def ask_until_done() -> list[str]:  # asks all through the re-ingest, its publish included
        answers = []
        while not done.is_set() or not answers:
            answers.append(ask())
        return answers

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(ask_until_done) for _ in range(4)]
        (tmp_path / "docs" / "public-9.md").write_text("# Canteen\n\nThe canteen serves ramen on Fridays.")
        ingest([tmp_path / "docs"], IngestOptions(index_dir=tmp_path / "index", show_progress=False), embedder)
        done.set()
        assert {a for f in futures for a in f.result()} == {"public-0.md"}
    assert ask() == "public-0.md" and retriever.reader.generation == 2


def test_a_chunk_that_starts_mid_section_is_marked_as_continuing_it(tmp_path: Path, embedder,
                                                                   vector_store: str) -> None:
    """Selection must not take a continuation chunk's first sentence for the opening under its heading."""
    from conftest import build_corpus

    long_section = " ".join(f"Sentence number {i} of the long deadline section explains one more rule."
                            for i in range(60))
    index = build_corpus(tmp_path, embedder, {"policy.md": f"# Policy\n\n## Deadlines\n\n{long_section}\n\n"
                                                            "## Meals\n\nThe meal allowance is 60 USD per day.\n"},
                         vector_store=vector_store)
    reader = open_vector_store(index)
    try:
        chunks = reader.chunks(reader.chunk_ids("policy.md"))
    finally:
        reader.close()
    deadlines = [c for c in chunks if c.heading and c.heading.endswith("Deadlines")]
    meals = [c for c in chunks if c.heading and c.heading.endswith("Meals")]
    assert len(deadlines) >= 2, "the fixture's point: the section is longer than one chunk"
    assert [c.continues for c in deadlines] == [False] + [True] * (len(deadlines) - 1)
    assert [c.continues for c in meals] == [False], "a new section's first chunk opens it"
