"""Monitoring: /metrics counts what the assistant answers (parsed by prometheus_client's own parser) and is closed to
the network unless a token is set; the Monitoring tab's aggregates and drift signal from stored answer records."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import build_corpus
from fakes import FakeGenerator
from prometheus_client.parser import text_string_to_metric_families

from app.audit import AuditRecord
from app.conversations.service import Conversations, TurnResult
from app.engine import Answer, AnswerOptions, Engine, EngineConfig
from app.production import monitoring as mon
from app.production.metrics import TOKEN_ENV, Metrics, allowed
from app.users import User

BOB = User("bob", "employee", ("everyone",))
GUEST = User("guest", "employee", ("visitors",))  # reads no document: every question of theirs is refused
REPO = Path(__file__).resolve().parent.parent


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
    failing = Engine(EngineConfig(index_dir=index_dir), embedder=embedder, generator=FakeGenerator(fail_after=0))
    with pytest.raises(RuntimeError):  # the model fails: an error, counted once
        ask(Conversations.beside(failing, tmp_path / "users.json", metrics=metrics), BOB,
            "How many days of annual leave?", AnswerOptions(decoding="free"))
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


@pytest.fixture(scope="module")
def site(tmp_path_factory, _shared_embedder):
    from ui_support import build_site

    built = build_site(tmp_path_factory.mktemp("monitoring-site"), _shared_embedder)
    yield built
    built.close()


def test_groundwork_serve_answers_metrics_on_its_port(site, monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    url = site.url.rstrip("/") + "/metrics"
    status, kind, text = _get(url)  # no sign-in: a scraper has no session
    assert status == 200 and kind.startswith("text/plain")
    before = value(text, "groundwork_answers_total")
    alice = site.services.users.get("alice")
    list(site.services.conversations.ask(alice, "How many days of annual leave do employees get?"))
    text = _get(url)[2]
    assert value(text, "groundwork_answers_total") == before + 1
    assert "annual leave" not in text and "alice" not in text  # counts only: no question, no user

    monkeypatch.setenv(TOKEN_ENV, "scrape-token")
    assert _get(url)[0] == 401 and _get(url, "wrong-token")[0] == 401
    status, _, text = _get(url, "scrape-token")
    assert status == 200 and value(text, "groundwork_answers_total") == before + 1


# --- the Monitoring tab: aggregates, drift, admins only -----------------------------------------------------------

NOW = 1_796_000_000.0  # a fixed "now" (epoch seconds)


def _record(at: float, refused: bool = False, reason: str | None = None, latency: float = 1.0,
            confidence: float | None = None, adapter: str | None = None, error: bool = False) -> AuditRecord:
    return AuditRecord(id=0, at=at, user="u", groups=[], channel="web", question="q", adapter=adapter,
                       refused=refused or error, refusal_reason="error" if error else reason, latency_s=latency,
                       confidence=confidence, error=error)


def test_plot_data_are_the_right_aggregates_of_known_records() -> None:
    hour = 3600.0
    records = [
        _record(NOW - 0.5 * hour, latency=1.0, confidence=0.9, adapter="acme@v2"),  # the last hour's bucket
        _record(NOW - 0.4 * hour, latency=2.0, confidence=0.8, adapter="acme@v2"),
        _record(NOW - 0.3 * hour, refused=True, reason="not confident", latency=3.0, confidence=0.2),
        _record(NOW - 0.2 * hour, error=True, latency=30.0),  # an error: neither a refusal nor a latency
        _record(NOW - 5.5 * hour, latency=4.0),  # five hours earlier
        _record(NOW - 30 * hour, latency=9.0),  # yesterday: outside the day
    ]
    day = mon.timeline(records, NOW, "day")
    assert len(day) == 24 and day[0].start == NOW - 24 * hour
    last, earlier = day[-1], day[-6]
    assert (last.questions, last.refused, last.errors, last.answers_per_hour) == (4, 1, 1, 4.0)
    assert last.refusal_rate == pytest.approx(1 / 3)
    assert last.latency_p50 == pytest.approx(2.0) and last.latency_p95 == pytest.approx(2.9)  # numpy's linear
    assert (earlier.questions, earlier.refusal_rate, earlier.latency_p50) == (1, 0.0, 4.0)
    assert sum(b.questions for b in day) == 5 and day[0].refusal_rate is None and day[0].latency_p50 is None
    hourly = mon.timeline(records, NOW, "hour")  # 5-minute buckets: a question in one is 12 an hour
    assert len(hourly) == 12 and sum(b.questions for b in hourly) == 4
    assert max(b.answers_per_hour for b in hourly) == 12.0
    assert sum(b.questions for b in mon.timeline(records, NOW, "week")) == 6
    assert mon.confidence_by_adapter(records) == {"acme@v2": [0.9, 0.8], "base": [0.2]}


@pytest.fixture(scope="module")
def acme_questions(_shared_embedder):
    questions = mon.read_questions(REPO / "examples" / "acme" / "qa.jsonl")
    return questions, _shared_embedder.encode(questions)


OFF_TOPIC = [
    "What is the best recipe for banana bread?", "Who won the football world cup in 2018?",
    "How do I change a flat tyre on a bicycle?", "What is the capital of Australia?", "How tall is Mount Everest?",
    "Recommend a good science fiction novel.", "How do I train my dog to sit?", "When does the sun set in July?",
    "How many calories are in an apple?", "Which planet has the most moons?", "How do I tune a guitar?",
    "What's the weather like in Lisbon in spring?", "How do I make cold brew coffee?", "Who painted the Mona Lisa?",
    "How long should I boil an egg?", "What is the offside rule?", "How do I grow tomatoes on a balcony?",
    "Which chess opening is best for beginners?", "How do volcanoes form?", "What is a good marathon plan?",
    "How do I knit a scarf?", "What are the rules of cricket?"]


def test_drift_flags_a_shifted_week_and_not_an_unshifted_one(acme_questions, _shared_embedder) -> None:
    questions, embeddings = acme_questions
    reference, same_kind = embeddings[:30], embeddings[30:]  # held-out questions of the same set: no drift
    rng = np.random.default_rng(7)
    eval_confidence = list(rng.beta(5, 2, 60))
    steady = mon.drift("acme@v2", "qa.jsonl", reference, eval_confidence, same_kind, list(rng.beta(5, 2, 60)))
    assert steady.question_shift < mon.QUESTION_SHIFT_THRESHOLD and not steady.question_flag
    assert steady.confidence_d is not None and not steady.confidence_flag and not steady.flagged

    off_topic = _shared_embedder.encode(OFF_TOPIC)
    shifted = mon.drift("acme@v2", "qa.jsonl", reference, eval_confidence, off_topic, list(rng.beta(2, 5, 60)))
    assert shifted.question_shift > mon.QUESTION_SHIFT_THRESHOLD and shifted.question_flag
    assert shifted.confidence_d > mon.CONFIDENCE_KS_THRESHOLD and shifted.confidence_flag and shifted.flagged

    few = mon.drift("acme@v2", "qa.jsonl", reference, eval_confidence, off_topic[:5], [0.1] * 5)
    assert not few.flagged and few.question_shift is None and len(few.notes) == 2  # too few to say


def test_the_adapter_cards_held_out_questions_are_its_evaluation_set(tmp_path: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps({"id": f"q{i}", "question": f"question {i}?"}) for i in range(6)) + "\n")
    card = {"data": {"files": [{"path": str(qa)}], "question_ids": {"train": ["q0", "q1", "q2", "q3"],
                                                                    "validation": ["q4"], "test": ["q5"]}}}
    questions, source = mon.eval_questions(card, None)
    assert questions == ["question 4?", "question 5?"] and "held-out" in source
    fallback = tmp_path / "fallback.jsonl"
    fallback.write_text('{"question": "a?"}\n{"question": "b?"}\n')
    assert mon.eval_questions({}, str(fallback)) == (["a?", "b?"], str(fallback))
    with pytest.raises(mon.MonitoringError, match="no evaluation set"):
        mon.eval_questions(None, None)


def test_monitoring_endpoints_refuse_an_employee_and_draw_for_an_admin(site) -> None:
    from gradio_client import Client
    from ui_support import PASSWORDS

    def client(user: str) -> Client:
        return Client(site.url, auth=(user, PASSWORDS[user]), verbose=False, analytics_enabled=False,
                      download_files=False)

    alice = client("alice")
    for api_name, args in (("/admin_monitoring", ("day",)), ("/admin_monitoring_drift", ("base", ""))):
        with pytest.raises(Exception) as error:
            alice.predict(*args, api_name=api_name)
        assert "Only administrators" in str(error.value), api_name
    assert not (site.root / mon.SETTINGS_FILE).exists()  # the employee's call changed nothing

    list(site.services.conversations.ask(site.services.users.get("alice"),
                                         "How many days of annual leave do employees get?"))
    plot, headline, *_ = client("admin").predict("day", api_name="/admin_monitoring")
    assert plot and "questions in the last day" in headline
    eval_set = site.root / "eval.jsonl"
    eval_set.write_text('{"question": "How many days of annual leave do we get?"}\n'
                        '{"question": "When are expense claims due?"}\n{"question": "How long must a password be?"}\n')
    report = client("admin").predict("base", str(eval_set), api_name="/admin_monitoring_drift")
    assert "3 evaluation questions" in report and "questions this week" in report
    assert json.loads((site.root / mon.SETTINGS_FILE).read_text()) == {"eval_set": str(eval_set)}  # remembered


def _seed_a_day(site, now: float) -> None:
    """A day of answers for the plots: two adapters and the base model, a busy afternoon, some refusals; the base
    model's questions partly off-topic (the drift check flags them)."""
    from app.audit import AuditLog

    rng = np.random.default_rng(15)
    acme = mon.read_questions(REPO / "examples" / "acme" / "qa.jsonl")
    log = AuditLog(site.root / "audit.sqlite")
    user = site.services.users.get("alice")
    for i in range(260):
        weights = np.r_[np.full(8, 1.0), np.full(10, 7.0), np.full(6, 3.0)]  # quiet night, busy working hours
        hour = rng.choice(24, p=weights / weights.sum())
        at = now - 24 * 3600 + hour * 3600 + rng.uniform(0, 3600)
        adapter = ("acme@v2", "acme@v3", None)[i % 3]
        confidence = float(rng.beta(6, 2) if adapter == "acme@v2" else rng.beta(4, 3) if adapter else rng.beta(2, 3))
        refused = confidence < 0.35
        question = OFF_TOPIC[i % len(OFF_TOPIC)] if adapter is None and i % 2 else acme[30 + i % 30]
        answer = Answer(question=question, answer="" if refused else "[1] Within 30 days.", refused=refused,
                        refusal_reason="not confident" if refused else None, citations=[], retrieved=[], flags=[],
                        timings={"total": float(rng.lognormal(0.2, 0.4)), "first_token": 0.4},
                        adapter=adapter, confidence=confidence)
        log.record(answer, user, "web", at=float(at))


def test_browser_admin_opens_the_monitoring_tab(site) -> None:
    import time as clock

    from ui_support import CHROMIUM, CHROMIUM_ARGS, chromium_or_fail, login, save_screenshot

    _seed_a_day(site, clock.time())
    eval_set = REPO / "artifacts" / "monitoring-eval.jsonl"  # ignored by git; shown relative in the screenshot
    eval_set.parent.mkdir(exist_ok=True)
    eval_set.write_text("".join(json.dumps({"question": q}) + "\n"
                                for q in mon.read_questions(REPO / "examples" / "acme" / "qa.jsonl")[:12]))
    sync_playwright = chromium_or_fail()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            login(page, site.url, "admin")
            page.get_by_role("tab", name="Admin").click()
            page.get_by_role("tab", name="Monitoring").click()
            page.locator("#gw-mon-plot img").wait_for(timeout=120_000)
            headline = page.locator("#gw-mon-summary").inner_text()
            assert "questions in the last day" in headline and "latency p50" in headline
            page.locator("#gw-mon-adapter input").fill("base")
            page.keyboard.press("Enter")
            page.locator("#gw-mon-evalset textarea, #gw-mon-evalset input").first.fill(
                os.path.relpath(eval_set))  # the server runs in this process: same working directory
            page.locator("#gw-mon-check").click()
            page.locator("#gw-mon-drift").get_by_text("Questions: shift").wait_for(timeout=180_000)
            assert "drift" in page.locator("#gw-mon-drift").inner_text()  # the off-topic half is flagged
            page.locator("#gw-mon-plot").scroll_into_view_if_needed()
            save_screenshot(page, "monitoring.png", full_page=True)
        finally:
            browser.close()
