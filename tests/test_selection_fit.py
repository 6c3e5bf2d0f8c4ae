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


def test_the_threshold_refuses_what_cannot_be_answered_within_the_cap_on_answerable_refusals():
    from eval.selection_fit import Outcome, by_corpus, choose_threshold

    # Two corpora: in "faq" right answers are sure (0.6-0.9) and unanswerable questions are not (0.05-0.2); in
    # "free" the right answers are less sure (0.15-0.5), so a threshold that refuses all of faq's unanswerable
    # questions refuses some of free's answerable ones.
    outs = ([Outcome("faq", "answerable", True, p) for p in (0.6, 0.7, 0.8, 0.9)]
            + [Outcome("faq", "cross", False, p) for p in (0.05, 0.1, 0.15, 0.2)]
            + [Outcome("free", "answerable", True, p) for p in (0.15, 0.3, 0.4, 0.5)]
            + [Outcome("free", "unanswerable", False, p) for p in (0.02, 0.04, 0.06, 0.08)])
    loose = choose_threshold(outs, max_answerable_refused=0.125)
    figures = by_corpus(outs, loose)
    assert figures["faq"]["unanswerable_refused"] == 1.0 and figures["free"]["unanswerable_refused"] == 1.0
    assert figures["free"]["answerable_refused"] == 0.25, "refusing free's 0.15 is within the averaged cap"
    strict = choose_threshold(outs, max_answerable_refused=0.0)
    figures = by_corpus(outs, strict)
    assert figures["free"]["answerable_refused"] == 0.0 and figures["faq"]["answerable_refused"] == 0.0
    assert figures["faq"]["unanswerable_refused"] < 1.0, "the cap binds: some of faq's unanswerable get answered"


def test_separation_says_whether_any_threshold_could_refuse_the_unanswerable_questions():
    from eval.selection_fit import Outcome, separation

    answerable = [Outcome("c", "answerable", True, p) for p in (0.6, 0.7, 0.9)]
    assert separation(answerable + [Outcome("c", "cross", False, p) for p in (0.1, 0.2)]) == 1.0
    # one unanswerable question surer than two of the three answerable ones, one tied with the third
    mixed = answerable + [Outcome("c", "withheld", False, 0.8), Outcome("c", "unanswerable", False, 0.9)]
    assert separation(mixed) == round((1 + 0.5) / 6, 4)
    assert separation(answerable) is None


def test_out_of_fold_judges_each_question_and_its_twins_with_weights_fitted_without_them(monkeypatch):
    import eval.selection_fit as fit_module
    from app.selection import FEATURES, SelectionWeights

    questions = [fit_module.Question(f"q{i}{twin}", "train", kind, "?", [], corpus="c")
                 for i in range(10) for twin, kind in (("", "answerable"), ("#withheld", "withheld"))]
    fitted_on = []
    def fit(qs, names):
        fitted_on.append({q.id for q in qs})
        return SelectionWeights({})

    monkeypatch.setattr(fit_module, "fit", fit)
    monkeypatch.setattr(fit_module, "outcomes",
                        lambda qs, weights, names: [fit_module.Outcome("c", q.kind, False, len(fitted_on)) for q in qs])
    judged = fit_module.out_of_fold(questions, FEATURES, folds=5)
    assert len(judged) == len(questions) and len(fitted_on) == 5
    for k, seen in enumerate(fitted_on):
        held = {q.id for q in questions} - seen
        assert held and all(q.split("#")[0] + "#withheld" in held for q in held if "#" not in q)
        assert all(q.split("#")[0] in held for q in held), "a twin is held out with its question"


def test_widening_covers_the_unsure_answers_while_every_corpus_median_answer_stays_short():
    from eval.selection_fit import Outcome, by_corpus, choose_widen_below

    def answered(corpus, p, right, widened_right, widened_words):
        return Outcome(corpus, "answerable", right, p, 30, widened_right, widened_words)

    # In "free" the unsure answers (0.3, 0.5) are wrong but their sections hold the answer; the one at 0.8 would
    # gain nothing. Widening all three pushes free's median answer to 90 words.
    outs = ([answered("free", p, False, True, 90) for p in (0.3, 0.5)] + [answered("free", 0.8, True, True, 90)]
            + [answered("free", 0.95, True, True, 90)] + [answered("faq", 0.9, True, True, 80)] * 3)
    chosen = choose_widen_below(outs, threshold=0.2, max_words_p50=60)
    figures = by_corpus(outs, 0.2, chosen)
    assert figures["free"]["right"] == 1.0, "both unsure answers are widened"
    assert figures["free"]["answer_words_p50"] <= 60 and figures["faq"]["answer_words_p50"] == 30
    assert 0.5 < chosen <= 0.8
    assert by_corpus(outs, 0.2)["free"]["right"] == 0.5, "never widened, the unsure answers stay wrong"
