"""Baselines of the batch evaluation, as answer stages of the engine (app.engine.AnswerStage).

- `first-sentence` (FirstSentenceAnswer): the first sentence of the top-ranked passage, cited [1], no model;
  leading sentences that end in "?" are skipped, so an FAQ's question heading is not taken for its answer.
- `oracle` (OracleAnswer): the engine's own answer stage, given the question's gold passage alone instead of the
  retrieved passages: how well the model answers when retrieval is perfect. Retrieval still runs (the ranking
  metrics are those of RAG); a question without a gold passage and gold source is answered from retrieval.

`extractive` and `closed-book` are app.engine's ExtractiveAnswer and ClosedBookAnswer; `stage_for` picks the stage
of a mode for one question.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from app.engine import Answer, AnswerStage, AnswerTurn, Citation, RetrievedPassage
from eval.metrics import passage_coverage, split_source
from ingest.retrieval import Passage
from ingest.store import ChunkRecord
from ingest.text import split_sentences

BASELINES = ("extractive", "closed-book", "first-sentence", "oracle")  # `groundwork eval --baseline NAME`
ORACLE_CHUNK_ID = -1  # the gold passage is no chunk of the index


def _retrieved(n: int, passage: Passage) -> RetrievedPassage:
    chunk = passage.chunk
    return RetrievedPassage(n=n, source=chunk.source, page=chunk.page, heading=chunk.heading, anchor=chunk.anchor,
                            text=chunk.text, score=round(float(passage.score), 4))


def first_sentence(text: str) -> str:
    """The first sentence of a passage that is not a question ("Why is X slow?" heads an FAQ entry); the first
    sentence when all are questions; "" for an empty text."""
    sentences = split_sentences(text)
    return next((s for s in sentences if not s.endswith("?")), sentences[0] if sentences else "")


class FirstSentenceAnswer:
    """Baseline (no model): the first non-question sentence of the top retrieved passage, cited as [1]."""

    retrieves = True
    model = "first-sentence"

    def run(self, turn: AnswerTurn) -> Iterator[str | Answer]:
        retrieved = [_retrieved(i, p) for i, p in enumerate(turn.passages, start=1)]
        top = retrieved[0]  # the engine refuses before the stage when no passage is found
        citation = Citation(n=top.n, source=top.source, page=top.page, heading=top.heading, text=top.text,
                            score=top.score)
        text, events = turn.engine.guardrails.check_answer(f"{first_sentence(top.text)} [1]",
                                                           turn.options.disabled_guards)
        turn.flags.extend(events)  # as ExtractiveAnswer: the engine keeps GuardrailEvents
        yield turn.finish(text, False, None, [citation], retrieved)


def oracle_passage(gold_passage: str, gold_source: str, retrieved: Sequence[Passage] = ()) -> Passage:
    """The gold passage as a retrieved passage from the gold source's file (and anchor), score 1.

    Heading, page, path and groups (what the prompt's passage label and the results show) are borrowed from a
    retrieved chunk of the same file: the one with the gold anchor, else the one holding most of the gold passage
    (at least half of its word 4-grams); with none, heading and page are None."""
    source, anchor = split_source(gold_source)
    same_file = [p.chunk for p in retrieved if p.chunk.source == source]
    like = next((c for c in same_file if anchor and c.anchor == anchor), None)
    if like is None and same_file:
        best = max(same_file, key=lambda c: passage_coverage(gold_passage, [c.text]))
        like = best if passage_coverage(gold_passage, [best.text]) >= 0.5 else None
    chunk = ChunkRecord(id=ORACLE_CHUNK_ID, source=source, path=like.path if like else source, text=gold_passage,
                        heading=like.heading if like else None, page=like.page if like else None,
                        anchor=anchor or (like.anchor if like else None), start=0, end=len(gold_passage),
                        ordinal=0, title=like.title if like else None, groups=like.groups if like else ())
    return Passage(chunk=chunk, score=1.0, fused=1.0, dense_rank=None, bm25_rank=None)


class OracleAnswer:
    """The wrapped stage (the engine's default answer stage) answers from the gold passage alone.

    Retrieval runs as usual (the engine needs `retrieves`; the evaluator's ranking is unchanged); the stage then gets
    one passage, the gold one, in place of the retrieved ones. Without a gold passage or gold source the wrapped
    stage gets the retrieved passages.
    """

    retrieves = True

    def __init__(self, inner: AnswerStage, gold_passage: str | None, gold_source: str | None) -> None:
        self.inner = inner
        self.gold_passage = gold_passage
        self.gold_source = gold_source

    @property
    def model(self) -> str | None:
        return self.inner.model

    @property
    def uses_gold(self) -> bool:
        return bool(self.gold_passage and self.gold_passage.strip() and split_source(self.gold_source)[0])

    def run(self, turn: AnswerTurn) -> Iterator[str | Answer]:
        if self.uses_gold:
            turn = replace(turn, passages=[oracle_passage(self.gold_passage, self.gold_source, turn.passages)])
        yield from self.inner.run(turn)


def stage_for(mode: str, default: AnswerStage, item) -> AnswerStage:
    """The answer stage of one question (item: a QAItem) in a mode; `default` is the engine's own stage, as it was
    when the run started (RAG answers with it; the oracle wraps it)."""
    from app.engine import ClosedBookAnswer, ExtractiveAnswer

    if mode == "rag":
        return default
    if mode == "oracle":
        return OracleAnswer(default, item.gold_passage, item.gold_source)
    if mode == "first-sentence":
        return FirstSentenceAnswer()
    if mode == "extractive":
        return ExtractiveAnswer()
    if mode == "closed-book":
        return ClosedBookAnswer()
    raise ValueError(f"unknown mode {mode!r}")
