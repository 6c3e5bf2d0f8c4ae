"""Rated answers as a QA set in the eval format (finetune.data.QA_FIELDS), for `groundwork eval --qa` and
`groundwork finetune --data`.

- 👍 on an answer: the answer (citation markers removed) is the gold answer, its first cited passage the gold
  passage and that passage's document the gold source. 👍 on a "not in the documents" refusal: an unanswerable
  question (the model should refuse it again). Refusals by a guardrail or failures are not questions of the
  documents and are left out.
- An admin's correction (`groundwork feedback correct`), usually of a 👎: the corrected answer is the gold
  answer, from the source the admin named (else the answer's first cited document): a training example.
- 👎 without a correction: nobody knows the right answer yet. It is NOT training data; it goes to a separate
  review set (id and question only: eval runs it and shows what is answered now, for a person to judge).

Only documents open to the training groups are used, as `groundwork finetune --groups` does: an example whose
gold document those groups cannot read is left out (and counted), so the export never carries restricted text
into a training or evaluation file. Questions and answers are PII-redacted on the way out.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from app import refusals
from app.conversations.store import FeedbackRecord
from app.guardrails.pii import redact

_MARKER = re.compile(r"\s*\[\d+\]")
NOT_QUESTIONS = (refusals.GUARDRAIL, "error", "interrupted")  # refusal reasons that say nothing of the documents


@dataclass
class FeedbackExport:
    """The QA items (dicts of QA_FIELDS) and what was left out, by turn id."""

    items: list[dict] = field(default_factory=list)  # answered and corrected: eval and training
    review: list[dict] = field(default_factory=list)  # 👎 without a correction: eval only, for a person to judge
    left_out: dict[int, str] = field(default_factory=dict)


def _item_id(turn_id: int) -> str:
    return f"feedback-{turn_id}"


def _clean(text: str) -> str:
    return " ".join(redact(_MARKER.sub("", text)).text.split())


def feedback_items(records: Iterable[FeedbackRecord], readable: set[str]) -> FeedbackExport:
    """Sort rated turns into QA items, review items and left-out turns. `readable`: the sources of the documents
    the training groups may read."""
    out = FeedbackExport()
    for record in records:
        answer = record.answer
        question = _clean(record.question)
        if record.correction:
            source = record.correction_source or next((c.source for c in answer.citations), None)
            if not source:
                out.left_out[record.turn_id] = "corrected without a source document (give --source)"
                continue
            if source not in readable:
                out.left_out[record.turn_id] = f"its document {source} is not open to the training groups"
                continue
            passage = next((p.text for p in answer.retrieved if p.source == source), None)
            out.items.append({"id": _item_id(record.turn_id), "question": question,
                              "answer": _clean(record.correction), "gold_passage": passage, "gold_source": source,
                              "answerable": True})
        elif record.rating < 0:
            out.review.append({"id": _item_id(record.turn_id), "question": question, "answerable": True})
        elif answer.refused:
            if answer.refusal_reason in NOT_QUESTIONS:
                out.left_out[record.turn_id] = f"refused ({answer.refusal_reason}), not a question of the documents"
                continue
            out.items.append({"id": _item_id(record.turn_id), "question": question, "answerable": False})
        elif answer.citations:
            first = answer.citations[0]
            if first.source not in readable:
                out.left_out[record.turn_id] = f"its document {first.source} is not open to the training groups"
                continue
            out.items.append({"id": _item_id(record.turn_id), "question": question, "answer": _clean(answer.answer),
                              "gold_passage": " ".join(first.text.split()), "gold_source": first.source,
                              "answerable": True})
        else:
            out.left_out[record.turn_id] = "the answer cites no document"
    return out


def write_jsonl(items: list[dict], path: Path) -> None:
    """One JSON object per line, fields without a value left out (the QA format's "absent")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({k: v for k, v in item.items() if v is not None}, ensure_ascii=False) for item in items]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def review_path(out: Path) -> Path:
    """Where the review set goes by default: feedback.jsonl → feedback.review.jsonl."""
    return out.with_name(f"{out.stem}.review{out.suffix or '.jsonl'}")
