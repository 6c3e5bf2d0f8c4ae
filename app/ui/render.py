"""HTML for the chat: answers with clickable [n] citations, the sources panel, guardrail flags, refusals.

Everything that comes from a question, a model or a document is escaped here; the only markup in the page is
what these functions write. Markdown link and image syntax is neutralised too (the chatbot renders Markdown),
so a document that smuggles `[click](javascript:...)` into an answer shows it as plain text.
"""
from __future__ import annotations

import html
import re
from dataclasses import replace
from typing import Callable

from app import refusals
from app.engine import Answer, Citation
from app.guardrails import GUARDS, GuardrailEvent

GUARD_NAMES = {
    "pii": "Personal data",
    "injection": "Prompt injection",
    "blocked_topic": "Blocked topic",
    "length": "Length limit",
    "citations": "Citation check",
}
STAGE_WORDS = {"question": "in your question", "passage": "in a document passage", "answer": "in the answer"}
_MARKER = re.compile(r"\[(\d{1,3})\]")
_PLACEHOLDER = re.compile("\x00(\\d{1,3})\x01")
QUOTE_CHARS = 900  # longest quotation shown in a citation's pop-over


def text(value: str) -> str:
    """Escape text for the page: HTML, plus the characters Markdown would turn into links, images or code."""
    escaped = html.escape(value, quote=True)
    return (escaped.replace("[", "&#91;").replace("]", "&#93;").replace("`", "&#96;")
            .replace("*", "&#42;").replace("_", "&#95;").replace("\n", "<br>"))


def location(page: int | None, heading: str | None) -> str:
    if page:
        return f"page {page}"
    return heading.replace(" > ", " › ") if heading else ""


def _quote(passage: str) -> str:
    passage = " ".join(passage.split())
    return passage if len(passage) <= QUOTE_CHARS else passage[:QUOTE_CHARS].rsplit(" ", 1)[0] + " …"


def citation_marker(citation: Citation) -> str:
    """[n] that reveals the quoted passage, its document and page or heading when clicked (or focused)."""
    where = location(citation.page, citation.heading)
    return (f'<span class="gw-cite" tabindex="0" role="button" data-n="{citation.n}" '
            f'aria-label="Source {citation.n}: {html.escape(citation.source)}">'
            f'<span class="gw-cite-n">{citation.n}</span>'
            f'<span class="gw-pop" role="tooltip">'
            f'<span class="gw-pop-doc">{text(citation.source)}</span>'
            + (f'<span class="gw-pop-loc">{text(where)}</span>' if where else "")
            + f'<span class="gw-pop-quote">{text(_quote(citation.text))}</span></span></span>')


def redacted(result: Answer, redact: Callable[[str], str]) -> Answer:
    """The answer as the page may show it: `redact` (the PII guard the answer itself went through,
    Guardrails.redact) applied to everything of it that reaches the page: the answer (again: whatever the answer
    stage did), each cited passage (its
    pop-over and its Sources card), its heading and document name, and the guardrail flags' details.

    Call it on the final Answer before answer() and sources(); the passage is redacted whole, before _quote
    shortens it, so a cut cannot split a number into a piece the guard no longer recognises."""
    def _or_none(value: str | None) -> str | None:
        return redact(value) if value else value

    citations = [replace(c, text=redact(c.text), heading=_or_none(c.heading), source=redact(c.source))
                 for c in result.citations]
    flags = [replace(e, detail=redact(e.detail), source=_or_none(e.source)) for e in result.flags]
    return replace(result, answer=redact(result.answer), citations=citations, flags=flags,
                   searched_for=_or_none(result.searched_for))


def streaming(partial: str) -> str:
    """The answer as it is being written: plain escaped text, [n] shown as badges, and a cursor."""
    body = _PLACEHOLDER.sub(lambda m: f'<span class="gw-cite-n gw-pending">{m.group(1)}</span>',
                            text(_unmark(partial)))
    return f'<div class="gw-answer gw-streaming">{body}<span class="gw-cursor"></span></div>'


def _unmark(value: str) -> str:
    """[n] -> a placeholder that survives text() (which escapes brackets)."""
    return _MARKER.sub(lambda m: f"\x00{m.group(1)}\x01", value.replace("\x00", "").replace("\x01", ""))


def thinking(note: str = "Searching your documents…") -> str:
    return f'<div class="gw-answer gw-thinking"><span class="gw-dots"><i></i><i></i><i></i></span>{text(note)}</div>'


def answer(result: Answer) -> str:
    """The final answer: verified text with citation pop-overs, or a refusal state; then flags and a footer."""
    if result.refused:
        body = _refusal(result)
    else:
        by_n = {c.n: c for c in result.citations}
        escaped = text(_unmark(result.answer))

        def marker(match: re.Match) -> str:
            citation = by_n.get(int(match.group(1)))
            return citation_marker(citation) if citation else ""

        escaped = _PLACEHOLDER.sub(marker, escaped)
        body = f'<div class="gw-answer">{escaped}</div>'
    return body + searched_for(result) + flags(result.flags) + footer(result)


def searched_for(result: Answer) -> str:
    """The standalone query a follow-up was rewritten into (made from the user's own words): what was searched."""
    if not result.searched_for:
        return ""
    return (f'<div class="gw-searched" title="Your question depends on the conversation so far: the documents '
            f'were searched with this instead">Searched for: <q>{text(result.searched_for)}</q></div>')


def _refusal(result: Answer) -> str:
    if result.refusal_reason == refusals.GUARDRAIL:
        return ('<div class="gw-state gw-blocked"><div class="gw-state-title">Blocked by a guardrail</div>'
                f'<div>{text(result.answer)}</div></div>')
    why = refusals.explain(result.refusal_reason)
    return ('<div class="gw-state gw-notfound"><div class="gw-state-title">Not in the documents</div>'
            '<div>I could not find this in the documents you can access.</div>'
            + (f'<div class="gw-state-why">{text(why)}</div>' if why else "") + "</div>")


def flags(events: list[GuardrailEvent]) -> str:
    """One line per thing a guardrail did to this exchange: what, where and why."""
    if not events:
        return ""
    items = []
    for event in events:
        guard = GUARD_NAMES.get(event.guard, event.guard)
        where = STAGE_WORDS.get(event.stage, event.stage)
        if event.source:
            where += f" ({event.source})"
        action = event.action
        classes = f"gw-flag gw-flag-{_slug(action)} gw-guard-is-{_slug(event.guard)}"
        items.append(f'<li class="{classes}"><b>{text(guard)}</b> · {text(action)} {text(where)} — '
                     f'{text(event.detail)}</li>')
    return f'<ul class="gw-flags" aria-label="Guardrails applied">{"".join(items)}</ul>'


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "", value.lower())


def footer(result: Answer) -> str:
    model = result.model + (f" + {result.adapter}" if result.adapter else "")
    if result.route and result.route != "default":  # the routing gate chose the adapter (app.production.routes)
        model += f" · route {result.route}"
    timing = []
    if "first_token" in result.timings:
        timing.append(f"first token {result.timings['first_token']:.1f} s")
    if "total" in result.timings:
        timing.append(f"{result.timings['total']:.1f} s")
    return f'<div class="gw-meta">{text(" · ".join([model, *timing]))}</div>'


def sources(result: Answer | None) -> str:
    """The sources panel: only the passages the answer cites, in citation order."""
    if result is None:
        return ('<div class="gw-sources-empty">Sources of the latest answer appear here: only the passages it '
                'cites, with their document and page or heading.</div>')
    if not result.citations:
        note = ("The latest answer cites no passage." if not result.refused
                else "No sources: the latest question was not answered from the documents.")
        return f'<div class="gw-sources-empty">{note}</div>'
    cards = []
    for c in result.citations:
        where = location(c.page, c.heading)
        cards.append(
            f'<div class="gw-source" id="gw-src-{c.n}" data-source="{html.escape(c.source)}">'
            f'<div class="gw-source-head"><span class="gw-cite-n">{c.n}</span>'
            f'<span class="gw-source-doc">{text(c.source)}</span></div>'
            + (f'<div class="gw-source-loc">{text(where)}</div>' if where else "")
            + f'<blockquote>{text(_quote(c.text))}</blockquote>'
            f'<div class="gw-source-score">relevance {c.score:.2f}</div></div>')
    return f'<div class="gw-sources">{"".join(cards)}</div>'


def user_message(question: str) -> str:
    return text(question)


def guard_summary(on: list[str], switchable: list[str], topics: list[str], max_chars: int) -> str:
    """Which filters apply to the conversation (the user's own switches are below this)."""
    rows = []
    for name, description in GUARDS.items():
        state = "on" if name in on else "off"
        extra = ""
        if name == "blocked_topic" and topics:
            extra = f" ({', '.join(topics)})"
        if name == "length" and max_chars:
            extra = f" (up to {max_chars} characters)"
        mine = " · you may switch it off" if name in switchable else ""
        rows.append(f'<li class="gw-guard gw-guard-{state}" data-guard="{name}"><b>{text(GUARD_NAMES[name])}</b> '
                    f'<span class="gw-guard-state">{state}</span>{text(extra)}{text(mine)}'
                    f'<div class="gw-guard-desc">{text(description)}</div></li>')
    return f'<ul class="gw-guards">{"".join(rows)}</ul>'


def failure(message: str) -> str:
    return ('<div class="gw-state gw-error"><div class="gw-state-title">Something went wrong</div>'
            f'<div>{text(message)}</div><div class="gw-state-why">Try again; if it persists, tell your '
            'administrator.</div></div>')
