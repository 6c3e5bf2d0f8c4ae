"""The OpenAI chat-completions wire format as Groundwork speaks it: the request it accepts, the errors it answers
with, and the response and stream chunks it sends (with Groundwork's citations in documented extra fields).

Requests: `model` and `messages` are required; `stream` is optional. Other OpenAI parameters (temperature,
max_tokens, n, tools, ...) are accepted and ignored: the engine decides how answers are written (quote, cite,
refuse). System and developer messages are ignored (clients such as Open WebUI always send one; Groundwork's own
instructions are not replaceable). The remaining messages must alternate user / assistant and end with a user
message: the last one is the question, the earlier pairs are the conversation it follows up on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.engine import Answer


class ApiError(Exception):
    """A refusal with an OpenAI-style JSON body: {"error": {"message", "type", "code"}}."""

    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.kind = kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "code": self.code, "param": None}}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False


@dataclass(frozen=True)
class Conversation:
    """A request's messages as the engine takes them: the question and the (question, answer) pairs before it."""

    question: str
    history: list[tuple[str, str]]


def parse_request(decoded: object) -> ChatRequest:
    try:
        return ChatRequest.model_validate(decoded)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ApiError(422, f"Invalid request: {where}: {first['msg']}{more}.", "invalid_request") from None


def conversation_of(request: ChatRequest) -> Conversation:
    """The question (the last user message) and the history; ApiError 422 unless the turns alternate."""
    turns = [m for m in request.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise ApiError(422, "Invalid messages: the last message must be the user's question.", "invalid_messages")
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message.role != expected:
            raise ApiError(422, f"Invalid messages: user and assistant messages must alternate, starting with "
                                f"the user (message {i + 1} of the conversation is from the {message.role}).",
                           "invalid_messages")
    question = turns[-1].text().strip()
    if not question:
        raise ApiError(422, "Invalid messages: the question (the last user message) is empty.", "invalid_messages")
    history = [(turns[i].text(), turns[i + 1].text()) for i in range(0, len(turns) - 1, 2)]
    return Conversation(question, history)


# --- responses -----------------------------------------------------------------------------------------------

def citations_of(answer: Answer) -> list[dict]:
    """The extra `citations` field: what each [n] in the text refers to."""
    return [{"n": c.n, "source": c.source, "page": c.page, "heading": c.heading, "text": c.text}
            for c in answer.citations]


def groundwork_of(answer: Answer) -> dict:
    """The extra `groundwork` field: refusal, the query a follow-up was searched as, the adapter that wrote it."""
    return {"refused": answer.refused, "refusal_reason": answer.refusal_reason,
            "searched_for": answer.searched_for, "adapter": answer.adapter}


def completion(completion_id: str, model: str, answer: Answer) -> dict:
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.answer},
                         "finish_reason": "stop", "logprobs": None}],
            "citations": citations_of(answer), "groundwork": groundwork_of(answer)}


def chunk(completion_id: str, model: str, created: int, delta: dict, finish: str | None = None) -> dict:
    return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}


def last_chunk(completion_id: str, model: str, created: int, answer: Answer, streamed: str) -> dict:
    """The closing chunk: finish_reason "stop", the citations, and `groundwork.answer`, the final text. When the
    deltas do not add up to it (the final check changed text already streamed: see routes._stream),
    `groundwork.replaced` is true and a client should show `groundwork.answer` instead."""
    body = chunk(completion_id, model, created, {}, "stop")
    body["citations"] = citations_of(answer)
    body["groundwork"] = {**groundwork_of(answer), "answer": answer.answer, "replaced": streamed != answer.answer}
    return body


def model_entry(model_id: str, created: int = 0) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "groundwork"}
