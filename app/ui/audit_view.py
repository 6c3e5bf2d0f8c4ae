"""The admin tab's audit log: filters read from the page, the table's rows, and the CSV export.

The records come from app.audit.AuditLog (append-only, PII-redacted questions, document ids only); this module
only turns them into what the page shows. Dates are days in the server's time zone: "since" from the start of
that day, "until" to the end of it.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from app.audit import AuditLog, AuditRecord
from ingest.errors import GroundworkError

COLUMNS = ["When", "Who", "Groups", "Channel", "Question", "Retrieved", "Cited", "Adapter", "Refused",
           "Guardrails", "Latency (s)"]
COLUMN_WIDTHS = ["12%", "6%", "8%", "6%", "20%", "12%", "12%", "6%", "6%", "7%", "5%"]
SHOWN = 500  # rows in the table at most (newest first); the CSV export has every matching record
KEEP_EXPORTS = 8  # CSV files kept in the export folder (older ones are deleted when a new one is written)


class AuditFilterError(GroundworkError, ValueError):
    """A filter the page cannot use (a date that is not YYYY-MM-DD, since after until)."""


@dataclass(frozen=True)
class AuditFilter:
    user: str | None = None
    document: str | None = None
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive

    def query(self, audit: AuditLog, limit: int | None = None) -> list[AuditRecord]:
        return audit.query(user=self.user, document=self.document, since=self.since, until=self.until, limit=limit)


def _day(value: str | None, name: str) -> date | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise AuditFilterError(f"{name}: write the day as YYYY-MM-DD (for example 2026-12-01)") from None


def _start_of(day: date) -> float:
    return datetime(day.year, day.month, day.day).timestamp()  # local midnight


def parse_filter(user: str | None, document: str | None, since: str | None, until: str | None) -> AuditFilter:
    """The page's filters; empty fields do not filter. `until` includes the whole day it names."""
    first, last = _day(since, "Since"), _day(until, "Until")
    if first and last and first > last:
        raise AuditFilterError("Since is after Until: no record can match")
    return AuditFilter(user=(user or "").strip() or None, document=(document or "").strip() or None,
                       since=_start_of(first) if first else None,
                       until=_start_of(last + timedelta(days=1)) if last else None)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def rows(records: list[AuditRecord]) -> list[list]:
    """One table row per record (the table escapes its cells: questions are user text)."""
    out = []
    for r in records[:SHOWN]:
        refused = (f"yes ({r.refusal_reason})" if r.refusal_reason else "yes") if r.refused else "no"
        out.append([_when(r.at), r.user, ", ".join(r.groups), r.channel, r.question, "\n".join(r.retrieved),
                    "\n".join(r.cited), r.adapter or "base", refused, ", ".join(r.guardrails),
                    "" if r.latency_s is None else f"{r.latency_s:.2f}"])
    return out


def summary(counts: dict[str, int], chosen: AuditFilter) -> str:
    """One line above the table: how many questions match, by how many users, and how many rows are shown.

    `counts`: AuditLog.users() for the same filter (questions per user), so the table itself can stop at SHOWN."""
    total = sum(counts.values())
    shown = f" The newest {SHOWN} are shown; the CSV export has all." if total > SHOWN else ""
    what = [f"user {chosen.user}"] if chosen.user else []
    what += [f"document {chosen.document}"] if chosen.document else []
    scope = f" for {' and '.join(what)}" if what else ""
    return f"{total} question(s) by {len(counts)} user(s){scope}.{shown}"


class CsvExports:
    """CSV files for the download button, in one private temporary folder (Gradio serves a copy from its cache)."""

    def __init__(self) -> None:
        self._folder: Path | None = None
        self._lock = threading.Lock()

    def write(self, audit: AuditLog, records: list[AuditRecord]) -> Path:
        """A new file (its own subfolder, so its name is a clean one): groundwork-audit-YYYYMMDD-HHMMSS.csv."""
        with self._lock:
            if self._folder is None or not self._folder.is_dir():
                self._folder = Path(tempfile.mkdtemp(prefix="groundwork-audit-"))
            old = sorted((p for p in self._folder.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
            for stale in old[:max(0, len(old) - KEEP_EXPORTS + 1)]:
                shutil.rmtree(stale, ignore_errors=True)
            path = Path(tempfile.mkdtemp(dir=self._folder)) / f"groundwork-audit-{time.strftime('%Y%m%d-%H%M%S')}.csv"
        with path.open("w", encoding="utf-8", newline="") as out:
            audit.write_csv(records, out)
        return path
