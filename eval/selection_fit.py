"""Fit answer selection's weights (app/selection.py) and its refusal threshold on the train and validation splits.
Never reads a test split.

    python -m eval.selection_fit --corpus examples/acme/qa.jsonl:IDX_ACME:examples/acme/users.json \\
        --corpus ../shared/data/python-docs/qa.jsonl:IDX_PY [--model-scores] --out app/selection_weights.json

For every question of the train and validation splits the engine's own retrieval runs (through an answer stage
that only records the passages), and every candidate answer gets its features. A candidate is *right* when it
comes from the gold source file and recalls at least half of the gold answer's content words (the strict
correctness of `groundwork eval`). Questions the documents cannot answer come from three places: the QA sets'
unanswerable questions, each answerable question asked again with its gold document withheld, and each corpus's
questions asked against the other corpora's indexes.

The candidate score is a conditional logit (softmax over a question's candidates, maximising the probability of
its right ones, L2-regularised); P(right) is a logistic fit of "the best candidate is right" on the best score;
the threshold maximises the mean of (answerable questions answered right) and (unanswerable questions refused),
out of fold (5 folds of train+validation), among the thresholds that refuse at most 10% of the answerable ones
(see choose_threshold); the weights are then fitted on all of train+validation. (Before, the threshold was chosen
on the validation splits alone: 7 of acme's answerable questions set it.) Every fit weighs each corpus equally,
however many questions it has. With --model-scores the model (the promoted adapter unless --adapter) also scores
the best candidates and its centred log-probability becomes one more feature.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.selection import CONFIDENCE, FEATURES, MODEL_FEATURE, SelectionWeights, confidence_features, features, replies
from eval.metrics import STRICT_RECALL, answer_recall, numbers_agree, split_source
from finetune.prompt import NOT_FOUND
from finetune.splits import split_of
from ingest.answer_spans import SelectionPassage, candidates, section_around


def is_right(text: str, source: str, q: "Question") -> bool:
    """Strictly correct (groundwork eval's rule) and from the gold source file."""
    return (bool(q.answer) and source == q.gold_file
            and (answer_recall(text, q.answer) or 0.0) >= STRICT_RECALL and numbers_agree(text, q.answer))


@dataclass
class Question:
    """One question as selection sees it: the passages retrieval showed, and (after `featurize`) every candidate's
    features and label. The passages are what the cache keeps, so a change of features needs no retrieval."""

    id: str
    split: str
    kind: str  # "answerable", "unanswerable", "withheld" (gold document removed), "cross" (another corpus)
    question: str
    passages: list[dict]  # text, heading, score, source, continues of each passage shown, in rank order
    corpus: str = ""  # the QA set it comes from (its folder's name): every corpus weighs the same in the fits
    answer: str | None = None  # the gold answer (answerable questions)
    gold_file: str | None = None
    matrix: np.ndarray | None = None
    labels: np.ndarray | None = None
    texts: list[str] = field(default_factory=list)
    views: list[SelectionPassage] = field(default_factory=list)  # the passages as selection sees them
    found: list = field(default_factory=list)  # their candidates (ingest.answer_spans.Candidate), in matrix order
    messages: list[dict] = field(default_factory=list)  # the engine's quote prompt for these passages
    replies: list[str] = field(default_factory=list)  # "[n] candidate" per candidate, as the model would reply
    model: np.ndarray | None = None  # per candidate: centred log-probability (0 where the model did not score)
    refusal: float = 0.0  # the refusal's log-probability minus the likeliest scored candidate's


class _Capture:
    """An answer stage that records the passages the engine retrieved, and answers nothing."""

    retrieves = True
    model = "capture"

    def __init__(self) -> None:
        self.passages = []

    def run(self, turn):
        self.passages = list(turn.passages)
        yield turn.finish("", True, "captured")


def _engine(index: Path):
    from app.engine import Engine, EngineConfig

    stage = _Capture()
    return Engine(EngineConfig(index_dir=index), answer_stage=stage), stage


def retrieve(engine, stage, question: str, user, depth: int = 15):
    from app.engine import AnswerOptions
    from ingest.retrieval import RetrievalOptions

    stage.passages = []
    engine.answer(question, user, AnswerOptions(retrieval=RetrievalOptions(top_k=depth)))
    return stage.passages


def _question(qid, split, kind, question, passages, item, top_k, corpus) -> Question | None:
    shown = [{"text": p.chunk.text, "heading": p.chunk.heading, "score": float(p.score), "source": p.chunk.source,
              "continues": p.chunk.continues} for p in passages[:top_k]]
    if not shown:
        return None
    gold_file = split_source(item.gold_source)[0] if item.answerable else None
    return Question(qid, split, kind, question, shown, corpus, item.answer if kind == "answerable" else None,
                    gold_file)


def featurize(questions: list[Question], embed) -> list[Question]:
    """Fill in each question's candidates, features and labels (questions without a candidate are dropped).

    `embed(texts)` returns unit vectors; a sentence met again (the same passage for many questions) is embedded
    once."""
    from finetune.prompt import PromptPassage, build_messages, passage_label

    cache: dict[str, np.ndarray] = {}

    def cached(texts):
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            cache.update(zip(missing, embed(missing)))
        return np.asarray([cache[t] for t in texts])

    kept = []
    for q in questions:
        views = [SelectionPassage(p["text"], p["heading"], p["score"], p["continues"], p["source"])
                 for p in q.passages]
        found = candidates(views)
        if not found:
            continue
        q.labels = np.asarray([q.kind == "answerable" and is_right(c.text, q.passages[c.n - 1]["source"], q)
                               for c in found], dtype=np.float32)
        q.matrix = features(q.question, views, found, cached)
        q.texts = [c.text for c in found]
        q.views, q.found = views, found
        prompt = [PromptPassage(p["text"], passage_label(p["source"], p["heading"], None)) for p in q.passages]
        q.messages = build_messages(q.question, prompt, "quote")
        q.replies = replies(found)[:-1]  # the candidates as the model's replies (the refusal is scored apart)
        kept.append(q)
    return kept


def collect(corpora, splits=("train", "validation"), top_k: int = 5, cross_per_pair: int = 40) -> list[Question]:
    """Retrieve the passages of every question of `splits` (and its gold-withheld and cross-corpus twins)."""
    from app.users import ANONYMOUS
    from eval.qa import load_qa, resolve_users

    out: list[Question] = []
    engines = [_engine(c["index"]) for c in corpora]
    items_of = []
    for corpus in corpora:
        items = [i for i in load_qa(corpus["qa"]) if split_of(i.id) in splits]
        items_of.append((items, resolve_users(items, corpus.get("users"))))
    started = time.time()
    for ci, (corpus, (engine, stage)) in enumerate(zip(corpora, engines)):
        items, users = items_of[ci]
        name = corpus_name(corpus["qa"])
        for k, item in enumerate(items):
            user = users[item.user]
            passages = retrieve(engine, stage, item.question, user)
            split = split_of(item.id)
            if item.answerable:
                q = _question(item.id, split, "answerable", item.question, passages, item, top_k, name)
                gold_file, _ = split_source(item.gold_source)
                withheld = [p for p in passages if p.chunk.source != gold_file]
                w = _question(item.id + "#withheld", split, "withheld", item.question, withheld, item, top_k, name)
                out += [x for x in (q, w) if x is not None]
            else:
                q = _question(item.id, split, "unanswerable", item.question, passages, item, top_k, name)
                out += [q] if q else []
            print(f"\r{corpus['qa'].parent.name}: {k + 1}/{len(items)} ({time.time() - started:.0f} s)", end="",
                  file=sys.stderr)
        print(file=sys.stderr)
        # this corpus's questions against every other index: the documents cannot answer them (two QA sets of one
        # index, like acme's, are one corpus here: neither is asked of the other)
        indexes = [Path(c["index"]).resolve() for c in corpora]
        for cj, (other, other_stage) in enumerate(engines):
            if indexes[cj] == indexes[ci] or indexes[cj] in indexes[:cj]:
                continue
            for item in [i for i in items if i.answerable][:cross_per_pair]:
                passages = retrieve(other, other_stage, item.question, ANONYMOUS)
                q = _question(item.id + f"#on{cj}", split_of(item.id), "cross", item.question, passages, item, top_k,
                              name)
                out += [q] if q else []
    return out


def embedder_of(index: Path):
    """The index's embedder as `embed(texts) -> unit vectors`."""
    from ingest.embedding import Embedder
    from ingest.vector_store import open_vector_store

    store = open_vector_store(index)
    embedder = Embedder(store.embedder)
    store.close()
    return lambda texts: np.asarray(embedder.encode(list(texts)))


def save_questions(questions: list[Question], path: Path) -> None:
    arrays = {}
    meta = []
    for i, q in enumerate(questions):
        if q.model is not None:
            arrays[f"lp{i}"] = q.model
        meta.append({"id": q.id, "split": q.split, "kind": q.kind, "question": q.question, "passages": q.passages,
                     "corpus": q.corpus,
                     "answer": q.answer, "gold_file": q.gold_file, "refusal": q.refusal})
    np.savez_compressed(path, meta=np.asarray(json.dumps(meta)), **arrays)


def load_questions(path: Path) -> list[Question]:
    data = np.load(path, allow_pickle=False)
    meta = json.loads(str(data["meta"]))
    return [Question(m["id"], m["split"], m["kind"], m["question"], m["passages"], m["corpus"], m["answer"],
                     m["gold_file"],
                     model=data[f"lp{i}"] if f"lp{i}" in data else None, refusal=m.get("refusal", 0.0))
            for i, m in enumerate(meta)]


def add_model_scores(questions: list[Question], weights: SelectionWeights, generator, count: int) -> None:
    """Score each question's `count` best candidates (by the feature weights) under the model, centred."""
    started = time.time()
    for k, q in enumerate(questions):
        if q.model is not None:
            continue
        order = np.argsort(-(q.matrix @ np.asarray([weights.weights.get(n, 0.0) for n in FEATURES])))[:count]
        scored = np.asarray(generator.score(q.messages, [q.replies[i] for i in order] + [NOT_FOUND]),
                            dtype=np.float32)
        logprobs = scored[:-1]
        q.model = np.zeros(len(q.labels), dtype=np.float32)
        q.model[order] = logprobs - logprobs.mean()
        q.refusal = float(scored[-1] - logprobs.max())
        print(f"\rmodel scores: {k + 1}/{len(questions)} ({time.time() - started:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)


# --- fitting -------------------------------------------------------------------------------------------------

def _matrix(q: Question, names) -> np.ndarray:
    if MODEL_FEATURE not in names:
        return q.matrix
    column = np.zeros((len(q.labels), 1), dtype=np.float32)
    if q.model is not None:
        column[:, 0] = q.model
    return np.hstack([q.matrix, column])


def fit_weights(questions: list[Question], names, l2: float = 0.01) -> dict[str, float]:
    """Conditional logit: maximise log sum_{right} softmax(score) over answerable questions with a right one."""
    from scipy.optimize import minimize

    chosen = [q for q in questions if q.kind == "answerable" and q.labels.any()]
    weight = corpus_weights(chosen)
    data = [(_matrix(q, names), q.labels) for q in chosen]
    mean = np.mean(np.vstack([m for m, _ in data]), axis=0)
    std = np.std(np.vstack([m for m, _ in data]), axis=0) + 1e-6

    def loss(w):
        total, grad = 0.0, np.zeros_like(w)
        for (m, y), c in zip(data, weight):
            z = ((m - mean) / std) @ w
            z = z - z.max()
            p = np.exp(z) / np.exp(z).sum()
            right = y > 0
            pr = p[right].sum()
            total -= c * math.log(pr + 1e-12)
            # d/dw -log(sum_right p) = E_p[x] - E_{p|right}[x]
            xs = (m - mean) / std
            grad += c * (p @ xs - (p[right] @ xs[right]) / (pr + 1e-12))
        return total + l2 * w @ w, grad + 2 * l2 * w

    result = minimize(loss, np.zeros(len(names)), jac=True, method="L-BFGS-B")
    w = result.x / std  # back to raw feature units (the mean only shifts every candidate's score equally)
    return {name: round(float(v), 5) for name, v in zip(names, w)}


def _scores(q: Question, weights: SelectionWeights, names) -> np.ndarray:
    return _matrix(q, names) @ np.asarray([weights.weights.get(n, 0.0) for n in names])


def best_of(q: Question, weights: SelectionWeights, names) -> tuple[np.ndarray, bool, int]:
    """The question's confidence features, whether its best candidate is right, and which candidate that is."""
    scores = _scores(q, weights, names)
    refusal = q.refusal if MODEL_FEATURE in names else 0.0
    best = int(np.argmax(scores))
    return confidence_features(q.question, scores, q.matrix, q.views, q.found, refusal), bool(q.labels[best]), best


def corpus_name(qa: Path) -> str:
    """A QA set's corpus name: its folder's ("acme", "python-docs", "tool-docs")."""
    return Path(qa).resolve().parent.name


def corpus_of(q: Question) -> str:
    return q.corpus


def corpus_weights(questions: list[Question]) -> np.ndarray:
    """Per question, 1 / (questions of its corpus) / corpora: every corpus weighs the same, however big."""
    counts: dict[str, int] = {}
    for q in questions:
        counts[corpus_of(q)] = counts.get(corpus_of(q), 0) + 1
    return np.asarray([1.0 / counts[corpus_of(q)] / len(counts) for q in questions])


def fit_calibration(questions, weights, names, l2: float = 0.01) -> dict[str, float]:
    """Logistic regression of "the best candidate is right" on the confidence features (standardised, L2)."""
    from scipy.optimize import minimize

    pairs = [best_of(q, weights, names) for q in questions]
    x = np.vstack([p[0] for p in pairs]).astype(float)
    y = np.asarray([p[1] for p in pairs], dtype=float)
    c = corpus_weights(questions)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    xs = (x - mean) / std

    def loss(w):
        z = xs @ w[1:] + w[0]
        p = 1 / (1 + np.exp(-z))
        grad = np.concatenate([[np.sum(c * (p - y))], xs.T @ (c * (p - y))]) + 2 * l2 * np.r_[0, w[1:]]
        return float(np.sum(c * (np.logaddexp(0, z) - y * z)) + l2 * w[1:] @ w[1:]), grad

    w = minimize(loss, np.zeros(len(CONFIDENCE) + 1), jac=True, method="L-BFGS-B").x
    raw = w[1:] / std
    out = {name: round(float(v), 5) for name, v in zip(CONFIDENCE, raw)}
    out["bias"] = round(float(w[0] - (mean / std) @ w[1:]), 5)
    return out


@dataclass(frozen=True)
class Outcome:
    """What selection did with one question: whether its best candidate is right, and how sure it was."""

    corpus: str
    kind: str
    right: bool
    probability: float
    words: int = 0  # the best candidate's length
    widened_right: bool = False  # ... and its section's (ingest.answer_spans.section_around), quoted when unsure
    widened_words: int = 0


def outcomes(questions, weights: SelectionWeights, names) -> list[Outcome]:
    out = []
    for q in questions:
        confidence, ok, index = best_of(q, weights, names)
        best = q.found[index]
        section = section_around(q.views, best)
        source = q.passages[best.n - 1]["source"]
        out.append(Outcome(corpus_of(q), q.kind, ok, weights.probability(confidence), len(best.text.split()),
                           q.kind == "answerable" and is_right(section.text, source, q), len(section.text.split())))
    return out


def fit(questions, names) -> SelectionWeights:
    """Candidate weights, then the calibration of the best candidate's confidence, on the same questions."""
    weights = SelectionWeights(fit_weights(questions, names))
    return SelectionWeights(weights.weights, fit_calibration(questions, weights, names))


def out_of_fold(questions, names, folds: int = 5, seed: int = 0) -> list[Outcome]:
    """Each question's outcome under weights fitted without it: `folds` folds of base questions (a question's
    gold-withheld and cross-corpus twins stay in its fold)."""
    groups = sorted({q.id.split("#")[0] for q in questions})
    order = np.random.default_rng(seed).permutation(len(groups))
    fold_of = {g: int(order[i]) % folds for i, g in enumerate(groups)}
    out = []
    for k in range(folds):
        held = [q for q in questions if fold_of[q.id.split("#")[0]] == k]
        weights = fit([q for q in questions if fold_of[q.id.split("#")[0]] != k], names)
        out += outcomes(held, weights, names)
    return out


def _widened(o: Outcome, widen_below: float) -> tuple[bool, int]:
    """(right, words) of what selection quotes: the section when P(right) is below widen_below."""
    return (o.widened_right, o.widened_words) if o.probability < widen_below else (o.right, o.words)


def figures(outs: list[Outcome], threshold: float, widen_below: float = 0.0) -> dict:
    answerable = [o for o in outs if o.kind == "answerable"]
    answered = [_widened(o, widen_below) for o in answerable if o.probability >= threshold]
    others = [o for o in outs if o.kind != "answerable"]
    by_kind: dict[str, list[int]] = {}
    for o in others:
        by_kind.setdefault(o.kind, []).append(int(o.probability < threshold))
    share = lambda xs: round(sum(xs) / max(1, len(xs)), 4)  # noqa: E731
    return {"answerable": len(answerable),
            "right": round(sum(r for r, _ in answered) / max(1, len(answerable)), 4),
            "answer_words_p50": float(np.median([w for _, w in answered])) if answered else None,
            "answerable_refused": share([o.probability < threshold for o in answerable]),
            "unanswerable": len(others), "unanswerable_refused": share([o.probability < threshold for o in others]),
            "unanswerable_refused_by_kind": {k: share(v) for k, v in sorted(by_kind.items())},
            "best_right_if_answered": share([o.right for o in answerable])}


def by_corpus(outs: list[Outcome], threshold: float, widen_below: float = 0.0) -> dict:
    return {c: figures([o for o in outs if o.corpus == c], threshold, widen_below)
            for c in sorted({o.corpus for o in outs})}


def separation(outs: list[Outcome]) -> float | None:
    """ROC AUC of P(right) for the questions the documents answer against those they do not: the chance that an
    answerable question is surer than an unanswerable one (ties count half). 1.0: some threshold refuses every
    unanswerable question and no answerable one; 0.5: no better than chance. None without both kinds."""
    from scipy.stats import mannwhitneyu

    sure = [o.probability for o in outs if o.kind == "answerable"]
    unsure = [o.probability for o in outs if o.kind != "answerable"]
    if not sure or not unsure:
        return None
    return round(float(mannwhitneyu(sure, unsure).statistic) / (len(sure) * len(unsure)), 4)  # U / pairs = AUC


def choose_threshold(outs: list[Outcome], max_answerable_refused: float = 0.10) -> float:
    """The threshold that maximises the mean of (answerable questions answered right) and (unanswerable ones
    refused), among those that refuse at most `max_answerable_refused` of the answerable questions; every corpus
    weighs the same in both.

    Why a cap: FAQ-derived questions repeat their FAQ heading word for word, so selection is very sure of their
    answers and of little else, while questions a person words freely (acme) get less confidence whether or not
    the documents hold the answer. One threshold serves both only by trading one corpus's answerable questions
    against the other's unanswerable ones; unconstrained, that trade refused 75% of acme's answerable questions
    (5-fold, train+validation). Refusing a question the documents answer costs the user more than a cited quote
    they can check, so the cap binds first.
    """
    grid = [float(t) for t in np.linspace(0.01, 0.98, 98)]

    def averaged(t: float) -> dict:  # every corpus weighs the same
        per = list(by_corpus(outs, t).values())
        return {k: sum(m[k] for m in per) / len(per) for k in ("right", "answerable_refused", "unanswerable_refused")}

    table = {t: averaged(t) for t in grid}
    allowed = [t for t in grid if table[t]["answerable_refused"] <= max_answerable_refused + 1e-9] or grid[:1]
    best = max(allowed, key=lambda t: ((table[t]["right"] + table[t]["unanswerable_refused"]) / 2, -t))
    return round(best, 3)


def choose_widen_below(outs: list[Outcome], threshold: float, max_words_p50: float = 60) -> float:
    """The P(right) below which selection quotes the best candidate's section instead of the candidate: the one
    that answers the most answerable questions right (every corpus weighing the same) while every corpus's median
    answer stays within max_words_p50 words. A longer quote holds the answer more often when selection is unsure
    which sentences give it, and costs the reader more words; the median bounds that."""
    grid = [threshold] + [float(t) for t in np.linspace(0.05, 0.95, 19) if t > threshold]

    def averaged(u: float) -> tuple[float, bool]:
        per = list(by_corpus(outs, threshold, u).values())
        short = all(m["answer_words_p50"] is None or m["answer_words_p50"] <= max_words_p50 for m in per)
        return sum(m["right"] for m in per) / len(per), short

    table = {u: averaged(u) for u in grid}
    allowed = [u for u in grid if table[u][1]] or grid[:1]
    return round(max(allowed, key=lambda u: (round(table[u][0], 6), -u)), 3)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _parse_corpus(text: str) -> dict:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise SystemExit(f"--corpus takes QA:INDEX[:USERS], not {text!r}")
    corpus = {"qa": Path(parts[0]), "index": Path(parts[1])}
    if len(parts) == 3:
        corpus["users"] = Path(parts[2])
    return corpus


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", action="append", required=True, type=_parse_corpus, help="QA:INDEX[:USERS]")
    parser.add_argument("--out", type=Path, default=Path("app/selection_weights.json"))
    parser.add_argument("--cache", type=Path, help="save/load the collected features here (.npz, no pickles)")
    parser.add_argument("--model-scores", action="store_true", help="add the model's log-probability feature")
    parser.add_argument("--model", default=None, help="base model (default: the engine's)")
    parser.add_argument("--adapter", default=None, help="adapter folder, or none (default: none)")
    parser.add_argument("--max-answerable-refused", type=float, default=0.10,
                        help="the threshold refuses at most this share of the answerable questions, out of fold "
                             "(averaged over corpora)")
    parser.add_argument("--max-words-p50", type=float, default=60,
                        help="widening to the section stops where a corpus's median answer would pass this, out of fold")
    parser.add_argument("--model-candidates", type=int, default=6)
    parser.add_argument("--folds", type=int, default=5,
                        help="folds of the out-of-fold outcomes the threshold is chosen on")
    parser.add_argument("--model-sample", type=int, default=None,
                        help="score only this many answerable questions (and their withheld twins) with the model, "
                             "and fit on those: each costs a prefill on CPU")
    parser.add_argument("--card", type=Path, default=None,
                        help="also write the weights into this adapter folder's card (decoding.selection)")
    args = parser.parse_args(argv)
    if args.cache and args.cache.exists():
        questions = load_questions(args.cache)
    else:
        questions = collect(args.corpus)
        if args.cache:
            save_questions(questions, args.cache)
    questions = featurize(questions, embedder_of(args.corpus[0]["index"]))
    names = FEATURES
    model_candidates = args.model_candidates
    if args.model_scores:
        from app.generator import load_transformers_generator
        from finetune.models import DEFAULT_MODEL

        adapter = Path(args.adapter) if args.adapter and args.adapter != "none" else None
        generator = load_transformers_generator(args.model or DEFAULT_MODEL, True, adapter)
        if args.model_sample is not None:
            keep = set(sorted({q.id for q in questions if q.kind == "answerable"})[: args.model_sample])
            questions = [q for q in questions if q.id.split("#")[0] in keep or q.kind in ("unanswerable", "cross")]
        add_model_scores(questions, SelectionWeights(fit_weights(questions, names)), generator, model_candidates)
        if args.cache:
            save_questions(questions, args.cache)
        names = FEATURES + (MODEL_FEATURE,)
    # The threshold is chosen on out-of-fold outcomes (each question judged by weights fitted without it), so that
    # every train and validation question counts; then the weights are fitted on all of them.
    held_out = out_of_fold(questions, names, args.folds)
    threshold = choose_threshold(held_out, args.max_answerable_refused)
    widen_below = choose_widen_below(held_out, threshold, args.max_words_p50)
    weights = fit(questions, names)
    corpora = sorted({o.corpus for o in held_out})
    report = {"out of fold, by corpus": by_corpus(held_out, threshold, widen_below),
              "out of fold, by corpus, never widened": by_corpus(held_out, threshold),
              # how well any threshold could do: where this is near 1, only the threshold limits the refusals
              "out of fold, separation (ROC AUC, answerable vs not)": {
                  **{c: separation([o for o in held_out if o.corpus == c]) for c in corpora},
                  "all corpora together (one threshold serves them all)": separation(held_out)}}
    fitted_on = {"command": "python -m eval.selection_fit " + " ".join(sys.argv[1:] if argv is None else argv),
                 "data": [{"qa": str(c["qa"]), "sha256": _sha256(c["qa"])} for c in args.corpus],
                 "splits": {"weights and calibration": "train+validation",
                            "threshold": f"train+validation, {args.folds}-fold out of fold"},
                 "questions": {s: {k: sum(1 for q in questions if q.split == s and q.kind == k)
                                   for k in ("answerable", "unanswerable", "withheld", "cross")}
                               for s in ("train", "validation")},
                 "figures": report}
    final = SelectionWeights(weights.weights, weights.calibration, threshold, widen_below, model_candidates,
                             fitted_on=fitted_on)
    args.out.write_text(json.dumps(final.to_json(), indent=2) + "\n", encoding="utf-8")
    if args.card is not None:
        card_path = args.card / "card.json"
        card = json.loads(card_path.read_text(encoding="utf-8"))
        card.setdefault("decoding", {})["selection"] = final.to_json()
        card_path.write_text(json.dumps(card, indent=1, sort_keys=True), encoding="utf-8")
    print(json.dumps({"weights": final.weights, "calibration": final.calibration, "threshold": threshold,
                      "widen_below": widen_below,
                      **report}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
