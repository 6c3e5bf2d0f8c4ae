"""The OpenAI-compatible API on `groundwork serve`'s port: GET /v1/models and POST /v1/chat/completions.

A FastAPI app of its own, mounted at /v1 in front of Gradio's routes (mount(), in launch's app_kwargs): its errors
have OpenAI's JSON shape without changing Gradio's, and every /v1 path is answered here (an unknown one gets a JSON
404), so /v1 is no way around the web login to anything else. The server's middlewares still wrap it: the login guard adds its
security headers (and lets /v1 through: it only answers /, /login and /logout), the upload guard looks into JSON
bodies for Gradio file references.

Authentication is a per-user API token (app/api_tokens.py) in `Authorization: Bearer ...`, and nothing else: a web
session cookie does not authenticate /v1. The token's user is read from the users file on every request, so
their current groups decide what is retrieved, and a revoked token or a removed user is refused at once.

Refusals, checked in this order so that a caller without a token learns nothing: 401 (no/invalid/revoked token),
413 (body over MAX_BODY, question over the guardrails' max_question_chars), 422 (not JSON, wrong types, messages
that do not alternate or do not end with the user's question), 404 (a model that is not offered), 429 (too many
answers being written at once). An unexpected failure is logged and answered with a generic 500 (503 for a
GroundworkError, e.g. the index being rebuilt): no error text carries a path, a document or a traceback.
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, AsyncIterator, Iterator

import anyio
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount

from app.api import schema
from app.api.schema import ApiError
from app.api_tokens import ApiTokens
from app.engine import Answer, AnswerOptions
from app.users import User
from ingest.errors import GroundworkError

if TYPE_CHECKING:  # app.ui imports this module (launch_app mounts the API): its names are imported when used
    from app.ui.services import UiServices

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # bytes of one request: far more than a conversation the engine would use
MAX_ANSWERING = 16  # answers written at once through the API (the chat has its own limit); more get 429
CHECKED = "Checked: "  # before the checked answer when it differs from the streamed text (as `groundwork ask`)
WITHDRAWN = "Answer withdrawn: "  # ... and when the streamed answer was refused by the final check
MOUNT_NAME = "openai-api"
BASE = "base"  # the model id of the base model without an adapter
AUTO = "auto"  # the model id that lets the admin's routes pick the adapter (app.production.routes)
_END = object()


class OpenAiApi:
    """The state behind the routes: the services of the web UI, and the tokens in its users file."""

    def __init__(self, services: UiServices) -> None:
        self.services = services
        self.tokens = ApiTokens(services.users)
        self.answering = 0  # touched on the event loop only

    # --- who and what ----------------------------------------------------------------------------------------

    def user_of(self, request: Request) -> User:
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Missing API token: send 'Authorization: Bearer <token>' (an admin creates one "
                                "with `groundwork users token NAME`).", "missing_api_key")
        user = self.tokens.authenticate(token.strip())
        if user is None:
            raise ApiError(401, "Invalid API token (unknown, revoked, or its user was removed).", "invalid_api_key")
        return user

    def models(self) -> dict[str, str | None]:
        """Model id -> the engine's adapter choice: `base`, and for every promoted adapter (the chat's picker,
        UiServices.adapter_choices) its name (follows promotions) and NAME@vN of its promoted version (pinned);
        `auto`: the routing gate's choice (None)."""
        from app.ui.services import BASE_MODEL

        offered: dict[str, str | None] = {BASE: BASE_MODEL}
        for version in self.services.promoted_adapters():
            offered[version.name] = version.name
            offered[f"{version.name}@{version.version}"] = f"{version.name}@{version.version}"
        offered.setdefault(AUTO, None)  # None: the routing gate decides, as in the chat by default
        return offered

    # --- answering -------------------------------------------------------------------------------------------

    def answers(self, user: User, chat: schema.Conversation, options: AnswerOptions) -> Iterator[str | Answer]:
        """The answer text so far, then the final Answer (PII-redacted like the chat's)."""
        from app.ui.render import redacted

        services = self.services
        guards = services.engine.guardrails
        # one audit record per question (channel "api"); nothing stored: the client keeps the conversation
        items = services.conversations.ask(user, chat.question, options, history=chat.history, keep=False,
                                           channel="api")
        for item in items:
            if isinstance(item, str):
                yield item
            else:
                answer = item if isinstance(item, Answer) else item.answer  # TurnResult
                yield redacted(answer, lambda value: guards.redact(value))

    def prepare(self, user: User, body: bytes) -> tuple[schema.ChatRequest, schema.Conversation, AnswerOptions]:
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):
            raise ApiError(422, "Invalid request: the body is not valid JSON.", "invalid_json") from None
        request = schema.parse_request(decoded)
        chat = schema.conversation_of(request)
        limit = self.services.sync_guardrails().max_question_chars
        if limit and len(chat.question) > limit:
            raise ApiError(413, f"The question is {len(chat.question):,} characters long; the limit is {limit:,}.",
                           "question_too_long")
        offered = self.models()
        if request.model not in offered:
            raise ApiError(404, f"The model '{request.model}' does not exist or is not offered: see GET /v1/models.",
                           "model_not_found")
        return request, chat, AnswerOptions(adapter=offered[request.model])


async def _body(request: Request) -> bytes:
    """The request body, refused (413) beyond MAX_BODY without reading the rest."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, f"Request too large: at most {MAX_BODY // 1024} KB.", "request_too_large")
    chunks, size = [], 0
    async for piece in request.stream():
        size += len(piece)
        if size > MAX_BODY:
            raise ApiError(413, f"Request too large: at most {MAX_BODY // 1024} KB.", "request_too_large")
        chunks.append(piece)
    return b"".join(chunks)


def _error(exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _failure(exc: BaseException, user: User | None) -> ApiError:
    """Log a failure (not the question: it may hold personal data) and say only that it happened."""
    who = user.name if user else "-"
    if isinstance(exc, GroundworkError):
        log.warning("API answer for %s failed: %s", who, " ".join(str(exc).split()))
        return ApiError(503, "The assistant cannot answer right now; try again later.", "unavailable",
                        "server_error")
    log.error("API request for %s failed", who, exc_info=exc)
    return ApiError(500, "The server failed to answer this request.", "internal_error", "server_error")


def _sse(data: dict | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode("utf-8")


async def _close(items: Iterator) -> None:
    """Stop an abandoned answer (a client that went away). One still being advanced in a worker thread cannot
    be closed from here; it finishes its current step and is dropped."""
    with anyio.CancelScope(shield=True):
        try:
            await anyio.to_thread.run_sync(items.close)
        except ValueError:  # "generator already executing"
            pass


def build_api(api: OpenAiApi) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, title="Groundwork OpenAI-compatible API")
    app.state.api = api

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:  # unknown path, method
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        message = {404: "No such API route: Groundwork offers GET /v1/models and POST /v1/chat/completions.",
                   405: "Method not allowed for this API route."}.get(exc.status_code, "Invalid request.")
        return _error(ApiError(exc.status_code, message, code))

    @app.get("/models")
    async def list_models(request: Request) -> Response:
        user = None
        try:
            user = api.user_of(request)
            offered = await anyio.to_thread.run_sync(api.models)
            return JSONResponse({"object": "list", "data": [schema.model_entry(m) for m in offered]})
        except ApiError as exc:
            return _error(exc)
        except Exception as exc:  # noqa: BLE001 - logged, answered generically
            return _error(_failure(exc, user))

    @app.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        user = None
        try:
            user = api.user_of(request)
            body = await _body(request)
            chat_request, chat, options = await anyio.to_thread.run_sync(api.prepare, user, body)
            if api.answering >= MAX_ANSWERING:
                raise ApiError(429, "Too many answers are being written at once; try again in a few seconds.",
                               "rate_limit_exceeded", "rate_limit_error")
            api.answering += 1
            released, handed_over = False, False

            def release() -> None:
                nonlocal released
                if not released:
                    released = True
                    api.answering -= 1

            try:
                items = api.answers(user, chat, options)
                if not chat_request.stream:
                    final = await anyio.to_thread.run_sync(_last, items)
                    return JSONResponse(schema.completion(f"chatcmpl-{secrets.token_hex(12)}", chat_request.model,
                                                          final))
                # the first item is awaited here: a failure before any text still gets a proper status
                first = await anyio.to_thread.run_sync(next, items, _END)
                quoting = (options.decoding or api.services.engine.config.decoding) == "quote"
                stream = _stream(items, first, chat_request.model, user, release, partials=not quoting)
                handed_over = True  # the stream releases it when it ends
                return StreamingResponse(stream, media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            finally:
                if not handed_over:
                    release()
        except ApiError as exc:
            return _error(exc)
        except Exception as exc:  # noqa: BLE001 - logged, answered generically
            return _error(_failure(exc, user))

    return app


def _last(items: Iterator[str | Answer]) -> Answer:
    final = None
    for final in items:
        pass
    if not isinstance(final, Answer):
        raise RuntimeError("the engine ended without an answer")
    return final


async def _stream(items: Iterator[str | Answer], first: object, model: str, user: User, release,
                  partials: bool = True) -> AsyncIterator[bytes]:
    """SSE chunks: the role, then only the new part of the text each time the engine yields the text so far,
    then a closing chunk with the citations (schema.last_chunk), then [DONE]. A failure mid-stream is sent as
    an OpenAI error event (the openai client raises it).

    The deltas add up to the final answer, except when the final check changed text already streamed (a sentence
    left out, a marker removed, the answer withdrawn): then a last delta says so and repeats the checked answer,
    as `groundwork ask` does, and the closing chunk has `groundwork.replaced` true and the checked text in
    `groundwork.answer`. partials=False (quote decoding: the quote is chosen in well under a second, and its
    preview is not the final text) sends the final answer as one delta."""
    completion_id, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
    streamed = ""
    finished = False
    try:
        yield _sse(schema.chunk(completion_id, model, created, {"role": "assistant", "content": ""}))
        item = first
        while item is not _END:
            if isinstance(item, Answer):
                if item.answer.startswith(streamed):  # the rest of the final text
                    rest = item.answer[len(streamed):]
                else:  # the check changed what was streamed: a client that only shows the deltas shows both
                    rest = ("\n\n" + (WITHDRAWN if item.refused else CHECKED)) + item.answer
                if rest:
                    yield _sse(schema.chunk(completion_id, model, created, {"content": rest}))
                yield _sse(schema.last_chunk(completion_id, model, created, item, streamed + rest))
                yield _sse("[DONE]")
                finished = True
                return
            text = item.rstrip() if isinstance(item, str) and partials else ""  # trailing spaces go with the
            if text.startswith(streamed) and len(text) > len(streamed):  # next word: the final text has none
                yield _sse(schema.chunk(completion_id, model, created, {"content": text[len(streamed):]}))
                streamed = text
            item = await anyio.to_thread.run_sync(next, items, _END)
        raise RuntimeError("the engine ended without an answer")
    except Exception as exc:  # noqa: BLE001 - the headers are sent: an error event, as OpenAI's API does
        yield _sse(_failure(exc, user).body())
        finished = True
    finally:
        release()
        if not finished:
            await _close(items)


def mount(services: UiServices) -> Mount:
    """The API as a route for launch's app_kwargs (`"routes": [mount(services)]`): FastAPI puts it before the
    routes Gradio adds, and it answers from the server's first request on."""
    return Mount("/v1", app=build_api(OpenAiApi(services)), name=MOUNT_NAME)
