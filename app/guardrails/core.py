"""The Guardrails facade the engine calls at its three stages: question, passages, answer.

Question order: length limit (refuse; nothing else is analysed, and the returned text keeps only the first
max_question_chars characters), prompt injection (flag at score 3, refuse at 4), blocked topics (refuse), PII
redaction. PII is redacted even when the question is refused, so a logged question never holds personal data.
When several guards refuse, the first in that order gives the message.

A user's `disabled` set is honoured only for guards listed in `config.user_may_disable`; other names in it are
ignored (no event: the UI only offers the allowed switches, so anything else is a stale or forged request,
logged at debug level). Guards switched off in the config are off for everyone.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from app.guardrails import injection, pii
from app.guardrails.config import GuardrailConfig
from app.guardrails.events import GuardrailEvent
from app.guardrails.topics import TopicMatcher

log = logging.getLogger(__name__)

T = TypeVar("T")

INJECTION_REFUSAL = ("I can't help with that: your message looks like an attempt to change or reveal my "
                     "instructions. Please ask a question about your documents.")


PHISHING_WARNING = ("possible phishing: {source} asks readers to send or enter passwords, sign-in or verification "
                    "codes or card numbers; it was left out of the answer. Do not send them; report the document to "
                    "your IT security team.")


@dataclass
class QuestionCheck:
    """The question as the engine should use it (PII-redacted), what the guards did, and a refusal if any."""

    text: str
    events: list[GuardrailEvent] = field(default_factory=list)
    refusal: str | None = None  # the message to show instead of an answer

    @property
    def refused(self) -> bool:
        return self.refusal is not None

    def to_dict(self) -> dict:
        return {"text": self.text, "events": [e.to_dict() for e in self.events], "refusal": self.refusal}


class Guardrails:
    """Applies a GuardrailConfig. Stateless after construction and safe to share between threads."""

    def __init__(self, config: GuardrailConfig | None = None) -> None:
        self.config = config or GuardrailConfig()
        self._topics = TopicMatcher(self.config.blocked_topics)
        self._allowlist = pii.Allowlist(self.config.pii_allowlist)

    def active(self, disabled: Iterable[str] = frozenset()) -> frozenset[str]:
        """The guards that run for a user who asked to switch off `disabled`."""
        requested = set(disabled or ())
        refused = requested - self.config.user_may_disable
        if refused:
            log.debug("ignoring request to disable guard(s) %s: not allowed by the administrator", sorted(refused))
        off = requested & self.config.user_may_disable
        on = set()
        if self.config.pii:
            on.add("pii")
        if self.config.injection:
            on.add("injection")
        if self.config.blocked_topics:
            on.add("blocked_topic")
        if self.config.max_question_chars > 0:
            on.add("length")
        return frozenset(on - off)

    # ------------------------------------------------------------------ question

    def check_question(self, text: str, disabled: Iterable[str] = frozenset()) -> QuestionCheck:
        """Length limit, injection, blocked topics, then PII redaction. See the module docstring."""
        active = self.active(disabled)
        events: list[GuardrailEvent] = []
        refusal: str | None = None

        limit = self.config.max_question_chars
        if "length" in active and len(text) > limit:
            events.append(GuardrailEvent("length", "question", "blocked",
                                         f"question is {len(text):,} characters; the limit is {limit:,}"))
            refusal = f"Your question is {len(text):,} characters long; the limit is {limit:,}. Please shorten it."
            # keep only the start (for logs), cut before a value that the cut may have split in half
            text = text[:limit]
            text = text[:pii.safe_prefix_length(text)] + "…"
        else:
            if "injection" in active:
                found = injection.scan(text)
                if found.score >= injection.REFUSE_THRESHOLD:
                    events.append(GuardrailEvent("injection", "question", "blocked",
                                                 f"refused: {found.describe()} (score {found.score})"))
                    refusal = INJECTION_REFUSAL
                elif found.score >= injection.EXCLUDE_THRESHOLD:
                    events.append(GuardrailEvent("injection", "question", "flagged",
                                                 f"{found.describe()} (score {found.score}); answered from the "
                                                 "documents only"))
            if "blocked_topic" in active:
                hit = self._topics.match(text)
                if hit:
                    topic, keyword = hit
                    events.append(GuardrailEvent("blocked_topic", "question", "blocked",
                                                 f"blocked topic '{topic.name}' (keyword '{keyword}')"))
                    refusal = refusal or (f"I can't help with questions about {topic.name}. "
                                          "This topic is blocked by your administrator.")

        if "pii" in active:
            redaction = pii.redact(text, self._allowlist)
            if redaction.total:
                text = redaction.text
                events.append(GuardrailEvent("pii", "question", "redacted", redaction.summary()))
        return QuestionCheck(text=text, events=events, refusal=refusal)

    # ------------------------------------------------------------------ passages

    def filter_passages(self, passages: list[T], text_of: Callable[[T], str], source_of: Callable[[T], str],
                        disabled: Iterable[str] = frozenset(),
                        with_text: Callable[[T, str], T] | None = None) -> tuple[list[T], list[GuardrailEvent]]:
        """Leave out what in the passages speaks to the model or asks for credentials.

        With `with_text` (passage, new text) -> passage, only the offending sentences are cut out of a passage
        and the rest of it is kept (an injected line cannot hide the real answer beside it); the passage is
        dropped whole when the rest is not clean. Without it, a passage with an offending sentence is dropped.
        One 'excluded' event per passage touched; a passage asking for passwords or codes also gets a 'flagged'
        event that warns the asker (possible phishing).
        """
        if "injection" not in self.active(disabled):
            return list(passages), []
        kept: list[T] = []
        events: list[GuardrailEvent] = []
        for passage in passages:
            found = injection.scan_passage(text_of(passage))
            if not found.flagged:
                kept.append(passage)
                continue
            source = source_of(passage)
            if found.dropped or with_text is None:
                events.append(GuardrailEvent("injection", "passage", "excluded",
                                             f"excluded a passage of {source}: {found.describe()} "
                                             f"(score {found.score})", source))
            else:
                kept.append(with_text(passage, found.cleaned))
                n = len(found.offending)
                events.append(GuardrailEvent("injection", "passage", "excluded",
                                             f"left out {n} sentence{'s' if n > 1 else ''} of a passage of {source} "
                                             f"(the rest of it was used): {found.describe()} (score {found.score})",
                                             source))
            if found.phishing:
                events.append(GuardrailEvent("injection", "passage", "flagged", PHISHING_WARNING.format(source=source),
                                             source))
        return kept, events

    # ------------------------------------------------------------------ answer

    def check_answer(self, text: str, disabled: Iterable[str] = frozenset()) -> tuple[str, list[GuardrailEvent]]:
        """PII redaction of the model's (final) answer."""
        if "pii" not in self.active(disabled):
            return text, []
        redaction = pii.redact(text, self._allowlist)
        if not redaction.total:
            return text, []
        return redaction.text, [GuardrailEvent("pii", "answer", "redacted", redaction.summary())]

    def partial_answer(self, text: str, disabled: Iterable[str] = frozenset()) -> str:
        """What to show of an answer that is still streaming: redacted, and without a trailing piece that may
        still grow into personal data (a half-written phone or card number would otherwise flash on screen
        before the full number can be recognised). Call check_answer on the final text."""
        if "pii" not in self.active(disabled):
            return text
        return self.check_answer(text[:pii.safe_prefix_length(text)], disabled)[0]

    def redact(self, text: str, disabled: Iterable[str] = frozenset()) -> str:
        """PII redaction alone, for other text shown to users (e.g. source snippets), under the same rules."""
        return self.check_answer(text, disabled)[0]
