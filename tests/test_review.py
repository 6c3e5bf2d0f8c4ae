"""The human review queue (app/production/review.py): which answers the admin's rules send to review, and what a
reviewer's approve / correct / remove does to the asker's conversation and to the feedback export."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import build_corpus
from fakes import FakeGenerator, HistoryRecordingEngine
from typer.testing import CliRunner

from app.cli import cli
from app.conversations.export import feedback_items
from app.conversations.service import Conversations, TurnResult
from app.conversations.store import ConversationStore
from app.engine import Answer, AnswerOptions, Citation, EngineConfig, RetrievedPassage
from app.guardrails import BlockedTopic, GuardrailConfig, GuardrailEvent
from app.production.review import (PENDING_REVIEW, WITHDRAWN, ReviewError, ReviewQueue, ReviewRules, edit_distance,
                                   matching_rules)
from app.users import User

HANNAH = User("hannah", "employee", ("everyone", "hr"))
BOB = User("bob", "employee", ("everyone",))
FINN = User("finn", "employee", ("everyone", "finance"))
LAYOFFS = GuardrailConfig(blocked_topics=[BlockedTopic("layoffs", ["layoff", "redundancy"])])


def _answer(question: str = "When are expense claims due?", text: str = "Within 30 days [1].",
            source: str = "expenses.md", confidence: float | None = None, refused: bool = False,
            flags: list[GuardrailEvent] | None = None) -> Answer:
    answer = Answer(question=question, answer=text, refused=refused,
                    refusal_reason="no relevant passages" if refused else None,
                    citations=[] if refused else [Citation(1, source, 2, "Deadline", "Claims within 30 days.", 0.8)],
                    retrieved=[RetrievedPassage(1, source, 2, "Deadline", None, "Claims within 30 days.", 0.8)],
                    flags=list(flags or []), timings={"total": 0.1}, user="bob")
    answer.confidence = confidence  # set like this so the tests run with or without the field's declaration
    return answer


def reasons(rules: ReviewRules, answer: Answer, user: User = BOB, guardrails: GuardrailConfig = LAYOFFS) -> list:
    return list(matching_rules(rules, answer, user, guardrails))


# --- each rule, for the right reason and not otherwise --------------------------------------------------------


def test_low_confidence_fires_below_the_bar_only_on_answers_given_and_never_without_a_confidence() -> None:
    rules = ReviewRules(low_confidence=0.5)
    assert reasons(rules, _answer(confidence=0.31)) == ["low_confidence"]
    assert reasons(rules, _answer(confidence=0.8)) == []
    assert reasons(rules, _answer(confidence=None)) == []  # not scored: the rule does not apply
    assert reasons(rules, _answer(confidence=0.1, refused=True)) == []  # nothing shown to review
    assert reasons(ReviewRules(), _answer(confidence=0.01)) == []  # off by default


def test_pii_in_the_answer_redacted_or_shown_fires_and_pii_in_the_question_does_not() -> None:
    rules = ReviewRules()
    redacted = _answer(text="Write to [EMAIL] [1].",
                       flags=[GuardrailEvent("pii", "answer", "redacted", "redacted 1 email address")])
    assert reasons(rules, redacted) == ["pii"]
    shown = _answer(text="Write to jane.doe@example.com or call +33 6 12 34 56 78 [1].")  # the user switched pii off
    assert reasons(rules, shown) == ["pii"]
    in_question = _answer(flags=[GuardrailEvent("pii", "question", "redacted", "redacted 1 phone number")])
    assert reasons(rules, in_question) == []
    allowed = GuardrailConfig(blocked_topics=LAYOFFS.blocked_topics, pii_allowlist=["@example.com"])
    assert reasons(rules, _answer(text="Write to help@example.com [1]."), guardrails=allowed) == []
    assert reasons(ReviewRules(pii_in_answer=False), shown) == []


def test_a_blocked_topic_near_miss_fires_but_a_blocked_question_and_ordinary_words_do_not() -> None:
    rules = ReviewRules()
    for question in ("Are lay offs planned this year?", "Any layofs coming?", "Is there a redundancie plan?"):
        assert reasons(rules, _answer(question=question)) == ["topic_near_miss"], question
    blocked = _answer(question="Are layoffs planned?", text="I can't help with questions about layoffs.",
                      flags=[GuardrailEvent("blocked_topic", "question", "blocked", "blocked topic 'layoffs'")])
    blocked.refused, blocked.refusal_reason = True, "guardrail"
    assert reasons(rules, blocked) == []  # refused already: nothing slipped through
    for question in ("When are expense claims due?", "How many days of leave do I get?"):
        assert reasons(rules, _answer(question=question)) == []
    assert reasons(rules, _answer(question="Any layofs coming?"), guardrails=GuardrailConfig()) == []
    assert edit_distance("layofs", "layoff", 1) == 1 and edit_distance("leave", "layoff", 1) == 2


def test_chosen_documents_and_groups_fire_for_their_own_answers_and_askers_only() -> None:
    rules = ReviewRules(documents=["hr/*"], groups=["finance"])
    assert reasons(rules, _answer(source="hr/bands.md")) == ["document"]
    assert reasons(rules, _answer(source="expenses.md")) == []
    assert reasons(rules, _answer(), user=FINN) == ["group"]
    assert reasons(rules, _answer(source="hr/bands.md"), user=FINN) == ["document", "group"]


def test_bad_rules_are_refused_with_a_readable_reason_and_a_damaged_file_does_not_stop_answers(tmp_path) -> None:
    for text, said in (("{", "not valid JSON"), ('{"low_confidence": 2}', "from 0 to 1"),
                       ('{"thumbs": true}', "unknown review rule 'thumbs'"), ('{"documents": "hr/*"}', "list"),
                       ('[]', "JSON object")):
        with pytest.raises(ReviewError, match=said):
            ReviewRules.parse(text)
    queue = ReviewQueue(tmp_path / "review.sqlite", ConversationStore(tmp_path / "c.sqlite"))
    (tmp_path / "review_rules.json").write_text("{ broken")
    with pytest.raises(ReviewError):
        queue.rules()
    shown = _answer(text="Call +33 6 12 34 56 78 [1].")
    assert queue.consider(shown, BOB, None, None) == ["pii"]  # the defaults apply meanwhile


# --- the flow: a real engine, conversations, the queue beside the users file ------------------------------------


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, _shared_embedder) -> Path:
    return build_corpus(tmp_path_factory.mktemp("review"), _shared_embedder)


@pytest.fixture
def service(index_dir: Path, embedder, tmp_path: Path) -> Conversations:
    engine = HistoryRecordingEngine(EngineConfig(index_dir=index_dir, guardrails=LAYOFFS), embedder=embedder,
                    generator=FakeGenerator())
    return Conversations.beside(engine, tmp_path / "users.json")


def ask(service: Conversations, user: User, question: str, **kwargs) -> TurnResult:
    # A fixed refusal threshold, not the fitted one: these tests are about what happens to answered turns, and
    # "When are expense claims due?" (the fixture says "submitted within 30 days" under "Deadline") sits near the
    # fitted threshold, which moves with every refit.
    return list(service.ask(user, question, AnswerOptions(selection_threshold=0.01), **kwargs))[-1]


def test_answers_are_queued_beside_the_users_file_for_the_rules_that_fire(service, tmp_path: Path) -> None:
    queue = service.review
    queue.save_rules(ReviewRules(documents=["hr/*"]), "admin")
    salary = ask(service, HANNAH, "What does the salary band E4 pay?")
    leave = ask(service, BOB, "How many days of annual leave do employees get?")
    near = ask(service, BOB, "Are lay offs planned this year?")
    ask(service, BOB, "Are layoffs planned this year?")  # blocked by the guard: not a near miss
    assert (tmp_path / "review.sqlite").exists() and (tmp_path / "review_rules.json").exists()
    with sqlite3.connect(tmp_path / "review.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    pending = queue.pending()
    assert [(i.turn_id, list(i.reasons)) for i in pending] == [(salary.turn_id, ["document"]),
                                                              (near.turn_id, ["topic_near_miss"])]
    item = pending[0]
    assert (item.user, item.question, item.conversation_id) == ("hannah", "What does the salary band E4 pay?",
                                                                salary.conversation_id)
    assert "78,000" in item.answer and item.citations[0]["source"] == "hr/bands.md"

    service.feedback(BOB, leave.turn_id, -1, "it is 30 days")  # 👎 queues the turn ...
    service.feedback(BOB, near.turn_id, -1)  # ... and adds its reason to an item already waiting
    by_turn = {i.turn_id: i for i in queue.pending()}
    assert by_turn[leave.turn_id].reasons == {"thumbs_down": "rated 👎: it is 30 days"}
    assert list(by_turn[near.turn_id].reasons) == ["topic_near_miss", "thumbs_down"] and len(by_turn) == 3
    service.feedback(BOB, leave.turn_id, 1)  # a 👍 queues nothing
    assert len(queue.pending()) == 3

    queue.save_rules(ReviewRules(thumbs_down=False), "admin")
    other = ask(service, BOB, "When are expense claims due?")
    service.feedback(BOB, other.turn_id, -1)
    assert other.turn_id not in {i.turn_id for i in queue.pending()}


def test_approve_and_correct_are_logged_and_the_correction_is_exported_as_a_training_example(service) -> None:
    queue = service.review
    queue.save_rules(ReviewRules(documents=["expenses.md", "leave.md"]), "admin")
    expenses = ask(service, BOB, "When are expense claims due?")
    leave = ask(service, BOB, "How many days of annual leave do employees get?")
    first, second = queue.pending()

    approved = queue.approve(second.id, "admin")
    assert (approved.status, approved.decided_by) == ("approved", "admin")
    with pytest.raises(ReviewError, match="already approved by admin"):
        queue.remove(second.id, "other-admin")

    with pytest.raises(ReviewError, match="empty"):
        queue.correct(first.id, "admin", "  ")
    corrected = queue.correct(first.id, "admin", "Expense claims are due within 30 days of the purchase.")
    assert (corrected.status, corrected.correction_source) == ("corrected", "expenses.md")
    assert queue.pending() == []
    assert [(d.reviewer, d.action, d.item_id) for d in queue.decisions() if d.action != "rules"] == [
        ("admin", "approve", second.id), ("admin", "correct", first.id)]
    assert all(d.at > 0 for d in queue.decisions())

    # the turn was never rated, and still the export makes the correction a training example
    readable = service.readable_sources(BOB)
    export = feedback_items(service.store.feedback_records(corrected=True), readable)
    assert export.items == [{"id": f"feedback-{expenses.turn_id}", "question": "When are expense claims due?",
                             "answer": "Expense claims are due within 30 days of the purchase.",
                             "gold_passage": expenses.answer.retrieved[0].text, "gold_source": "expenses.md",
                             "answerable": True}]
    assert f"feedback-{leave.turn_id}" not in json.dumps(export.items)  # approved: nothing to learn
    # the asker's conversation keeps the answer they were given
    assert service.turns(BOB, expenses.conversation_id)[0].answer.answer == expenses.answer.answer


def test_remove_withdraws_the_answer_from_the_askers_reopened_conversation_and_its_follow_ups(service) -> None:
    queue = service.review
    queue.save_rules(ReviewRules(documents=["hr/*"]), "admin")
    salary = ask(service, HANNAH, "What does the salary band E4 pay?")
    [item] = queue.pending()
    removed = queue.remove(item.id, "admin")
    assert removed.status == "removed"
    [turn] = service.turns(HANNAH, salary.conversation_id)
    assert turn.answer.answer == WITHDRAWN and turn.question == "What does the salary band E4 pay?"
    assert turn.answer.citations == [] and turn.answer.retrieved == [] and "78,000" not in repr(turn)
    ask(service, HANNAH, "Is that per year?", conversation_id=salary.conversation_id)
    assert service.engine.histories[-1] == [("What does the salary band E4 pay?", WITHDRAWN)]  # a follow-up's too
    assert [d.action for d in queue.decisions(item.id)] == ["remove"]


def test_the_cli_lists_approves_corrects_and_removes(service, tmp_path: Path) -> None:
    queue = service.review
    queue.save_rules(ReviewRules(documents=["*.md"]), "admin")
    for question in ("When are expense claims due?", "How many days of annual leave do employees get?",
                     "Is there a meal allowance?"):
        ask(service, BOB, question)
    first, second, third = (i.id for i in queue.pending())
    db = ["--db", str(tmp_path / "review.sqlite")]

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, ["review", *args, *db])
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    listed = run("list")
    assert "When are expense claims due?" in listed and "document" in listed and "3 item(s) waiting" in listed
    assert "approved" in run("approve", str(first), "--reviewer", "carol")
    assert "corrected" in run("correct", str(second), "Employees get 27 days of leave.", "--reviewer", "carol")
    assert "removed" in run("remove", str(third), "--reviewer", "carol")
    assert "0 item(s) waiting" in run("list")
    assert [(d.reviewer, d.action) for d in queue.decisions() if d.action != "rules"] == [
        ("carol", "approve"), ("carol", "correct"), ("carol", "remove")]
    again = CliRunner().invoke(cli, ["review", "approve", str(first), *db])
    assert again.exit_code != 0 and "already approved by carol" in str(again.exception)


# --- the admin tab: admins only, on the server; everything escaped ---------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory, _shared_embedder):
    from ui_support import build_site

    built = build_site(tmp_path_factory.mktemp("review-site"), _shared_embedder)
    yield built
    built.close()


def test_review_endpoints_refuse_an_employee_and_work_for_an_admin_with_every_value_escaped(site) -> None:
    from gradio_client import Client
    from ui_support import PASSWORDS

    def client(user: str) -> Client:
        return Client(site.url, auth=(user, PASSWORDS[user]), verbose=False, analytics_enabled=False,
                      download_files=False)

    queue = site.services.conversations.review
    planted = _answer(text='<img src=x onerror="alert(1)"> Within 30 days [1].', source="expenses.md")
    planted.question = "<b>When</b> are claims due?"
    queue._enqueue(planted, BOB, None, None, {"document": "touches <script>x</script>"})
    [item] = queue.pending()
    rules_before = queue.rules()
    alice = client("alice")
    for api_name, args in (("/admin_review", ()), ("/admin_review_rules", ()), ("/admin_review_fill", ()),
                           ("/admin_review_approve", (str(item.id),)), ("/admin_review_remove", (str(item.id),)),
                           ("/admin_review_correct", (str(item.id), "Thirty days.", "")),
                           ("/admin_review_save_rules", ('{"groups": ["everyone"]}',))):
        with pytest.raises(Exception) as error:
            alice.predict(*args, api_name=api_name)
        assert "Only administrators" in str(error.value), api_name
    assert [i.status for i in queue.items()] == ["pending"] and queue.rules() == rules_before
    assert queue.decisions() == []

    admin = client("admin")
    filled = admin.predict(api_name="/admin_review_fill")  # the tab's fill on select: items, rules, no error
    assert "Within 30 days" in filled[0] and json.loads(filled[2]) == rules_before.to_dict() and not filled[3]
    shown = admin.predict(api_name="/admin_review")[0]
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in shown and "<img" not in shown
    assert "&lt;b&gt;When&lt;/b&gt;" in shown and "<script>" not in shown
    with pytest.raises(Exception, match="not valid JSON"):
        admin.predict("{ nope", api_name="/admin_review_save_rules")
    with pytest.raises(Exception, match="not a document of the index"):
        admin.predict(str(item.id), "Thirty days.", "nowhere.md", api_name="/admin_review_correct")
    admin.predict('{"groups": ["hr"]}', api_name="/admin_review_save_rules")
    assert queue.rules().groups == ["hr"]
    message = admin.predict(str(item.id), api_name="/admin_review_approve")[0]
    assert "approved" in message and queue.pending() == []
    assert [(d.reviewer, d.action) for d in queue.decisions()] == [("admin", "rules"), ("admin", "approve")]


def test_answers_held_for_chosen_groups_show_pending_until_approved_corrected_or_removed(service) -> None:
    queue = service.review
    queue.save_rules(ReviewRules(hold_groups=["hr"]), "admin")
    items = list(service.ask(HANNAH, "How many days of annual leave do employees get?", AnswerOptions()))
    assert len(items) == 1  # nothing streamed: the answer text never reached her
    held = items[0]
    assert held.answer.answer == PENDING_REVIEW and held.answer.citations == [] and "27 days" not in repr(held.answer)
    assert service.turns(HANNAH, held.conversation_id)[0].answer.answer == PENDING_REVIEW
    [item] = queue.pending()
    assert item.held and list(item.reasons) == ["hold"] and "27 days" in item.answer  # the reviewer sees it
    assert "27 days" in ask(service, BOB, "How many days of annual leave do employees get?").answer.answer  # not hr

    queue.approve(item.id, "admin")  # released: her conversation now shows the answer with its citation
    [turn] = service.turns(HANNAH, held.conversation_id)
    assert "27 days" in turn.answer.answer and turn.answer.citations[0].source == "leave.md"

    corrected = ask(service, HANNAH, "When are expense claims due?", conversation_id=held.conversation_id)
    removed = ask(service, HANNAH, "What does the salary band E4 pay?", conversation_id=held.conversation_id)
    assert corrected.answer.answer == removed.answer.answer == PENDING_REVIEW
    by_turn = {i.turn_id: i.id for i in queue.pending()}
    queue.correct(by_turn[corrected.turn_id], "admin", "Within 30 days of the purchase.")
    queue.remove(by_turn[removed.turn_id], "admin")
    shown = [t.answer for t in service.turns(HANNAH, held.conversation_id)]
    assert shown[1].answer == "Within 30 days of the purchase." and shown[1].citations[0].source == "expenses.md"
    assert shown[2].answer == WITHDRAWN and "78,000" not in repr(shown)
