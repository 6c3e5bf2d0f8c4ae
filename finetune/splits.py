"""Deterministic train / validation / test split of a QA set by question id.

The split depends only on the id (a SHA-256 bucket), so it never changes when questions are added,
removed or reordered, and the evaluation can pick the same held-out questions the training never saw.
"""
from __future__ import annotations

import hashlib

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.4, 0.1, 0.5)  # train, validation, test: half the questions are held out


def split_of(question_id: str, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> str:
    """Which split a question id falls in."""
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    bucket = int.from_bytes(hashlib.sha256(question_id.encode("utf-8")).digest()[:8], "big") / 2**64
    if bucket < fractions[0]:
        return "train"
    if bucket < fractions[0] + fractions[1]:
        return "validation"
    return "test"


def split_ids(question_ids, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> dict[str, list[str]]:
    """The ids of each split, in their original order."""
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    for qid in question_ids:
        out[split_of(qid, fractions)].append(qid)
    return out
