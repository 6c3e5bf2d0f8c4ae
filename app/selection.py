"""Answer selection: choose which 1-3 consecutive sentences of the passages answer the question, or refuse.

Greedy quote decoding commits to an answer on its first token; measured on a corpus nobody tuned for, it was
right for 26% of the questions while the first sentence of the top passage was right for 69%. Selection instead
lists every candidate answer (ingest/answer_spans.py: 1-3 consecutive sentences of one passage, never a heading,
a question, a section number or a navigation line), describes each with a few measured features, and scores the
whole candidate:

- how close it is to the question (embedding cosine of the span and of its first sentence) and how many of the
  question's words it holds;
- the document's structure: how close the heading (or FAQ question) it sits under is to the question (by
  embedding and by shared words), whether it is the first sentence under that heading, how many of the
  question's words its passage holds, and whether it is a list intro ending in ":";
- what the question asks for: a quantity ("how long", "the minimum", "the heaviest") wants a sentence with a
  number, best the one it opens with, and that sentence close to the question; a contact ("who do I contact")
  wants an address, phone or extension;
- the passage's retrieval rank and score;
- its length;
- optionally the model: the mean log-probability of "[n] <candidate>" as the reply to the engine's quote prompt
  (one prefill of the prompt, then the best candidates' continuations in one batch; `Generator.score`).

The score is a linear model whose weights are fitted on train and validation splits (eval/selection_fit.py); the
best candidate's score, with how sure and how backed it is (confidence_features), goes through a logistic
calibration, and the question is refused when the probability that it is right falls below a threshold chosen
out of fold. Below a second probability, also chosen out of fold, selection is answering but unsure which sentences
answer: it quotes the best candidate with the sentences around it in its passage (section_around). Every answer is
a verbatim quote of its (whitespace-normalised) passage, cited.
"""
from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from finetune.prompt import NOT_FOUND
from ingest.answer_spans import Candidate, SelectionPassage, candidates, section_around
from ingest.text import CLOSERS as _CLOSERS, PLAIN_WORD, TRAINING_STOPWORDS, content_words

WEIGHTS_FILE = Path(__file__).with_name("selection_weights.json")  # fitted by eval/selection_fit.py

# Inputs weighed again by how much of the question the best-matching heading holds (FAQ wording): a question that
# repeats its FAQ heading is answered by what sits under that heading, whatever the sentence says; one in someone's
# own words is answered by the sentence that matches it (out of fold: README, Results).
_BY_WORDING = ("sim", "overlap", "retrieval", "first_under_heading", "passage_overlap")
FEATURES = ("sim", "sim_first", "heading_sim", "first_under_heading", "offset", "rank", "retrieval",
            "overlap", "two", "three", "words", "opens_passage", "top_opening", "heading_overlap",
            "passage_overlap", "list_intro", "quantity", "quantity_first", "no_quantity", "contact",
            "quantity_first_sim", *(f"faq_{name}" for name in _BY_WORDING))
MODEL_FEATURE = "model"  # mean token log-probability under the model, centred over the scored candidates


# What kind of answer the question wants, and whether a candidate holds one. "How long do I have to submit…",
# "What's the minimum length…", "the heaviest parcel…" want a quantity: the sentence with the number ("within 30
# days", "at least 14 characters", "30 kg") answers them, while its neighbours that share the question's words do
# not. "Who do I contact…" wants an address, a phone number or an extension.
_WANTS_QUANTITY = re.compile(
    r"\b(?:how (?:many|much|long|often|old|big|far|fast|heavy|large|small|soon|early|late|high|low)|what time|"
    r"(?:what|which) (?:year|date|day|version|port)|minimum|maximum|least|most|heaviest|lightest|largest|smallest|"
    r"longest|shortest|highest|lowest|deadline|amount|percentage|rate|limit|size|length|price|cost|fee|"
    r"allowance|budget|salary|number of|up to what|within how|after how|before how)\b", re.I)
_WANTS_CONTACT = re.compile(r"\b(?:who|whom|contact|e-?mail|phone|call|extension|reach)\b", re.I)
_CONTACT = re.compile(r"@|\bext(?:ension|\.)?\s*\d|\+?\d[\d ().-]{6,}\d")


def answer_types(question: str) -> tuple[bool, bool]:
    """(wants a quantity, wants a way to contact someone)."""
    return bool(_WANTS_QUANTITY.search(question)), bool(_WANTS_CONTACT.search(question))


def _words(text: str) -> set[str]:
    return content_words(text, TRAINING_STOPWORDS, PLAIN_WORD)


def features(question: str, passages: Sequence[SelectionPassage], found: Sequence[Candidate],
             embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """A (candidates x FEATURES) matrix; `embed(texts)` returns unit vectors."""
    if not found:
        return np.zeros((0, len(FEATURES)), dtype=np.float32)
    sentences = sorted({u for c in found for u in c.sentences} | {c.heading for c in found if c.heading})
    index = {text: i for i, text in enumerate(sentences)}
    vectors = embed([question] + sentences)
    q, table = vectors[0], vectors[1:]
    asked = _words(question)
    top = max(p.score for p in passages) or 1.0
    covered = [coverage(asked, p) for p in passages]
    wants_quantity, wants_contact = answer_types(question)
    rows = []
    for c in found:
        units = [table[index[t]] for t in c.sentences]
        span = np.sum(units, axis=0)
        span = span / (np.linalg.norm(span) or 1.0)
        span_words = _words(c.text)
        rows.append((
            float(span @ q),
            float(units[0] @ q),
            float(table[index[c.heading]] @ q) if c.heading else 0.0,
            1.0 if c.offset == 0 and c.heading else 0.0,
            math.log1p(c.offset),
            1.0 / c.n,
            passages[c.n - 1].score / top,
            len(asked & span_words) / len(asked) if asked else 0.0,
            1.0 if c.last - c.first == 1 else 0.0,
            1.0 if c.last - c.first >= 2 else 0.0,
            math.log1p(len(c.text.split())),
            1.0 if c.first == 0 else 0.0,  # the passage starts here: a section's first sentence, not a fragment
            1.0 if c.first == 0 and c.n == 1 else 0.0,  # ... of the top passage (the first-sentence baseline)
            len(asked & _words(c.heading)) / len(asked) if asked and c.heading else 0.0,
            covered[c.n - 1],
            1.0 if c.text.rstrip(_CLOSERS).endswith(":") else 0.0,  # "The key dates are:" (the answer follows)
            1.0 if wants_quantity and any(ch.isdigit() for ch in c.text) else 0.0,
            1.0 if wants_quantity and any(ch.isdigit() for ch in c.sentences[0]) else 0.0,  # the answer opens with it
            1.0 if wants_quantity and not any(ch.isdigit() for ch in c.text) else 0.0,
            1.0 if wants_contact and _CONTACT.search(c.text) else 0.0,
        ))
    matrix = np.asarray(rows, dtype=np.float32)
    # The number that opens an answer must be about the question: the sentence that opens with "within 10 working
    # days" also answers "how long", but about the wrong thing.
    opening_number_sim = matrix[:, FEATURES.index("quantity_first")] * matrix[:, FEATURES.index("sim_first")]
    faq_wording = float(matrix[:, FEATURES.index("heading_overlap")].max())
    by_wording = [faq_wording * matrix[:, FEATURES.index(name)] for name in _BY_WORDING]
    return np.column_stack([matrix, opening_number_sim, *by_wording])


def coverage(asked: set[str], passage: SelectionPassage) -> float:
    """Share of the question's content words that the passage (with its heading path) holds: a question about
    something the documents never mention ("jury duty", "401(k)") leaves words uncovered."""
    if not asked:
        return 0.0
    return len(asked & _words(passage.text + " " + (passage.heading or ""))) / len(asked)


CONFIDENCE = ("best", "margin", "best_sim", "best_heading_sim", "top_retrieval", "refusal", "best_coverage",
              "best_heading_overlap", "best_overlap", "best_share", "candidates", "best_source_share", "question_words")


def confidence_features(question: str, scores: np.ndarray, matrix: np.ndarray,
                        passages: Sequence[SelectionPassage], found: Sequence[Candidate],
                        refusal: float = 0.0) -> np.ndarray:
    """What refusal is decided from: the best score, its margin over the runner-up, the best candidate's
    similarity and heading similarity, the top passage's retrieval cosine, (with the model) how much more likely
    the model finds its refusal than its likeliest candidate (mean token log-probabilities), the share of the
    question's words that the best candidate's passage, its heading and the candidate itself hold; and how
    concentrated the evidence is: the best candidate's share of the candidate scores' softmax (the fitted
    probability that it, of all of them, is the answer), how many candidates share it (log), and the share of
    the shown passages that come from its document (where the documents answer, retrieval tends to return
    several passages of the one that does; where they do not, passages of unrelated documents); and how many
    content words the question has (log): a question in someone's own words is longer than an FAQ heading, and
    its similarities and word shares run lower whether or not the documents answer it."""
    order = np.argsort(-scores)
    best = int(order[0])
    margin = float(scores[best] - scores[order[1]]) if len(order) > 1 else 0.0
    of_best = [float(matrix[best, FEATURES.index(name)])
               for name in ("sim", "heading_sim", "passage_overlap", "heading_overlap", "overlap")]
    best_share = float(1.0 / np.exp(scores - scores[best]).sum())  # softmax(scores)[best], without overflow
    source = passages[found[best].n - 1].source
    source_share = sum(p.source == source for p in passages) / len(passages)
    top_retrieval = max(p.score for p in passages)
    return np.asarray([float(scores[best]), margin, *of_best[:2], top_retrieval, refusal, *of_best[2:],
                       best_share, math.log1p(len(found)), source_share, math.log1p(len(_words(question)))],
                      dtype=np.float32)


@dataclass(frozen=True)
class SelectionWeights:
    """A fitted selection model (see eval/selection_fit.py), stored as JSON."""

    weights: dict[str, float]  # feature -> weight of the candidate score (FEATURES, and MODEL_FEATURE if fitted)
    calibration: dict[str, float] = field(default_factory=dict)  # CONFIDENCE name (and "bias") -> logistic weight
    threshold: float = 0.5  # refuse when P(right) is below this (chosen on validation splits)
    # answer with the best candidate's section (ingest.answer_spans.section_around) when P(right) is below this
    # (but not refused): unsure which sentences answer, quote their neighbours too. 0: never (chosen out of fold)
    widen_below: float = 0.0
    model_candidates: int = 6  # how many of the best feature-scored candidates the model scores
    fitted_on: dict = field(default_factory=dict)  # data, command and figures (the card)

    def score(self, matrix: np.ndarray, names: Sequence[str] = FEATURES) -> np.ndarray:
        w = np.asarray([self.weights.get(name, 0.0) for name in names], dtype=np.float32)
        return matrix @ w

    def probability(self, confidence: np.ndarray) -> float:
        """P(the best candidate is right) from confidence_features."""
        z = self.calibration.get("bias", 0.0) + sum(self.calibration.get(name, 0.0) * float(v)
                                                     for name, v in zip(CONFIDENCE, confidence))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    @property
    def uses_model(self) -> bool:
        return bool(self.weights.get(MODEL_FEATURE))

    def to_json(self) -> dict:
        return {"weights": self.weights, "calibration": self.calibration, "threshold": self.threshold,
                "widen_below": self.widen_below, "model_candidates": self.model_candidates,
                "fitted_on": self.fitted_on}

    @classmethod
    def from_json(cls, data: dict) -> SelectionWeights:
        return cls(weights={k: float(v) for k, v in data["weights"].items()},
                   calibration={k: float(v) for k, v in data.get("calibration", {}).items()},
                   threshold=float(data.get("threshold", 0.5)), widen_below=float(data.get("widen_below", 0.0)),
                   model_candidates=int(data.get("model_candidates", 6)), fitted_on=data.get("fitted_on", {}))

    @classmethod
    def load(cls, path: Path = WEIGHTS_FILE) -> SelectionWeights:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


@functools.lru_cache(maxsize=1)
def _packaged_weights() -> SelectionWeights:
    return SelectionWeights.load(WEIGHTS_FILE)


def selection_weights(card_decoding: dict | None = None) -> SelectionWeights:
    """The weights fitted for an adapter (its card's decoding.selection) or else the packaged ones."""
    if card_decoding and card_decoding.get("selection"):
        return SelectionWeights.from_json(card_decoding["selection"])
    return _packaged_weights()


@dataclass(frozen=True)
class Selection:
    """The outcome: the chosen candidate (None when nothing was a candidate) and how sure selection is."""

    best: Candidate | None  # what is quoted: the best-ranked candidate, or its section when widened
    probability: float  # calibrated P(the best-ranked candidate is right)
    refuse: bool
    ranked: list[tuple[float, Candidate]]  # (score, candidate), best first
    widened: bool = False  # unsure (P below weights.widen_below): `best` is the best candidate's section


def replies(found: Sequence[Candidate]) -> list[str]:
    """What the model is asked to score: each candidate as its quoted reply, then the refusal."""
    return [f"[{c.n}] {c.text}" for c in found] + [NOT_FOUND]


def select(question: str, passages: Sequence[SelectionPassage], embed: Callable[[list[str]], np.ndarray],
           weights: SelectionWeights, model_score: Callable[[list[str]], list[float]] | None = None,
           threshold: float | None = None) -> Selection:
    """Score every candidate and pick the best, or refuse when it is probably not right.

    `model_score(texts)` returns each reply's mean token log-probability under the model (Generator.score on
    the engine's quote prompt); it is used only when the weights were fitted with it, on the
    `weights.model_candidates` best candidates and the refusal (see `replies`).
    """
    found = candidates(passages)
    if not found:
        return Selection(None, 0.0, True, [])
    matrix = features(question, passages, found, embed)
    scores = weights.score(matrix)  # FEATURES only: the model's term is added below for the best candidates
    refusal = 0.0
    order = sorted(range(len(found)), key=lambda i: -float(scores[i]))
    if weights.uses_model and model_score is not None:
        head = order[: weights.model_candidates]
        scored = np.asarray(model_score(replies([found[i] for i in head])), dtype=np.float32)
        logprobs, refusal = scored[:-1], float(scored[-1] - scored[:-1].max())
        centred = logprobs - logprobs.mean()
        for i, lp in zip(head, centred):
            scores[i] += weights.weights[MODEL_FEATURE] * float(lp)
        order = sorted(range(len(found)), key=lambda i: -float(scores[i]))
    ranked = [(float(scores[i]), found[i]) for i in order]
    probability = weights.probability(confidence_features(question, scores, matrix, passages, found, refusal))
    limit = weights.threshold if threshold is None else threshold
    best, refuse = ranked[0][1], probability < limit
    if not refuse and probability < weights.widen_below:
        return Selection(section_around(passages, best), probability, refuse, ranked, widened=True)
    return Selection(best, probability, refuse, ranked)
