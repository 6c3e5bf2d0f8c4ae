"""HTML and tables for the admin tab: index stats, ingestion progress and summary, documents."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable

from app.ui.ingest_job import JobState
from app.ui.render import text
from ingest.documents import ocr_notes
from ingest.reader import IndexStats
from ingest.store import DocumentRecord

DOCUMENT_COLUMNS = ["Document", "Type", "Readable by", "Chunks", "Indexed"]


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "never"


def stats(stats: IndexStats) -> str:
    cards = [(stats.documents, "documents"), (stats.chunks, "passages"), (stats.generation, "index generation"),
             (f"{stats.disk_bytes / 1e6:.1f} MB", "on disk")]
    grid = "".join(f'<div class="gw-stat"><div class="v">{text(str(v))}</div><div class="k">{k}</div></div>'
                   for v, k in cards)
    lines = [f"<b>Formats:</b> {text(', '.join(f'{k} {v}' for k, v in stats.by_type.items()) or 'none')}",
             f"<b>Readable by:</b> {text(', '.join(f'{k} {v}' for k, v in stats.by_group.items()) or 'nobody')}",
             f"<b>Embedder:</b> {text(stats.embedder)} ({stats.dimension} dims) · <b>updated</b> "
             f"{_when(stats.updated_at)}"]
    run = stats.last_run
    if run:
        lines.append(f"<b>Last run:</b> {run['added']} added, {run['updated']} updated, {run['unchanged']} unchanged,"
                     f" {run['removed']} removed, {len(run['failed'])} failed, {len(run['skipped'])} skipped in "
                     f"{run['seconds']:.1f} s")
        if run.get("ocr"):
            lines.append(f"<b>OCR:</b> {text('; '.join(ocr_notes(run['ocr'])))}")
    return f'<div class="gw-stats" id="gw-index-stats">{grid}</div><div class="gw-kv">{"<br>".join(lines)}</div>'


def still_there(roots: Iterable[Path]):
    """A test for the paths of a run's problems (relative to the folder they were found in): False once the file
    is gone from every one of `roots`, so a deleted file stops being reported before the next run."""
    roots = [Path(r) for r in roots]

    def present(path: str) -> bool:
        return any(os.path.lexists(root / path) for root in roots)

    return present


def problems(stats: IndexStats, present=None) -> str:
    """The files the last run could not index, with their reasons (those `present` says are gone left out)."""
    run = stats.last_run or {}
    keep = present or (lambda path: True)
    failed = [p for p in run.get("failed") or [] if keep(p["path"])]
    skipped = [p for p in run.get("skipped") or [] if keep(p["path"])]
    tightened = run.get("acl_tightened") or []
    if not failed and not skipped and not tightened:
        return '<div class="gw-note" id="gw-problems">The last run indexed every file it found.</div>'
    items = [f'<li><b>{text(p["path"])}</b>: {text(p["reason"])} <i>(failed)</i></li>' for p in failed]
    items += [f'<li><b>{text(p["path"])}</b>: {text(p["reason"])} <i>(skipped)</i></li>' for p in skipped]
    items += [f'<li><b>{text(p["path"])}</b>: {text(p["reason"])} <i>(permissions)</i></li>' for p in tightened]
    return f'<ul class="gw-problems" id="gw-problems">{"".join(items)}</ul>'


def documents(docs: list[DocumentRecord]) -> list[list]:
    return [[d.source, d.file_type, ", ".join(d.groups), d.n_chunks, _when(d.ingested_at)] for d in docs]


def document_choices(docs: list[DocumentRecord]) -> list[tuple[str, str]]:
    return [(d.source if d.source == d.path else f"{d.source}  —  {d.path}", d.path) for d in docs]


def progress(job: JobState, present=None) -> str:
    """A live progress bar while a run goes on; the run's summary when it is over (its failed and skipped files
    that `present` says are gone left out)."""
    if job.state == "idle":
        return '<div class="gw-note" id="gw-ingest-status">No ingestion has run since the server started.</div>'
    if job.running:
        if job.total:
            percent = 100.0 * job.done / job.total
            bar = f'<div class="gw-progress"><div style="width: {percent:.1f}%"></div></div>'
            line = f"{job.done} / {job.total} files · {percent:.0f}%" + (f" · {job.current}" if job.current else "")
        else:
            bar = '<div class="gw-progress gw-progress-indeterminate"><div></div></div>'
            line = "Checking which files are new or changed…"
        return (f'<div id="gw-ingest-status" data-state="running">{bar}<div class="gw-progress-text">'
                f'{text(line)} · {job.elapsed:.0f} s · started by {text(job.started_by)}. Answers keep coming from '
                f'the current index until this run is complete.</div></div>')
    if job.state == "failed":
        return (f'<div class="gw-summary gw-failed" id="gw-ingest-status" data-state="failed"><b>Ingestion failed:'
                f'</b> {text(job.error)}<br>The index keeps its last complete state.</div>')
    summary = job.summary
    assert summary is not None
    keep = present or (lambda path: True)
    items = [f'<li><b>{text(p.path)}</b>: {text(p.reason)}</li>' for p in summary.failed if keep(p.path)]
    items += [f'<li><b>{text(p.path)}</b>: {text(p.reason)} (skipped)</li>' for p in summary.skipped
              if keep(p.path)]
    items += [f'<li><b>{text(p.path)}</b>: {text(p.reason)} (permissions)</li>' for p in summary.acl_tightened]
    items += [f'<li><b>OCR:</b> {text(note)}</li>' for note in ocr_notes(summary.ocr)]
    listing = f'<ul class="gw-problems">{"".join(items)}</ul>' if items else ""
    return (f'<div class="gw-progress"><div style="width: 100%"></div></div>'
            f'<div class="gw-summary" id="gw-ingest-status" data-state="done" style="margin-top: 8px">'
            f'<b>Ingestion complete.</b> {text(summary.one_line())}{listing}</div>')
