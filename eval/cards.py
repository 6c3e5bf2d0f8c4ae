"""Evaluation figures in adapter cards: a RAG run with a registry adapter (NAME@vN) adds its headline metrics to
that version's card, so `groundwork adapters show` tells how the version scored."""
from __future__ import annotations

from pathlib import Path

CARD_METRICS = ("grounded_accuracy", "grounded_accuracy_strict", "correct", "correct_strict", "citation_precision",
                "citation_recall", "answerable_refused", "unanswerable_refused", "leaked_passages")


def record_in_adapter_card(summary: dict, adapters_dir: Path, qa: Path, split: str) -> bool:
    """Add the run's figures to the card of the adapter version it used; False when there is none to update
    (not a RAG run, no registry adapter, or the version was removed meanwhile: summary.json keeps the figures)."""
    from finetune.adapters import AdapterError, AdapterRegistry

    used = summary.get("adapter_used")
    if summary.get("mode") != "rag" or not used or "@" not in str(used):
        return False
    figures = {k: summary["metrics"].get(k) for k in CARD_METRICS}
    try:
        AdapterRegistry(adapters_dir).record_evaluation(used, f"{qa.name} ({split}, {summary.get('index_dir')})",
                                                        {**figures, "questions": len(summary.get("ids", []))})
    except AdapterError:
        return False
    return True
