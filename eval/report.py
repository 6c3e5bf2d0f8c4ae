"""Compare evaluation runs: a table of every metric per run with the differences to the first run, a bar chart
per metric and a latency histogram (matplotlib PNGs, embedded in the HTML), and the questions whose outcome
changed between runs. Written as report.html (self-contained) and report.md (for the terminal)."""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from eval.errors import EvalError
from eval.metrics import CORRECT_THRESHOLD, METRICS, outcome, summarize
from eval.runner import RESULTS, SUMMARY, read_results

_LATENCY = {"latency_p50", "latency_p90", "latency_p95", "latency_max", "first_token_p50", "rewrite_p50"}
_WORDS = {"answer_words_p50"}  # a count of words, not a share
_UNBOUNDED = _LATENCY | _WORDS | {"leaked_passages"}  # charts scaled to the values, not to 0..1


@dataclass
class Run:
    """One run folder, its records (results.jsonl restricted to the run's question ids) and its metrics."""

    name: str
    path: Path
    summary: dict
    records: dict[str, dict]
    metrics: dict = field(default_factory=dict)


@dataclass
class Report:
    """What build_report wrote."""

    html_path: Path
    markdown_path: Path
    markdown: str
    images: list[Path]
    changed: list[dict]  # {"id", "question", "outcomes": {run name: outcome}}
    runs: list[Run]


def load_run(path: Path, threshold: float = CORRECT_THRESHOLD) -> Run:
    path = Path(path)
    summary_path = path / SUMMARY
    if not summary_path.exists():
        raise EvalError(f"{path}: not a finished evaluation run (no {SUMMARY}; run or resume `groundwork eval` "
                        f"with --out {path})")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EvalError(f"{summary_path}: not valid JSON ({exc.msg})") from None
    by_id = {r["id"]: r for r in read_results(path / RESULTS)}
    ids = summary.get("ids") or list(by_id)
    missing = [qid for qid in ids if qid not in by_id]
    if missing:
        raise EvalError(f"{path / RESULTS}: {len(missing)} question(s) of the summary are missing "
                        f"(first: {missing[0]})")
    records = {qid: by_id[qid] for qid in ids}
    run = Run(name=summary.get("name") or path.name, path=path, summary=summary, records=records)
    run.metrics = summarize(list(records.values()), threshold)["metrics"]
    return run


def _fmt(key: str, value) -> str:
    if value is None:
        return "n/a"
    if key == "leaked_passages":
        return str(int(value))
    if key in _WORDS:
        return f"{value:.1f}"
    return f"{value:.2f}" if key in _LATENCY else f"{value:.3f}"


def _delta(key: str, base, value) -> tuple[str, int]:
    """The difference as text and its sign for the reader: 1 better, -1 worse, 0 same or unknown."""
    if base is None or value is None:
        return "", 0
    diff = value - base
    if abs(diff) < 1e-9:
        return "0", 0
    better = next(h for k, _, h in METRICS if k == key)
    text = (f"{diff:+d}" if key == "leaked_passages" else f"{diff:+.1f}" if key in _WORDS
            else f"{diff:+.2f}" if key in _LATENCY else f"{diff:+.3f}")
    return text, (1 if (diff > 0) == better else -1)


def _unique_names(runs: list[Run]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        if run.name in seen:
            seen[run.name] += 1
            run.name = f"{run.name} ({seen[run.name]})"
        else:
            seen[run.name] = 1


def _charts(runs: list[Run], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images: list[Path] = []
    names = [run.name for run in runs]
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(runs))]
    for key, label, better in METRICS:
        values = [run.metrics.get(key) for run in runs]
        if all(v is None for v in values):
            continue
        fig, ax = plt.subplots(figsize=(4.2, 2.6), dpi=100)
        heights = [0.0 if v is None else v for v in values]
        bars = ax.bar(range(len(runs)), heights, color=colors)
        for bar, value in zip(bars, values):
            ax.annotate(_fmt(key, value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(runs)), names, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{label} ({'higher' if better else 'lower'} is better)", fontsize=9)
        if key not in _UNBOUNDED:
            ax.set_ylim(0, 1.1)
        else:
            ax.set_ylim(0, max(heights + [1e-9]) * 1.2 or 1)
        fig.tight_layout()
        path = out / f"metric-{key.replace('@', 'at')}.png"
        fig.savefig(path)
        plt.close(fig)
        images.append(path)

    fig, ax = plt.subplots(figsize=(6.5, 3.2), dpi=100)
    totals = [[r["timings"]["total"] for r in run.records.values() if "total" in r["timings"]] for run in runs]
    top = max((max(t) for t in totals if t), default=1.0)
    bins = [top * i / 30 for i in range(31)]
    for run, values, color in zip(runs, totals, colors):
        if values:
            ax.hist(values, bins=bins, histtype="step", linewidth=1.6, label=run.name, color=color)
    ax.set_xlabel("seconds per question (total)")
    ax.set_ylabel("questions")
    ax.set_title("Latency", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "latency-histogram.png"
    fig.savefig(path)
    plt.close(fig)
    images.append(path)
    return images


def changed_questions(runs: list[Run], threshold: float = CORRECT_THRESHOLD) -> list[dict]:
    """Questions present in every run whose outcome differs between at least two runs, in the first run's order."""
    common = [qid for qid in runs[0].records if all(qid in run.records for run in runs[1:])]
    changed = []
    for qid in common:
        outcomes = {run.name: outcome(run.records[qid], threshold) for run in runs}
        if len(set(outcomes.values())) > 1:
            changed.append({"id": qid, "question": runs[0].records[qid]["question"], "outcomes": outcomes})
    return changed


def _markdown(runs: list[Run], changed: list[dict], common: int, leaks: list[str]) -> str:
    names = [run.name for run in runs]
    lines = []
    if leaks:
        lines += [(f"**PERMISSION LEAKS** in {', '.join(leaks)}: passages from documents the asking user may not "
                   f"read. See each run's summary.json."), ""]
    header = ["metric", *names, *[f"Δ {n}" for n in names[1:]]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, label, _ in METRICS:
        values = [run.metrics.get(key) for run in runs]
        if all(v is None for v in values):
            continue
        deltas = [_delta(key, values[0], v)[0] for v in values[1:]]
        lines.append("| " + " | ".join([label, *[_fmt(key, v) for v in values], *deltas]) + " |")
    counts = ", ".join(f"{run.name}: {len(run.records)}" for run in runs)
    lines += ["", f"Questions per run: {counts}; in all runs: {common}."]
    if len(runs) > 1:
        lines += ["", f"{len(changed)} question(s) changed outcome:"]
        if changed:
            lines += ["", "| id | question | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 2)]
            for row in changed[:40]:
                question = row["question"][:70] + ("…" if len(row["question"]) > 70 else "")
                lines.append(f"| {row['id']} | {question.replace('|', '/')} | "
                             + " | ".join(row["outcomes"][n] for n in names) + " |")
            if len(changed) > 40:
                lines.append(f"\n… and {len(changed) - 40} more in report.html")
    return "\n".join(lines) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}td:first-child,th:first-child{text-align:left}
td.q{text-align:left;max-width:40em}.better{color:#137333}.worse{color:#b3261e}
.leak{background:#b3261e;color:#fff;padding:1em;font-size:1.2em;font-weight:bold}
.charts img{margin:.3em;border:1px solid #eee}"""


def _html(runs: list[Run], changed: list[dict], images: list[Path], common: int, leaks: list[str]) -> str:
    esc = html.escape
    names = [run.name for run in runs]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Groundwork evaluation report</title>",
             f"<style>{_CSS}</style></head><body><h1>Groundwork evaluation report</h1>"]
    if leaks:
        parts.append(f"<p class='leak'>PERMISSION LEAKS in {esc(', '.join(leaks))}: passages from documents the "
                     f"asking user may not read.</p>")
    parts.append("<h2>Runs</h2><table><tr><th>run</th><th>mode</th><th>adapter</th><th>split</th><th>questions"
                 "</th><th>QA file</th><th>folder</th></tr>")
    for run in runs:
        s = run.summary
        parts.append(f"<tr><td>{esc(run.name)}</td><td>{esc(str(s.get('mode')))}</td>"
                     f"<td>{esc(str(s.get('adapter') or ''))}</td><td>{esc(str(s.get('split')))}</td>"
                     f"<td>{len(run.records)}</td><td>{esc(str(s.get('qa_file')))}</td><td>{esc(str(run.path))}"
                     f"</td></tr>")
    parts.append("</table><h2>Metrics</h2><table id='metrics'><tr><th>metric</th>"
                 + "".join(f"<th>{esc(n)}</th>" for n in names)
                 + "".join(f"<th>Δ {esc(n)}</th>" for n in names[1:]) + "</tr>")
    for key, label, _ in METRICS:
        values = [run.metrics.get(key) for run in runs]
        if all(v is None for v in values):
            continue
        cells = "".join(f"<td>{_fmt(key, v)}</td>" for v in values)
        for v in values[1:]:
            text, sign = _delta(key, values[0], v)
            css = {1: " class='better'", -1: " class='worse'"}.get(sign, "")
            cells += f"<td{css}>{text}</td>"
        parts.append(f"<tr><td>{esc(label)}</td>{cells}</tr>")
    parts.append(f"</table><p>Questions in all runs: {common}. Δ is each run minus the first run.</p>")
    parts.append("<h2>Charts</h2><div class='charts'>")
    for image in images:
        data = base64.b64encode(image.read_bytes()).decode()
        parts.append(f"<img alt='{esc(image.stem)}' src='data:image/png;base64,{data}'>")
    parts.append("</div>")
    if len(runs) > 1:
        parts.append(f"<h2>Questions whose outcome changed ({len(changed)})</h2><table id='changed'><tr><th>id</th>"
                     "<th>question</th>" + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr>")
        for row in changed:
            parts.append(f"<tr><td>{esc(row['id'])}</td><td class='q'>{esc(row['question'])}</td>"
                         + "".join(f"<td>{esc(row['outcomes'][n])}</td>" for n in names) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def build_report(run_dirs: list[Path], out_dir: Path, threshold: float = CORRECT_THRESHOLD) -> Report:
    """Load the runs, recompute their metrics with one threshold, and write report.html, report.md and PNGs."""
    if not run_dirs:
        raise EvalError("give at least one run folder to compare")
    runs = [load_run(Path(p), threshold) for p in run_dirs]
    _unique_names(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = _charts(runs, out)
    changed = changed_questions(runs, threshold)
    common = sum(1 for qid in runs[0].records if all(qid in run.records for run in runs[1:]))
    leaks = [run.name for run in runs if run.metrics.get("leaked_passages")]
    markdown = _markdown(runs, changed, common, leaks)
    markdown_path, html_path = out / "report.md", out / "report.html"
    markdown_path.write_text(markdown, encoding="utf-8")
    html_path.write_text(_html(runs, changed, images, common, leaks), encoding="utf-8")
    return Report(html_path=html_path, markdown_path=markdown_path, markdown=markdown, images=images,
                  changed=changed, runs=runs)

