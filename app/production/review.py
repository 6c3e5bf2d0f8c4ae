"""The human review queue: answers that match the admin's review rules wait for a reviewer, who approves,
corrects (the correction becomes a training/eval example, exactly as a feedback correction does) or removes them.

Rules (review_rules.json beside the users file; the admin tab's Review tab edits it; a missing file = DEFAULTS):

- low_confidence (number or null): an answer given (not a refusal) whose Answer.confidence (quote selection's
  calibrated P(right)) is below it. An answer without a confidence (not scored) never matches.
- thumbs_down (bool): the asker rated the answer 👎.
- pii_in_answer (bool): the answer guard redacted personal data in the answer (a "pii" event at stage "answer"),
  or the answer as shown still holds some (the asker had switched the PII guard off).
- topic_near_miss (bool): the question was not blocked, yet a word of it (or two or three words written
  together) is within edit distance 1 of a blocked topic's keyword of 5-7 letters, or 2 of one of 8 letters or
  more (spaces ignored): "lay offs", "layofs", "redundancie". Shorter keywords have no near misses (too many
  ordinary words are one letter away from them). A near miss may be innocent ("payoff" is one letter from
  "layoff"): it is queued for a person to look at, never refused.
- documents (globs): an answer that cited or retrieved a document whose source matches one (`*` also matches `/`).
- groups (names): the asker is in one of these groups.
- hold_groups (names): the asker is in one of these groups: the answer is also held until reviewed. The asker sees
  PENDING_REVIEW instead of it (nothing streams), in the chat and in the reopened conversation; approving
  releases the answer into the conversation, correcting releases the correction, removing withdraws it. An API
  call that stores nothing (keep=false) gets PENDING_REVIEW and never the answer.

The queue (review.sqlite beside the users file, WAL) keeps what a reviewer must see: the asker's name, the question
(PII-redacted), the answer as the asker saw it and its citations. That is a copy of a user's answer outside their
conversation, readable by admins only: reading answers is what the review queue is for. One item per turn: a rule
that fires again on a turn already waiting (its 👎 after a low confidence) adds its reason to that item. Every
decision (approve, correct, remove, rules saved) is logged with the reviewer and the time in a table that is only
ever appended to.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import re
import sqlite3
import time
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from app import refusals, sqlite_db
from app.conversations.store import ConversationNotFound, ConversationStore, answer_from_dict
from app.engine import Answer
from app.guardrails import GuardrailConfig
from app.guardrails import pii
from app.users import User
from ingest.errors import GroundworkError
from ingest.files import atomic_write_json

REVIEW_DB = "review.sqlite"
RULES_FILE = "review_rules.json"
WITHDRAWN = "(answer withdrawn by a reviewer)"  # what the asker's reopened conversation shows instead
REASONS = ("low_confidence", "thumbs_down", "pii", "topic_near_miss", "document", "group", "hold")
PENDING_REVIEW = "(this answer is waiting for a reviewer: it will appear here once it is approved)"
STATUSES = ("pending", "approved", "corrected", "removed")
log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    user TEXT NOT NULL,                -- who asked
    conversation_id TEXT,              -- NULL: not kept in a conversation (the API with keep=false)
    turn_id INTEGER,
    question TEXT NOT NULL,            -- PII-redacted
    answer TEXT NOT NULL,              -- as the asker saw it
    citations TEXT NOT NULL,           -- JSON: [{n, source, page, heading, text}]
    reasons TEXT NOT NULL,             -- JSON: {reason: detail}
    status TEXT NOT NULL DEFAULT 'pending',
    decided_by TEXT,
    decided_at REAL,
    correction TEXT,
    correction_source TEXT,
    held_answer TEXT                   -- JSON (Answer.to_dict) of an answer held from its asker until reviewed
);
CREATE INDEX IF NOT EXISTS items_pending ON items(status, id);
CREATE TABLE IF NOT EXISTS decisions (   -- appended to only
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    reviewer TEXT NOT NULL,
    action TEXT NOT NULL,              -- approve | correct | remove | rules
    item_id INTEGER,
    detail TEXT
);
"""


class ReviewError(GroundworkError, ValueError):
    """A bad review action (no such item, already decided, bad rules); one line for the reviewer."""


# --- rules ------------------------------------------------------------------------------------------------------

@dataclass
class ReviewRules:
    """Which answers go to the review queue (see the module docstring)."""

    low_confidence: float | None = None
    thumbs_down: bool = True
    pii_in_answer: bool = True
    topic_near_miss: bool = True
    documents: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    hold_groups: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        value = self.low_confidence
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value <= 1):
            raise ReviewError("low_confidence must be a number from 0 to 1, or null (off)")
        for name in ("thumbs_down", "pii_in_answer", "topic_near_miss"):
            if not isinstance(getattr(self, name), bool):
                raise ReviewError(f"{name} must be true or false")
        for name in ("documents", "groups", "hold_groups"):
            values = getattr(self, name)
            if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
                raise ReviewError(f"{name} must be a list of non-empty strings")
            setattr(self, name, [v.strip() for v in values])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> "ReviewRules":
        if not isinstance(data, dict):
            raise ReviewError("review rules must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ReviewError(f"unknown review rule '{sorted(unknown)[0]}' (known: {', '.join(sorted(known))})")
        return cls(**data)

    @classmethod
    def parse(cls, text: str) -> "ReviewRules":
        """The rules from the JSON an admin typed; ReviewError with a readable line when it is not valid."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReviewError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        return cls.from_dict(data)


class ReviewRulesFile:
    """review_rules.json: read on every answer (a saved change applies to the next one); written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> ReviewRules:
        if not self.path.exists():
            return ReviewRules()
        try:
            return ReviewRules.parse(self.path.read_text(encoding="utf-8"))
        except ReviewError as exc:
            raise ReviewError(f"{self.path}: {exc}") from None

    def save(self, rules: ReviewRules) -> None:
        atomic_write_json(self.path, rules.to_dict(), indent=2)


# --- the rules applied ------------------------------------------------------------------------------------------

def edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance, or limit + 1 as soon as it is certain to exceed `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def _allowed_edits(keyword: str) -> int:
    n = len(keyword)
    return 0 if n < 5 else 1 if n < 8 else 2


def near_miss(question: str, config: GuardrailConfig) -> str | None:
    """'topic (keyword ~ what was written)' when the question comes close to a blocked topic's keyword, else None
    (see the module docstring for "close")."""
    words = re.findall(r"\w+", unicodedata.normalize("NFKC", question).casefold())
    for topic in config.blocked_topics:
        for keyword in topic.keywords:
            target = "".join(unicodedata.normalize("NFKC", keyword).casefold().split())
            limit = _allowed_edits(target)
            if not limit:
                continue
            for size in (1, 2, 3):
                for start in range(len(words) - size + 1):
                    written = "".join(words[start:start + size])
                    if edit_distance(written, target, limit) <= limit:
                        return f"{topic.name} ('{keyword}' ~ '{' '.join(words[start:start + size])}')"
    return None


def matching_rules(rules: ReviewRules, answer: Answer, user: User,
                   guardrails: GuardrailConfig | None = None) -> dict[str, str]:
    """{reason: detail} for every rule that fires on this answer (👎 is on_feedback's, never here)."""
    found: dict[str, str] = {}
    confidence = getattr(answer, "confidence", None)  # absent before monitoring's Answer.confidence
    if rules.low_confidence is not None and confidence is not None and not answer.refused \
            and confidence < rules.low_confidence:
        found["low_confidence"] = f"confidence {confidence:.2f} < {rules.low_confidence:.2f}"
    if rules.pii_in_answer:
        redacted = [f for f in answer.flags if f.guard == "pii" and f.stage == "answer"]
        allow = pii.Allowlist(guardrails.pii_allowlist if guardrails else [])
        left = pii.redact(answer.answer, allow)
        if redacted:
            found["pii"] = f"the answer guard {redacted[0].detail}"
        elif left.total:
            found["pii"] = f"the answer shows personal data ({left.summary().replace('redacted ', '')})"
    if rules.topic_near_miss and guardrails is not None and guardrails.blocked_topics:
        blocked = any(f.guard == "blocked_topic" for f in answer.flags) and answer.refusal_reason == refusals.GUARDRAIL
        hit = None if blocked else near_miss(answer.question, guardrails)
        if hit:
            found["topic_near_miss"] = f"close to blocked topic {hit}"
    if rules.documents:
        sources = list(dict.fromkeys([c.source for c in answer.citations] + [p.source for p in answer.retrieved]))
        hits = [s for s in sources if any(fnmatch.fnmatchcase(s, g) for g in rules.documents)]
        if hits:
            found["document"] = "touches " + ", ".join(hits)
    if rules.groups:
        groups = [g for g in user.groups if g in rules.groups]
        if groups:
            found["group"] = "asked by a member of " + ", ".join(groups)
    return found


# --- the queue --------------------------------------------------------------------------------------------------

@dataclass
class ReviewItem:
    id: int
    created: float
    user: str
    conversation_id: str | None
    turn_id: int | None
    question: str
    answer: str
    citations: list[dict]
    reasons: dict[str, str]
    status: str
    decided_by: str | None
    decided_at: float | None
    correction: str | None
    correction_source: str | None
    held: bool = False  # the asker has not seen the answer: it waits for this decision


@dataclass
class Decision:
    at: float
    reviewer: str
    action: str
    item_id: int | None
    detail: str | None


_ITEM_COLUMNS = ("id, created, user, conversation_id, turn_id, question, answer, citations, reasons, status,"
                 " decided_by, decided_at, correction, correction_source, held_answer IS NOT NULL")


def _item(row: tuple) -> ReviewItem:
    return ReviewItem(id=row[0], created=row[1], user=row[2], conversation_id=row[3], turn_id=row[4],
                      question=row[5], answer=row[6], citations=json.loads(row[7]), reasons=json.loads(row[8]),
                      status=row[9], decided_by=row[10], decided_at=row[11], correction=row[12],
                      correction_source=row[13], held=bool(row[14]))


class ReviewQueue:
    """The queue (created on first use) and the rules file beside it. `store` holds the turns that a correction
    is saved on and that a removal withdraws."""

    def __init__(self, path: Path, store: ConversationStore, rules_file: Path | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.rules_file = ReviewRulesFile(rules_file or self.path.parent / RULES_FILE)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
            if "held_answer" not in columns:  # a queue from before holding existed
                conn.execute("ALTER TABLE items ADD COLUMN held_answer TEXT")

    @classmethod
    def beside(cls, users_file: Path, store: ConversationStore) -> "ReviewQueue":
        folder = Path(users_file).parent
        return cls(folder / REVIEW_DB, store, folder / RULES_FILE)

    def _connect(self):
        return sqlite_db.connect(self.path)

    def _write(self):
        return sqlite_db.write(self.path)

    # --- rules -----------------------------------------------------------------------------------------------
    def rules(self) -> ReviewRules:
        return self.rules_file.load()

    def _rules_now(self) -> ReviewRules:
        """The rules for an answer being made: a rules file damaged by hand must not take answering down, so it
        is logged and the defaults apply until it is fixed (the admin tab shows the error)."""
        try:
            return self.rules()
        except (ReviewError, OSError) as exc:
            log.error("review rules unreadable, using the defaults: %s", exc)
            return ReviewRules()

    def save_rules(self, rules: ReviewRules, reviewer: str) -> None:
        self.rules_file.save(rules)
        with self._write() as conn:
            self._log(conn, reviewer, "rules", None, json.dumps(rules.to_dict()))

    # --- holding ---------------------------------------------------------------------------------------------
    def holds(self, user: User) -> bool:
        """Whether this asker's answers wait for a reviewer before they are shown (hold_groups)."""
        return bool(set(user.groups) & set(self._rules_now().hold_groups))

    @staticmethod
    def held(answer: Answer) -> Answer:
        """What the asker gets while their answer waits: PENDING_REVIEW, without the passages or citations."""
        return replace(answer, answer=PENDING_REVIEW, citations=[], retrieved=[], searched_for=None,
                       flags=[f for f in answer.flags if f.stage == "question"])

    # --- enqueueing ------------------------------------------------------------------------------------------
    def consider(self, answer: Answer, user: User, turn_id: int | None, conversation_id: str | None,
                 guardrails: GuardrailConfig | None = None, held: bool = False) -> list[str]:
        """Queue the answer when a rule fires; returns the reasons (empty: not queued). `guardrails`: the settings
        the answer was made under (blocked topics for near misses, the PII allowlist). held=True: the asker was
        given `held(answer)` (see holds), so the answer is queued whatever the other rules say."""
        found = matching_rules(self._rules_now(), answer, user, guardrails)
        if held:
            found["hold"] = "held from " + ", ".join(g for g in user.groups if g in self._rules_now().hold_groups) \
                + " until reviewed"
        if found:
            self._enqueue(answer, user, turn_id, conversation_id, found, held)
        return list(found)

    def on_feedback(self, answer: Answer, user: User, turn_id: int, conversation_id: str, rating: int,
                    comment: str = "") -> list[str]:
        """A rating on a stored turn: 👎 queues it when the thumbs_down rule is on."""
        if rating >= 0 or not self._rules_now().thumbs_down:
            return []
        detail = "rated 👎" + (f": {comment.strip()}" if comment.strip() else "")
        self._enqueue(answer, user, turn_id, conversation_id, {"thumbs_down": detail})
        return ["thumbs_down"]

    def _enqueue(self, answer: Answer, user: User, turn_id: int | None, conversation_id: str | None,
                 reasons: dict[str, str], held: bool = False) -> int:
        citations = [{"n": c.n, "source": c.source, "page": c.page, "heading": c.heading, "text": c.text}
                     for c in answer.citations]
        with self._write() as conn:
            row = None if turn_id is None else conn.execute(
                "SELECT id, reasons FROM items WHERE turn_id = ? AND status = 'pending'", (int(turn_id),)).fetchone()
            if row is not None:  # already waiting: one item per turn, its reasons merged
                merged = {**json.loads(row[1]), **reasons}
                conn.execute("UPDATE items SET reasons = ? WHERE id = ?", (json.dumps(merged, ensure_ascii=False),
                                                                          row[0]))
                return int(row[0])
            cursor = conn.execute(
                "INSERT INTO items (created, user, conversation_id, turn_id, question, answer, citations, reasons,"
                " held_answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), user.name, conversation_id, turn_id, pii.redact(answer.question).text, answer.answer,
                 json.dumps(citations, ensure_ascii=False), json.dumps(reasons, ensure_ascii=False),
                 json.dumps(answer.to_dict(), ensure_ascii=False) if held else None))
            return int(cursor.lastrowid)

    # --- reading ---------------------------------------------------------------------------------------------
    def pending(self) -> list[ReviewItem]:
        """The items waiting for a reviewer, oldest first."""
        return self.items("pending")

    def items(self, status: str | None = None) -> list[ReviewItem]:
        with self._connect() as conn:
            if status is None:
                rows = conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items ORDER BY id").fetchall()
            else:
                rows = conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE status = ? ORDER BY id",
                                    (status,)).fetchall()
        return [_item(r) for r in rows]

    def get(self, item_id: int) -> ReviewItem:
        with self._connect() as conn:
            row = conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?", (int(item_id),)).fetchone()
        if row is None:
            raise ReviewError(f"no review item {item_id}")
        return _item(row)

    def decisions(self, item_id: int | None = None) -> list[Decision]:
        """The decision log, oldest first (one item's, or all)."""
        query = "SELECT at, reviewer, action, item_id, detail FROM decisions"
        params: tuple = ()
        if item_id is not None:
            query, params = query + " WHERE item_id = ?", (int(item_id),)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY id", params).fetchall()
        return [Decision(*r) for r in rows]

    # --- deciding --------------------------------------------------------------------------------------------
    def approve(self, item_id: int, reviewer: str) -> ReviewItem:
        """The answer stands as it is (a held one is released into the asker's conversation)."""
        item = self._pending(item_id)
        self._release(item, lambda answer: answer)
        self._decide(item_id, reviewer, "approved", "approve", None)
        return self.get(item_id)

    def correct(self, item_id: int, reviewer: str, corrected_text: str, source: str | None = None) -> ReviewItem:
        """The right answer, from `source` (default: the answer's first cited document). It is saved on the turn as
        an admin's correction, so `groundwork feedback export` makes it a training/eval example (as
        `groundwork feedback correct` does). The asker's conversation keeps the original answer."""
        item = self._pending(item_id)
        text = (corrected_text or "").strip()
        source = (source or "").strip() or None
        if not text:
            raise ReviewError("the corrected answer is empty")
        if source is None and not item.citations:
            raise ReviewError(f"item {item_id}'s answer cites no document: name the one that holds the answer")
        if item.turn_id is None:
            raise ReviewError(f"item {item_id} was not kept in a conversation (an API call that stores nothing): "
                              "there is no turn to attach a correction to; approve or remove it")
        try:
            self.store.set_correction(item.turn_id, text, source)
        except ConversationNotFound:
            raise ReviewError(f"item {item_id}'s conversation was deleted by its user: approve or remove it") from None
        chosen = source or item.citations[0]["source"]
        self._release(item, lambda answer: replace(answer, answer=text, citations=[
            c for c in answer.citations if c.source == chosen]))  # a held answer: the asker gets the correction
        self._decide(item_id, reviewer, "corrected", "correct", json.dumps({"source": source}),
                     correction=text, correction_source=source or item.citations[0]["source"])
        return self.get(item_id)

    def remove(self, item_id: int, reviewer: str) -> ReviewItem:
        """Withdraw the answer from the asker's conversation (the stored turn shows WITHDRAWN from now on, also in
        a follow-up's history). An item whose turn is gone (or was never kept) is marked removed all the same."""
        item = self._pending(item_id)
        if item.turn_id is not None:
            try:
                self.store.withdraw(item.turn_id, WITHDRAWN)
            except ConversationNotFound:
                pass  # the user deleted the conversation: nothing left to withdraw
        self._decide(item_id, reviewer, "removed", "remove", None)
        return self.get(item_id)

    def _release(self, item: ReviewItem, shown) -> None:
        """A held item's answer, as `shown(answer)` makes it, into the asker's conversation (if it still exists)."""
        if not item.held or item.turn_id is None:
            return
        with self._connect() as conn:
            data = conn.execute("SELECT held_answer FROM items WHERE id = ?", (item.id,)).fetchone()[0]
        try:
            self.store.set_answer(item.turn_id, shown(answer_from_dict(json.loads(data))))
        except ConversationNotFound:
            pass  # the asker deleted the conversation meanwhile

    def _pending(self, item_id: int) -> ReviewItem:
        item = self.get(item_id)
        if item.status != "pending":
            raise ReviewError(f"item {item_id} was already {item.status} by {item.decided_by}")
        return item

    def _decide(self, item_id: int, reviewer: str, status: str, action: str, detail: str | None,
                correction: str | None = None, correction_source: str | None = None) -> None:
        now = time.time()
        with self._write() as conn:
            updated = conn.execute(
                "UPDATE items SET status = ?, decided_by = ?, decided_at = ?, correction = ?, correction_source = ?"
                " WHERE id = ? AND status = 'pending'",
                (status, reviewer, now, correction, correction_source, int(item_id))).rowcount
            if not updated:  # another reviewer decided it meanwhile
                raise ReviewError(f"item {item_id} was decided meanwhile by another reviewer")
            self._log(conn, reviewer, action, item_id, detail, now)

    @staticmethod
    def _log(conn: sqlite3.Connection, reviewer: str, action: str, item_id: int | None, detail: str | None,
             at: float | None = None) -> None:
        conn.execute("INSERT INTO decisions (at, reviewer, action, item_id, detail) VALUES (?, ?, ?, ?, ?)",
                     (at or time.time(), reviewer, action, item_id, detail))
