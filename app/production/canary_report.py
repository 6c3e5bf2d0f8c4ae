"""A canary's report as text and table rows: `groundwork adapters canary --status` and the admin tab's Canary tab
show the same figures."""
from __future__ import annotations

from datetime import datetime, timezone

from app.production.canary import CanaryReport
from app.production.canary_stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, TABLE_HEADERS, table_rows

METHODS = ("Differences are candidate − control with a 95% confidence interval: rates by Newcombe's hybrid score "
           "interval for a difference of proportions (Wilson intervals combined); latencies by a percentile "
           f"bootstrap of the difference ({BOOTSTRAP_RESAMPLES:,} resamples, seed {BOOTSTRAP_SEED}). An interval "
           "that excludes 0 is a difference the data supports; guard rules act on the point estimates.")
NO_CANARY = "No canary has been started. Start one with `groundwork adapters canary NAME@vN --share 10`."
EVENT_HEADERS = ["When (UTC)", "Candidate", "Event", "Rule", "Detail", "By"]


def when(at: float | None) -> str:
    return "–" if at is None else datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def headline(report: CanaryReport) -> str:
    canary = report.canary
    if canary is None:
        return NO_CANARY
    who = f"users of {', '.join(canary.groups)}" if canary.groups else "all users"
    text = (f"Canary {canary.candidate} (candidate) vs {canary.control} (control): {canary.status}; "
            f"{canary.share:g}% of {who}; started {when(canary.started_at)} UTC")
    if not canary.running:
        text += f", ended {when(canary.ended_at)} UTC ({canary.ended_reason})"
    return text + "."


def rules_line(report: CanaryReport) -> str:
    canary = report.canary
    if canary is None:
        return ""
    if not canary.rules:
        return "Guard rules: none (no automatic rollback)."
    return "Guard rules (roll back when): " + "; ".join(r.describe() for r in canary.rules) + "."


def comparison_rows(report: CanaryReport) -> list[list[str]]:
    """Answers first, then every rate and latency: metric, candidate, control, difference [95% CI], test."""
    answers = ["Answers", str(report.candidate.answers), str(report.control.answers), "", ""]
    rated = ["Rated answers (up/down)", f"{report.candidate.rated} ({report.candidate.thumbs_up}/"
             f"{report.candidate.thumbs_down})", f"{report.control.rated} ({report.control.thumbs_up}/"
             f"{report.control.thumbs_down})", "", ""]
    return [answers, rated, *table_rows(report.comparisons)]


def event_rows(report: CanaryReport) -> list[list[str]]:
    """Newest first."""
    return [[when(e.get("at")), e.get("candidate", ""), e.get("event", ""), e.get("rule") or "", e.get("detail", ""),
             e.get("by", "")] for e in reversed(report.events)]


def evaluation_lines(report: CanaryReport) -> list[str]:
    """The offline side: each version's evaluation figures from its adapter card, and how to compare runs."""
    lines = ["Offline comparison: `groundwork eval compare CONTROL_RUN CANDIDATE_RUN` (eval runs of the two "
             "versions on the same QA set)."]
    for ref, evaluations in report.evaluations.items():
        if not evaluations:
            lines.append(f"  {ref}: no evaluation recorded (run `groundwork eval --adapter {ref} ...`)")
        for label, figures in evaluations.items():
            shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in figures.items() if k in ("run_dir", "grounded_accuracy", "correct",
                                                                   "unanswerable_refused", "questions")
                              and v is not None)
            lines.append(f"  {ref}: {label}: {shown}")
    return lines


def text(report: CanaryReport) -> str:
    """The whole report as plain text (the CLI's --status)."""
    lines = [headline(report)]
    if report.canary is None:
        return lines[0]
    lines.append(rules_line(report))
    rows = [[TABLE_HEADERS[0], f"Candidate {report.canary.candidate}", f"Control {report.canary.control}",
             TABLE_HEADERS[3], TABLE_HEADERS[4]], *comparison_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines.append("")
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)).rstrip())
    lines += ["", METHODS, ""]
    events = event_rows(report)
    if events:
        lines.append("Events (newest first):")
        lines += [f"  {e[0]}  {e[1]}  {e[2]}" + (f"  rule: {e[3]}" if e[3] else "") + (f"  {e[4]}" if e[4] else "")
                  for e in events[:20]]
        lines.append("")
    lines += evaluation_lines(report)
    return "\n".join(lines)
