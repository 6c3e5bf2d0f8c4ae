"""Conversations in the web UI, in a real browser (headless Chromium, Playwright) and through the Gradio API.

A follow-up that only makes sense with the question before it is answered from the right document and says what
was searched; the sidebar lists the conversation and reopens it, citations included, after a page reload; thumbs
and comments are stored; a conversation can be deleted; nobody opens another user's conversation by its id (the
page's own endpoint, called directly with a forged id); the admin's audit log shows each question and exports it.
Few page loads on purpose: CI has two cores. Locally these tests skip without chromium; with CI=true they fail.
"""
from __future__ import annotations

import csv
import io
import re
import time

import pytest
from fakes import FakeGenerator
from gradio_client import Client
from ui_support import PASSWORDS, ask, build_site, login, save_screenshot

from app.engine import AnswerOptions
from app.users import UserStore

VIEWPORT = {"width": 1360, "height": 900}
FIRST = "How many days of annual leave do I get?"
FOLLOW_UP = "Can I carry them over?"  # "them": the days of annual leave of the question before
EXPENSES = "When must expense claims be submitted?"


class RelevantSentenceGenerator(FakeGenerator):
    """The extractive fake, quoting the sentence of passage [1] that shares the most words with the question as
    asked (FakeGenerator quotes the first one): a follow-up about carrying days over gets the sentence that says so,
    as a model would."""

    def reply(self, messages: list[dict]) -> str:
        prompt = messages[-1]["content"]
        match = re.search(r"\[1\] \([^)]*\)\n(.+?)(?:\n\n\[2\]|\n\nQuestion:)", prompt, re.S)
        if not match:
            return super().reply(messages)
        question = prompt.rsplit("Question:", 1)[-1].split("?", 1)[0]  # as asked (not what may follow it)
        words = set(re.findall(r"\w+", question.lower()))
        sentences = re.split(r"(?<=[.!?])\s", " ".join(match.group(1).split()))
        best = max(sentences, key=lambda s: len(words & set(re.findall(r"\w+", s.lower()))))
        return f"{best.rstrip('.')} [1]."


@pytest.fixture(scope="module")
def site(tmp_path_factory, _shared_embedder):
    built = build_site(tmp_path_factory.mktemp("ui-conversations"), _shared_embedder,
                       generator=RelevantSentenceGenerator(delay=0.04))
    yield built
    built.close()


def client(site, user: str) -> Client:
    return Client(site.url, auth=(user, PASSWORDS[user]), verbose=False, analytics_enabled=False,
                  download_files=False)


def user(site, name: str):
    return UserStore(site.users_file).get(name)


def new_page(browser, height: int = VIEWPORT["height"]):
    context = browser.new_context(viewport={"width": VIEWPORT["width"], "height": height}, accept_downloads=True)
    return context.new_page()


def sidebar_titles(page) -> list[str]:
    return [t.strip() for t in page.locator("#gw-history label").all_inner_texts()]


def wait_until(check, timeout: float = 30.0, what: str = "the page to update"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def bot_messages(page):
    return page.locator("#gw-chat [data-testid=bot]")


def thumbs(page, n: int):
    """The buttons under the n-th answer (Gradio puts them beside the message, not inside it)."""
    return page.locator("#gw-chat .message-buttons").nth(n)


def test_a_follow_up_is_answered_kept_reopened_after_a_reload_rated_and_deleted(browser, site) -> None:
    conversations = site.services.conversations
    alice = user(site, "alice")
    page = new_page(browser)
    login(page, site.url, "alice")
    assert page.locator("#gw-history label").count() == 0  # nothing kept yet

    first = ask(page, FIRST)
    assert "27 days" in first["text"]
    second = ask(page, FOLLOW_UP)
    # answered from leave.md, although the follow-up names neither leave nor days
    assert "5 unused days carry over" in second["text"] and "leave.md" in page.locator("#gw-sources").inner_text()
    assert second["bubble"].locator(".gw-cite").count() >= 1
    searched = second["bubble"].locator(".gw-searched")
    assert searched.count() == 1, "the rewritten query of the follow-up is not shown under the answer"
    assert re.search(r"leave|days", searched.inner_text(), re.I), searched.inner_text()
    assert bot_messages(page).nth(0).locator(".gw-searched").count() == 0  # the first one was searched as asked

    # stored server-side, in one conversation titled by its first question
    [summary] = conversations.list(alice)
    assert summary.title == FIRST and summary.turns == 2
    wait_until(lambda: sidebar_titles(page) == [FIRST], what="the sidebar to list the conversation")

    # 👎 on the first answer, 👍 with a comment on the second: stored with those turns
    thumbs(page, 0).get_by_role("button", name="Dislike", exact=True).click()
    page.locator("#gw-feedback-comment textarea, #gw-feedback-comment input").first.wait_for(timeout=15_000)
    thumbs(page, 1).get_by_role("button", name="Like", exact=True).click()
    wait_until(lambda: [t.rating for t in conversations.turns(alice, summary.id)] == [-1, 1],
               what="both thumbs to be stored")
    # each thumb stores at once and opens an empty comment box for it: the comment goes with the last thumb
    page.locator("#gw-feedback").get_by_text("Thanks for the 👍").wait_for(timeout=15_000)
    comment = page.locator("#gw-feedback-comment textarea, #gw-feedback-comment input").first
    comment.fill("Clear, and it cites the policy.")
    page.locator("#gw-feedback-send").click()
    turns = wait_until(lambda: (t := conversations.turns(alice, summary.id)) and t[1].comment and t,
                       what="the comment to be stored")
    assert [t.rating for t in turns] == [-1, 1]
    assert turns[1].comment == "Clear, and it cites the policy." and turns[1].question == FOLLOW_UP
    assert turns[1].answer.citations and turns[1].answer.citations[0].source == "leave.md"

    # another conversation, started elsewhere (another tab): the newest, so listed first after the reload
    for _ in conversations.ask(alice, EXPENSES, AnswerOptions()):
        pass

    # a reload starts an empty chat; the sidebar still lists the conversations and reopens one with its citations
    page.reload(wait_until="load")
    page.locator("#gw-question textarea").wait_for(timeout=60_000)
    wait_until(lambda: sidebar_titles(page) == [EXPENSES, FIRST], what="the sidebar after the reload")
    assert bot_messages(page).count() == 0
    page.locator("#gw-history label").filter(has_text=FIRST).click()
    wait_until(lambda: bot_messages(page).count() == 2, what="the conversation to be restored")
    restored = bot_messages(page)
    assert "27 days" in restored.nth(0).inner_text()
    assert restored.nth(1).locator(".gw-cite").count() >= 1 and restored.nth(1).locator(".gw-searched").count() == 1
    # the thumbs given are shown again
    assert thumbs(page, 0).get_by_role("button", name="Disliked", exact=True).count() == 1
    assert thumbs(page, 1).get_by_role("button", name="Liked", exact=True).count() == 1
    users = page.locator("#gw-chat [data-testid=user]")
    assert [users.nth(0).inner_text().strip(), users.nth(1).inner_text().strip()] == [FIRST, FOLLOW_UP]
    wait_until(lambda: "leave.md" in page.locator("#gw-sources").inner_text(), what="Sources of the last answer")
    save_screenshot(page, "conversation.png")
    cite = restored.nth(1).locator(".gw-cite").first
    cite.click()
    assert "leave.md" in cite.locator(".gw-pop").inner_text()

    # a follow-up in the reopened conversation continues it (three turns), which moves it to the top
    ask(page, "And how many days do I get in total?")
    assert [(s.title, s.turns) for s in conversations.list(alice)] == [(FIRST, 3), (EXPENSES, 1)]
    wait_until(lambda: sidebar_titles(page) == [FIRST, EXPENSES], what="the sidebar in the new order")

    # open the other one and delete it: the sidebar and the store keep only the first
    page.locator("#gw-history label").filter(has_text=EXPENSES).click()
    wait_until(lambda: bot_messages(page).count() == 1 and "30 days" in bot_messages(page).first.inner_text(),
               what="the other conversation")
    page.locator("#gw-delete").click()
    wait_until(lambda: sidebar_titles(page) == [FIRST], what="the deleted conversation to leave the sidebar")
    assert bot_messages(page).count() == 0
    assert [s.title for s in conversations.list(alice)] == [FIRST]

    # "New chat" after reopening the first: an empty chat, and the next question starts a new conversation
    page.locator("#gw-history label").filter(has_text=FIRST).click()
    wait_until(lambda: bot_messages(page).count() == 3, what="the first conversation again")
    page.locator("#gw-clear").click()
    wait_until(lambda: bot_messages(page).count() == 0, what="an empty chat")
    meals = "What is the meal allowance in Austin?"
    assert "60 USD" in ask(page, meals)["text"]
    assert [(s.title, s.turns) for s in conversations.list(alice)] == [(meals, 1), (FIRST, 3)]
    page.context.close()


def test_nobody_opens_another_users_conversation_by_its_id(site) -> None:
    """The sidebar's endpoint takes the id as sent (no check against the page's choices): the ownership check is
    the service's. A forged id, someone else's or made up, gets the same "not found" and nothing of theirs."""
    conversations = site.services.conversations
    hannah, alice = client(site, "hannah"), client(site, "alice")
    hannah.predict("How much does the salary band E4 pay?", [], None, api_name="/ask")
    [theirs] = conversations.list(user(site, "hannah"))
    assert "78,000" in conversations.turns(user(site, "hannah"), theirs.id)[0].answer.answer

    alice.predict("How many days of annual leave do I get?", [], None, api_name="/ask")
    mine = conversations.list(user(site, "alice"))[0]
    opened = alice.predict(mine.id, [], api_name="/open_conversation")  # the endpoint works for her own
    assert "27 days" in str(opened)

    messages = []
    for forged in (theirs.id, "no-such-conversation-id"):
        with pytest.raises(Exception) as error:
            alice.predict(forged, [], api_name="/open_conversation")
        messages.append(str(error.value))
        assert "78,000" not in messages[-1] and "salary" not in messages[-1].lower()
    assert "Conversation not found" in messages[0] and messages[0] == messages[1]  # missing or theirs: alike
    # her own conversation is untouched and still hers only
    assert len(conversations.turns(user(site, "hannah"), theirs.id)) == 1
    assert theirs.id not in {s.id for s in conversations.list(user(site, "alice"))}


def test_admin_reads_and_exports_the_audit_log(browser, site, tmp_path) -> None:
    question = "How long must passwords be?"
    client(site, "alice").predict(question, [], None, api_name="/ask")
    with pytest.raises(Exception, match="Only administrators"):  # the endpoints are the admin's only
        client(site, "alice").predict("", "", "", "", api_name="/admin_audit")

    page = new_page(browser, height=1100)
    login(page, site.url, "admin")
    page.get_by_role("tab", name="Admin").click()
    page.get_by_role("tab", name="Audit log").click()
    table = page.locator("#gw-audit")
    wait_until(lambda: question in table.inner_text(), what="the question in the audit table")
    page.locator("#gw-audit-user input, #gw-audit-user textarea").first.fill("alice")
    page.locator("#gw-audit-document input, #gw-audit-document textarea").first.fill("it/passwords.md")
    page.locator("#gw-audit-show").click()
    wait_until(lambda: "document it/passwords.md" in page.locator("#gw-audit-summary").inner_text(),
               what="the filtered table")
    rows = table.locator("[role=row]:not([aria-rowindex='1'])")  # the header is row 1
    assert rows.count() == 1, table.inner_text()
    row = rows.first.inner_text()
    assert question in row and "alice" in row and "it/passwords.md" in row and "web" in row

    page.locator("#gw-audit-export").click()
    link = page.locator("#gw-audit-file a").first
    link.wait_for(timeout=30_000)
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / "audit.csv"
    download.value.save_as(saved)
    records = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert [(r["user"], r["question"], r["cited"]) for r in records] == [("alice", question, "it/passwords.md")]
    save_screenshot(page, "admin-audit.png", full_page=True)
    page.context.close()
