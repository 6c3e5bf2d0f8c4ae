"""Guardrail settings: which guards run, the blocked topics, the length limit, what users may switch off."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# Every guard by name, with the one-line description the UI shows next to a user's on/off switch.
GUARDS: dict[str, str] = {
    "pii": "Hide personal data (emails, phone numbers, card numbers, IBANs, national IDs) in questions and answers",
    "injection": "Leave out document sentences that try to give the assistant instructions or ask for passwords "
                 "(phishing is flagged to you); flag or refuse such questions",
    "blocked_topic": "Refuse questions about topics your administrator has blocked",
    "length": "Refuse questions longer than the configured limit",
}


@dataclass
class BlockedTopic:
    """A topic the assistant refuses to discuss, recognised by keywords in the question."""

    name: str  # shown to the user in the refusal, e.g. "layoffs"
    keywords: list[str]  # matched case-insensitively on word boundaries; a simple plural also matches

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("blocked topic: the name must be a non-empty string")
        if isinstance(self.keywords, str) or not self.keywords:
            raise ValueError(f"blocked topic '{self.name}': keywords must be a non-empty list of strings")
        self.keywords = [k for k in self.keywords]
        for keyword in self.keywords:
            if not isinstance(keyword, str) or not keyword.strip():
                raise ValueError(f"blocked topic '{self.name}': every keyword must be a non-empty string")

    def to_dict(self) -> dict:
        return {"name": self.name, "keywords": list(self.keywords)}

    @classmethod
    def from_dict(cls, data: dict) -> "BlockedTopic":
        unknown = set(data) - {"name", "keywords"}
        if unknown:
            raise ValueError(f"blocked topic: unknown setting '{sorted(unknown)[0]}'")
        return cls(name=data.get("name", ""), keywords=list(data.get("keywords") or []))


@dataclass
class GuardrailConfig:
    """Which guardrails run. Saved as JSON by the admin tab; build a new Guardrails after changing it."""

    pii: bool = True  # redact personal data in questions and answers
    injection: bool = True  # exclude passages that carry instructions for the model; flag/refuse such questions
    blocked_topics: list[BlockedTopic] = field(default_factory=list)  # refuse questions about these topics
    max_question_chars: int = 2000  # refuse longer questions; 0 turns the limit off
    user_may_disable: set[str] = field(default_factory=lambda: {"pii"})  # guards a user may switch off for themselves
    pii_allowlist: list[str] = field(default_factory=list)  # never redacted: "@acme.example" (an email domain and
    #                                                         its subdomains) or a literal value such as a
    #                                                         published hotline number (compared on digits/letters)

    def __post_init__(self) -> None:
        self.blocked_topics = [t if isinstance(t, BlockedTopic) else BlockedTopic.from_dict(t)
                               for t in self.blocked_topics]
        self.user_may_disable = set(self.user_may_disable)
        unknown = self.user_may_disable - set(GUARDS)
        if unknown:
            raise ValueError(f"user_may_disable: unknown guard '{sorted(unknown)[0]}' "
                             f"(known: {', '.join(GUARDS)})")
        if isinstance(self.max_question_chars, bool) or not isinstance(self.max_question_chars, int) \
                or self.max_question_chars < 0:
            raise ValueError("max_question_chars must be a whole number >= 0 (0 turns the limit off)")
        if isinstance(self.pii_allowlist, str):
            raise ValueError("pii_allowlist must be a list of strings")
        self.pii_allowlist = [str(v) for v in self.pii_allowlist if str(v).strip()]
        for name in ("pii", "injection"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")

    def to_dict(self) -> dict:
        """A JSON-ready dict (sets become sorted lists)."""
        return {
            "pii": self.pii,
            "injection": self.injection,
            "blocked_topics": [t.to_dict() for t in self.blocked_topics],
            "max_question_chars": self.max_question_chars,
            "user_may_disable": sorted(self.user_may_disable),
            "pii_allowlist": list(self.pii_allowlist),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "GuardrailConfig":
        """Read what to_dict wrote; missing settings take their defaults, unknown ones are an error."""
        if not isinstance(data, dict):
            raise ValueError("guardrail settings must be a JSON object")
        known = {"pii", "injection", "blocked_topics", "max_question_chars", "user_may_disable", "pii_allowlist"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown guardrail setting '{sorted(unknown)[0]}' (known: {', '.join(sorted(known))})")
        kwargs = dict(data)
        if "blocked_topics" in kwargs:
            kwargs["blocked_topics"] = [BlockedTopic.from_dict(t) for t in kwargs["blocked_topics"] or []]
        if "user_may_disable" in kwargs:
            value = kwargs["user_may_disable"]
            if isinstance(value, str):
                raise ValueError("user_may_disable must be a list of guard names")
            kwargs["user_may_disable"] = set(value or [])
        return cls(**kwargs)


def read_guardrails(path: Path) -> GuardrailConfig:
    """The settings saved in a guardrails.json file (GuardrailConfig.to_dict); a missing file means the defaults.

    The one place the file is parsed: `groundwork ask`, `groundwork eval` and the web UI's GuardrailsFile use it.
    """
    path = Path(path)
    if not path.exists():
        return GuardrailConfig()
    return GuardrailConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
