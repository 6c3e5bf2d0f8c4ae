"""The `groundwork` command line. Each subcommand is a thin shell over a library function."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

DEFAULT_INDEX = Path(os.environ.get("GROUNDWORK_INDEX", "groundwork-data/index"))

cli = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Groundwork: answers from your company's documents, with citations.")
index_cli = typer.Typer(no_args_is_help=True, help="Inspect an index.")
cli.add_typer(index_cli, name="index")

_debug = False


@cli.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    global _debug
    _debug = debug


@cli.command()
def version() -> None:
    """Print the Groundwork version."""
    from importlib.metadata import version as package_version

    typer.echo(f"groundwork {package_version('groundwork')}")


@cli.command()
def ingest(
    paths: List[Path] = typer.Argument(..., help="Folders or files to index."),
    index: Path = typer.Option(DEFAULT_INDEX, "--index", help="Index directory."),
    acl: Optional[Path] = typer.Option(None, "--acl", help="ACL rules (TOML); default: the rules stored in the index."),
    embedder: str = typer.Option("all-MiniLM-L6-v2", "--embedder", help="Embedding model name or folder."),
    max_file_mb: float = typer.Option(50.0, "--max-file-mb", help="Skip files larger than this."),
    batch_chunks: int = typer.Option(64, "--batch-chunks", help="Chunks embedded and saved together."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Index documents (PDF, DOCX, HTML, Markdown, text, CSV); only new or changed files are re-embedded."""
    from ingest.pipeline import IngestOptions, ingest as run_ingest

    options = IngestOptions(index_dir=index, acl_file=acl, embedder=embedder, max_file_mb=max_file_mb,
                            batch_chunks=batch_chunks, show_progress=not quiet)
    summary = run_ingest(paths, options)
    for problem in summary.failed:
        typer.echo(f"  failed:  {problem.path}: {problem.reason}")
    for problem in summary.skipped:
        typer.echo(f"  skipped: {problem.path}: {problem.reason}")
    for source in summary.removed:
        typer.echo(f"  removed: {source} (file is gone)")
    if summary.acl_changed:
        typer.echo(f"  permissions changed on {summary.acl_changed} unchanged document(s)")
    typer.echo(f"Ingested into {index}: {summary.one_line()}")


@index_cli.command("stats")
def index_stats(index: Path = typer.Option(DEFAULT_INDEX, "--index", help="Index directory.")) -> None:
    """Documents, chunks, formats, groups and the last run of an index."""
    from ingest.reader import IndexReader

    reader = IndexReader(index)
    try:
        stats = reader.stats()
    finally:
        reader.close()
    updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stats.updated_at)) if stats.updated_at else "never"
    typer.echo(f"Index:      {index}")
    typer.echo(f"Documents:  {stats.documents}")
    typer.echo(f"Chunks:     {stats.chunks}")
    typer.echo(f"Embedder:   {stats.embedder} ({stats.dimension} dims)")
    typer.echo(f"Formats:    " + ", ".join(f"{k} {v}" for k, v in stats.by_type.items()))
    typer.echo(f"Groups:     " + ", ".join(f"{k} {v}" for k, v in stats.by_group.items()))
    typer.echo(f"On disk:    {stats.disk_bytes / 1e6:.1f} MB, generation {stats.generation}, updated {updated}")
    if stats.last_run:
        run = stats.last_run
        typer.echo(f"Last run:   {run['added']} added, {run['updated']} updated, {run['unchanged']} unchanged, "
                   f"{run['removed']} removed, {len(run['failed'])} failed, {len(run['skipped'])} skipped "
                   f"in {run['seconds']:.1f}s")
        for problem in run["failed"]:
            typer.echo(f"  failed:  {problem['path']}: {problem['reason']}")


def main() -> None:
    from ingest.acl import AclError
    from ingest.pipeline import IngestError
    from ingest.store import IndexError_

    try:
        cli()
    except (IngestError, IndexError_, AclError) as exc:
        if _debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: the index still holds its last complete state; re-run to finish "
                   "(files already embedded are reused)", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
