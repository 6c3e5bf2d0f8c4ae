"""What a guardrail did, as a small record the engine attaches to an answer's flags."""
from __future__ import annotations

from dataclasses import asdict, dataclass

STAGES = ("question", "passage", "answer")
ACTIONS = ("redacted", "flagged", "excluded", "blocked")


@dataclass(frozen=True)
class GuardrailEvent:
    """One thing one guard did at one stage. `detail` is one readable line and never holds the PII itself."""

    guard: str  # "pii" | "injection" | "blocked_topic" | "length"; the engine adds "citations" and "decoding"
    stage: str  # "question" | "passage" | "answer"; the engine's "decoding" event has "generate"
    action: str  # "redacted" | "flagged" | "excluded" | "blocked"; the engine's "decoding" event has "degraded"
    detail: str  # e.g. "redacted 1 email address, 1 card number"
    source: str | None = None  # the passage's source document, for passage events

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GuardrailEvent":
        return cls(guard=data["guard"], stage=data["stage"], action=data["action"], detail=data["detail"],
                   source=data.get("source"))
