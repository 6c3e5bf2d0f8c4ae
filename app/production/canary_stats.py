"""Live figures of a canary's two arms, and how sure we can be of their difference.

Each arm is tallied from the audit log (one record per question, with the arm the asker fell in) and from the
feedback on stored turns (the stored Answer keeps its arm). Differences are candidate − control, each with a 95%
confidence interval:

- rates (refusals, citation-check withdrawals, guardrail blocks, errors, 👎 among rated answers): Newcombe's hybrid
  score interval for a difference of two independent proportions (Newcombe 1998, method 10: the Wilson score
  interval of each rate, combined). It stays inside [-1, 1] and behaves with 0 or n events, where the plain Wald
  interval does not.
- latencies (p50, p95, first-token p50): a percentile bootstrap of the difference of the two quantiles (1,000
  resamples of each arm, fixed seed, so the same records always give the same interval).

What counts: a question whose reader went away mid-answer ("interrupted") says nothing about the adapter and is
left out; an error is a question whose answering failed; a refusal is the assistant declining to answer (not an
error, not a guardrail block: a block happens before the adapter is asked, whatever the arm).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
ERROR, INTERRUPTED = "error", "interrupted"  # refusal_reason of failed / abandoned questions (conversations.service)

# name -> (label, numerator field, denominator field); every rate a guard rule may name
RATES: dict[str, tuple[str, str, str]] = {
    "refusal_rate": ("Refusals", "refusals", "answers"),
    "withdrawal_rate": ("Citation-check withdrawals", "withdrawn", "answers"),
    "block_rate": ("Guardrail blocks", "blocked", "answers"),
    "error_rate": ("Errors", "errors", "answers"),
    "thumbs_down_rate": ("Thumbs down (of rated)", "thumbs_down", "rated"),  # words: not every font has 👎
}
# name -> (label, sample field, quantile)
LATENCIES: dict[str, tuple[str, str, float]] = {
    "latency_p50": ("Latency p50 (s)", "latencies", 0.5),
    "latency_p95": ("Latency p95 (s)", "latencies", 0.95),
    "first_token_p50": ("First token p50 (s)", "first_tokens", 0.5),
}


@dataclass
class ArmTally:
    """Counts of one arm; `add` one audit record, `rate` one answer's 👍/👎."""

    answers: int = 0
    refusals: int = 0
    withdrawn: int = 0
    blocked: int = 0
    errors: int = 0
    rated: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    latencies: list[float] = field(default_factory=list)
    first_tokens: list[float] = field(default_factory=list)

    def add(self, record) -> None:
        """One audit record (app.audit.AuditRecord; columns the log lacks count as absent)."""
        reason = record.refusal_reason
        if reason == INTERRUPTED:
            return
        self.answers += 1
        error = bool(getattr(record, "error", False)) or reason == ERROR
        blocked = any(g.endswith(":blocked") for g in record.guardrails)
        self.errors += error
        self.blocked += blocked
        self.refusals += bool(record.refused) and not error and not blocked
        self.withdrawn += bool(getattr(record, "withdrawn", False))
        if not error and record.latency_s is not None:
            self.latencies.append(float(record.latency_s))
        first_token = getattr(record, "first_token_s", None)
        if not error and first_token is not None:
            self.first_tokens.append(float(first_token))

    def rate(self, rating: int) -> None:
        self.rated += 1
        self.thumbs_up += rating > 0
        self.thumbs_down += rating < 0

    def proportion(self, metric: str) -> tuple[int, int]:
        """(events, denominator) of a rate in RATES."""
        _, events, total = RATES[metric]
        return getattr(self, events), getattr(self, total)

    def value(self, metric: str) -> float | None:
        if metric in RATES:
            events, total = self.proportion(metric)
            return events / total if total else None
        _, sample, q = LATENCIES[metric]
        values = getattr(self, sample)
        return float(np.quantile(values, q)) if values else None


def wilson(events: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion."""
    if total <= 0:
        return 0.0, 1.0
    p = events / total
    centre = p + z * z / (2 * total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    scale = 1 + z * z / total
    return max(0.0, (centre - half) / scale), min(1.0, (centre + half) / scale)


def newcombe(events1: int, total1: int, events2: int, total2: int, z: float = Z95) -> tuple[float, float]:
    """95% interval of p1 − p2 (Newcombe's hybrid score method); (nan, nan) when an arm has no observations."""
    if total1 <= 0 or total2 <= 0:
        return math.nan, math.nan
    p1, p2 = events1 / total1, events2 / total2
    l1, u1 = wilson(events1, total1, z)
    l2, u2 = wilson(events2, total2, z)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def bootstrap_quantile_difference(a: list[float], b: list[float], q: float = 0.5,
                                  resamples: int = BOOTSTRAP_RESAMPLES,
                                  seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95% percentile-bootstrap interval of quantile(a) − quantile(b); (nan, nan) when either is empty."""
    if not a or not b:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    differences = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(len(x), len(y)))  # bounded memory on long canaries
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        qa = np.quantile(x[rng.integers(0, len(x), (rows, len(x)))], q, axis=1)
        qb = np.quantile(y[rng.integers(0, len(y), (rows, len(y)))], q, axis=1)
        differences[start:start + rows] = qa - qb
    low, high = np.quantile(differences, [0.025, 0.975])
    return float(low), float(high)


@dataclass
class Comparison:
    """One metric of the two arms side by side."""

    metric: str
    label: str
    candidate: float | None
    control: float | None
    candidate_counts: str  # e.g. "12/180" or "n=180"
    control_counts: str
    difference: float | None  # candidate − control
    interval: tuple[float, float]  # 95% CI of the difference
    test: str


def compare(candidate: ArmTally, control: ArmTally, with_latency_intervals: bool = True) -> list[Comparison]:
    """Every rate and latency of the two arms, with the difference and its interval."""
    rows = []
    for metric, (label, _, _) in RATES.items():
        e1, n1 = candidate.proportion(metric)
        e2, n2 = control.proportion(metric)
        v1, v2 = candidate.value(metric), control.value(metric)
        rows.append(Comparison(metric, label, v1, v2, f"{e1}/{n1}", f"{e2}/{n2}",
                               None if v1 is None or v2 is None else v1 - v2, newcombe(e1, n1, e2, n2),
                               "Newcombe hybrid score"))
    for metric, (label, sample, q) in LATENCIES.items():
        a, b = getattr(candidate, sample), getattr(control, sample)
        v1, v2 = candidate.value(metric), control.value(metric)
        interval = bootstrap_quantile_difference(a, b, q) if with_latency_intervals else (math.nan, math.nan)
        rows.append(Comparison(metric, label, v1, v2, f"n={len(a)}", f"n={len(b)}",
                               None if v1 is None or v2 is None else v1 - v2, interval,
                               f"bootstrap of the p{round(q * 100)} difference, {BOOTSTRAP_RESAMPLES} resamples"))
    return rows


def format_value(metric: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.1%}" if metric in RATES else f"{value:.2f}"


def format_difference(metric: str, row: Comparison) -> str:
    """"+3.2 pts [-1.0, +7.9]" for rates, "+0.12 s [+0.01, +0.20]" for latencies."""
    if row.difference is None:
        return "–"
    low, high = row.interval
    if metric in RATES:
        text = f"{row.difference * 100:+.1f} pts"
        return text if math.isnan(low) else f"{text} [{low * 100:+.1f}, {high * 100:+.1f}]"
    text = f"{row.difference:+.2f} s"
    return text if math.isnan(low) else f"{text} [{low:+.2f}, {high:+.2f}]"


TABLE_HEADERS = ["Metric", "Candidate", "Control", "Difference (95% CI)", "Test"]


def table_rows(rows: list[Comparison]) -> list[list[str]]:
    """The comparison as rows of text: metric, candidate "value (counts)", control, difference [CI], test."""
    return [[r.label, f"{format_value(r.metric, r.candidate)} ({r.candidate_counts})",
             f"{format_value(r.metric, r.control)} ({r.control_counts})", format_difference(r.metric, r), r.test]
            for r in rows]
