"""The admin tab's "Monitoring" tab: plots of the last hour, day or week from the audit records (answers per hour,
refusal rate, latency p50/p95, confidence by adapter) and the drift check of one adapter (app/production/monitoring).

Plots are matplotlib figures drawn on the server (no plotting library or font is fetched by the browser). Every
handler starts with require_admin (read from the users file on the server), as in app/ui/admin.py: an employee who
calls these endpoints directly gets an error and learns nothing. Adapter names and file paths shown are escaped.
"""
from __future__ import annotations

import html
import time
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr
from matplotlib.figure import Figure

from app.production import monitoring as mon
from app.ui.auth import require_admin
from app.ui.services import UiServices
from ingest.errors import GroundworkError

CONCURRENCY = 2  # the drift check embeds a week of questions: a few at once at most


def _when(at: float) -> datetime:
    return datetime.fromtimestamp(at, timezone.utc)


def figure(buckets: list[mon.Bucket], confidences: dict[str, list[float]], period: str) -> Figure:
    """Answers per hour, refusal rate, latency p50/p95 and confidence by adapter: one figure, four panels."""
    fig = Figure(figsize=(11, 6.2), dpi=100, layout="constrained")
    (rate, refusals), (latency, confidence) = fig.subplots(2, 2)
    times = [_when(b.start) for b in buckets]
    width = (buckets[1].start - buckets[0].start) / 86400 * 0.9 if len(buckets) > 1 else 0.01
    rate.bar(times, [b.answers_per_hour for b in buckets], width=width, align="edge", color="#0f766e")
    rate.set_title("Questions per hour")
    refusals.plot(times, [None if b.refusal_rate is None else 100 * b.refusal_rate for b in buckets], "o-",
                  color="#b45309", markersize=3)
    refusals.set_title("Refusal rate (%)")
    refusals.set_ylim(0, 100)
    latency.plot(times, [b.latency_p50 for b in buckets], "o-", label="p50", color="#0f766e", markersize=3)
    latency.plot(times, [b.latency_p95 for b in buckets], "o-", label="p95", color="#7c3aed", markersize=3)
    latency.set_title("Latency (s)")
    latency.legend(loc="upper left", fontsize=8)
    # The same window on all three time axes: with one point, matplotlib would otherwise span years.
    window = (times[0], _when(buckets[-1].start + (buckets[-1].start - buckets[0].start) / max(1, len(buckets) - 1)
                              if len(buckets) > 1 else buckets[-1].start + 3600)) if buckets else None
    for axes in (rate, refusals, latency):
        if window is not None:
            axes.set_xlim(*window)
        axes.tick_params(axis="x", labelsize=7, labelrotation=30)
        axes.grid(alpha=0.3)
    bins = [i / 20 for i in range(21)]
    for adapter, values in confidences.items():
        confidence.hist(values, bins=bins, histtype="step", linewidth=1.6, label=f"{adapter} ({len(values)})")
    confidence.set_title("Confidence by adapter (P(right) of the chosen quote)")
    confidence.set_xlim(0, 1)
    if confidences:
        confidence.legend(loc="upper left", fontsize=8)
    else:
        confidence.text(0.5, 0.5, "no scored answers", ha="center", va="center", transform=confidence.transAxes)
    fig.suptitle(f"The last {period} (UTC)", fontsize=11)
    return fig


def summary(records, buckets: list[mon.Bucket], period: str) -> str:
    total = len(records)
    if not total:
        return f"No questions in the last {period}."
    errors = sum(b.errors for b in buckets)
    judged = total - errors
    refused = sum(b.refused for b in buckets)
    withdrawn = sum(1 for r in records if r.withdrawn)
    latencies = [r.latency_s for r in records if r.latency_s is not None and not r.error]
    p50, p95 = mon.percentile(latencies, 50), mon.percentile(latencies, 95)
    parts = [f"**{total}** questions in the last {period}",
             f"refused **{refused}** ({100 * refused / judged:.0f}%)" if judged else "refused 0",
             f"citation check withdrew or cut **{withdrawn}**", f"errors **{errors}**"]
    if p50 is not None:
        parts.append(f"latency p50 **{p50:.2f} s**, p95 **{p95:.2f} s**")
    return " · ".join(parts) + "."


def overview(services: UiServices, period: str, now: float | None = None) -> tuple[Figure, str]:
    if period not in mon.PERIODS:
        raise gr.Error(f"Choose a period: {', '.join(mon.PERIODS)}.")
    now = time.time() if now is None else now
    records = services.conversations.audit.query(since=now - mon.PERIODS[period][0], until=now)
    buckets = mon.timeline(records, now, period)
    return figure(buckets, mon.confidence_by_adapter(records), period), summary(records, buckets, period)


def adapters_this_week(services: UiServices) -> list[str]:
    records = services.conversations.audit.query(since=time.time() - mon.WEEK)
    return sorted({mon.adapter_label(r) for r in records})


def _card(services: UiServices, adapter: str) -> dict | None:
    if adapter == mon.BASE:
        return None
    try:
        return services.registry.get(adapter).card
    except Exception:  # a removed version or a folder adapter: the fallback evaluation set applies
        return None


def drift_report(services: UiServices, adapter: str, eval_set: str) -> mon.DriftReport:
    """This week's answers by `adapter` against its evaluation set (the card's, else `eval_set`)."""
    folder = Path(services.users.path).parent
    eval_set = (eval_set or "").strip()
    if eval_set != mon.load_settings(folder).get("eval_set", ""):
        mon.save_eval_set(folder, eval_set)
    questions, source = mon.eval_questions(_card(services, adapter), eval_set or None)
    records = services.conversations.audit.query(since=time.time() - mon.WEEK, limit=mon.MAX_QUESTIONS,
                                                 adapter="" if adapter == mon.BASE else adapter)
    embed = services.engine.embedder.encode
    reference = mon.reference_confidences(services.engine, questions, adapter, source)
    return mon.drift(adapter, source, embed(questions), reference, embed([r.question for r in records]),
                     [r.confidence for r in records if r.confidence is not None])


def render_drift(report: mon.DriftReport) -> str:
    e = html.escape
    lines = [f"**{e(report.adapter)}**: {report.recent_questions} questions this week against "
             f"{report.eval_questions} evaluation questions from `{e(report.eval_set)}`."]
    if report.question_shift is not None:
        mark = "⚠️ **drift**" if report.question_flag else "ok"
        lines.append(f"- Questions: shift **{report.question_shift:+.3f}** (threshold "
                     f"{mon.QUESTION_SHIFT_THRESHOLD:.2f}): {mark}")
    if report.confidence_d is not None:
        mark = "⚠️ **drift**" if report.confidence_flag else "ok"
        lines.append(f"- Confidence: KS D **{report.confidence_d:.3f}**, p = {report.confidence_p:.3g} (threshold "
                     f"D > {mon.CONFIDENCE_KS_THRESHOLD:.2f}, p < {mon.CONFIDENCE_P_VALUE}): {mark}")
    lines += [f"- {e(note)}" for note in report.notes]
    return "\n".join(lines)


def build_monitoring_tab(services: UiServices, tab=None) -> None:
    """The Monitoring tab's components and endpoints (admin_monitoring, admin_monitoring_drift). With `tab`,
    selecting it draws the plots."""
    gr.Markdown("From the audit log: every question asked in the web UI, through the API or the CLI. "
                "Prometheus scrapes the same figures live at `/metrics` on this server's port.")
    with gr.Row(equal_height=True):
        period = gr.Radio(list(mon.PERIODS), value="day", label="Period", elem_id="gw-mon-period")
        refresh = gr.Button("Refresh", elem_id="gw-mon-refresh", scale=0, min_width=140)
    headline = gr.Markdown("", elem_id="gw-mon-summary")
    plot = gr.Plot(label="Answers", elem_id="gw-mon-plot", format="png")
    gr.Markdown("### Drift\nThis week's questions and confidence against the adapter's evaluation set: the "
                "held-out questions of the files its card names, else the file below. Questions: the drop in mean "
                "nearest-neighbour cosine to the evaluation questions; confidence: the Kolmogorov–Smirnov statistic.")
    with gr.Row(equal_height=True):
        adapter = gr.Dropdown(choices=[], label="Adapter (answers this week)", elem_id="gw-mon-adapter",
                              allow_custom_value=True)
        eval_set = gr.Textbox(label="Evaluation set when the card names none (JSONL with a question field)",
                              placeholder="examples/acme/qa.jsonl", elem_id="gw-mon-evalset")
        check = gr.Button("Check drift", elem_id="gw-mon-check", scale=0, min_width=140)
    drift_out = gr.Markdown("", elem_id="gw-mon-drift")

    def show(chosen: str, request: gr.Request):
        require_admin(services.users, request)
        fig, text = overview(services, chosen)
        choices = adapters_this_week(services)
        folder = Path(services.users.path).parent
        return (fig, text, gr.update(choices=choices, value=choices[0] if choices else None),
                mon.load_settings(folder).get("eval_set", ""))

    def do_check(chosen: str, path: str, request: gr.Request):
        require_admin(services.users, request)
        if not chosen:
            raise gr.Error("Choose an adapter that answered this week.")
        try:
            return render_drift(drift_report(services, chosen, path))
        except GroundworkError as exc:  # no evaluation set, an unreadable file, an adapter that is gone
            raise gr.Error(str(exc)) from None

    outputs = [plot, headline, adapter, eval_set]
    for trigger in (refresh.click, period.change):
        trigger(show, [period], outputs, api_name="admin_monitoring" if trigger == refresh.click else False,
                concurrency_limit=CONCURRENCY, concurrency_id="admin-monitoring")
    check.click(do_check, [adapter, eval_set], [drift_out], api_name="admin_monitoring_drift",
                concurrency_limit=CONCURRENCY, concurrency_id="admin-monitoring-drift")
    if tab is not None:
        tab.select(show, [period], outputs, api_name=False, concurrency_limit=CONCURRENCY,
                   concurrency_id="admin-monitoring")
