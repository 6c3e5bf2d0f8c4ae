"""Guardrails of the answering engine: PII redaction, prompt-injection filtering, blocked topics, length limit.

Each guard can be switched on or off in GuardrailConfig and reports what it did as GuardrailEvents.

    guards = Guardrails(GuardrailConfig(blocked_topics=[BlockedTopic("layoffs", ["layoff", "redundancy"])]))
    checked = guards.check_question(question, disabled={"pii"})      # -> QuestionCheck(text, events, refusal)
    passages, events = guards.filter_passages(passages, text_of=..., source_of=...)
    answer, events = guards.check_answer(answer_text)
"""
from app.guardrails.config import GUARDS, BlockedTopic, GuardrailConfig
from app.guardrails.core import INJECTION_REFUSAL, Guardrails, QuestionCheck
from app.guardrails.events import GuardrailEvent
from app.guardrails.injection import InjectionScan, scan as scan_injection
from app.guardrails.pii import PiiMatch, Redaction, find_pii, redact

__all__ = [
    "GUARDS",
    "INJECTION_REFUSAL",
    "BlockedTopic",
    "GuardrailConfig",
    "GuardrailEvent",
    "Guardrails",
    "InjectionScan",
    "PiiMatch",
    "QuestionCheck",
    "Redaction",
    "find_pii",
    "redact",
    "scan_injection",
]
