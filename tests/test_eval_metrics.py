"""Evaluation metrics on hand-made cases whose right values are known."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.errors import EvalError
from eval.metrics import (
    METRICS,
    DocumentAccess,
    agreement,
    anchor_rank,
    answer_recall,
    correctness_score,
    gold_rank,
    is_correct,
    is_correct_strict,
    is_grounded,
    is_grounded_strict,
    normalize_answer,
    numbers,
    numbers_agree,
    outcome,
    passage_coverage,
    percentile,
    question_metrics,
    strip_citations,
    summarize,
    token_f1,
    unsupported_citations,
)
from eval.qa import QAItem, load_qa, resolve_users, select_split

T = 0.6  # threshold used in these hand-made cases
CORRECT = 0.55  # the calibrated threshold (eval.metrics.CORRECT_THRESHOLD)


def record(qid: str, *, answerable: bool = True, refused: bool = False, score: float | None = 0.0,
           rank: int | None = None, ranking: bool = True, coverage: float | None = None, citations=(),
           gold_source: str | None = "a.md", unsupported=(), leaks=(), total: float = 1.0,
           first_token: float | None = None) -> dict:
    """A results.jsonl line with the metrics already filled in."""
    cited = [{"n": i + 1, "source": s, "text": "", "score": 0.5} for i, s in enumerate(citations)]
    timings = {"total": total, **({"first_token": first_token} if first_token is not None else {})}
    return {"id": qid, "mode": "rag", "question": f"question {qid}", "answer": "x", "refused": refused,
            "citations": cited, "retrieved": [], "ranking": [] if ranking else None, "flags": [],
            "timings": timings, "user": "alice", "answerable": answerable,
            "gold_source": gold_source if answerable else None,
            "metrics": {"gold_rank": rank, "gold_passage_coverage": coverage,
                        "f1": score if answerable else None, "similarity": score if answerable else None,
                        "cited_sources": list(dict.fromkeys(citations)),
                        "cites_gold": bool(gold_source) and gold_source in citations,
                        "citations_from_gold": sum(1 for s in citations if s == gold_source) if gold_source else None,
                        "unsupported_citations": list(unsupported), "leaks": list(leaks)}}


# --- text scores ----------------------------------------------------------------------------------------------


def test_squad_normalisation_and_token_f1() -> None:
    assert normalize_answer("The  Cat, sat (on) a mat!") == "cat sat on mat"
    assert token_f1("The cat sat", "cat sat down") == pytest.approx(0.8)  # P = 2/2, R = 2/3
    assert token_f1("30 days", "within 30 days of the purchase") == pytest.approx(2 * 0.4 / 1.4)  # R = 2/5
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("the", "") == 1.0  # both empty after normalisation
    assert token_f1("days days", "days") == pytest.approx(2 * 0.5 * 1 / 1.5)  # counts, not sets


def test_citation_markers_are_stripped_before_scoring() -> None:
    assert strip_citations("Claims are due in 30 days [1] [2, 3]. Ask HR [4].") == "Claims are due in 30 days. Ask HR."


def test_gold_passage_coverage_counts_word_4grams_across_passages() -> None:
    gold = "one two three four five six"  # 3 shingles: 1-4, 2-5, 3-6
    assert passage_coverage(gold, ["zero one two three four five six seven"]) == 1.0
    assert passage_coverage(gold, ["one two three four five", "three four five six"]) == 1.0  # split over chunks
    assert passage_coverage(gold, ["one two three four"]) == pytest.approx(1 / 3)
    assert passage_coverage(gold, ["six five four three two one"]) == 0.0
    assert passage_coverage("Short one", ["a short ONE."]) == 1.0  # shorter than 4 words: the whole text


def test_correctness_score_is_the_mean_of_f1_and_similarity() -> None:
    assert correctness_score(0.4, 0.8) == pytest.approx(0.6)


def test_numbers_of_the_gold_answer_must_appear_in_the_answer() -> None:
    assert numbers("USD 120,000 at 09:30, 4.4 million, five days, a 3-year plan") == {
        "120000", "9:30", "4.4", "5", "3"}
    assert numbers("Modula-3, eu-west-3, Q3 and python2 are names, not numbers; so is the 3rd") == set()
    assert not numbers_agree("The minimum is 12 characters.", "At least 14 characters.")
    assert numbers_agree("Fourteen? No: 14 characters.", "At least 14 characters.")
    assert numbers_agree("Up to five unused days.", "Up to 5 unused days, by 31 March.")  # one of them is enough
    assert numbers_agree("Any text at all.", "The idea was borrowed from Modula-3.")  # no number in the gold answer
    assert numbers_agree("Anything.", None)
    wrong_number = record("q", score=0.9, citations=["a.md"])
    wrong_number.update(answer="FleetView allows 1000 API requests per minute [1].",
                        gold_answer="The FleetView REST API allows 600 requests per minute per tenant.")
    assert not is_correct(wrong_number, T) and outcome(wrong_number, T) == "wrong"
    wrong_number["answer"] = "It allows 600 requests per minute [1]."
    assert is_correct(wrong_number, T) and is_grounded(wrong_number, T)


def test_unsupported_and_invalid_citations_are_found() -> None:
    passages = ["Expense claims must be submitted within 30 days of the purchase.",
                "The meal allowance in Austin is 60 USD per day."]
    answer = ("Expense claims must be submitted within 30 days [1]. The CEO drives a red tractor every Friday [2]. "
              "Meals in Austin are paid 60 USD per day [7].")
    assert unsupported_citations(answer, passages) == [2, 7]
    assert unsupported_citations("Expense claims must be submitted within 30 days [1].", passages) == []
    # a verbatim quotation is supported even when it is too short to be a claim on its own
    assert unsupported_citations("Per day [1].", ["Per day."]) == []


# --- retrieval ------------------------------------------------------------------------------------------------


def test_gold_rank_and_anchor_rank() -> None:
    ranking = [{"source": "b.html", "anchor": "x"}, {"source": "a.html", "anchor": "y"},
               {"source": "a.html", "anchor": "z"}]
    assert gold_rank(ranking, "a.html#z") == 2  # the file matches at rank 2
    assert anchor_rank(ranking, "a.html#z") == 3  # file and anchor at rank 3
    assert gold_rank(ranking, "c.html") is None
    assert anchor_rank(ranking, "a.html") is None


def test_hit_at_k_and_mrr() -> None:
    records = [record("1", rank=1), record("2", rank=3), record("3", rank=None), record("4", rank=7),
               record("5", answerable=False), record("6", gold_source=None)]  # 5 and 6 are not ranked
    m = summarize(records, T)["metrics"]
    assert m["hit@1"] == 0.25 and m["hit@5"] == 0.5 and m["hit@10"] == 0.75
    assert m["mrr"] == pytest.approx(round((1 + 1 / 3 + 0 + 1 / 7) / 4, 4))
    closed = summarize([record("1", rank=None, ranking=False)], T)["metrics"]
    assert closed["hit@1"] is None and closed["mrr"] is None  # closed-book: no retrieval, no retrieval metrics


def test_gold_passage_in_context_uses_the_documented_cutoff() -> None:
    records = [record("1", coverage=1.0), record("2", coverage=0.8), record("3", coverage=0.79), record("4")]
    m = summarize(records, T)
    assert m["metrics"]["gold_passage_in_context"] == round(2 / 3, 4)
    assert m["counts"]["with_gold_passage"] == 3


# --- answers, grounding, citations, refusals ----------------------------------------------------------------


def test_correct_and_grounded_accuracy() -> None:
    records = [
        record("grounded", score=0.9, citations=["a.md"]),
        record("correct-other-source", score=0.9, citations=["b.md"]),
        record("correct-unsupported", score=0.9, citations=["a.md", "a.md"], unsupported=[2]),
        record("wrong", score=0.3, citations=["a.md"]),
        record("refused", score=0.0, refused=True),
        record("at-threshold", score=T, citations=["b.md", "a.md"]),
        record("unanswerable", answerable=False, refused=True),
    ]
    m = summarize(records, T)["metrics"]
    assert m["correct"] == pytest.approx(round(4 / 6, 4))
    assert m["grounded_accuracy"] == pytest.approx(round(2 / 6, 4))  # "grounded" and "at-threshold"
    assert [outcome(r, T) for r in records] == ["grounded correct", "correct, not grounded", "correct, not grounded",
                                                "wrong", "refused", "grounded correct", "refused (right)"]
    no_gold = record("no-gold-source", score=0.9, citations=["z.md"], gold_source=None)
    assert is_correct(no_gold, T) and is_grounded(no_gold, T)  # without a gold source: any citation grounds it


def test_citation_precision_recall_and_unsupported_rate() -> None:
    records = [
        record("1", score=0.9, citations=["a.md", "b.md"]),  # precision 1/2, cites gold
        record("2", score=0.9, citations=["b.md"]),  # precision 0, does not cite gold
        record("3", score=0.9, citations=["a.md", "a.md", "a.md"], unsupported=[3]),  # precision 1
        record("4", score=0.9),  # answered without citations: recall 0, no precision
        record("5", refused=True),  # refused: neither
    ]
    m = summarize(records, T)["metrics"]
    assert m["citation_precision"] == pytest.approx(round((0.5 + 0 + 1) / 3, 4))
    assert m["citation_recall"] == 0.5  # 2 of the 4 answered questions cite the gold source
    assert m["unsupported_citation_rate"] == pytest.approx(round(1 / 6, 4))


def test_refusal_rates() -> None:
    records = [record("a1", refused=True), record("a2"), record("a3"), record("a4", refused=True),
               record("u1", answerable=False, refused=True), record("u2", answerable=False)]
    m = summarize(records, T)["metrics"]
    assert m["answerable_refused"] == 0.5 and m["unanswerable_refused"] == 0.5
    assert outcome(records[-1], T) == "answered unanswerable"


def test_latency_percentiles() -> None:
    records = [record(str(i), total=float(i), first_token=i / 10) for i in range(1, 6)]
    summary = summarize(records, T)
    assert summary["metrics"]["latency_p50"] == 3.0 and summary["metrics"]["latency_p90"] == pytest.approx(4.6)
    assert summary["metrics"]["latency_max"] == 5.0 and summary["metrics"]["first_token_p50"] == pytest.approx(0.3)
    assert summary["latency"]["total"]["p99"] == pytest.approx(4.96)
    assert percentile([], 50) is None


def test_agreement_rate() -> None:
    result = agreement([0.9, 0.7, 0.5, 0.2], [True, False, False, False], 0.6)
    assert (result.n, result.agree, result.rate) == (4, 3, 0.75)


# --- permission leaks -------------------------------------------------------------------------------------------


class _Doc:
    def __init__(self, source: str, groups: tuple[str, ...]) -> None:
        self.source, self.groups = source, groups


def test_leak_detector_flags_passages_the_user_may_not_read() -> None:
    access = DocumentAccess([_Doc("policy.md", ("everyone",)), _Doc("hr/bands.md", ("hr",)),
                             _Doc("twin.md", ("hr",)), _Doc("twin.md", ("everyone",))])
    result = {"retrieved": [{"n": 1, "source": "policy.md"}, {"n": 2, "source": "hr/bands.md"}],
              "citations": [{"n": 2, "source": "hr/bands.md"}],
              "ranking": [{"n": 1, "source": "twin.md"}, {"n": 2, "source": "gone.md"}]}
    leaks = access.leaks(result, ("everyone",))
    assert [(x["where"], x["source"]) for x in leaks] == [("retrieved", "hr/bands.md"), ("citations", "hr/bands.md"),
                                                           ("ranking", "gone.md")]
    assert leaks[0]["document_groups"] == ["hr"] and leaks[2]["reason"] == "not in the index"
    assert [x["source"] for x in access.leaks(result, ("everyone", "hr"))] == ["gone.md"]
    summary = summarize([record("1", leaks=leaks), record("2")], T)
    assert summary["metrics"]["leaked_passages"] == 3 and summary["counts"]["leak_questions"] == 1
    assert summary["leaks"][0]["id"] == "1" and outcome(record("1", leaks=leaks), T) == "LEAK"


# --- per question, with the real embedder ---------------------------------------------------------------------


def test_question_metrics_take_the_better_of_gold_answer_and_gold_passage(embedder) -> None:
    item = QAItem(id="q", question="When are claims due?", answer="Within 30 days.",
                  gold_passage="Expense claims must be submitted within 30 days of the purchase.",
                  gold_source="expenses.md#deadline")
    passage = {"n": 1, "source": "expenses.md", "anchor": "deadline", "text": item.gold_passage, "score": 0.8}
    result = {"mode": "rag", "answer": f"{item.gold_passage} [1]", "refused": False,
              "citations": [dict(passage)], "retrieved": [passage], "ranking": [passage]}
    m = question_metrics(item, result, lambda texts: embedder.encode(list(texts)))
    assert m["f1_passage"] == 1.0 and m["f1"] == 1.0 and m["f1_answer"] < 1.0
    assert m["similarity"] == pytest.approx(1.0, abs=1e-3)
    assert m["gold_rank"] == 1 and m["anchor_rank"] == 1 and m["gold_passage_coverage"] == 1.0
    assert m["cites_gold"] and m["unsupported_citations"] == []
    refused = question_metrics(item, {**result, "answer": "I could not find this.", "refused": True,
                                      "citations": []}, lambda texts: embedder.encode(list(texts)))
    assert refused["f1"] == 0.0 and refused["similarity"] == 0.0 and refused["score"] == 0.0
    quoted_code = {**result, "mode": "extractive", "answer": "x = [10] and y = [2, 3] [1]",
                   "retrieved": [{**passage, "text": "x = [10] and y = [2, 3]"}]}
    extractive = question_metrics(item, quoted_code, None)  # brackets in a quoted passage are not citations
    assert extractive["unsupported_citations"] == [] and extractive["markers"] == 1
    rag = question_metrics(item, {**quoted_code, "mode": "rag"}, None)
    assert rag["unsupported_citations"] == [1, 2, 3, 10] and rag["markers"] == 4  # read as markers: no claim left
    unanswerable = question_metrics(QAItem(id="u", question="?", answerable=False), result, None)
    assert unanswerable["score"] is None and unanswerable["gold_rank"] is None


def test_answer_recall_counts_the_gold_answers_content_words() -> None:
    gold = "Your line manager approves them."  # content words: line, manager, approves
    assert answer_recall("Claims go to your line manager [1].", gold) == pytest.approx(2 / 3)
    assert answer_recall("The line [2] manager approves [1, 3].", gold) == 1.0  # markers stripped
    assert answer_recall("Receipts go to Spendly [1].", gold) == 0.0
    assert answer_recall("No, not as such.", "Not as such.") == 1.0  # stop words only: its plain words
    assert answer_recall("Yes.", "Not as such.") == 0.0
    assert answer_recall("Anything.", None) is None and answer_recall("Anything.", " ") is None


def test_strict_correctness_does_not_count_the_gold_passage(embedder) -> None:
    """An answer that quotes the gold passage but not the sentence holding the gold answer is correct by the
    lenient rule (the better of gold answer and gold passage) and wrong by the strict one (gold answer alone)."""
    item = QAItem(id="q", question="Who approves expense claims?", answer="Your line manager approves them.",
                  gold_passage="Receipts must be uploaded to Spendly as a photo or a PDF, and the original paper "
                               "receipt may then be thrown away. Claims go to your line manager.",
                  gold_source="expenses.md")
    passage = {"n": 1, "source": "expenses.md", "anchor": None, "text": item.gold_passage, "score": 0.8}
    embed = lambda texts: embedder.encode(list(texts))  # noqa: E731

    def answered(qid: str, answer: str) -> dict:
        result = {"id": qid, "mode": "extractive", "question": item.question, "answer": answer, "refused": False,
                  "citations": [dict(passage)], "retrieved": [passage], "ranking": [passage], "flags": [],
                  "timings": {"total": 1.0}, "user": "alice", **item.gold_dict()}
        return {**result, "metrics": {**question_metrics(item, result, embed), "leaks": []}}

    quoting = answered("quoting", "Receipts must be uploaded to Spendly as a photo or a PDF, and the original "
                                  "paper receipt may then be thrown away. [1]")
    assert quoting["metrics"]["answer_recall"] == 0.0 and quoting["metrics"]["f1_passage"] > 0.8
    assert is_correct(quoting) and is_grounded(quoting)  # lenient: close to the gold passage
    assert not is_correct_strict(quoting) and not is_grounded_strict(quoting)  # strict: no word of the gold answer
    right = answered("right", "Claims go to your line manager. [1]")
    assert right["metrics"]["answer_recall"] == pytest.approx(0.6667)
    assert is_correct_strict(right) and is_grounded_strict(right)
    other_source = {**right, "citations": [{**passage, "source": "b.md"}],
                    "metrics": {**right["metrics"], "cites_gold": False, "cited_sources": ["b.md"]}}
    assert is_correct_strict(other_source) and not is_grounded_strict(other_source)
    refused = {**right, "refused": True}
    assert not is_correct_strict(refused)
    wrong_number = answered("n", "Claims go to your line manager in 3 days. [1]")
    wrong_number["gold_answer"] = "Your line manager approves them in 5 days."
    assert not is_correct_strict(wrong_number)  # numbers must agree, as in the lenient rule

    m = summarize([quoting, right], CORRECT)["metrics"]
    assert m["correct"] == 1.0 and m["grounded_accuracy"] == 1.0
    assert m["correct_strict"] == 0.5 and m["grounded_accuracy_strict"] == 0.5
    assert m["answer_words_p50"] == pytest.approx((22 + 6) / 2)  # words without the [n] markers

    old = {**quoting, "metrics": {k: v for k, v in quoting["metrics"].items() if k != "answer_recall"}}
    assert summarize([old, right], CORRECT)["metrics"]["correct_strict"] == 0.5  # a run scored before: recomputed


def test_strict_metrics_follow_their_lenient_counterparts() -> None:
    keys = [key for key, _, _ in METRICS]
    assert keys.index("grounded_accuracy_strict") == keys.index("grounded_accuracy") + 1
    assert keys.index("correct_strict") == keys.index("correct") + 1
    assert ("answer_words_p50", "answer words p50", False) in METRICS  # lower is better
    records = [record("1", score=0.9), record("2", refused=True), record("3", answerable=False)]
    for r, answer in zip(records, ("one two three [1]", "I could not find that.", "a b c d e")):
        r["answer"] = answer
    m = summarize(records, T)["metrics"]
    assert m["answer_words_p50"] == 4.0  # 3 and 5 words; the refusal does not count
    assert m["correct_strict"] is None  # no gold answer: nothing to score strictly


# --- the QA file ----------------------------------------------------------------------------------------------


def _qa(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("line, message", [
    ('{"question": "x"}', "qa.jsonl:2: missing 'id'"),
    ('{"id": "a", "question": "y"}', "qa.jsonl:2: duplicate id 'a' (first on line 1)"),
    ('{"id": "b"}', "qa.jsonl:2: missing 'question'"),
    ('{"id": "b", "question": "y", "answerable": "yes"}', "qa.jsonl:2: 'answerable' must be true or false"),
    ('{"id": "b", "question": "y", "gold_sorce": "a.md"}', "qa.jsonl:2: unknown field(s) gold_sorce"),
    ('{"id": "b", "question": "y", "answerable": false, "gold_source": "a.md"}', "qa.jsonl:2: an unanswerable"),
    ('{"id": "b", "question": "y",', "qa.jsonl:2: not valid JSON"),
    ('["b"]', "qa.jsonl:2: each line must be a JSON object"),
])
def test_bad_qa_lines_fail_with_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = _qa(tmp_path, '{"id": "a", "question": "x"}', line)
    with pytest.raises(EvalError) as info:
        load_qa(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_qa_defaults_empty_gold_fields_and_splits(tmp_path: Path) -> None:
    from finetune.splits import split_of

    lines = [json.dumps({"id": f"q{i}", "question": f"question {i}?"}) for i in range(40)]
    lines.append(json.dumps({"id": "u", "question": "?", "answerable": False, "gold_source": "", "answer": "n/a"}))
    items = load_qa(_qa(tmp_path, *lines))
    assert items[0].answerable and items[0].user is None and items[-1].gold_source is None
    test = select_split(items, "test")
    assert test and [i.id for i in test] == [i.id for i in items if split_of(i.id) == "test"]
    assert len(select_split(items, "all")) == 41
    with pytest.raises(EvalError, match="unknown split 'dev'"):
        select_split(items, "dev")


def test_unknown_users_fail_up_front_naming_them(tmp_path: Path) -> None:
    from app.users import UserStore

    users = tmp_path / "users.json"
    UserStore(users).add("alice", "password123")
    items = [QAItem("1", "q", user="alice"), QAItem("2", "q", user="zoe"), QAItem("3", "q", user="bob"),
             QAItem("4", "q")]
    with pytest.raises(EvalError, match=r"not in .*users.json: bob, zoe$"):
        resolve_users(items, users)
    resolved = resolve_users(items[:1] + items[3:], users)
    assert resolved["alice"].groups == ("everyone",) and resolved[None].name == "anonymous"



def test_calibration_check_reports_agreement_with_the_labels(tmp_path: Path) -> None:
    from eval.calibrate import DEFAULT_FILE, check

    rows = [{"run": "r", "id": "1", "answer": "30 days", "gold_answer": "30 days", "f1": 1.0, "similarity": 1.0,
             "label": True},
            {"run": "r", "id": "2", "answer": "60 days", "gold_answer": "30 days", "f1": 0.5, "similarity": 0.9,
             "label": False},  # caught by the number check, not by the score
            {"run": "r", "id": "3", "answer": "about a month", "gold_answer": "30 days", "f1": 0.0,
             "similarity": 0.6, "label": True},  # missed: a disagreement
            {"run": "r", "id": "4", "answer": "unlabelled", "gold_answer": "x", "f1": 0, "similarity": 0,
             "label": None}]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = check(path, 0.55)
    assert "3 hand-labelled answers (2 correct)" in report and "agreement 2/3 = 66.7%" in report
    assert "disagrees: r/3" in report
    assert DEFAULT_FILE.exists() and "agreement" in check(DEFAULT_FILE)  # the shipped labels parse
