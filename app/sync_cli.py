"""`groundwork sync`: register folders that are kept in sync with an index, list them, remove them, run them now.

`groundwork serve --index X` runs the folders registered with X on their schedule; `groundwork sync run` is the
cron-friendly alternative (it runs what is due, or --all, or one folder).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from app.config import Settings

SETTINGS = Settings.from_env()

sync_cli = typer.Typer(no_args_is_help=True, help="Keep folders in sync with an index (re-ingested on a schedule).")

INDEX_HELP = "Index directory."


@sync_cli.command("add")
def sync_add(
    path: Path = typer.Argument(..., help="The folder to keep in sync (on this machine)."),
    acl: Optional[Path] = typer.Option(None, "--acl", help="This folder's ACL rules (TOML), re-read at every run; "
                                       "default: the rules stored with the index."),
    every: str = typer.Option("15m", "--every", help="How often: e.g. 30m, 2h, 1d (at least 1m)."),
    index: Path = typer.Option(SETTINGS.index_dir, "--index", help=INDEX_HELP),
) -> None:
    """Register a folder (or change its ACL file or interval); it is due at once."""
    from ingest.sync import SyncRegistry

    folder, existed = SyncRegistry(index).add(path, acl, every)
    typer.echo(f"{'Updated' if existed else 'Added'} {folder.path}: every {folder.every}, "
               f"ACL {folder.acl or 'the rules stored with the index'}, into {index}")
    typer.echo("It is synced by `groundwork serve` on its schedule, or now with `groundwork sync run`.")


@sync_cli.command("list")
def sync_list(index: Path = typer.Option(SETTINGS.index_dir, "--index", help=INDEX_HELP)) -> None:
    """The registered folders: interval, ACL file, last run and next run."""
    from ingest.sync import SyncRegistry, format_time

    folders = SyncRegistry(index).folders()
    if not folders:
        typer.echo(f"No folders are synced into {index}. Add one with `groundwork sync add PATH`.")
    for folder in folders:
        typer.echo(f"{folder.path}")
        typer.echo(f"  every {folder.every}; ACL: {folder.acl or 'the rules stored with the index'}")
        last = folder.last_run
        if last is None:
            typer.echo("  last run: never")
        else:
            typer.echo(f"  last run: {format_time(last.started)}: {'ok' if last.ok else 'FAILED'}: {last.message}")
        if folder.note:
            typer.echo(f"  note: {folder.note}")
        typer.echo(f"  next run: {'now' if folder.next_run <= time.time() else format_time(folder.next_run)}")


@sync_cli.command("remove")
def sync_remove(
    path: Path = typer.Argument(..., help="A registered folder."),
    purge: bool = typer.Option(False, "--purge", help="Also remove the folder's documents from the index."),
    index: Path = typer.Option(SETTINGS.index_dir, "--index", help=INDEX_HELP),
) -> None:
    """Stop syncing a folder. Its documents stay in the index unless --purge is given."""
    from ingest.sync import SyncRegistry, purge_folder

    registry = SyncRegistry(index)
    folder = registry.get(path)
    removed = purge_folder(index, folder.path) if purge else 0  # first: a busy index leaves the registration
    registry.remove(folder.path)
    if purge:
        typer.echo(f"Removed {folder.path} from sync and its {removed} document(s) from {index}.")
    else:
        typer.echo(f"Removed {folder.path} from sync. Its documents stay in {index} (searchable as they were); "
                   f"use --purge to remove them too.")


@sync_cli.command("run")
def sync_run(
    path: Optional[Path] = typer.Argument(None, help="Run this registered folder only (whether due or not)."),
    run_all: bool = typer.Option(False, "--all", help="Run every registered folder, due or not."),
    index: Path = typer.Option(SETTINGS.index_dir, "--index", help=INDEX_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the folders that are due now (e.g. from cron), every folder (--all) or one folder. Exits with 1 if a
    run failed or the index was busy."""
    from ingest.documents import ocr_notes
    from ingest.sync import SyncError, SyncRegistry, due_folders, sync_folder

    registry = SyncRegistry(index)
    if path is not None and run_all:
        raise SyncError("give a folder or --all, not both")
    chosen = [registry.get(path)] if path is not None else registry.folders() if run_all else due_folders(registry)
    if not chosen:
        typer.echo("Nothing to run: no folder is due." if registry.folders()
                   else f"No folders are synced into {index}. Add one with `groundwork sync add PATH`.")
        return
    troubles = 0
    for folder in chosen:
        outcome = sync_folder(registry, folder, show_progress=not quiet)
        for problem in outcome.failed:
            typer.echo(f"  failed:  {problem}")
        for note in ocr_notes(outcome.ocr):
            typer.echo(f"  OCR: {note}")
        status = "ok" if outcome.ok else "skipped" if not outcome.ran else "FAILED"
        typer.echo(f"{folder.path}: {status}: {outcome.message}")
        troubles += not outcome.ok
    if troubles:
        raise typer.Exit(1)
