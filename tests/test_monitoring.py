"""Monitoring: /metrics counts what the assistant answers (parsed by prometheus_client's own parser) and is closed to
the network unless a token is set; the Monitoring tab's aggregates and drift signal from stored answer records."""
from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import build_corpus
from fakes import FakeGenerator
from prometheus_client.parser import text_string_to_metric_families

from app.conversations.service import Conversations, TurnResult
from app.engine import Answer, AnswerOptions, Engine, EngineConfig
from app.production.metrics import TOKEN_ENV, Metrics, allowed
from app.users import User

BOB = User("bob", "employee", ("everyone",))
GUEST = User("guest", "employee", ("visitors",))  # reads no document: every question of theirs is refused


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, _shared_embedder) -> Path:
    return build_corpus(tmp_path_factory.mktemp("monitoring"), _shared_embedder)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a /metrics text, read by prometheus_client's parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when there is none)."""
    return sum(v for (n, ls), v in samples(text).items() if n == name and set(labels.items()) <= set(ls))


def ask(service: Conversations, user: User, question: str, options: AnswerOptions = AnswerOptions()) -> Answer:
    result = list(service.ask(user, question, options))[-1]
    assert isinstance(result, TurnResult)
    return result.answer


def test_counters_move_as_answers_are_made(index_dir, embedder, tmp_path: Path) -> None:
    engine = Engine(EngineConfig(index_dir=index_dir), embedder=embedder, generator=FakeGenerator())
    metrics = Metrics()
    service = Conversations.beside(engine, tmp_path / "users.json", metrics=metrics)
    before = metrics.exposition().decode()
    assert value(before, "groundwork_questions_total") == 0 and value(before, "groundwork_questions_in_flight") == 0

    answered = ask(service, BOB, "How many days of annual leave do employees get?")
    ask(service, BOB, "How many days of annual leave do employees get?")
    refused = ask(service, GUEST, "How many days of annual leave do employees get?")
    with pytest.raises(RuntimeError):  # the model fails: an error, counted once
        ask(Conversations.beside(Engine(EngineConfig(index_dir=index_dir), embedder=embedder,
                                        generator=FakeGenerator(fail_after=0)), tmp_path / "users.json",
                                 metrics=metrics), BOB, "How many days of annual leave?", AnswerOptions(decoding="free"))
    text = metrics.exposition().decode()
    assert not answered.refused and refused.refused
    route = answered.route or "none"  # the routing gate's default route, when it has one
    assert value(text, "groundwork_questions_total", route=route, adapter="base") == 4
    assert value(text, "groundwork_answers_total") == 2
    assert value(text, "groundwork_refusals_total", reason=refused.refusal_reason) == 1
    assert value(text, "groundwork_errors_total") == 1
    assert value(text, "groundwork_answer_latency_seconds_count") == 4
    assert value(text, "groundwork_retrieval_seconds_count") == 3  # a failed answer's timings are lost with it
    assert value(text, "groundwork_answer_confidence_count") == 2  # quote selection scored both answers
    assert value(text, "groundwork_answer_confidence_sum") == pytest.approx(2 * answered.confidence, abs=1e-6)
    assert value(text, "groundwork_answer_words_sum") == 2 * len(answered.answer.split())
    assert value(text, "groundwork_questions_in_flight") == 0  # every question counted out again
    records = service.audit.query()  # the same questions are in the audit log (both services share its file)
    assert len(records) == 4 and sum(r.error for r in records) == 1

    turn_id = service.list(BOB)[0]
    service.feedback(BOB, service.turns(BOB, turn_id.id)[0].id, -1)
    assert value(metrics.exposition().decode(), "groundwork_feedback_total", rating="down") == 1


def test_a_question_being_answered_is_in_flight(index_dir, embedder, tmp_path: Path) -> None:
    engine = Engine(EngineConfig(index_dir=index_dir), embedder=embedder, generator=FakeGenerator())
    metrics = Metrics()
    service = Conversations.beside(engine, tmp_path / "users.json", metrics=metrics)
    stream = service.ask(BOB, "How many days of annual leave do employees get?", AnswerOptions(decoding="free"))
    next(stream)  # the first words are out, the answer is not finished
    assert value(metrics.exposition().decode(), "groundwork_questions_in_flight") == 1
    stream.close()  # the reader leaves
    text = metrics.exposition().decode()
    assert value(text, "groundwork_questions_in_flight") == 0 and value(text, "groundwork_interrupted_total") == 1


def test_metrics_are_for_local_clients_or_token_holders(monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert allowed("127.0.0.1", None) and allowed("::1", None)
    assert not allowed("10.0.0.7", None) and not allowed(None, None)
    monkeypatch.setenv(TOKEN_ENV, "s3cret-token")
    assert allowed("10.0.0.7", "Bearer s3cret-token")
    assert not allowed("127.0.0.1", None)  # with a token, local clients need it too (a proxy makes everyone local)
    assert not allowed("10.0.0.7", "Bearer wrong") and not allowed("10.0.0.7", "Basic s3cret-token")


def _get(url: str, token: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("content-type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), exc.read().decode()


def test_groundwork_serve_answers_metrics_on_its_port(embedder, tmp_path: Path, monkeypatch) -> None:
    from ui_support import build_site

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    site = build_site(tmp_path, embedder)
    try:
        url = site.url.rstrip("/") + "/metrics"
        status, kind, text = _get(url)  # no sign-in: a scraper has no session
        assert status == 200 and kind.startswith("text/plain")
        assert value(text, "groundwork_questions_total") == 0
        alice = site.services.users.get("alice")
        list(site.services.conversations.ask(alice, "How many days of annual leave do employees get?"))
        assert value(_get(url)[2], "groundwork_answers_total") == 1
        assert "annual leave" not in _get(url)[2]  # counts only: no question text

        monkeypatch.setenv(TOKEN_ENV, "scrape-token")
        assert _get(url)[0] == 401
        status, _, text = _get(url, "scrape-token")
        assert status == 200 and value(text, "groundwork_questions_total") == 1
    finally:
        site.close()
