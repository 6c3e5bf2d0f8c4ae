"""eval/selection_fit.py: the retrieved passages are what the cache keeps, and the features and labels are rebuilt
from them (so a new feature needs no new retrieval); labels follow groundwork eval's strict rule."""
from __future__ import annotations

import json

import numpy as np

from conftest import HR_DOCS, build_corpus

DOCS = {**HR_DOCS, "travel.md": "# Travel expenses\n\nTravel expense claims need a receipt for every purchase "
                               "above 25 EUR. Book every trip in the travel tool.\n"}


def test_collect_cache_featurize_labels_the_gold_sentence_and_nothing_when_its_document_is_withheld(tmp_path, embedder):
    from eval.selection_fit import collect, featurize, load_questions, save_questions

    index = build_corpus(tmp_path, embedder, DOCS)
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(item) for item in [
        {"id": "fit-1", "question": "When must expense claims be submitted?",
         "answer": "Expense claims must be submitted within 30 days of the purchase.",
         "gold_passage": "Expense claims must be submitted within 30 days of the purchase.",
         "gold_source": "expenses.md"},
        {"id": "fit-2", "question": "Can expense claims be paid out in cash?", "answerable": False},
    ]) + "\n", encoding="utf-8")
    everything = ("train", "validation", "test")
    questions = collect([{"qa": qa, "index": index}], splits=everything, cross_per_pair=0)
    assert {q.kind for q in questions} == {"answerable", "withheld", "unanswerable"}
    assert all(q.matrix is None for q in questions), "collect retrieves; featurize computes"

    cache = tmp_path / "questions.npz"
    save_questions(questions, cache)
    loaded = load_questions(cache)
    assert [(q.id, q.passages) for q in loaded] == [(q.id, q.passages) for q in questions]

    embed = lambda texts: np.asarray(embedder.encode(list(texts)))  # noqa: E731
    by_kind = {q.kind: q for q in featurize(loaded, embed)}
    answerable = by_kind["answerable"]
    right = [t for t, y in zip(answerable.texts, answerable.labels) if y]
    assert right and all(t.startswith("Expense claims must be submitted within 30 days") for t in right)
    assert not any("meal allowance" in t for t in right), "a sentence without the gold answer's words is not right"
    assert answerable.matrix.shape == (len(answerable.texts), answerable.matrix.shape[1])
    assert not by_kind["withheld"].labels.any(), "with the gold document withheld no candidate is right"
    assert all(p["source"] != "expenses.md" for p in by_kind["withheld"].passages)
    assert not by_kind["unanswerable"].labels.any()
