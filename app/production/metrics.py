"""Prometheus metrics of the answers a server gives, served at GET /metrics on `groundwork serve`'s port.

Every question passes Conversations.ask, which calls `Metrics.question_started()` before answering and
`Metrics.observe(answer)` after its audit record (also when answering failed), so the counters here and the audit log
count the same questions. Each server has its own CollectorRegistry (not prometheus_client's global one): tests start
several servers in one process, and nothing else in the process (Gradio, libraries) adds its metrics to ours.

Labels are `route` (the routing gate's route; "none" without one) and `adapter` (NAME@vN; "base" for the base
model) — both few and chosen by the admin, never by users, so the number of series stays small.

What the endpoint shows is counts and timings only: no question, answer, user or document name ever becomes a label.
Access (see `allowed`): with GROUNDWORK_METRICS_TOKEN set, a request must carry `Authorization: Bearer <token>`
(compared in constant time), from anywhere; without it, only clients on this machine (loopback) may read it, so a
server bound to 0.0.0.0 does not publish its traffic figures to the network by default. Behind a reverse proxy every
client looks local: set the token there.
"""
from __future__ import annotations

import hmac
import ipaddress
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from app import refusals
from app.audit import ERROR, withdrawn_by_citation_check
from app.engine import Answer

TOKEN_ENV = "GROUNDWORK_METRICS_TOKEN"
INTERRUPTED = "interrupted"  # Conversations.ask's refusal_reason when the reader went away mid-answer
NO_ROUTE, BASE = "none", "base"
LABELS = ("route", "adapter")
# Seconds: quote selection answers in tens of milliseconds on a GPU, generation on a CPU takes tens of seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, float("inf"))
RETRIEVAL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, float("inf"))
CONFIDENCE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11)) + (float("inf"),)
WORD_BUCKETS = (5, 10, 20, 40, 80, 160, 320, float("inf"))


class Metrics:
    """The counters, histograms and the in-flight gauge of one server (one registry each)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, LABELS + extra, registry=registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, LABELS, buckets=buckets, registry=registry)

        self.questions = counter("groundwork_questions", "Questions asked (answered, refused, failed or interrupted)")
        self.answers = counter("groundwork_answers", "Questions answered (not refused)")
        self.refusals = counter("groundwork_refusals", "Questions refused, by reason (app.refusals)", ("reason",))
        self.guardrails = counter("groundwork_guardrail_events", "Guardrail events, by guard and action",
                                  ("guard", "action"))
        self.withdrawals = counter("groundwork_citation_withdrawals",
                                   "Answers the citation check withdrew or cut sentences from")
        self.errors = counter("groundwork_errors", "Questions whose answering failed")
        self.interrupted = counter("groundwork_interrupted", "Questions whose reader left before the answer was done")
        self.latency = histogram("groundwork_answer_latency_seconds", "Seconds from question to final answer",
                                 LATENCY_BUCKETS)
        self.first_token = histogram("groundwork_first_token_seconds", "Seconds from question to the first answer text",
                                     LATENCY_BUCKETS)
        self.retrieval = histogram("groundwork_retrieval_seconds",
                                   "Seconds from question to retrieved passages (question guardrails included)",
                                   RETRIEVAL_BUCKETS)
        # Words, not tokens: the answer's tokens are not known for every backend (quote selection generates none).
        self.words = histogram("groundwork_answer_words", "Words of each answer given (whitespace-separated)",
                               WORD_BUCKETS)
        self.confidence = histogram("groundwork_answer_confidence",
                                    "The answer stage's P(right) for the answer it chose (quote selection)",
                                    CONFIDENCE_BUCKETS)
        self.in_flight = Gauge("groundwork_questions_in_flight", "Questions being answered now (queue depth)",
                               registry=registry)
        self.feedback = Counter("groundwork_feedback", "Ratings of answers by their askers", ("rating",),
                                registry=registry)

    def question_started(self) -> None:
        self.in_flight.inc()

    def observe(self, answer: Answer) -> None:
        """Count one finished question (every outcome) and take it out of the in-flight gauge."""
        self.in_flight.dec()
        labels = (answer.route or NO_ROUTE, answer.adapter or BASE)
        self.questions.labels(*labels).inc()
        reason = answer.refusal_reason
        if reason == ERROR:
            self.errors.labels(*labels).inc()
        elif reason == INTERRUPTED:
            self.interrupted.labels(*labels).inc()
        elif answer.refused:
            self.refusals.labels(*labels, reason or refusals.GUARDRAIL).inc()
        else:
            self.answers.labels(*labels).inc()
            self.words.labels(*labels).observe(len(answer.answer.split()))
        for event in answer.flags:
            self.guardrails.labels(*labels, event.guard, event.action).inc()
        if withdrawn_by_citation_check(answer):
            self.withdrawals.labels(*labels).inc()
        timings = answer.timings
        if "total" in timings:
            self.latency.labels(*labels).observe(timings["total"])
        if "first_token" in timings:
            self.first_token.labels(*labels).observe(timings["first_token"])
        if "retrieve" in timings:
            self.retrieval.labels(*labels).observe(timings["retrieve"])
        if answer.confidence is not None:
            self.confidence.labels(*labels).observe(answer.confidence)

    def rated(self, rating: int) -> None:
        self.feedback.labels("up" if rating > 0 else "down" if rating < 0 else "cleared").inc()

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


def allowed(client_host: str | None, authorization: str | None, token: str | None = None) -> bool:
    """May this request read /metrics? `token` defaults to the GROUNDWORK_METRICS_TOKEN environment variable."""
    token = os.environ.get(TOKEN_ENV) if token is None else token
    if token:
        scheme, _, given = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    try:
        return client_host is not None and ipaddress.ip_address(client_host).is_loopback
    except ValueError:  # "testclient" and other non-addresses
        return False


def metrics_route(metrics: Metrics):
    """GET /metrics as a route for launch's app_kwargs (like the /v1 mount): answered before Gradio's routes."""
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    async def endpoint(request: Request) -> Response:
        if not allowed(request.client.host if request.client else None, request.headers.get("authorization")):
            status = 401 if os.environ.get(TOKEN_ENV) else 403
            return PlainTextResponse("metrics: a bearer token (GROUNDWORK_METRICS_TOKEN) or a local client is needed\n",
                                     status_code=status)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", endpoint, methods=["GET"], name="metrics")


__all__ = ["Metrics", "allowed", "metrics_route", "TOKEN_ENV", "CONTENT_TYPE_LATEST"]
