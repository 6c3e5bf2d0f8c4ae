"""Test doubles shared by the test files: one configurable stand-in for the model, a broken retriever, and the real
engine recording the history of each question."""
from __future__ import annotations

import re
import time
from typing import Mapping

from app.engine import AnswerOptions, Engine
from finetune.prompt import NOT_FOUND


class FakeGenerator:
    """Stands in for the model where a test checks the code around it, not the model. What it says:

    - `answer`: that fixed text, whatever it is asked;
    - `answers`: the text of the first keyword found in the question (the part after "Question:"), else NOT_FOUND;
    - neither: extractive, the first sentence of passage [1] of the prompt, cited, or NOT_FOUND without passages.

    The reply is streamed word by word, `delay` seconds apart (to make streaming visible in the UI). Every prompt
    and its generation options are recorded; with `fail_after=n`, every call after the first n raises.
    """

    context_tokens = 4096

    def __init__(self, answer: str | None = None, *, answers: Mapping[str, str] | None = None, delay: float = 0.0,
                 fail_after: int | None = None) -> None:
        self.answer = answer
        self.answers = dict(answers or {})
        self.delay = delay
        self.fail_after = fail_after
        self.prompts: list[list[dict]] = []
        self.options: list[object] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def reply(self, messages: list[dict]) -> str:
        prompt = messages[-1]["content"]
        if self.answer is not None:
            return self.answer
        if self.answers:
            question = prompt.rsplit("Question:", 1)[-1].lower()
            return next((a for k, a in self.answers.items() if k in question), NOT_FOUND)
        match = re.search(r"\[1\] \([^)]*\)\n(.+?)(?:\n\n\[2\]|\n\nQuestion:)", prompt, re.S)
        if not match:
            return NOT_FOUND
        sentence = re.split(r"(?<=[.!?])\s", " ".join(match.group(1).split()), maxsplit=1)[0].rstrip(".")
        return f"{sentence} [1]."

    def stream(self, messages, options):
        if self.fail_after is not None and len(self.prompts) >= self.fail_after:
            raise RuntimeError("the model crashed")
        self.prompts.append(messages)
        self.options.append(options)
        for word in self.reply(messages).split(" "):
            if self.delay:
                time.sleep(self.delay)
            yield word + " "


class LeakyRetriever:
    """A broken retriever that ignores the user's groups: searches as if the user were in every group."""

    def __init__(self, inner, groups: frozenset[str] = frozenset({"everyone", "hr"})) -> None:
        self.inner = inner
        self.groups = set(groups)

    def retrieve(self, question, groups, options):
        return self.inner.retrieve(question, self.groups, options)


class HistoryRecordingEngine(Engine):
    """The real engine, recording the history each question was asked with."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.histories: list[list[tuple[str, str]]] = []

    def stream(self, question, user, options=AnswerOptions(), history=None):
        self.histories.append(list(history or []))
        yield from super().stream(question, user, options, history)
