"""`groundwork audit` and `groundwork feedback ...`: reading the audit log, and the users' ratings of answers
(listed, corrected by an admin, exported as a QA set). Thin shells over app.audit and app.conversations.

Dates are UTC, like the CSV export: `--since 2026-12-01` is that day's first second, `--until 2026-12-31`
includes the whole day.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import typer

from app.config import Settings
from ingest.errors import GroundworkError

SETTINGS = Settings.from_env()

feedback_cli = typer.Typer(no_args_is_help=True,
                           help="The users' 👍/👎 on answers: list, correct, export as a QA set.")


class RecordsError(GroundworkError):
    """A bad option or a missing database; one line for the user."""


def _when(text: str | None, option: str, end: bool = False) -> float | None:
    """YYYY-MM-DD (a day: with end=True, the end of that day) or an ISO date and time, in UTC, to epoch seconds."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RecordsError(f"{option} {text!r}: use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    if end and len(text) <= 10:  # a date alone: up to the end of that day
        moment += timedelta(days=1)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise RecordsError(f"no {what} at {path} (it is created by the first question asked in the web app or API)")
    return path


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def audit_command(
    user: Optional[str] = typer.Option(None, "--user", help="Only this user's questions."),
    document: Optional[str] = typer.Option(None, "--document",
                                           help="Only questions that retrieved or cited this document (a source "
                                                "path as in the index; ending with / for a folder)."),
    since: Optional[str] = typer.Option(None, "--since", help="From this day (YYYY-MM-DD, UTC), inclusive."),
    until: Optional[str] = typer.Option(None, "--until", help="Up to this day (YYYY-MM-DD, UTC), inclusive."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Write the records to this CSV file instead."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="At most this many records (newest first)."),
    db: Path = typer.Option(SETTINGS.audit_db, "--db", help="The audit database."),
) -> None:
    """The audit log: who asked what, when, and which documents were shown and cited (newest first).

    Who saw a document this month: groundwork audit --document hr/salary.pdf --since 2026-12-01
    """
    from app.audit import AuditLog

    start, end = _when(since, "--since"), _when(until, "--until", end=True)
    log = AuditLog(_existing(db, "audit log"))
    records = log.query(user=user, document=document, since=start, until=end, limit=limit)
    if csv_file is not None:
        csv_file.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_file, "w", encoding="utf-8", newline="") as out:
            log.write_csv(records, out)
        typer.echo(f"wrote {len(records)} record(s) to {csv_file}")
    else:
        for r in reversed(records):  # oldest at the top, the newest next to the prompt
            outcome = f"refused ({r.refusal_reason})" if r.refused else "answered"
            shown = [s for s in r.retrieved if s not in r.cited]
            documents = (f" cited: {', '.join(r.cited)}" if r.cited else "") + (
                f" shown: {', '.join(shown)}" if shown else "")
            typer.echo(f"{_utc(r.at)}  {r.user:<12} {r.channel:<3}  {_short(r.question, 60)!r}  {outcome}"
                       f"{documents}{'  adapter: ' + r.adapter if r.adapter else ''}  {r.latency_s or 0:.1f}s")
        typer.echo(f"{len(records)} question(s)" + (f" (the newest {limit})" if limit else ""))
    if document:
        users = log.users(user=user, document=document, since=start, until=end)
        seen = ", ".join(f"{name} ({count})" for name, count in users.items())
        typer.echo(f"{document}: seen by {len(users)} user(s)" + (f": {seen}" if seen else ""))


@feedback_cli.command("list")
def feedback_list(
    rating: Optional[str] = typer.Option(None, "--rating", help="up or down: only those ratings."),
    db: Path = typer.Option(SETTINGS.conversations_db, "--db", help="The conversations database."),
) -> None:
    """The rated answers, oldest first: turn id (for `feedback correct`), rating, user, question and comment."""
    from app.conversations.store import ConversationStore

    wanted = {None: None, "up": 1, "down": -1}
    if rating not in wanted:
        raise RecordsError(f"--rating {rating!r}: use up or down")
    records = ConversationStore(_existing(db, "conversations database")).feedback_records(wanted[rating])
    for r in records:
        mark = "up  " if r.rating > 0 else "down"
        cited = ", ".join(dict.fromkeys(c.source for c in r.answer.citations)) or "no citation"
        typer.echo(f"{r.turn_id:>6}  {mark}  {_utc(r.rated_at or 0)}  {r.user:<12} {_short(r.question, 60)!r}"
                   f"  [{cited}]" + (f"  comment: {_short(r.comment, 60)!r}" if r.comment else "")
                   + ("  (corrected)" if r.correction else ""))
    typer.echo(f"{len(records)} rated answer(s)")


@feedback_cli.command("correct")
def feedback_correct(
    turn_id: int = typer.Argument(..., help="The turn id shown by `groundwork feedback list`."),
    answer: str = typer.Argument(..., help="The corrected answer."),
    source: Optional[str] = typer.Option(None, "--source",
                                         help="The document that holds it (default: the answer's first cited one)."),
    index: Path = typer.Option(SETTINGS.index_dir, "--index", help="Index the source must be in."),
    db: Path = typer.Option(SETTINGS.conversations_db, "--db", help="The conversations database."),
) -> None:
    """An admin's corrected answer for a rated answer: `feedback export` makes it a training example."""
    from app.conversations.store import ConversationStore
    from ingest.vector_store import open_vector_store

    store = ConversationStore(_existing(db, "conversations database"))
    record = next((r for r in store.feedback_records() if r.turn_id == turn_id), None)
    if record is None:
        raise RecordsError(f"turn {turn_id} has no feedback (see `groundwork feedback list`)")
    if source is None and not record.answer.citations:
        raise RecordsError(f"turn {turn_id}'s answer cites no document: name the one that holds the answer with "
                           "--source")
    if source is not None:
        sources = {doc.source for doc in open_vector_store(index).documents()}
        if source not in sources:
            raise RecordsError(f"{source} is not a document of the index at {index}")
    store.set_correction(turn_id, answer, source)
    typer.echo(f"turn {turn_id}: corrected answer saved (source: {source or record.answer.citations[0].source})")


@feedback_cli.command("export")
def feedback_export(
    out: Path = typer.Option(..., "--out", help="QA set (JSONL) of the 👍 answers and corrected answers."),
    review: Optional[Path] = typer.Option(None, "--review",
                                          help="QA set of the 👎 answers without a correction (questions only, "
                                               "for eval; never training data). Default: OUT.review.jsonl."),
    groups: str = typer.Option("everyone", "--groups",
                               help="Only documents these groups may read (comma-separated), as finetune --groups."),
    index: Path = typer.Option(SETTINGS.index_dir, "--index", help="Index the documents' groups are read from."),
    db: Path = typer.Option(SETTINGS.conversations_db, "--db", help="The conversations database."),
) -> None:
    """Rated answers as a QA set for `groundwork eval --qa` and `groundwork finetune --data`."""
    from app.conversations.export import feedback_items, review_path, write_jsonl
    from app.conversations.store import ConversationStore
    from ingest.vector_store import open_vector_store

    allowed = {g.strip() for g in groups.split(",") if g.strip()}
    readable = {doc.source for doc in open_vector_store(index).documents() if allowed & set(doc.groups)}
    store = ConversationStore(_existing(db, "conversations database"))
    export = feedback_items(store.feedback_records(corrected=True), readable)  # + the review queue's
    review = review or review_path(out)
    for items, path, what in ((export.items, out, "answered or corrected (eval and training)"),
                              (export.review, review, "to review (eval only)")):
        if items:
            write_jsonl(items, path)
            typer.echo(f"wrote {len(items)} question(s) {what} to {path}")
        else:
            typer.echo(f"no question {what}: {path} not written")
    for turn_id, why in sorted(export.left_out.items()):
        typer.echo(f"left out turn {turn_id}: {why}")
