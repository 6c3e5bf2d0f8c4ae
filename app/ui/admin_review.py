"""The admin tab's "Review" tab: the answers waiting in the review queue (app/production/review.py), each with its
question, answer, citations and the rules that sent it there, approved, corrected or removed here; and the rules.

Every handler starts with require_admin (read from the users file on the server), as in app/ui/admin.py: an
employee who calls these endpoints directly gets an error and nothing changes. Everything shown is escaped: the
answers quote documents, and a document's text is not trusted markup.
"""
from __future__ import annotations

import html
import json
from datetime import datetime, timezone

import gradio as gr

from app.production.review import ReviewError, ReviewItem, ReviewQueue, ReviewRules
from app.ui.auth import require_admin
from app.ui.services import UiServices

ADMIN_CONCURRENCY = 4
SNIPPET = 300  # characters of a cited passage shown under an item


def _queue(services: UiServices) -> ReviewQueue:
    queue = services.conversations.review
    if queue is None:
        raise gr.Error("The review queue is not set up on this server.")
    return queue


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_items(items: list[ReviewItem]) -> str:
    """The pending items as HTML, every value escaped."""
    if not items:
        return "<p class='gw-review-empty'>Nothing waits for review.</p>"
    e = html.escape
    cards = []
    for item in items:
        reasons = "".join(f"<li><b>{e(code)}</b>: {e(detail)}</li>" for code, detail in item.reasons.items())
        citations = "".join(
            f"<li>[{e(str(c.get('n', '')))}] {e(c.get('source', ''))}"
            + (f", p. {e(str(c['page']))}" if c.get("page") else "")
            + f": {e(_short(c.get('text', ''), SNIPPET))}</li>" for c in item.citations) or "<li>no citation</li>"
        where = "" if item.turn_id is None else f" · turn {item.turn_id}"
        cards.append(
            f"<div class='gw-review-item' data-item='{item.id}'>"
            f"<h4>Item {item.id} · {e(item.user)} · {e(_utc(item.created))}{e(where)}</h4>"
            f"<ul class='gw-review-reasons'>{reasons}</ul>"
            f"<p><b>Question:</b> {e(item.question)}</p>"
            f"<p><b>Answer:</b> {e(item.answer)}</p>"
            f"<ul class='gw-review-citations'>{citations}</ul></div>")
    return "".join(cards)


def _item_id(value) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise gr.Error("Choose an item to review.") from None


def build_review_tab(services: UiServices, tab=None) -> None:
    """The Review tab's components and endpoints (admin_review, admin_review_rules, admin_review_approve,
    admin_review_correct, admin_review_remove, admin_review_save_rules). With `tab`, selecting it refreshes it."""

    def listen(trigger, fn, inputs, outputs, api_name):
        trigger(fn, inputs, outputs, api_name=api_name, concurrency_limit=ADMIN_CONCURRENCY,
                concurrency_id=f"admin-{api_name}")

    gr.Markdown("Answers the review rules sent here: approve one, correct it (the correction becomes a training "
                "and evaluation example, as in `groundwork feedback export`) or remove it (the asker's "
                "conversation then shows that a reviewer withdrew it). Every decision is logged with your name.")
    refresh = gr.Button("Refresh", size="sm", elem_id="gw-review-refresh")
    items_html = gr.HTML("", elem_id="gw-review-items", padding=False)
    with gr.Row(equal_height=True):
        item_choice = gr.Dropdown(label="Item", choices=[], scale=2, elem_id="gw-review-choice",
                                  allow_custom_value=True)  # checked on the server
        approve = gr.Button("Approve", variant="primary", scale=1, elem_id="gw-review-approve")
        remove = gr.Button("Remove the answer", variant="stop", scale=1, elem_id="gw-review-remove")
    with gr.Row(equal_height=True):
        corrected = gr.Textbox(label="Corrected answer", lines=2, scale=3, elem_id="gw-review-corrected")
        source = gr.Textbox(label="From document (default: the answer's first cited one)", scale=2,
                            placeholder="policies/travel.md", elem_id="gw-review-source")
        correct = gr.Button("Save correction", scale=1, elem_id="gw-review-correct")
    message = gr.Markdown("", elem_id="gw-review-message")
    gr.Markdown("#### Review rules")
    rules = gr.Code(label="Rules (JSON): low_confidence (0-1 or null), thumbs_down, pii_in_answer, "
                          "topic_near_miss (true/false), documents (globs), groups, hold_groups (answers held "
                          "until reviewed)", language="json", lines=10,
                    interactive=True, elem_id="gw-review-rules")
    save_rules = gr.Button("Save rules", variant="primary", elem_id="gw-review-save-rules")
    rules_message = gr.Markdown("", elem_id="gw-review-rules-message")

    item_outputs = [items_html, item_choice]

    def item_values():
        items = _queue(services).pending()
        return render_items(items), gr.update(choices=[(f"{i.id}: {_short(i.question, 60)}", str(i.id))
                                                       for i in items], value=None)

    def list_items(request: gr.Request):
        require_admin(services.users, request)
        return item_values()

    def rules_text():
        try:
            return json.dumps(_queue(services).rules().to_dict(), indent=2), ""
        except ReviewError as exc:  # damaged by hand: show the file as it is, and why it is not used
            return _queue(services).rules_file.path.read_text(encoding="utf-8"), f"**Not in use:** {exc}"

    def load_rules(request: gr.Request):
        require_admin(services.users, request)
        return rules_text()

    def decide(action, item, request: gr.Request, *args):
        admin = require_admin(services.users, request)
        try:
            done = action(_item_id(item), admin.name, *args)
        except ReviewError as exc:
            raise gr.Error(str(exc)) from None
        return done

    def do_approve(item, request: gr.Request):
        done = decide(_queue(services).approve, item, request)
        return (f"Item {done.id} approved.", *item_values())

    def do_remove(item, request: gr.Request):
        done = decide(_queue(services).remove, item, request)
        return (f"Item {done.id} removed: the answer is withdrawn from {html.escape(done.user)}'s conversation.",
                *item_values())

    def do_correct(item, text: str, document: str, request: gr.Request):
        require_admin(services.users, request)
        document = (document or "").strip()
        if document:
            services.engine.reader.refresh()
            if document not in {doc.source for doc in services.engine.reader.documents()}:
                raise gr.Error(f"{document} is not a document of the index.")
        done = decide(_queue(services).correct, item, request, text or "", document or None)
        return (f"Item {done.id} corrected (source: {html.escape(done.correction_source or '')}): `groundwork "
                "feedback export` writes it as a training example.", "", "", *item_values())

    def do_save_rules(text: str, request: gr.Request):
        admin = require_admin(services.users, request)
        try:
            parsed = ReviewRules.parse(text or "")
        except ReviewError as exc:
            raise gr.Error(f"Rules not saved: {exc}") from None
        _queue(services).save_rules(parsed, admin.name)
        return ("Saved: the rules apply from the next answer on.", *rules_text()[:1])

    listen(refresh.click, list_items, None, item_outputs, "admin_review")
    listen(approve.click, do_approve, [item_choice], [message, *item_outputs], "admin_review_approve")
    listen(remove.click, do_remove, [item_choice], [message, *item_outputs], "admin_review_remove")
    listen(correct.click, do_correct, [item_choice, corrected, source],
           [message, corrected, source, *item_outputs], "admin_review_correct")
    listen(save_rules.click, do_save_rules, [rules], [rules_message, rules], "admin_review_save_rules")
    readers = gr.Button(visible=False)  # carries the rules' reading endpoint, for the tab's fill and for scripts
    listen(readers.click, load_rules, None, [rules, rules_message], "admin_review_rules")
    if tab is not None:
        def fill(request: gr.Request):
            return (*list_items(request), *load_rules(request))

        listen(tab.select, fill, None, [*item_outputs, rules, rules_message], "admin_review_fill")
