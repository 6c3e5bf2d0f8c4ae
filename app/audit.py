"""The audit log: one append-only record per question asked, in SQLite beside the users file (Settings.audit_db).

A record says when, who (and their groups then), through which channel, the question after PII redaction, which
documents' passages were retrieved and shown, which were cited, the adapter, refusal, guardrail events and latency,
and what monitoring and canary comparisons need: the route and canary arm that chose the adapter, the answer stage's
confidence, the time to the first token, whether the citation check withdrew the answer or some of its sentences,
and whether answering failed. It never holds passage or answer text: documents appear by their source path only, so
the log can be kept and exported without becoming a copy of restricted documents. SQLite triggers refuse every
UPDATE and DELETE of a record (append-only). The documents of a record are rows of `audit_documents` indexed by
source, so "who saw document X this month?" is one indexed query (`query(document=..., since=...)`, `users(...)`).
"""
from __future__ import annotations

import csv
import json
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from app import refusals
from app import sqlite_db
from app.engine import Answer
from app.guardrails.pii import redact
from app.users import User

CHANNELS = ("web", "api", "cli")
ERROR = "error"  # the refusal_reason Conversations.ask gives a question whose answering failed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,                  -- epoch seconds
    user TEXT NOT NULL,
    groups TEXT NOT NULL,              -- JSON list: the user's groups when they asked
    channel TEXT NOT NULL,             -- web | api | cli
    question TEXT NOT NULL,            -- PII-redacted
    adapter TEXT,
    refused INTEGER NOT NULL,
    refusal_reason TEXT,
    guardrails TEXT NOT NULL,          -- JSON list of "guard:action"
    latency_s REAL,
    conversation_id TEXT
);
CREATE INDEX IF NOT EXISTS audit_by_user ON audit(user, at);
CREATE INDEX IF NOT EXISTS audit_by_at ON audit(at);
CREATE TABLE IF NOT EXISTS audit_documents (
    record_id INTEGER NOT NULL REFERENCES audit(id),
    source TEXT NOT NULL,              -- the document's path in the index, never its text
    retrieved_pos INTEGER,             -- order among the retrieved (shown) documents, NULL if not retrieved
    cited_pos INTEGER,                 -- order among the cited documents, NULL if not cited
    PRIMARY KEY (record_id, source)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_documents_by_source ON audit_documents(source, record_id);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_documents_no_update BEFORE UPDATE ON audit_documents
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_documents_no_delete BEFORE DELETE ON audit_documents
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

# Columns added after the first release: ALTER TABLE adds them to an existing file (its records get NULL there,
# i.e. "not recorded"; withdrawn and error read as False). The append-only triggers are untouched by ALTER TABLE.
_ADDED_COLUMNS = (
    ("route", "TEXT"),              # the routing gate's route that picked the adapter
    ("arm", "TEXT"),                # canary arm: candidate | control; NULL = no canary applied
    ("confidence", "REAL"),         # the answer stage's P(right) for the answer it chose; NULL = not scored
    ("first_token_s", "REAL"),      # seconds from the question to the first answer text
    ("withdrawn", "INTEGER"),       # 1: the citation check withdrew the answer or some of its sentences
    ("error", "INTEGER"),           # 1: answering failed
)

CSV_COLUMNS = ("id", "at", "user", "groups", "channel", "question", "retrieved", "cited", "adapter", "refused",
               "refusal_reason", "guardrails", "latency_s", "conversation_id", "route", "arm", "confidence",
               "first_token_s", "withdrawn", "error")


@dataclass
class AuditRecord:
    id: int
    at: float  # epoch seconds
    user: str
    groups: list[str]
    channel: str  # "web" | "api" | "cli"
    question: str  # PII-redacted
    retrieved: list[str] = field(default_factory=list)  # sources of the passages shown, distinct, in order
    cited: list[str] = field(default_factory=list)  # sources cited by the answer, distinct, in order
    adapter: str | None = None
    refused: bool = False
    refusal_reason: str | None = None
    guardrails: list[str] = field(default_factory=list)  # "guard:action", e.g. "pii:redacted"
    latency_s: float | None = None
    conversation_id: str | None = None
    route: str | None = None
    arm: str | None = None  # "candidate" | "control" | None (no canary applied)
    confidence: float | None = None  # the answer stage's P(right); None = not scored (or recorded before)
    first_token_s: float | None = None
    withdrawn: bool = False  # the citation check withdrew the answer (refused) or left sentences out
    error: bool = False  # answering failed


def withdrawn_by_citation_check(answer: Answer) -> bool:
    """True when the citation check withdrew the whole answer or redacted some of it (engine GroundedAnswer)."""
    return answer.refusal_reason == refusals.UNSUPPORTED or any(
        e.guard == "citations" and e.action in ("blocked", "redacted") for e in answer.flags)


def _distinct(values) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


class AuditLog:
    """The audit database (created on first use). Safe to share between threads: a connection per call."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            present = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
            for name, kind in _ADDED_COLUMNS:
                if name not in present:
                    conn.execute(f"ALTER TABLE audit ADD COLUMN {name} {kind}")

    def _connect(self):
        return sqlite_db.connect(self.path)

    def record(self, answer: Answer, user: User, channel: str, conversation_id: str | None = None,
               at: float | None = None) -> int:
        """Append the record of one answered (or refused, or failed) question; returns its id."""
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
        retrieved = _distinct(p.source for p in answer.retrieved)
        cited = _distinct(c.source for c in answer.citations)
        guardrails = _distinct(f"{e.guard}:{e.action}" for e in answer.flags)
        latency, first_token = answer.timings.get("total"), answer.timings.get("first_token")
        confidence = answer.confidence
        with sqlite_db.write(self.path) as conn:
            cursor = conn.execute(
                "INSERT INTO audit (at, user, groups, channel, question, adapter, refused, refusal_reason,"
                " guardrails, latency_s, conversation_id, route, arm, confidence, first_token_s, withdrawn,"
                " error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time() if at is None else at, user.name, json.dumps(sorted(user.groups)), channel,
                 redact(answer.question).text, answer.adapter, int(answer.refused), answer.refusal_reason,
                 json.dumps(guardrails), None if latency is None else round(float(latency), 4),
                 conversation_id, answer.route, answer.arm,
                 None if confidence is None else float(confidence),
                 None if first_token is None else round(float(first_token), 4),
                 int(withdrawn_by_citation_check(answer)), int(answer.refusal_reason == ERROR)))
            record_id = int(cursor.lastrowid)
            sources = _distinct(retrieved + cited)
            conn.executemany(
                "INSERT INTO audit_documents (record_id, source, retrieved_pos, cited_pos) VALUES (?, ?, ?, ?)",
                [(record_id, s, retrieved.index(s) if s in retrieved else None,
                  cited.index(s) if s in cited else None) for s in sources])
        return record_id

    def _where(self, user: str | None, document: str | None, since: float | None,
               until: float | None, adapter: str | None = None, arm: str | None = None) -> tuple[str, list]:
        clauses, params = [], []
        if user:
            clauses.append("a.user = ?")
            params.append(user)
        if adapter is not None:  # "" = answers without an adapter (the base model)
            clauses.append("a.adapter = ?" if adapter else "a.adapter IS NULL")
            params += [adapter] if adapter else []
        if arm is not None:
            clauses.append("a.arm = ?")
            params.append(arm)
        if document:
            if document.endswith("/"):  # a folder: every document under it
                clauses.append("a.id IN (SELECT record_id FROM audit_documents WHERE source LIKE ? ESCAPE '\\')")
                params.append(document.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
            else:
                clauses.append("a.id IN (SELECT record_id FROM audit_documents WHERE source = ?)")
                params.append(document)
        if since is not None:
            clauses.append("a.at >= ?")
            params.append(since)
        if until is not None:
            clauses.append("a.at < ?")
            params.append(until)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def query(self, user: str | None = None, document: str | None = None, since: float | None = None,
              until: float | None = None, limit: int | None = None, adapter: str | None = None,
              arm: str | None = None) -> list[AuditRecord]:
        """Records, newest first. `document`: a source path (a folder when it ends with "/") whose passages were
        retrieved or cited; `since` inclusive, `until` exclusive (epoch seconds); `adapter`: the adapter label
        that answered ("" = the base model); `arm`: the canary arm ("candidate" or "control")."""
        where, params = self._where(user, document, since, until, adapter, arm)
        sql = ("SELECT a.id, a.at, a.user, a.groups, a.channel, a.question, a.adapter, a.refused, a.refusal_reason,"
               " a.guardrails, a.latency_s, a.conversation_id, a.route, a.arm, a.confidence, a.first_token_s,"
               f" a.withdrawn, a.error FROM audit a{where} ORDER BY a.at DESC, a.id DESC")
        if limit is not None:
            sql, params = sql + " LIMIT ?", params + [int(limit)]
        with self._connect() as conn:
            conn.execute("BEGIN")
            try:
                rows = conn.execute(sql, params).fetchall()
                documents = self._documents(conn, [r[0] for r in rows])
            finally:
                conn.execute("COMMIT")
        records = []
        for r in rows:
            docs = documents.get(r[0], [])
            records.append(AuditRecord(
                id=r[0], at=r[1], user=r[2], groups=json.loads(r[3]), channel=r[4], question=r[5],
                retrieved=[s for s, pos, _ in sorted((d for d in docs if d[1] is not None), key=lambda d: d[1])],
                cited=[s for s, _, pos in sorted((d for d in docs if d[2] is not None), key=lambda d: d[2])],
                adapter=r[6], refused=bool(r[7]), refusal_reason=r[8], guardrails=json.loads(r[9]), latency_s=r[10],
                conversation_id=r[11], route=r[12], arm=r[13], confidence=r[14], first_token_s=r[15],
                withdrawn=bool(r[16]), error=bool(r[17])))
        return records

    @staticmethod
    def _documents(conn: sqlite3.Connection, ids: list[int]) -> dict[int, list[tuple[str, int | None, int | None]]]:
        out: dict[int, list] = {}
        for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            batch = ids[start:start + 500]
            marks = ",".join("?" * len(batch))
            for record_id, source, retrieved_pos, cited_pos in conn.execute(
                    "SELECT record_id, source, retrieved_pos, cited_pos FROM audit_documents"
                    f" WHERE record_id IN ({marks})", batch):
                out.setdefault(record_id, []).append((source, retrieved_pos, cited_pos))
        return out

    def users(self, user: str | None = None, document: str | None = None, since: float | None = None,
              until: float | None = None) -> dict[str, int]:
        """Distinct users of the matching records, with their number of questions (most first): one query."""
        where, params = self._where(user, document, since, until)
        with self._connect() as conn:
            rows = conn.execute(f"SELECT a.user, COUNT(*) FROM audit a{where} GROUP BY a.user"
                                " ORDER BY COUNT(*) DESC, a.user", params).fetchall()
        return {name: count for name, count in rows}

    def write_csv(self, records: list[AuditRecord], out: TextIO) -> None:
        """Records as CSV (times in UTC ISO 8601, lists joined by ";"). Cells a spreadsheet would run as a formula
        (a question starting with "=", "+", "-" or "@") are prefixed with "'"."""
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for r in records:
            row = [r.id, datetime.fromtimestamp(r.at, timezone.utc).isoformat(timespec="seconds"), r.user,
                   ";".join(r.groups), r.channel, r.question, ";".join(r.retrieved), ";".join(r.cited),
                   r.adapter or "", "yes" if r.refused else "no", r.refusal_reason or "", ";".join(r.guardrails),
                   "" if r.latency_s is None else f"{r.latency_s:.3f}", r.conversation_id or "", r.route or "",
                   r.arm or "", "" if r.confidence is None else f"{r.confidence:.3f}",
                   "" if r.first_token_s is None else f"{r.first_token_s:.3f}", "yes" if r.withdrawn else "no",
                   "yes" if r.error else "no"]
            writer.writerow([_csv_safe(v) for v in row])


def _csv_safe(value) -> object:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
