"""The admin tab's Canary tab: both arms of the running (or last) canary side by side, start and stop, and the
events (rollbacks by a guard rule with the rule and the figures that fired it).

Like every admin handler, each one below starts with require_admin(): the tab is hidden from employees, but
the role check on the server is the protection (an employee calling the endpoint directly gets an error).
"""
from __future__ import annotations

import gradio as gr

from app.production import canary_report
from app.production.canary import CanaryFile, CanaryReport
from app.production.canary_stats import TABLE_HEADERS
from app.ui.auth import require_admin
from ingest.errors import GroundworkError

CONCURRENCY = 2
RULES_PLACEHOLDER = "refusal_rate+10@50\nerror_rate>2%@50\nthumbs_down_rate+15@30"


def _canary(services) -> CanaryFile:
    canary = getattr(services.conversations, "canary", None)
    if canary is None:  # a server built without one: the file beside the users file, as the CLI uses
        canary = CanaryFile.beside(services.users.path, services.registry)
    return canary


def _report(services) -> CanaryReport:
    canary, conversations = _canary(services), services.conversations
    canary.check(conversations.audit, conversations.store)  # a rule may have fired since the last answer
    return canary.report(conversations.audit, conversations.store)


def canary_values(services) -> tuple[str, list[list[str]], str, list[list[str]]]:
    """(headline and rules, comparison rows, methods and offline comparison, event rows)."""
    report = _report(services)
    head = canary_report.headline(report)
    rules = canary_report.rules_line(report)
    offline = canary_report.evaluation_lines(report)
    notes = canary_report.METHODS + "\n\n" + "\n".join(
        line.strip() if i == 0 else f"- {line.strip()}" for i, line in enumerate(offline))
    rows = canary_report.comparison_rows(report) if report.canary is not None else []
    return (f"**{head}**" + (f"\n\n{rules}" if rules else ""), rows, notes, canary_report.event_rows(report))


def show_canary(services, request: gr.Request):
    require_admin(services.users, request)
    return canary_values(services)


def start_canary(services, candidate: str, share: float | None, groups: str, rules: str, request: gr.Request):
    admin = require_admin(services.users, request)
    try:
        started = _canary(services).start((candidate or "").strip(), 10 if share is None else share,
                                          (groups or "").split(","),
                                          [line for line in (rules or "").splitlines() if line.strip()],
                                          by=admin.name)
    except GroundworkError as exc:
        raise gr.Error(str(exc)) from None
    message = (f"Started: {started.share:g}% of {', '.join(started.groups) or 'all users'} get "
               f"{started.candidate}, the others {started.control}.")
    return (message, *canary_values(services))


def stop_canary(services, request: gr.Request):
    admin = require_admin(services.users, request)
    try:
        ended = _canary(services).stop(f"stopped by {admin.name}", by=admin.name)
    except GroundworkError as exc:
        raise gr.Error(str(exc)) from None
    return (f"Stopped: everyone gets {ended.control} again.", *canary_values(services))


def build_canary_tab(services, tab: gr.Tab | None = None) -> None:
    """The tab's content (called inside `with gr.Tab("Canary") as tab` in app/ui/admin.py); selecting the tab
    refreshes it."""
    gr.Markdown("A canary gives a share of users (sticky per user) a candidate adapter version while the others "
                "keep the promoted one, and compares the two live. Guard rules roll the candidate back "
                "automatically; promoting the candidate (Adapters tab or `groundwork adapters promote`) ends the "
                "canary with the candidate for everyone.")
    headline = gr.Markdown("", elem_id="gw-canary-headline")
    table = gr.Dataframe(headers=["Metric", "Candidate", "Control", TABLE_HEADERS[3], TABLE_HEADERS[4]],
                         interactive=False, wrap=True, elem_id="gw-canary-arms")
    refresh = gr.Button("Refresh", elem_id="gw-canary-refresh")
    notes = gr.Markdown("", elem_id="gw-canary-notes")
    gr.Markdown("#### Events")
    events = gr.Dataframe(headers=canary_report.EVENT_HEADERS, interactive=False, wrap=True, max_height=320,
                          column_widths=["13%", "9%", "9%", "25%", "36%", "8%"], elem_id="gw-canary-events")
    with gr.Accordion("Start or stop a canary", open=False):
        with gr.Row(equal_height=True):
            candidate = gr.Textbox(label="Candidate version (NAME@vN)", placeholder="acme@v3",
                                   elem_id="gw-canary-candidate")
            share = gr.Number(label="Share of users (%)", value=10, minimum=0, maximum=100,
                              elem_id="gw-canary-share")
            groups = gr.Textbox(label="Only these groups (comma-separated; empty = everyone)",
                                elem_id="gw-canary-groups")
        rules = gr.Textbox(label="Guard rules, one per line (roll back when one holds)", lines=3,
                           placeholder=RULES_PLACEHOLDER, elem_id="gw-canary-rules",
                           info="metric+POINTS@N: that many points above the control once both arms have N "
                                "answers; metric>LIMIT@N: above a limit (2% or 0.02). Metrics: refusal_rate, "
                                "withdrawal_rate, block_rate, error_rate, thumbs_down_rate (N = rated answers).")
        with gr.Row():
            start = gr.Button("Start canary", variant="primary", elem_id="gw-canary-start")
            stop = gr.Button("Stop canary", variant="stop", elem_id="gw-canary-stop")
        message = gr.Markdown("", elem_id="gw-canary-message")

    outputs = [headline, table, notes, events]

    def listen(trigger, fn, inputs, outs, api_name):
        trigger(fn, inputs, outs, api_name=api_name, concurrency_limit=CONCURRENCY,
                concurrency_id=f"admin-{api_name}")

    def do_show(request: gr.Request):
        return show_canary(services, request)

    def do_start(c, s, g, r, request: gr.Request):
        return start_canary(services, c, s, g, r, request)

    def do_stop(request: gr.Request):
        return stop_canary(services, request)

    listen(refresh.click, do_show, None, outputs, "admin_canary")
    if tab is not None:
        tab.select(do_show, None, outputs, api_name=False, concurrency_limit=CONCURRENCY,
                   concurrency_id="admin-admin_canary")
    listen(start.click, do_start, [candidate, share, groups, rules], [message, *outputs], "admin_canary_start")
    listen(stop.click, do_stop, None, [message, *outputs], "admin_canary_stop")
