"""`groundwork review list|approve|correct|remove`: the human review queue from the command line (a thin shell over
app.production.review; the admin tab's Review tab does the same). Decisions are logged under --reviewer
(default: the login name of whoever runs the command)."""
from __future__ import annotations

import getpass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from app.config import Settings
from ingest.errors import GroundworkError

SETTINGS = Settings.from_env()
DEFAULT_DB = SETTINGS.users_file.parent / "review.sqlite"  # beside the users file, like the conversations

review_cli = typer.Typer(no_args_is_help=True,
                         help="The human review queue: answers the review rules flagged; approve, correct, remove.")


class ReviewCliError(GroundworkError):
    """A missing database or a bad option; one line for the user."""


def _queue(db: Path, conversations: Path | None):
    from app.conversations.store import ConversationStore
    from app.production.review import ReviewQueue

    if not db.exists():
        raise ReviewCliError(f"no review queue at {db} (it is created when the web app or API answers a question)")
    conversations = conversations or db.parent / "conversations.sqlite"
    return ReviewQueue(db, ConversationStore(conversations))


def _reviewer(name: str | None) -> str:
    return name or getpass.getuser()


_DB = typer.Option(DEFAULT_DB, "--db", help="The review queue database (review.sqlite).")
_CONVERSATIONS = typer.Option(None, "--conversations",
                              help="The conversations database (default: conversations.sqlite beside --db).")
_REVIEWER = typer.Option(None, "--reviewer", help="Who decides (logged; default: your login name).")


@review_cli.command("list")
def review_list(
    all_items: bool = typer.Option(False, "--all", help="Also the items already decided."),
    db: Path = _DB,
) -> None:
    """The items waiting for review (oldest first): id, asker, reasons, question, answer and cited documents."""
    queue = _queue(db, None)
    items = queue.items() if all_items else queue.pending()
    for item in items:
        when = datetime.fromtimestamp(item.created, timezone.utc).strftime("%Y-%m-%d %H:%M")
        cited = ", ".join(dict.fromkeys(c["source"] for c in item.citations)) or "no citation"
        status = "" if item.status == "pending" else f"  [{item.status} by {item.decided_by}]"
        typer.echo(f"{item.id:>5}  {when}  {item.user:<12} {', '.join(item.reasons)}{status}")
        typer.echo(f"       Q: {' '.join(item.question.split())}")
        typer.echo(f"       A: {' '.join(item.answer.split())}  [{cited}]")
    typer.echo(f"{len(items)} item(s)" + ("" if all_items else " waiting for review"))


@review_cli.command("approve")
def review_approve(item_id: int = typer.Argument(..., help="The id shown by `groundwork review list`."),
                   reviewer: Optional[str] = _REVIEWER, db: Path = _DB,
                   conversations: Optional[Path] = _CONVERSATIONS) -> None:
    """The answer stands as it is."""
    _queue(db, conversations).approve(item_id, _reviewer(reviewer))
    typer.echo(f"item {item_id}: approved")


@review_cli.command("correct")
def review_correct(item_id: int = typer.Argument(..., help="The id shown by `groundwork review list`."),
                   answer: str = typer.Argument(..., help="The corrected answer."),
                   source: Optional[str] = typer.Option(None, "--source", help="The document that holds it "
                                                        "(default: the answer's first cited one)."),
                   index: Path = typer.Option(SETTINGS.index_dir, "--index", help="Index the source must be in."),
                   reviewer: Optional[str] = _REVIEWER, db: Path = _DB,
                   conversations: Optional[Path] = _CONVERSATIONS) -> None:
    """Save the right answer: `groundwork feedback export` writes it as a training/eval example."""
    if source is not None:
        from ingest.vector_store import open_vector_store

        if source not in {doc.source for doc in open_vector_store(index).documents()}:
            raise ReviewCliError(f"{source} is not a document of the index at {index}")
    item = _queue(db, conversations).correct(item_id, _reviewer(reviewer), answer, source)
    typer.echo(f"item {item_id}: corrected answer saved (source: {item.correction_source}); "
               "`groundwork feedback export` includes it")


@review_cli.command("remove")
def review_remove(item_id: int = typer.Argument(..., help="The id shown by `groundwork review list`."),
                  reviewer: Optional[str] = _REVIEWER, db: Path = _DB,
                  conversations: Optional[Path] = _CONVERSATIONS) -> None:
    """Withdraw the answer from the asker's conversation."""
    item = _queue(db, conversations).remove(item_id, _reviewer(reviewer))
    typer.echo(f"item {item_id}: removed; {item.user}'s conversation now shows that a reviewer withdrew the answer")
