"""The audit log: exactly one append-only record per question, with the right documents, and no document text."""
from __future__ import annotations

import csv
import io
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import build_corpus
from fakes import FakeGenerator

from app.audit import AuditLog
from app.conversations.service import Conversations, TurnResult
from app.engine import Answer, AnswerOptions, Citation, Engine, EngineConfig, RetrievedPassage
from app.guardrails import GuardrailEvent
from app.users import User

HANNAH = User("hannah", "employee", ("everyone", "hr"))
BOB = User("bob", "employee", ("everyone",))
GUEST = User("guest", "employee", ("visitors",))
SALARY_TEXT = "78,000 EUR"  # the restricted document's text (tests/conftest.py HR_DOCS "hr/bands.md")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, _shared_embedder) -> Path:
    return build_corpus(tmp_path_factory.mktemp("audit"), _shared_embedder)


def _service(index_dir: Path, embedder, folder: Path, generator=None) -> Conversations:
    engine = Engine(EngineConfig(index_dir=index_dir), embedder=embedder, generator=generator or FakeGenerator())
    return Conversations.beside(engine, folder / "users.json")


def ask(service: Conversations, user: User, question: str, options: AnswerOptions = AnswerOptions(),
        **kwargs) -> Answer:
    result = list(service.ask(user, question, options, **kwargs))[-1]
    assert isinstance(result, TurnResult)
    return result.answer


def _db_bytes(folder: Path) -> bytes:
    """Everything the audit database holds on disk: the file and its write-ahead log."""
    return b"".join(p.read_bytes() for p in sorted(folder.glob("audit.sqlite*")))


def test_each_answer_gives_exactly_one_record_with_its_documents(index_dir, embedder, tmp_path: Path) -> None:
    service = _service(index_dir, embedder, tmp_path)
    salary = ask(service, HANNAH, "What does the salary band E4 pay?")
    leave = ask(service, BOB, "How many days of annual leave do employees get?", channel="api")
    refused = ask(service, GUEST, "How many days of annual leave do employees get?")  # reads no document
    assert not salary.refused and not leave.refused and refused.refused

    newest_first = service.audit.query()
    assert [(r.user, r.channel, r.retrieved, r.cited, r.refused) for r in newest_first] == [
        ("guest", "web", [], [], True),
        ("bob", "api", [p.source for p in leave.retrieved], ["leave.md"], False),
        ("hannah", "web", [p.source for p in salary.retrieved], ["hr/bands.md"], False),
    ]
    hannah = newest_first[2]
    assert hannah.groups == ["everyone", "hr"] and hannah.question == "What does the salary band E4 pay?"
    assert hannah.latency_s == pytest.approx(salary.timings["total"], abs=1e-3)
    assert hannah.conversation_id == service.list(HANNAH)[0].id
    assert newest_first[0].refusal_reason == refused.refusal_reason


def test_restricted_text_and_answers_never_reach_the_audit_file(index_dir, embedder, tmp_path: Path) -> None:
    service = _service(index_dir, embedder, tmp_path)
    answer = ask(service, HANNAH, "What does the salary band E4 pay? Mail me at hannah.k@acme.example")
    assert SALARY_TEXT in answer.answer and answer.citations[0].source == "hr/bands.md"
    stored = _db_bytes(tmp_path)
    assert b"hr/bands.md" in stored  # the document is named ...
    assert SALARY_TEXT.encode() not in stored and b"78,000" not in stored  # ... its text is not
    assert b"hannah.k@acme.example" not in stored  # the question is kept after PII redaction
    [record] = service.audit.query()
    assert record.question == "What does the salary band E4 pay? Mail me at [EMAIL]"
    assert "pii:redacted" in record.guardrails


def test_the_log_is_append_only(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    log.record(_answer(), BOB, "cli")
    with sqlite3.connect(tmp_path / "audit.sqlite") as conn:
        for statement in ("UPDATE audit SET user = 'mallory'", "DELETE FROM audit",
                          "UPDATE audit_documents SET source = 'x'", "DELETE FROM audit_documents"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
    [record] = AuditLog(tmp_path / "audit.sqlite").query()
    assert (record.user, record.retrieved, record.cited) == ("bob", ["expenses.md", "leave.md"], ["expenses.md"])


def test_a_failed_answer_is_recorded_once_and_the_error_still_raised(index_dir, embedder, tmp_path: Path) -> None:
    service = _service(index_dir, embedder, tmp_path, FakeGenerator(fail_after=0))
    with pytest.raises(RuntimeError, match="crashed"):
        ask(service, BOB, "How many days of annual leave do employees get?", AnswerOptions(decoding="free"))
    [record] = service.audit.query()
    assert (record.user, record.refused, record.refusal_reason) == ("bob", True, "error")
    with pytest.raises(ValueError, match="channel"):  # refused before answering, not after
        next(service.ask(BOB, "How many days of annual leave do employees get?", channel="slack"))
    assert len(service.audit.query()) == 1
    assert service.list(BOB) == []  # no turn stored for it


def test_a_reader_leaving_mid_answer_is_still_recorded(index_dir, embedder, tmp_path: Path) -> None:
    service = _service(index_dir, embedder, tmp_path, FakeGenerator())
    stream = service.ask(BOB, "How many days of annual leave do employees get?",
                         AnswerOptions(decoding="free"))
    assert isinstance(next(stream), str)
    stream.close()
    [record] = service.audit.query()
    assert (record.refused, record.refusal_reason) == (True, "interrupted")


def _answer(sources=("expenses.md", "leave.md"), cited=("expenses.md",)) -> Answer:
    retrieved = [RetrievedPassage(i, s, None, None, None, "secret passage text", 0.5) for i, s in enumerate(sources, 1)]
    citations = [Citation(i, s, None, None, "secret passage text", 0.5) for i, s in enumerate(cited, 1)]
    return Answer(question="q", answer="secret answer", refused=False, refusal_reason=None, citations=citations,
                  retrieved=retrieved, flags=[GuardrailEvent("injection", "passage", "excluded", "d", "x.md")],
                  timings={"total": 1.25}, user="u", adapter="hr-bot@v3")


def _day(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_who_saw_a_document_this_month_is_one_query(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    alice, carol = User("alice", groups=("everyone", "hr")), User("carol", groups=("everyone", "hr"))
    log.record(_answer(["hr/salary.pdf"], ["hr/salary.pdf"]), alice, "web", at=_day("2026-11-28"))  # last month
    log.record(_answer(["leave.md", "hr/salary.pdf"], ["leave.md"]), BOB, "web", at=_day("2026-12-02"))
    log.record(_answer(["leave.md"], ["leave.md"]), alice, "api", at=_day("2026-12-03"))
    log.record(_answer(["hr/salary.pdf"], ["hr/salary.pdf"]), carol, "web", at=_day("2026-12-04"))
    log.record(_answer(["hr/salary.pdf"], []), carol, "web", at=_day("2026-12-05"))

    december = log.query(document="hr/salary.pdf", since=_day("2026-12-01"))
    assert [(r.user, r.at) for r in december] == [("carol", _day("2026-12-05")), ("carol", _day("2026-12-04")),
                                                   ("bob", _day("2026-12-02"))]
    assert december[2].retrieved == ["leave.md", "hr/salary.pdf"] and december[2].cited == ["leave.md"]
    assert log.users(document="hr/salary.pdf", since=_day("2026-12-01")) == {"carol": 2, "bob": 1}
    assert [r.user for r in log.query(document="hr/")] == ["carol", "carol", "bob", "alice"]  # a folder
    assert [r.at for r in log.query(user="alice", until=_day("2026-12-01"))] == [_day("2026-11-28")]
    assert len(log.query(limit=2)) == 2
    with sqlite3.connect(tmp_path / "audit.sqlite") as conn:  # the document filter uses the index on source
        plan = " ".join(str(row) for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT record_id FROM audit_documents WHERE source = 'hr/salary.pdf'"))
    assert "audit_documents_by_source" in plan


def test_csv_export_has_one_row_per_record_and_defuses_formulas(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    answer = _answer()
    answer.question = "=HYPERLINK(\"http://evil.example\")"
    log.record(answer, BOB, "web", conversation_id="abc", at=_day("2026-12-02"))
    out = io.StringIO()
    log.write_csv(log.query(), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == 1
    row = rows[0]
    assert (row["at"], row["user"], row["retrieved"], row["cited"], row["adapter"], row["guardrails"]) == (
        "2026-12-02T00:00:00+00:00", "bob", "expenses.md;leave.md", "expenses.md", "hr-bot@v3", "injection:excluded")
    assert row["question"].startswith("'=") and row["latency_s"] == "1.250" and row["conversation_id"] == "abc"
    assert "secret" not in out.getvalue()


def test_monitoring_columns_are_recorded_and_filter_by_adapter_and_arm(index_dir, embedder, tmp_path: Path) -> None:
    service = _service(index_dir, embedder, tmp_path)
    answered = ask(service, BOB, "How many days of annual leave do employees get?")
    assert answered.confidence is not None and 0.0 <= answered.confidence <= 1.0  # quote selection's P(right)
    [record] = service.audit.query()
    assert record.confidence == pytest.approx(answered.confidence)
    assert record.first_token_s == pytest.approx(answered.timings["first_token"], abs=1e-3)
    assert (record.withdrawn, record.error, record.route, record.arm) == (False, False, answered.route, None)

    log = AuditLog(tmp_path / "other.sqlite")
    candidate = _answer()
    candidate.route, candidate.arm, candidate.confidence = "hr", "candidate", 0.8
    candidate.flags.append(GuardrailEvent("citations", "answer", "redacted", "left out 1 sentence(s)"))
    log.record(candidate, BOB, "web")
    withdrawn = _answer(cited=())
    withdrawn.adapter, withdrawn.arm, withdrawn.refused, withdrawn.refusal_reason = (
        None, "control", True, "answer not supported by the passages")
    log.record(withdrawn, BOB, "web")
    failed = _answer(cited=())
    failed.refused, failed.refusal_reason = True, "error"
    log.record(failed, BOB, "api")
    [c] = log.query(arm="candidate")
    assert (c.route, c.arm, c.confidence, c.withdrawn, c.error, c.adapter) == ("hr", "candidate", 0.8, True, False,
                                                                               "hr-bot@v3")
    [control] = log.query(arm="control")
    assert control.withdrawn and control.adapter is None and log.query(adapter="", arm="control") == [control]
    assert [r.error for r in log.query(adapter="hr-bot@v3")] == [True, False]  # newest first


def test_an_audit_file_from_before_the_monitoring_columns_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    with sqlite3.connect(path) as conn:  # the first release's schema, with one record
        conn.executescript(
            "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, user TEXT NOT NULL,"
            " groups TEXT NOT NULL, channel TEXT NOT NULL, question TEXT NOT NULL, adapter TEXT,"
            " refused INTEGER NOT NULL, refusal_reason TEXT, guardrails TEXT NOT NULL, latency_s REAL,"
            " conversation_id TEXT);"
            "INSERT INTO audit (at, user, groups, channel, question, refused, guardrails)"
            " VALUES (1.0, 'old', '[]', 'web', 'q', 0, '[]');")
    log = AuditLog(path)
    answer = _answer()
    answer.confidence = 0.4
    log.record(answer, BOB, "cli")
    new, old = log.query()
    assert (old.user, old.confidence, old.withdrawn, old.error) == ("old", None, False, False)
    assert (new.user, new.confidence) == ("bob", 0.4)
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET confidence = 1.0")  # still append-only
