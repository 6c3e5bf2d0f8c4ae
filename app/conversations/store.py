"""Each user's conversations, their turns (question + the full Answer) and the feedback on them, in SQLite.

One database file beside the users file (Settings.conversations_db), in WAL mode so the web server's threads
read while one writes. Every read and write names the user and checks ownership in the SQL itself: another
user's conversation or turn is reported exactly like a missing one (ConversationNotFound), so ids leak nothing.
A connection is opened per call (cheap for SQLite, and safe from any thread); each write is one transaction.
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from app import sqlite_db
from app.engine import Answer, Citation, RetrievedPassage
from app.guardrails import GuardrailEvent
from ingest.errors import GroundworkError

RATINGS = (1, -1)  # thumbs up, thumbs down

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_user ON conversations(user, updated);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    n INTEGER NOT NULL,                -- 1, 2, ... within the conversation
    question TEXT NOT NULL,
    answer TEXT NOT NULL,              -- Answer.to_dict() as JSON
    created REAL NOT NULL,
    rating INTEGER,                    -- +1 / -1 / NULL (not rated)
    comment TEXT,
    rated_at REAL,
    correction TEXT,                   -- an admin's corrected answer (training data), see set_correction
    correction_source TEXT,
    corrected_at REAL,
    UNIQUE (conversation_id, n)
);
CREATE INDEX IF NOT EXISTS turns_rated ON turns(rating) WHERE rating IS NOT NULL;
"""


class ConversationNotFound(GroundworkError, LookupError):
    """No such conversation (or turn) for this user; the same whether it is missing or someone else's."""


class FeedbackError(GroundworkError, ValueError):
    """Bad feedback input (a rating other than +1/-1, an empty correction)."""


@dataclass
class ConversationSummary:
    id: str
    title: str
    created: float
    updated: float
    turns: int


@dataclass
class StoredTurn:
    id: int
    conversation_id: str
    n: int
    question: str
    answer: Answer  # answer.searched_for is inside it
    created: float
    rating: int | None
    comment: str | None


@dataclass
class FeedbackRecord:
    """A rated turn, for the admin's export and review (all users): what was asked, answered and said of it."""

    turn_id: int
    user: str
    conversation_id: str
    question: str
    answer: Answer
    rating: int
    comment: str | None
    rated_at: float | None
    correction: str | None
    correction_source: str | None


def answer_from_dict(data: dict) -> Answer:
    """Rebuild an Answer (with its Citation, RetrievedPassage and GuardrailEvent objects) from Answer.to_dict()."""
    return Answer(question=data["question"], answer=data["answer"], refused=bool(data["refused"]),
                  refusal_reason=data.get("refusal_reason"),
                  citations=[Citation(**c) for c in data.get("citations", [])],
                  retrieved=[RetrievedPassage(**p) for p in data.get("retrieved", [])],
                  flags=[GuardrailEvent.from_dict(f) for f in data.get("flags", [])],
                  timings=dict(data.get("timings", {})), user=data.get("user", ""), model=data.get("model", ""),
                  adapter=data.get("adapter"), searched_for=data.get("searched_for"), route=data.get("route"),
                  arm=data.get("arm"), confidence=data.get("confidence"))  # older turns: None


def _not_found(what: str = "conversation") -> ConversationNotFound:
    return ConversationNotFound(f"no such {what}")


class ConversationStore:
    """The conversations database (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent: set once, kept in the file
            conn.executescript(_SCHEMA)

    def _connect(self):
        return sqlite_db.connect(self.path, foreign_keys=True)

    def _write(self):
        return sqlite_db.write(self.path, foreign_keys=True)

    # --- conversations ------------------------------------------------------------------------------
    def create(self, user: str, title: str) -> str:
        conversation_id = secrets.token_urlsafe(12)
        now = time.time()
        with self._write() as conn:
            conn.execute("INSERT INTO conversations (id, user, title, created, updated) VALUES (?, ?, ?, ?, ?)",
                         (conversation_id, user, title.strip() or "Conversation", now, now))
        return conversation_id

    def list(self, user: str) -> list[ConversationSummary]:
        """The user's conversations, the most recently updated first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT c.id, c.title, c.created, c.updated, COUNT(t.id) FROM conversations c"
                " LEFT JOIN turns t ON t.conversation_id = c.id WHERE c.user = ?"
                " GROUP BY c.id ORDER BY c.updated DESC, c.rowid DESC", (user,)).fetchall()
        return [ConversationSummary(id=r[0], title=r[1], created=r[2], updated=r[3], turns=r[4]) for r in rows]

    def turns(self, user: str, conversation_id: str) -> list[StoredTurn]:
        """The conversation's turns, oldest first; ConversationNotFound unless it is the user's."""
        with self._connect() as conn:
            conn.execute("BEGIN")  # one snapshot: the ownership check and the turns agree
            try:
                if not _owns(conn, user, conversation_id):
                    raise _not_found()
                rows = conn.execute(
                    "SELECT id, conversation_id, n, question, answer, created, rating, comment FROM turns"
                    " WHERE conversation_id = ? ORDER BY n", (conversation_id,)).fetchall()
            finally:
                conn.execute("COMMIT")
        return [StoredTurn(id=r[0], conversation_id=r[1], n=r[2], question=r[3],
                           answer=answer_from_dict(json.loads(r[4])), created=r[5], rating=r[6], comment=r[7])
                for r in rows]

    def add_turn(self, user: str, conversation_id: str, question: str, answer: Answer) -> int:
        """Append a turn to the user's conversation; returns the turn's id."""
        now = time.time()
        payload = json.dumps(answer.to_dict(), ensure_ascii=False)
        with self._write() as conn:
            if not _owns(conn, user, conversation_id):
                raise _not_found()
            n = conn.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM turns WHERE conversation_id = ?",
                             (conversation_id,)).fetchone()[0]
            cursor = conn.execute("INSERT INTO turns (conversation_id, n, question, answer, created)"
                                  " VALUES (?, ?, ?, ?, ?)", (conversation_id, n, question, payload, now))
            conn.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
            return int(cursor.lastrowid)

    def delete(self, user: str, conversation_id: str) -> None:
        """Delete the user's conversation with its turns and their feedback."""
        with self._write() as conn:
            if not _owns(conn, user, conversation_id):
                raise _not_found()
            conn.execute("DELETE FROM turns WHERE conversation_id = ?", (conversation_id,))
            conn.execute("DELETE FROM conversations WHERE id = ? AND user = ?", (conversation_id, user))

    # --- feedback ------------------------------------------------------------------------------------
    def set_feedback(self, user: str, turn_id: int, rating: int, comment: str = "") -> None:
        """Rate one of the user's own turns +1 or -1 (again: replaces the rating), with an optional comment."""
        if rating not in RATINGS:
            raise FeedbackError(f"a rating is +1 or -1, not {rating!r}")
        with self._write() as conn:
            updated = conn.execute(
                "UPDATE turns SET rating = ?, comment = ?, rated_at = ? WHERE id = ? AND conversation_id IN"
                " (SELECT id FROM conversations WHERE user = ?)",
                (rating, comment.strip() or None, time.time(), int(turn_id), user)).rowcount
            if not updated:
                raise _not_found("turn")

    def set_correction(self, turn_id: int, text: str, source: str | None = None) -> None:
        """An admin's corrected answer for a turn (any user's): exported as a training example."""
        if not text.strip():
            raise FeedbackError("the corrected answer is empty")
        with self._write() as conn:
            updated = conn.execute(
                "UPDATE turns SET correction = ?, correction_source = ?, corrected_at = ? WHERE id = ?",
                (text.strip(), (source or "").strip() or None, time.time(), int(turn_id))).rowcount
            if not updated:
                raise _not_found("turn")

    def feedback_records(self, rating: int | None = None, corrected: bool = False) -> list[FeedbackRecord]:
        """Every rated turn of every user (oldest first), optionally only those with this rating. Admin only.

        corrected=True also returns the turns a reviewer corrected that their user never rated (rating None):
        the review queue's corrections (app/production/review.py), which the export makes training examples."""
        query = ("SELECT t.id, c.user, t.conversation_id, t.question, t.answer, t.rating, t.comment, t.rated_at,"
                 " t.correction, t.correction_source FROM turns t JOIN conversations c ON c.id = t.conversation_id"
                 + (" WHERE (t.rating IS NOT NULL OR t.correction IS NOT NULL)" if corrected and rating is None
                    else " WHERE t.rating IS NOT NULL"))
        params: tuple = ()
        if rating is not None:
            query, params = query + " AND t.rating = ?", (rating,)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY t.id", params).fetchall()
        return [FeedbackRecord(turn_id=r[0], user=r[1], conversation_id=r[2], question=r[3],
                               answer=answer_from_dict(json.loads(r[4])), rating=r[5], comment=r[6], rated_at=r[7],
                               correction=r[8], correction_source=r[9]) for r in rows]

    # --- the review queue (app/production/review.py): any user's turn, admin only ------------------------------
    def turn_of(self, turn_id: int) -> tuple[str, StoredTurn]:
        """(its user, the turn) for any user's turn; ConversationNotFound when there is none. Admin only."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT c.user, t.id, t.conversation_id, t.n, t.question, t.answer, t.created, t.rating, t.comment"
                " FROM turns t JOIN conversations c ON c.id = t.conversation_id WHERE t.id = ?",
                (int(turn_id),)).fetchone()
        if row is None:
            raise _not_found("turn")
        return row[0], StoredTurn(id=row[1], conversation_id=row[2], n=row[3], question=row[4],
                                  answer=answer_from_dict(json.loads(row[5])), created=row[6], rating=row[7],
                                  comment=row[8])

    def set_answer(self, turn_id: int, answer: Answer) -> None:
        """Replace a turn's stored answer (the review queue releases an answer held until reviewed). Admin only."""
        with self._write() as conn:
            updated = conn.execute("UPDATE turns SET answer = ? WHERE id = ?",
                                   (json.dumps(answer.to_dict(), ensure_ascii=False), int(turn_id))).rowcount
            if not updated:
                raise _not_found("turn")

    def withdraw(self, turn_id: int, note: str) -> None:
        """Replace a turn's answer by `note` for good (a reviewer removed it): the text, its citations, passages,
        flags and the rewritten query are dropped from the stored answer, so neither the reopened conversation
        nor a follow-up's history shows them again. The question stays. Admin only."""
        with self._write() as conn:
            row = conn.execute("SELECT answer FROM turns WHERE id = ?", (int(turn_id),)).fetchone()
            if row is None:
                raise _not_found("turn")
            data = json.loads(row[0])
            data.update(answer=note, citations=[], retrieved=[], flags=[], searched_for=None)
            conn.execute("UPDATE turns SET answer = ? WHERE id = ?",
                         (json.dumps(data, ensure_ascii=False), int(turn_id)))


def _owns(conn: sqlite3.Connection, user: str, conversation_id: str) -> bool:
    return conn.execute("SELECT 1 FROM conversations WHERE id = ? AND user = ?",
                        (str(conversation_id), user)).fetchone() is not None
