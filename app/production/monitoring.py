"""What the admin "Monitoring" tab plots, computed from the stored answer records (app/audit.py), and its drift signal.

Aggregates (`timeline`, `confidence_by_adapter`) are plain functions of AuditRecords, so they are tested on known
records. A question counts as refused when the engine refused it; failed and interrupted questions are errors, not
refusals (the audit log keeps them apart: `error`, refusal_reason "interrupted").

Drift, for one adapter, this week's answers against the adapter's evaluation set:

- questions: every question is embedded (the engine's embedder; the audit log keeps the PII-redacted text) and
  matched to its nearest evaluation question by cosine. `question_shift` = (the mean nearest-neighbour cosine of the
  evaluation questions among themselves, leaving each one out) − (the mean nearest-neighbour cosine of this week's
  questions to the evaluation questions). Questions like those the adapter was evaluated on score about 0; questions
  on topics the set does not cover score higher. Flagged above QUESTION_SHIFT_THRESHOLD (0.10: with all-MiniLM-L6-v2
  random halves of examples/acme/qa.jsonl score -0.08 to -0.01 against each other, 20 unrelated questions 0.31).
- confidence: the two-sample Kolmogorov–Smirnov statistic D (scipy) between this week's confidences and those the
  engine gives the evaluation questions now (answered once per adapter, evaluation file and index generation, as a
  reader of every group, never logged). Flagged when D > CONFIDENCE_KS_THRESHOLD (0.25) and its p-value < 0.05.
- Neither is computed on fewer than MIN_SAMPLES questions (a week with a handful says nothing).

The evaluation set: the held-out questions ("validation" and "test" splits) of the training files the adapter's
card names (finetune/pipeline.py writes data.files and data.question_ids), else every question of those files;
for the base model, or a card without files, the JSONL file set in monitoring.json beside the users file
(`{"eval_set": "examples/acme/qa.jsonl"}`, editable in the tab).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from app.audit import AuditRecord
from ingest.errors import GroundworkError

HOUR = 3600.0
PERIODS = {"hour": (HOUR, 300.0), "day": (24 * HOUR, HOUR), "week": (7 * 24 * HOUR, 6 * HOUR)}  # span, bucket
WEEK = PERIODS["week"][0]
QUESTION_SHIFT_THRESHOLD = 0.10
CONFIDENCE_KS_THRESHOLD = 0.25
CONFIDENCE_P_VALUE = 0.05
MIN_SAMPLES = 20
MAX_QUESTIONS = 2000  # this week's questions embedded at most (the newest): the check stays a few seconds
SETTINGS_FILE = "monitoring.json"
HELD_OUT = ("validation", "test")
BASE = "base"  # the label of answers without an adapter


class MonitoringError(GroundworkError):
    """A monitoring setting or evaluation set that cannot be used."""


# --- aggregates ------------------------------------------------------------------------------------------------

@dataclass
class Bucket:
    start: float  # epoch seconds
    questions: int
    refused: int
    errors: int
    answers_per_hour: float
    refusal_rate: float | None  # refused / (questions - errors); None without such questions
    latency_p50: float | None
    latency_p95: float | None


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def timeline(records: Sequence[AuditRecord], now: float, period: str = "day") -> list[Bucket]:
    """The period ("hour", "day" or "week") before `now`, in buckets (5 min, 1 h, 6 h), oldest first."""
    span, size = PERIODS[period]
    start = now - span
    count = int(round(span / size))
    grouped: list[list[AuditRecord]] = [[] for _ in range(count)]
    for r in records:
        if start <= r.at < now:
            grouped[min(int((r.at - start) // size), count - 1)].append(r)
    buckets = []
    for i, rs in enumerate(grouped):
        errors = sum(1 for r in rs if _failed(r))
        judged = [r for r in rs if not _failed(r)]
        refused = sum(1 for r in judged if r.refused)
        latencies = [r.latency_s for r in judged if r.latency_s is not None]
        buckets.append(Bucket(start=start + i * size, questions=len(rs), refused=refused, errors=errors,
                              answers_per_hour=len(rs) * HOUR / size,
                              refusal_rate=refused / len(judged) if judged else None,
                              latency_p50=percentile(latencies, 50), latency_p95=percentile(latencies, 95)))
    return buckets


def _failed(record: AuditRecord) -> bool:
    return record.error or record.refusal_reason == "interrupted"


def adapter_label(record: AuditRecord) -> str:
    return record.adapter or BASE


def confidence_by_adapter(records: Sequence[AuditRecord]) -> dict[str, list[float]]:
    """Each adapter's confidences (answered and refused questions alike), adapters sorted by name."""
    out: dict[str, list[float]] = {}
    for r in records:
        if r.confidence is not None:
            out.setdefault(adapter_label(r), []).append(r.confidence)
    return dict(sorted(out.items()))


# --- drift -----------------------------------------------------------------------------------------------------

def nearest_cosines(queries: np.ndarray, reference: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
    """For each query row, its largest cosine with a reference row (rows L2-normalised)."""
    similarity = queries @ reference.T
    if leave_one_out:
        np.fill_diagonal(similarity, -np.inf)
    return similarity.max(axis=1)


def question_shift(recent: np.ndarray, reference: np.ndarray) -> float:
    """Mean leave-one-out nearest cosine within the reference − mean nearest cosine of recent to the reference."""
    if len(reference) < 2 or len(recent) == 0:
        raise MonitoringError("question drift needs at least 2 evaluation questions and 1 recent question")
    return float(nearest_cosines(reference, reference, leave_one_out=True).mean()
                 - nearest_cosines(recent, reference).mean())


def ks_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov: (D, p-value)."""
    from scipy.stats import ks_2samp

    result = ks_2samp(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    return float(result.statistic), float(result.pvalue)


@dataclass
class DriftReport:
    adapter: str
    eval_set: str  # where the evaluation questions came from
    eval_questions: int
    recent_questions: int
    question_shift: float | None = None
    question_flag: bool = False
    confidence_d: float | None = None
    confidence_p: float | None = None
    confidence_flag: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return self.question_flag or self.confidence_flag


def drift(adapter: str, eval_set: str, eval_embeddings: np.ndarray, eval_confidences: Sequence[float],
          recent_embeddings: np.ndarray, recent_confidences: Sequence[float],
          question_threshold: float = QUESTION_SHIFT_THRESHOLD, ks_threshold: float = CONFIDENCE_KS_THRESHOLD,
          min_samples: int = MIN_SAMPLES) -> DriftReport:
    """Both drift statistics and their flags (see the module's docstring)."""
    report = DriftReport(adapter, eval_set, len(eval_embeddings), len(recent_embeddings))
    if len(recent_embeddings) < min_samples:
        report.notes.append(f"only {len(recent_embeddings)} questions this week (at least {min_samples} needed)")
    else:
        report.question_shift = question_shift(recent_embeddings, eval_embeddings)
        report.question_flag = report.question_shift > question_threshold
    if len(recent_confidences) < min_samples or len(eval_confidences) < min_samples:
        report.notes.append(f"confidence: {len(recent_confidences)} scored answers this week and "
                            f"{len(eval_confidences)} on the evaluation set (at least {min_samples} each needed)")
    else:
        report.confidence_d, report.confidence_p = ks_test(recent_confidences, eval_confidences)
        report.confidence_flag = report.confidence_d > ks_threshold and report.confidence_p < CONFIDENCE_P_VALUE
    return report


# --- the evaluation set ----------------------------------------------------------------------------------------

def read_questions(path: Path, ids: set[str] | None = None) -> list[str]:
    """The `question` of every line of a JSONL file (only those whose `id` is in `ids`, when given)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise MonitoringError(f"cannot read the evaluation set {path}: {exc.strerror or exc}") from None
    questions = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise MonitoringError(f"{path}:{number}: not JSON") from None
        if isinstance(item, dict) and isinstance(item.get("question"), str) and (ids is None or item.get("id") in ids):
            questions.append(item["question"])
    return questions


def card_questions(card: dict) -> tuple[list[str], str] | None:
    """The held-out questions of the training files an adapter card names (all of them without splits)."""
    data = card.get("data") or {}
    files = [Path(f["path"]) for f in data.get("files", []) if isinstance(f, dict) and f.get("path")]
    files = [f for f in files if f.is_file()]
    if not files:
        return None
    split_ids = data.get("question_ids") or {}
    held_out = {i for split in HELD_OUT for i in split_ids.get(split, [])}
    questions = [q for f in files for q in read_questions(f, held_out or None)]
    names = ", ".join(str(f) for f in files)
    return (questions, f"{names} ({'held-out splits' if held_out else 'all questions'})") if questions else None


def load_settings(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def save_eval_set(folder: Path, eval_set: str) -> None:
    """Set monitoring.json's eval_set (atomically)."""
    path = Path(folder) / SETTINGS_FILE
    settings = {**load_settings(folder), "eval_set": eval_set}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def eval_questions(card: dict | None, fallback: str | None) -> tuple[list[str], str]:
    """(questions, where they came from): the adapter card's held-out questions, else the fallback file."""
    found = card_questions(card) if card else None
    if found:
        return found
    if not fallback:
        raise MonitoringError("no evaluation set: the adapter's card names no training file; set one "
                              f"(a JSONL file with a question field) in {SETTINGS_FILE}")
    questions = read_questions(Path(fallback))
    if len(questions) < 2:
        raise MonitoringError(f"the evaluation set {fallback} has fewer than 2 questions")
    return questions, fallback


# --- the evaluation set's confidences now ----------------------------------------------------------------------

_reference_cache: dict[tuple, list[float]] = {}


def reference_confidences(engine, questions: Sequence[str], adapter: str, source: str) -> list[float]:
    """The confidence the engine gives each evaluation question now with `adapter` ("base" = none), asked as a
    reader of every group and straight through the engine (not the audit log, not the metrics: nobody asked them).

    Cached per adapter, evaluation set and index generation: the set is answered once, not at every look."""
    from app.engine import AnswerOptions
    from app.users import User

    reader = engine.reader
    reader.refresh()
    key = (adapter, source, tuple(questions), getattr(reader, "generation", None))
    if key not in _reference_cache:
        groups = tuple(sorted({g for doc in reader.documents() for g in doc.groups}))
        user = User("monitoring-reference", "admin", groups)
        options = AnswerOptions(adapter="none" if adapter == BASE else adapter)
        answers = [engine.answer(q, user, options) for q in questions]
        _reference_cache[key] = [a.confidence for a in answers if a.confidence is not None]
    return _reference_cache[key]
