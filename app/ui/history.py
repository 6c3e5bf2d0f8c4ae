"""The conversation sidebar: a user's conversations (newest first) and a stored conversation shown again.

Conversation ids reach the server from the browser (the sidebar's value, or a forged call to the endpoint), so
nothing here trusts one: every read goes through Conversations, which answers another user's conversation
exactly like a missing one (ConversationNotFound). A reopened conversation is drawn by the same render functions
as a live answer, after the same redaction, so it looks as it did when it was asked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import gradio as gr

from app.conversations.store import ConversationSummary, StoredTurn
from app.engine import Answer
from app.ui import render

TITLE_CHARS = 60  # longer first questions are shortened in the list (the whole question is in the chat)
NOT_FOUND = "Conversation not found."  # the same for a missing id and someone else's: ids leak nothing
EMPTY_NOTE = "No conversations yet: your questions and their answers are kept here."
RATINGS = {1: "Like", -1: "Dislike"}  # stored rating <-> the chatbot's feedback option


def title(text: str) -> str:
    """One line, at most about TITLE_CHARS characters (cut at a word)."""
    text = " ".join(text.split())
    if len(text) <= TITLE_CHARS:
        return text
    cut = text[:TITLE_CHARS].rsplit(" ", 1)[0] or text[:TITLE_CHARS]
    return cut + " …"


def choices(summaries: Sequence[ConversationSummary]) -> list[tuple[str, str]]:
    """(label, id) for the sidebar's radio list, in the order given (the store's: newest first)."""
    return [(title(s.title) or "(untitled)", s.id) for s in summaries]


def sidebar_update(summaries: Sequence[ConversationSummary], open_id: str | None) -> dict:
    """The sidebar's new choices, with the open conversation selected (none when it is not among them)."""
    listed = choices(summaries)
    value = open_id if any(open_id == cid for _, cid in listed) else None
    return gr.update(choices=listed, value=value, info="" if listed else EMPTY_NOTE)


@dataclass
class Restored:
    """A stored conversation as the chat shows it."""

    messages: list[dict]  # the chatbot's messages: question, answer, question, answer, ...
    turn_ids: list[int | None]  # per message: the turn id of an answer (for feedback), None for a question
    feedback: list[str | None]  # per answer: "Like", "Dislike" or None, for the chatbot's thumbs
    last: Answer | None  # the last answer (redacted), for the Sources panel


def restore(turns: Sequence[StoredTurn], redact: Callable[[str], str]) -> Restored:
    """Render stored turns as respond() renders a live answer: `redact` is the PII guard with the user's switches."""
    messages: list[dict] = []
    turn_ids: list[int | None] = []
    feedback: list[str | None] = []
    last: Answer | None = None
    for turn in turns:
        shown = render.redacted(turn.answer, redact)
        messages += [{"role": "user", "content": render.user_message(turn.question)},
                     {"role": "assistant", "content": render.answer(shown)}]
        turn_ids += [None, turn.id]
        feedback.append(RATINGS.get(turn.rating) if turn.rating is not None else None)
        last = shown
    return Restored(messages, turn_ids, feedback, last)
