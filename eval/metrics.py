"""Metrics of a batch evaluation, none needing an LLM judge.

Per question (`question_metrics`, stored in results.jsonl) and over a run (`summarize`, stored in summary.json).
Definitions (also in the README's Evaluation section):

* retrieval — the rank of the first passage from the gold source file in the evaluator's top-10 ranking
  (same retrieval settings as the engine, top_k=10): hit@k = rank <= k, MRR = mean of 1/rank (0 when absent);
  gold passage in context = at least GOLD_IN_CONTEXT of the gold passage's word 4-grams appear in the
  passages given to the model;
* answer correctness — SQuAD token F1 and all-MiniLM cosine similarity of the answer (citation markers
  removed) against the gold answer and against the gold passage, the better of the two for each;
  correct = not refused, `correctness_score` (their mean) >= CORRECT_THRESHOLD, and, when the gold answer
  holds numbers, the answer holds at least one of them (`numbers_agree`);
* strict correctness — the gold passage does not count: answer recall = share of the gold answer's content
  words (`ingest.text.content_words`, default STOPWORDS) that the answer (citation markers removed) holds
  (for a gold answer made of stop words only, such as "Not as such.", its SQuAD-normalised words instead);
  correct (strict) = not refused, answer recall >= STRICT_RECALL and `numbers_agree`. An answer that quotes the
  gold passage but not the sentence holding the gold answer is correct but not strictly correct;
* grounded-answer accuracy (the headline) — correct AND cites a passage from the gold source AND has no
  unsupported citation (a [n] whose passage does not support its sentence, or that points to no passage);
  grounded-answer accuracy (strict): the same with correct (strict);
* answer length — answer words p50: median number of words of the answers not refused, citation markers
  removed (lower is better: a whole passage pasted as the answer is long);
* citations — precision: share of an answer's citations that point to the gold source (macro over answers
  with citations); recall: share of answers that cite the gold source (ragas' ID-based context precision
  and recall, with document ids, applied to citations); unsupported rate: unsupported [n] markers / all [n]
  markers in the final answers;
* refusal — answerable questions refused / answerable questions; unanswerable refused / unanswerable;
* permission leaks — passages (retrieved, cited or ranked) from a document the asking user may not read,
  judged from the index's document groups, independently of the engine;
* latency — percentiles of the per-question total, first-token and retrieval times.
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

CORRECT_THRESHOLD = 0.55  # on correctness_score; calibrated on hand-labelled answers (eval/calibration.jsonl)
STRICT_RECALL = 0.5  # answer recall (gold answer's content words in the answer) for correct (strict)
GOLD_IN_CONTEXT = 0.8  # share of the gold passage's word 4-grams found in the context
SHINGLE = 4
VERBATIM_MODES = ("extractive", "first-sentence")  # runs whose answers are copied from the passage they cite

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation + "‘’“”–—…")
_MARKER = re.compile(r"\s*\[\d+(?:\s*[,;]\s*\d+)*\]")


# --- text ----------------------------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def strip_citations(text: str) -> str:
    """The answer without its [n] markers."""
    return " ".join(_MARKER.sub("", text).split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between two texts after normalize_answer (1.0 when both are empty)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def _shingles(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def passage_coverage(passage: str, context: Iterable[str], n: int = SHINGLE) -> float:
    """Share of the passage's word n-grams (normalised words) that occur in one of the context texts."""
    words = normalize_answer(passage).split()
    wanted = _shingles(words, min(n, len(words)))
    if not wanted:
        return 0.0
    found: set[tuple[str, ...]] = set()
    size = min(n, len(words))
    for text in context:
        found |= _shingles(normalize_answer(text).split(), size) & wanted
    return len(found) / len(wanted)


_NUMBER = re.compile(r"(?<![A-Za-z0-9])(?<![A-Za-z]-)\d+(?:[.,:]\d+)*(?![A-Za-z])")  # not in names: Modula-3, Q3
_NUMBER_WORDS = {w: str(i) for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"))}


def numbers(text: str) -> set[str]:
    """The numbers written in a text, thousands separators removed ("2,500" -> "2500"); number words up to twenty
    count as digits."""
    found = {n.replace(",", "").lstrip("0") or "0" for n in _NUMBER.findall(text)}
    words = {_NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", text.lower()) if w in _NUMBER_WORDS}
    return found | words


def numbers_agree(answer: str, gold_answer: str | None) -> bool:
    """True unless the gold answer holds numbers and the answer holds none of them ("12 characters" for "14")."""
    gold = {n for n in _NUMBER.findall(gold_answer or "")}
    if not gold:
        return True
    return bool(numbers(gold_answer) & numbers(answer))


def answer_recall(answer: str, gold_answer: str | None) -> float | None:
    """Share of the gold answer's content words (`ingest.text.content_words`, default STOPWORDS) found among the
    answer's (citation markers removed); a gold answer with no content word ("Not as such.") is read as its
    SQuAD-normalised words. None without a gold answer."""
    from ingest.text import content_words

    if not gold_answer or not gold_answer.strip():
        return None
    answer = strip_citations(answer or "")
    wanted, found = content_words(gold_answer), content_words(answer)
    if not wanted:
        wanted, found = set(normalize_answer(gold_answer).split()), set(normalize_answer(answer).split())
    if not wanted:
        return None
    return len(wanted & found) / len(wanted)


def answer_words(answer: str) -> int:
    """Words of an answer, citation markers removed."""
    return len(strip_citations(answer).split())


def correctness_score(f1: float, similarity: float) -> float:
    """The one number the correctness threshold applies to: the mean of token F1 and embedding similarity.

    F1 alone misses paraphrases ("No; ..." vs "You do not need ..."); similarity alone rates a wrong number
    in the right sentence ("60 days" for "30 days") almost as high as the right one. Their mean agreed best
    with the hand labels (see eval/calibrate.py).
    """
    return (f1 + similarity) / 2


# --- sources and permissions -----------------------------------------------------------------------------------


def split_source(source: str | None) -> tuple[str | None, str | None]:
    if not source:
        return None, None
    path, _, anchor = source.partition("#")
    return path, anchor or None


def gold_rank(ranking: Sequence[dict], gold_source: str | None) -> int | None:
    """1-based rank of the first passage from the gold source file, or None."""
    gold_file, _ = split_source(gold_source)
    for rank, passage in enumerate(ranking, start=1):
        if passage.get("source") == gold_file:
            return rank
    return None


def anchor_rank(ranking: Sequence[dict], gold_source: str | None) -> int | None:
    """1-based rank of the first passage from the gold file *and* anchor, or None (also when there is no anchor)."""
    gold_file, gold_anchor = split_source(gold_source)
    if not gold_anchor:
        return None
    for rank, passage in enumerate(ranking, start=1):
        if passage.get("source") == gold_file and passage.get("anchor") == gold_anchor:
            return rank
    return None


class DocumentAccess:
    """Who may read which source, from the index's own document records (not from the engine)."""

    def __init__(self, documents: Iterable) -> None:
        self.groups: dict[str, list[frozenset[str]]] = {}
        for doc in documents:
            self.groups.setdefault(doc.source, []).append(frozenset(doc.groups))

    @classmethod
    def from_index(cls, index_dir) -> DocumentAccess:
        from ingest.reader import IndexReader

        reader = IndexReader(index_dir)
        try:
            return cls(reader.documents())
        finally:
            reader.close()

    def may_read(self, source: str, user_groups: Iterable[str]) -> bool | None:
        """True if some document with this source is open to one of the groups; None if the source is unknown."""
        entries = self.groups.get(source)
        if entries is None:
            return None
        groups = set(user_groups)
        return any(entry & groups for entry in entries)

    def leaks(self, record: dict, user_groups: Iterable[str]) -> list[dict]:
        """Every passage in a result the user may not read (unknown sources count: they cannot be cleared)."""
        groups = tuple(user_groups)
        found = []
        for where in ("retrieved", "citations", "ranking"):
            for passage in record.get(where) or []:
                allowed = self.may_read(passage["source"], groups)
                if not allowed:
                    found.append({"where": where, "n": passage.get("n"), "source": passage["source"],
                                  "document_groups": sorted(set().union(*self.groups.get(passage["source"], [])))
                                  if allowed is False else None,
                                  "reason": "not readable by the user" if allowed is False else "not in the index"})
        return found


# --- per question ------------------------------------------------------------------------------------------------


def unsupported_citations(answer: str, passages: Sequence[str], embed=None) -> list[int]:
    """Citation numbers in the final answer whose passage does not support their sentence, or that point to no
    passage. The engine's support rule (app.citations.verify: content-word overlap, else embedding similarity),
    plus verbatim quotation; embeddings are computed only for the pairs the cheaper tests reject."""
    from app.citations import VerifyOptions, content_words, verify

    options = VerifyOptions(add_missing=False, drop_unsupported=False)
    checked = verify(answer, list(passages), None, options)
    bad: set[int] = set(checked.invalid)
    pending: list[tuple[str, int]] = []
    for sentence in checked.sentences:
        quote = normalize_answer(sentence.text)
        for n in sentence.unsupported:
            if quote and quote in normalize_answer(passages[n - 1]):
                continue
            if embed is None or len(content_words(sentence.text)) < options.min_words:
                bad.add(n)
            else:
                pending.append((sentence.text, n))
    if pending:
        vectors = embed([text for text, _ in pending] + [passages[n - 1] for _, n in pending])
        for i, (_, n) in enumerate(pending):
            if float(vectors[i] @ vectors[len(pending) + i]) < options.min_similarity:
                bad.add(n)
    return sorted(bad)


def citation_markers(answer: str) -> list[int]:
    """The distinct [n] numbers an answer cites, in order (valid or not)."""
    groups = re.findall(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]", answer)
    return list(dict.fromkeys(int(n) for g in groups for n in re.split(r"\s*[,;]\s*", g)))


def question_metrics(item, record: dict, embed: Callable[[list[str]], np.ndarray] | None) -> dict:
    """Scores of one answered question (item: a QAItem; record: its results.jsonl line without metrics)."""
    ranking = record.get("ranking")
    context = [p["text"] for p in record.get("retrieved") or []]
    answer = strip_citations(record["answer"]) if not record["refused"] else ""
    out: dict = {
        "gold_rank": gold_rank(ranking, item.gold_source) if ranking is not None and item.gold_source else None,
        "anchor_rank": anchor_rank(ranking, item.gold_source) if ranking is not None else None,
        "gold_passage_coverage": (round(passage_coverage(item.gold_passage, context), 4)
                                  if item.gold_passage and record["mode"] != "closed-book" else None),
    }
    if record.get("ranking_raw") is not None and item.gold_source:  # a follow-up, also ranked as asked
        out["gold_rank_raw"] = gold_rank(record["ranking_raw"], item.gold_source)
    golds = [g for g in (item.answer, item.gold_passage) if g] if item.answerable else []
    f1s = [token_f1(answer, g) for g in golds] if answer else [0.0] * len(golds)
    sims = [0.0] * len(golds)
    if answer and golds and embed is not None:
        vectors = embed([answer, *golds])
        sims = [max(0.0, float(vectors[0] @ v)) for v in vectors[1:]]
    out["f1"] = round(max(f1s), 4) if golds else None
    out["similarity"] = round(max(sims), 4) if golds else None
    has_answer, has_passage = bool(item.answer and golds), bool(item.gold_passage and golds)
    out["f1_answer"] = round(f1s[0], 4) if has_answer else None
    out["f1_passage"] = round(f1s[-1], 4) if has_passage else None
    out["similarity_answer"] = round(sims[0], 4) if has_answer else None
    out["similarity_passage"] = round(sims[-1], 4) if has_passage else None
    out["score"] = round(correctness_score(out["f1"], out["similarity"]), 4) if golds else None  # for reading
    out["numbers_agree"] = numbers_agree(answer, item.answer) if golds else None  # for reading
    # strict: the gold answer alone, not the gold passage (a refusal, answer "", recalls nothing)
    recall = answer_recall(answer, item.answer) if item.answerable else None
    out["answer_recall"] = round(recall, 4) if recall is not None else None
    cited = record.get("citations") or []
    gold_file, _ = split_source(item.gold_source)
    out["cited_sources"] = list(dict.fromkeys(c["source"] for c in cited))
    out["cites_gold"] = bool(gold_file and gold_file in out["cited_sources"])
    out["citations_from_gold"] = sum(1 for c in cited if c["source"] == gold_file) if gold_file else None
    # an extractive or first-sentence answer is (part of) its cited passage, verbatim: nothing to check (and
    # brackets in its code are no markers)
    check = cited and not record["refused"] and record["mode"] not in VERBATIM_MODES
    out["unsupported_citations"] = unsupported_citations(record["answer"], context, embed) if check else []
    out["markers"] = len(citation_markers(record["answer"])) if check else len(cited)
    return out


# --- over a run ------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def is_correct(record: dict, threshold: float = CORRECT_THRESHOLD) -> bool:
    """Not refused and correctness_score >= threshold (recomputed from the stored F1 and similarity, so a run
    can be re-scored with another threshold without answering again)."""
    m = record["metrics"]
    if not record["answerable"] or record["refused"] or m.get("f1") is None:
        return False
    return (correctness_score(m["f1"], m["similarity"]) >= threshold
            and numbers_agree(strip_citations(record["answer"]), record.get("gold_answer")))


def is_grounded(record: dict, threshold: float = CORRECT_THRESHOLD) -> bool:
    """Correct AND cites the gold source (any passage when the question has no gold source) AND no unsupported
    citation."""
    return (is_correct(record, threshold) and _cites_gold(record)
            and not record["metrics"]["unsupported_citations"])


def record_answer_recall(record: dict) -> float | None:
    """The stored answer recall, or (a run scored before it existed) recomputed from the answer and gold answer."""
    if not record["answerable"]:
        return None
    m = record["metrics"]
    if "answer_recall" in m:
        return m["answer_recall"]
    if not record.get("gold_answer"):
        return None
    return 0.0 if record["refused"] else answer_recall(record["answer"], record.get("gold_answer"))


def is_correct_strict(record: dict) -> bool:
    """Not refused, answer recall >= STRICT_RECALL (the gold answer alone, not the gold passage) and numbers
    agree."""
    if not record["answerable"] or record["refused"]:
        return False
    recall = record_answer_recall(record)
    return (recall is not None and recall >= STRICT_RECALL
            and numbers_agree(strip_citations(record["answer"]), record.get("gold_answer")))


def _cites_gold(record: dict) -> bool:
    m = record["metrics"]
    return m["cites_gold"] if record.get("gold_source") else bool(m["cited_sources"])


def is_grounded_strict(record: dict) -> bool:
    """Correct (strict) AND cites the gold source (any passage when the question has no gold source) AND no
    unsupported citation."""
    return is_correct_strict(record) and _cites_gold(record) and not record["metrics"]["unsupported_citations"]


def outcome(record: dict, threshold: float = CORRECT_THRESHOLD) -> str:
    """A question's outcome in a word or two, for the list of questions whose outcome changed between runs."""
    if record["metrics"].get("leaks"):
        return "LEAK"
    if not record["answerable"]:
        return "refused (right)" if record["refused"] else "answered unanswerable"
    if record["refused"]:
        return "refused"
    if is_grounded(record, threshold):
        return "grounded correct"
    if is_correct(record, threshold):
        return "correct, not grounded"
    return "wrong"


# (key, label, higher is better) for every metric in summary.json's "metrics", in report order.
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("grounded_accuracy", "grounded-answer accuracy", True),
    ("grounded_accuracy_strict", "grounded-answer accuracy (strict)", True),
    ("correct", "correct (answerable)", True),
    ("correct_strict", "correct, strict (answerable)", True),
    ("token_f1", "token F1 (mean)", True),
    ("similarity", "embedding similarity (mean)", True),
    ("answer_words_p50", "answer words p50", False),
    ("hit@1", "hit@1 gold source", True),
    ("hit@5", "hit@5 gold source", True),
    ("hit@10", "hit@10 gold source", True),
    ("mrr", "MRR gold source", True),
    ("followup_hit@5", "follow-ups: hit@5, searched as rewritten", True),
    ("followup_hit@5_no_rewrite", "follow-ups: hit@5, searched as asked", True),
    ("followups_rewritten", "follow-ups rewritten", True),
    ("rewrite_p50", "follow-up rewrite p50 (s)", False),
    ("gold_passage_in_context", "gold passage in context", True),
    ("citation_precision", "citation precision", True),
    ("citation_recall", "citation recall", True),
    ("unsupported_citation_rate", "unsupported citations", False),
    ("answerable_refused", "answerable wrongly refused", False),
    ("unanswerable_refused", "unanswerable correctly refused", True),
    ("leaked_passages", "permission leaks (passages)", False),
    ("latency_p50", "latency p50 (s)", False),
    ("latency_p90", "latency p90 (s)", False),
    ("latency_p95", "latency p95 (s)", False),
    ("latency_max", "latency max (s)", False),
    ("first_token_p50", "first token p50 (s)", False),
)


def summarize(records: Sequence[dict], threshold: float = CORRECT_THRESHOLD) -> dict:
    """Aggregate metrics (flat, keys as in METRICS) and the number of questions each is computed over."""
    answerable = [r for r in records if r["answerable"]]
    unanswerable = [r for r in records if not r["answerable"]]
    ranked = [r for r in answerable if r.get("gold_source") and r.get("ranking") is not None]
    ranks = [r["metrics"]["gold_rank"] for r in ranked]
    with_passage = [r for r in answerable if r["metrics"].get("gold_passage_coverage") is not None]
    scored = [r for r in answerable if r["metrics"].get("f1") is not None]
    scored_strict = [r for r in answerable if record_answer_recall(r) is not None]
    answered = [r for r in answerable if not r["refused"]]
    with_citations = [r for r in answered if r["citations"] and r.get("gold_source")]
    citing_base = [r for r in answered if r.get("gold_source")]
    all_citations = [c for r in records if not r["refused"] for c in r["citations"]]
    markers = sum(r["metrics"].get("markers", len(r["citations"])) for r in records if not r["refused"])
    unsupported = sum(len(r["metrics"]["unsupported_citations"]) for r in records if not r["refused"])
    leaks = [r for r in records if r["metrics"].get("leaks")]
    totals = [r["timings"]["total"] for r in records if "total" in r["timings"]]
    first = [r["timings"]["first_token"] for r in records if "first_token" in r["timings"]]
    lengths = [answer_words(r["answer"]) for r in records if not r["refused"]]
    # follow-ups (a QA set with history): the gold source's rank as searched (rewritten) and as asked
    followups = [r for r in ranked if r.get("ranking_raw") is not None]
    conversations = [r for r in records if r.get("history")]
    rewrites = [r["timings"]["rewrite"] for r in conversations if "rewrite" in r["timings"]]

    def share(items, test) -> float | None:
        return sum(1 for x in items if test(x)) / len(items) if items else None

    metrics = {
        "grounded_accuracy": share(scored, lambda r: is_grounded(r, threshold)),
        "grounded_accuracy_strict": share(scored_strict, is_grounded_strict),
        "correct": share(scored, lambda r: is_correct(r, threshold)),
        "correct_strict": share(scored_strict, is_correct_strict),
        "token_f1": _mean([r["metrics"]["f1"] for r in scored]),
        "similarity": _mean([r["metrics"]["similarity"] for r in scored]),
        "answer_words_p50": percentile(lengths, 50),
        "hit@1": share(ranks, lambda k: k is not None and k <= 1),
        "hit@5": share(ranks, lambda k: k is not None and k <= 5),
        "hit@10": share(ranks, lambda k: k is not None and k <= 10),
        "mrr": _mean([1.0 / k if k else 0.0 for k in ranks]),
        "followup_hit@5": share(followups, lambda r: (r["metrics"]["gold_rank"] or 99) <= 5),
        "followup_hit@5_no_rewrite": share(followups, lambda r: (r["metrics"].get("gold_rank_raw") or 99) <= 5),
        "followups_rewritten": share(conversations, lambda r: bool(r.get("searched_for"))),
        "rewrite_p50": percentile(rewrites, 50),
        "gold_passage_in_context": share(with_passage,
                                         lambda r: r["metrics"]["gold_passage_coverage"] >= GOLD_IN_CONTEXT),
        "citation_precision": _mean([r["metrics"]["citations_from_gold"] / len(r["citations"])
                                     for r in with_citations]),
        "citation_recall": share(citing_base, lambda r: r["metrics"]["cites_gold"]),
        "unsupported_citation_rate": unsupported / markers if markers else None,
        "answerable_refused": share(answerable, lambda r: r["refused"]),
        "unanswerable_refused": share(unanswerable, lambda r: r["refused"]),
        "leaked_passages": sum(len(r["metrics"]["leaks"]) for r in leaks),
        "latency_p50": percentile(totals, 50),
        "latency_p90": percentile(totals, 90),
        "latency_p95": percentile(totals, 95),
        "latency_max": max(totals) if totals else None,
        "first_token_p50": percentile(first, 50),
    }
    metrics = {k: (round(v, 4) if isinstance(v, float) and not math.isnan(v) else v) for k, v in metrics.items()}
    counts = {"questions": len(records), "answerable": len(answerable), "unanswerable": len(unanswerable),
              "ranked": len(ranked), "with_gold_passage": len(with_passage), "scored": len(scored),
              "scored_strict": len(scored_strict),
              "answered": len(answered), "with_citations": len(with_citations), "citations": len(all_citations),
              "leak_questions": len(leaks), "followups": len(followups)}
    return {"metrics": metrics, "counts": counts, "threshold": threshold,
            "leaks": [{"id": r["id"], "user": r["user"], "passages": r["metrics"]["leaks"]} for r in leaks],
            "latency": {"total": {f"p{q}": percentile(totals, q) for q in (50, 90, 95, 99)},
                        "first_token": {f"p{q}": percentile(first, q) for q in (50, 90, 95, 99)},
                        "retrieve": {f"p{q}": percentile([r["timings"]["retrieve"] for r in records
                                                          if "retrieve" in r["timings"]], q) for q in (50, 95)}}}


@dataclass(frozen=True)
class Agreement:
    """How a binary rule agrees with hand labels."""

    n: int
    agree: int

    @property
    def rate(self) -> float:
        return self.agree / self.n if self.n else 0.0


def agreement(scores: Sequence[float], labels: Sequence[bool], threshold: float) -> Agreement:
    return Agreement(len(labels), sum(1 for s, y in zip(scores, labels) if (s >= threshold) == bool(y)))
