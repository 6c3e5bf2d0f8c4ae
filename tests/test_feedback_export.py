"""`groundwork feedback` (list, correct, export as a QA set that eval and finetune accept) and `groundwork audit`,
through the CLI as an admin runs them."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import build_corpus
from fakes import FakeGenerator
from typer.testing import CliRunner

from app.audit import AuditLog
from app.cli import cli
from app.conversations.service import Conversations
from app.engine import Answer, AnswerOptions, Citation, Engine, EngineConfig, RetrievedPassage
from app.users import User
from eval.qa import load_qa as eval_load_qa
from finetune.data import ExampleOptions, build_examples
from finetune.data import load_qa as finetune_load_qa
from ingest.vector_store import open_vector_store

REPO = Path(__file__).resolve().parents[1]
HANNAH = User("hannah", "employee", ("everyone", "hr"))
BOB = User("bob", "employee", ("everyone",))
QUESTIONS = {  # question -> (who asks, rating)
    "What does the salary band E4 pay?": (HANNAH, 1),  # hr only: never exported for the everyone group
    "How many days of annual leave do employees get?": (BOB, 1),
    "When are expense claims due? Call me on +33 6 12 34 56 78": (BOB, -1),  # corrected by the admin below
    "What is the meal allowance in Austin?": (BOB, -1),  # not corrected: to review
    "What is the capital of France?": (BOB, 1),  # a refusal the user agreed with
}


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.fixture(scope="module")
def rated(tmp_path_factory, _shared_embedder) -> tuple[Path, Path, dict[str, int]]:
    """An index, a conversations database with the rated answers of QUESTIONS, and their turn ids by question."""
    root = tmp_path_factory.mktemp("feedback")
    index = build_corpus(root, _shared_embedder)
    engine = Engine(EngineConfig(index_dir=index), embedder=_shared_embedder, generator=FakeGenerator())
    service = Conversations.beside(engine, root / "users.json")
    turns = {}
    # A fixed refusal threshold, not the fitted one: the point here is what feedback does with answered and refused
    # turns, and the noisy expenses question ("Call me on ...") sits below the fitted threshold.
    options = AnswerOptions(selection_threshold=0.01)
    for question, (user, rating) in QUESTIONS.items():
        result = list(service.ask(user, question, options))[-1]
        service.feedback(user, result.turn_id, rating, "thanks" if rating > 0 else "wrong")
        turns[question] = result.turn_id
    list(service.ask(BOB, "Do employees get annual leave?"))  # answered, never rated: never exported
    return index, root / "conversations.sqlite", turns


def test_export_writes_a_qa_set_that_eval_and_finetune_accept(rated, tmp_path: Path, _shared_embedder) -> None:
    index, db, turns = rated
    expenses = turns["When are expense claims due? Call me on +33 6 12 34 56 78"]
    assert "turn" in invoke("feedback", "correct", str(expenses), "Expense claims are due within 30 days.",
                            "--db", str(db), "--index", str(index))
    out = tmp_path / "feedback.jsonl"
    printed = invoke("feedback", "export", "--out", str(out), "--db", str(db), "--index", str(index))
    salary = turns["What does the salary band E4 pay?"]
    assert f"left out turn {salary}: its document hr/bands.md is not open to the training groups" in printed

    rows = {row["id"]: row for row in map(json.loads, out.read_text().splitlines())}
    leave = rows[f"feedback-{turns['How many days of annual leave do employees get?']}"]
    assert (leave["answer"], leave["gold_source"]) == ("Employees get 27 days of annual leave per year.", "leave.md")
    corrected = rows[f"feedback-{expenses}"]
    assert corrected["answer"] == "Expense claims are due within 30 days." and corrected["gold_source"] == "expenses.md"
    assert corrected["question"] == "When are expense claims due? Call me on [PHONE]"  # PII redacted on the way out
    assert rows[f"feedback-{turns['What is the capital of France?']}"]["answerable"] is False
    assert f"feedback-{salary}" not in rows and "78,000" not in out.read_text()
    assert "Do employees get annual leave?" not in out.read_text()
    meals = f"feedback-{turns['What is the meal allowance in Austin?']}"
    assert meals not in rows  # 👎 without a correction is never training data ...
    assert [json.loads(line) for line in (tmp_path / "feedback.review.jsonl").read_text().splitlines()] == [
        {"id": meals, "question": "What is the meal allowance in Austin?", "answerable": True}]  # ... but reviewed

    for load in (eval_load_qa, finetune_load_qa):
        assert sorted(item.id for item in load(out)) == sorted(rows)
        assert [item.id for item in load(tmp_path / "feedback.review.jsonl")] == [meals]
    reader = open_vector_store(index)
    examples, report = build_examples(finetune_load_qa(out), reader, _shared_embedder, lambda t: len(t.split()),
                                      ExampleOptions(refusal_fraction=0.0))
    assert not report.skipped
    answers = {e.question_id: e for e in examples if e.kind == "answer"}
    assert "30 days" in answers[f"feedback-{expenses}"].target
    assert all("hr/bands.md" not in e.sources for e in examples)


def test_feedback_list_filters_by_rating_and_correct_needs_a_rated_turn(rated) -> None:
    index, db, turns = rated
    down = invoke("feedback", "list", "--rating", "down", "--db", str(db))
    assert "When are expense claims due?" in down and "What is the meal allowance in Austin?" in down
    assert "annual leave" not in down and "'wrong'" in down and down.strip().endswith("2 rated answer(s)")
    assert "5 rated answer(s)" in invoke("feedback", "list", "--db", str(db))

    result = CliRunner().invoke(cli, ["feedback", "correct", "9999", "x", "--db", str(db), "--index", str(index)])
    assert result.exit_code != 0 and "has no feedback" in str(result.exception)
    result = CliRunner().invoke(cli, ["feedback", "correct", str(turns["What is the capital of France?"]), "Paris",
                                      "--db", str(db), "--index", str(index)])
    assert "cites no document" in str(result.exception)
    result = CliRunner().invoke(cli, ["feedback", "correct", str(turns["What is the capital of France?"]), "Paris",
                                      "--source", "geo/france.md", "--db", str(db), "--index", str(index)])
    assert "not a document of the index" in str(result.exception)


def _day(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def _answer(retrieved: list[str], cited: list[str]) -> Answer:
    return Answer(question="What is the salary band E4?", answer="x", refused=not cited,
                  refusal_reason=None if cited else "no relevant passages",
                  citations=[Citation(i, s, None, None, "t", 0.5) for i, s in enumerate(cited, 1)],
                  retrieved=[RetrievedPassage(i, s, None, None, None, "t", 0.5) for i, s in enumerate(retrieved, 1)],
                  flags=[], timings={"total": 0.8}, user="u")


@pytest.fixture
def audit_db(tmp_path: Path) -> Path:
    log = AuditLog(tmp_path / "audit.sqlite")
    alice, carol = User("alice", groups=("everyone", "hr")), User("carol", groups=("everyone", "hr"))
    log.record(_answer(["hr/salary.pdf"], ["hr/salary.pdf"]), alice, "web", at=_day("2026-11-30T23:59:00"))
    log.record(_answer(["hr/salary.pdf", "leave.md"], ["leave.md"]), BOB, "api", at=_day("2026-12-02T10:00:00"))
    log.record(_answer(["leave.md"], ["leave.md"]), alice, "web", at=_day("2026-12-03T11:00:00"))
    log.record(_answer(["hr/salary.pdf"], ["hr/salary.pdf"]), carol, "cli", at=_day("2026-12-31T23:00:00"))
    return tmp_path / "audit.sqlite"


def test_who_saw_a_document_this_month_takes_one_command(audit_db: Path) -> None:
    printed = invoke("audit", "--document", "hr/salary.pdf", "--since", "2026-12-01", "--db", str(audit_db))
    lines = printed.strip().splitlines()
    assert lines[-1] == "hr/salary.pdf: seen by 2 user(s): bob (1), carol (1)"
    assert lines[-2] == "2 question(s)"
    assert lines[0].startswith("2026-12-02 10:00  bob") and "cited: leave.md shown: hr/salary.pdf" in lines[0]
    assert lines[1].startswith("2026-12-31 23:00  carol") and "cited: hr/salary.pdf" in lines[1]


def test_audit_filters_by_user_and_days_and_exports_csv(audit_db: Path, tmp_path: Path) -> None:
    printed = invoke("audit", "--user", "alice", "--since", "2026-12-01", "--db", str(audit_db))
    assert "2026-12-03 11:00  alice" in printed and "2026-11-30" not in printed and "1 question(s)" in printed
    assert "1 question(s)" in invoke("audit", "--until", "2026-11-30", "--db", str(audit_db))  # the whole day
    out = tmp_path / "december.csv"
    assert "wrote 3 record(s)" in invoke("audit", "--since", "2026-12-01", "--csv", str(out), "--db", str(audit_db))
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [(r["user"], r["channel"], r["cited"]) for r in rows] == [("carol", "cli", "hr/salary.pdf"),
                                                                    ("alice", "web", "leave.md"),
                                                                    ("bob", "api", "leave.md")]
    assert "2 question(s)" in invoke("audit", "--limit", "2", "--db", str(audit_db))


def test_audit_without_a_log_or_with_a_bad_date_is_a_one_line_error(audit_db: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["audit", "--db", str(tmp_path / "none.sqlite")])
    assert result.exit_code != 0 and str(result.exception).startswith(f"no audit log at {tmp_path / 'none.sqlite'}")
    assert not (tmp_path / "none.sqlite").exists()  # reading never creates an empty log
    result = CliRunner().invoke(cli, ["audit", "--since", "last week", "--db", str(audit_db)])
    assert "use YYYY-MM-DD" in str(result.exception)


@pytest.mark.slow
def test_groundwork_eval_runs_the_exported_set(rated, tmp_path: Path) -> None:
    index, db, _ = rated
    out = tmp_path / "feedback.jsonl"
    invoke("feedback", "export", "--out", str(out), "--db", str(db), "--index", str(index))
    result = subprocess.run([sys.executable, "-m", "app.cli", "eval", "--qa", str(out), "--index", str(index),
                             "--mode", "extractive", "--out", str(tmp_path / "run"), "--users",
                             str(tmp_path / "users.json"), "-q"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Evaluated {len(out.read_text().splitlines())} questions")
    assert "permission leaks 0" in result.stdout
