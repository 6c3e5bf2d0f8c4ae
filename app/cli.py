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

from app.config import LLM_URL_HELP, Settings
from finetune.models import DEFAULT_MODEL
from ingest.defaults import MAX_FILE_MB, OCR_TIMEOUT_S, TOP_K

SETTINGS = Settings.from_env()  # the one place the GROUNDWORK_* variables are read (see app/config.py)
COMMANDS_GROUP = "groundwork.commands"  # entry-point group of extra subcommands (typer apps), e.g. `eval`

cli = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Groundwork: answers from your company's documents, with citations.")
index_cli = typer.Typer(no_args_is_help=True, help="Inspect an index.")
cli.add_typer(index_cli, name="index")
users_cli = typer.Typer(no_args_is_help=True, help="Manage the users who may ask questions, and their groups.")
cli.add_typer(users_cli, name="users")

_debug = False


@cli.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    global _debug
    _debug = debug


DECODING_HELP = ("quote: the best 1-3 sentences of one passage, selected and quoted verbatim, cited (or a refusal); "
                 "constrained: the model writes the quote token by token; free: the model's own words.")
REFUSAL_THRESHOLD_HELP = ("quote: refuse when the selected answer's calibrated probability of being right is below "
                          "this (0-1). Higher refuses more of what the documents do not answer, and more of what they "
                          "do. Default: the fitted one.")


@cli.command()
def version() -> None:
    """Print the Groundwork version."""
    from importlib.metadata import version as package_version

    typer.echo(f"groundwork {package_version('groundwork')}")


@cli.command()
def ingest(
    paths: List[Path] = typer.Argument(..., help="Folders or files to index."),
    index: Path = typer.Option(SETTINGS.index_dir, "--index", help="Index directory."),
    acl: Optional[Path] = typer.Option(None, "--acl", help="ACL rules (TOML); default: the rules stored in the index."),
    embedder: str = typer.Option("all-MiniLM-L6-v2", "--embedder", help="Embedding model name or folder."),
    max_file_mb: float = typer.Option(MAX_FILE_MB, "--max-file-mb", help="Skip files larger than this."),
    ocr_timeout: float = typer.Option(OCR_TIMEOUT_S, "--ocr-timeout",
                                      help="Seconds of OCR one file's scanned pages may take together."),
    batch_chunks: int = typer.Option(64, "--batch-chunks", help="Chunks embedded and saved together."),
    vector_store: Optional[str] = typer.Option(
        None, "--vector-store", help="faiss, milvus:///path/milvus.db (Milvus Lite) or milvus://host:19530 (token in "
        "GROUNDWORK_MILVUS_TOKEN); remembered by the index. Default: the index's store (FAISS for a new one)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Index documents (PDF, DOCX, XLSX, PPTX, HTML, Markdown, text, CSV, images); scans are OCR'd. Only new or
    changed files are re-embedded."""
    from ingest.documents import ocr_notes
    from ingest.pipeline import IngestOptions, ingest as run_ingest

    options = IngestOptions(index_dir=index, acl_file=acl, embedder=embedder, max_file_mb=max_file_mb,
                            ocr_timeout_s=ocr_timeout,
                            batch_chunks=batch_chunks, vector_store=vector_store, show_progress=not quiet)
    summary = run_ingest(paths, options)
    for problem in summary.failed:
        typer.echo(f"  failed:  {problem.path}: {problem.reason}")
    for problem in summary.skipped:
        typer.echo(f"  skipped: {problem.path}: {problem.reason}")
    for source in summary.removed:
        typer.echo(f"  removed: {source} (file is gone)")
    for note in ocr_notes(summary.ocr):
        typer.echo(f"  OCR: {note}")
    for problem in summary.acl_tightened:
        typer.echo(f"  permissions: {problem.path}: {problem.reason}")
    if summary.acl_changed:
        typer.echo(f"  permissions changed on {summary.acl_changed} unchanged document(s)")
    typer.echo(f"Ingested into {index}: {summary.one_line()}")


@index_cli.command("stats")
def index_stats(index: Path = typer.Option(SETTINGS.index_dir, "--index", help="Index directory.")) -> None:
    """Documents, chunks, formats, groups and the last run of an index."""
    from ingest.documents import ocr_notes
    from ingest.milvus_store import STORE_KEY
    from ingest.store import read_index_meta
    from ingest.vector_store import open_vector_store

    reader = open_vector_store(index)
    try:
        stats = reader.stats()
    finally:
        reader.close()
    updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stats.updated_at)) if stats.updated_at else "never"
    typer.echo(f"Index:      {index}")
    typer.echo(f"Documents:  {stats.documents}")
    typer.echo(f"Chunks:     {stats.chunks}")
    typer.echo(f"Embedder:   {stats.embedder} ({stats.dimension} dims)")
    typer.echo(f"Vectors:    {read_index_meta(index).get(STORE_KEY) or 'faiss'}")
    typer.echo("Formats:    " + ", ".join(f"{k} {v}" for k, v in stats.by_type.items()))
    typer.echo("Groups:     " + ", ".join(f"{k} {v}" for k, v in stats.by_group.items()))
    typer.echo(f"On disk:    {stats.disk_bytes / 1e6:.1f} MB, generation {stats.generation}, updated {updated}")
    if stats.last_run:
        run = stats.last_run
        typer.echo(f"Last run:   {run['added']} added, {run['updated']} updated, {run['unchanged']} unchanged, "
                   f"{run['removed']} removed, {len(run['failed'])} failed, {len(run['skipped'])} skipped "
                   f"in {run['seconds']:.1f}s")
        for problem in run["failed"]:
            typer.echo(f"  failed:  {problem['path']}: {problem['reason']}")
        for note in ocr_notes(run.get("ocr") or {}):
            typer.echo(f"  OCR: {note}")


@cli.command()
def ask(
    question: str = typer.Argument(..., help="The question."),
    index: Path = typer.Option(SETTINGS.index_dir, "--index", help="Index directory."),
    user: Optional[str] = typer.Option(None, "--user", help="Answer as this user (their groups); default: only "
                                                              "documents open to everyone."),
    users_file: Path = typer.Option(SETTINGS.users_file, "--users", help="Users file."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Base model name, HF id or folder."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="LoRA adapter: NAME, NAME@vN, a folder, or none "
                                                                  "(default: the most recently promoted adapter)."),
    adapters: Path = typer.Option(SETTINGS.adapters_dir, "--adapters", help="Adapter registry directory."),
    no_quantize: bool = typer.Option(False, "--no-quantize", help="Load the model in bf16 instead of 4-bit."),
    top_k: int = typer.Option(TOP_K, "--top-k", help="Passages given to the model."),
    decoding: str = typer.Option("quote", "--decoding", help=DECODING_HELP),
    refusal_threshold: Optional[float] = typer.Option(None, "--refusal-threshold", help=REFUSAL_THRESHOLD_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the whole answer as one JSON object."),
    llm_url: Optional[str] = typer.Option(SETTINGS.llm_url, "--llm-url", help=LLM_URL_HELP),
) -> None:
    """Answer a question from the indexed documents, with cited sources (recorded in the audit log)."""
    import json

    from app.conversations.service import Conversations
    from app.engine import DECODINGS, AnswerOptions, Engine, EngineConfig
    from app.guardrails.config import read_guardrails
    from ingest.retrieval import RetrievalOptions
    from app.users import ANONYMOUS, UserStore

    who = UserStore(users_file).get(user) if user else ANONYMOUS
    guardrails = read_guardrails(SETTINGS.guardrails_file)
    engine = Engine(EngineConfig(index_dir=index, model=model, quantize=not no_quantize, adapter=adapter,
                                 adapters_dir=adapters, guardrails=guardrails, llm_url=llm_url or None))
    if decoding not in DECODINGS:
        raise typer.BadParameter(f"--decoding must be one of {', '.join(DECODINGS)}, not {decoding!r}")
    options = AnswerOptions(retrieval=RetrievalOptions(top_k=top_k), decoding=decoding,
                            selection_threshold=refusal_threshold)
    # Through the conversation service, for its audit record (channel "cli"); nothing is kept as a conversation.
    conversations = Conversations.beside(engine, users_file)
    shown = ""
    result = None
    for item in conversations.ask(who, question, options, keep=False, channel="cli"):
        if isinstance(item, str):
            if item.startswith(shown) and not as_json:
                sys.stdout.write(item[len(shown):])
                sys.stdout.flush()
            shown = item
        else:
            result = item.answer
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    if result.refused and shown:
        typer.echo(f"\n[answer withdrawn: {result.refusal_reason}]\n{result.answer}")
    elif result.answer != shown:  # the citation check rewrote the markers
        typer.echo(("\n\nChecked: " if shown else "") + result.answer)
    else:
        typer.echo()
    for citation in result.citations:
        where = f"page {citation.page}" if citation.page else (citation.heading or "")
        typer.echo(f"  [{citation.n}] {citation.source}" + (f" ({where})" if where else ""))
    for flag in result.flags:
        typer.echo(f"  guardrail {flag.guard}: {flag.action} — {flag.detail}", err=True)
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    route = f", route {result.route}" if result.route and result.route != "default" else ""
    typer.echo(f"  ({result.model}{' + ' + result.adapter if result.adapter else ''}{route}; {timings})", err=True)


@users_cli.command("add")
def users_add(
    name: str = typer.Argument(...),
    groups: Optional[str] = typer.Option(None, "--groups", help="Comma-separated groups (everyone is always "
                                         "included). With --replace: kept unless given."),
    role: Optional[str] = typer.Option(None, "--role", help="employee or admin (default employee). With --replace: "
                                       "kept unless given."),
    password: Optional[str] = typer.Option(None, "--password", help="Default: asked for at the prompt.",
                                           envvar="GROUNDWORK_PASSWORD"),
    replace: bool = typer.Option(False, "--replace", help="Change an existing user (their web sessions end)."),
    users_file: Path = typer.Option(SETTINGS.users_file, "--users", help="Users file."),
) -> None:
    """Add a user (the password is stored as a scrypt hash)."""
    from app.users import UserStore

    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = UserStore(users_file).add(name, password, role=role, groups=None if groups is None else groups.split(","),
                                     replace=replace)
    typer.echo(f"{'Updated' if replace else 'Added'} {user.name} ({user.role}; groups: {', '.join(user.groups)})")


@users_cli.command("list")
def users_list(users_file: Path = typer.Option(SETTINGS.users_file, "--users", help="Users file.")) -> None:
    """List users with their role and groups."""
    from app.users import UserStore

    for user in UserStore(users_file).list():
        typer.echo(f"{user.name:<20} {user.role:<9} {', '.join(user.groups)}")


@users_cli.command("remove")
def users_remove(name: str = typer.Argument(...),
                 users_file: Path = typer.Option(SETTINGS.users_file, "--users", help="Users file.")) -> None:
    """Remove a user (their web sessions end; the last admin cannot be removed)."""
    from app.users import UserStore

    UserStore(users_file).remove(name)
    typer.echo(f"Removed {name}")


@users_cli.command("token")
def users_token(
    name: str = typer.Argument(..., help="The user the token acts as (their groups decide what it may read)."),
    label: str = typer.Option("", "--label", help="What the token is for (shown in `groundwork users tokens`)."),
    revoke: Optional[str] = typer.Option(None, "--revoke", help="Revoke the token with this id instead."),
    users_file: Path = typer.Option(SETTINGS.users_file, "--users", help="Users file."),
) -> None:
    """Create an API token for the OpenAI-compatible API (/v1 on `groundwork serve`), or revoke one."""
    from app.api_tokens import ApiTokens
    from app.users import UserStore

    tokens = ApiTokens(UserStore(users_file))
    if revoke is not None:
        info = tokens.revoke(name, revoke)
        typer.echo(f"Revoked token {info.id} of {name}" + (f" ({info.label})" if info.label else ""))
        return
    info, token = tokens.create(name, label)
    typer.echo(token)
    typer.echo(f"Token {info.id} for {name}: shown once, stored hashed. Use it as the API key "
               f"(Authorization: Bearer ...); revoke it with `groundwork users token {name} --revoke {info.id}`.",
               err=True)


@users_cli.command("tokens")
def users_tokens(name: Optional[str] = typer.Argument(None, help="Only this user's tokens."),
                 users_file: Path = typer.Option(SETTINGS.users_file, "--users", help="Users file.")) -> None:
    """List API tokens (id, user, created, label; never the tokens themselves)."""
    from app.api_tokens import ApiTokens
    from app.users import UserStore

    found = ApiTokens(UserStore(users_file)).list(name)
    for info in found:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.created))
        typer.echo(f"{info.id}  {info.user:<20} {created}  {info.label}".rstrip())
    if not found:
        typer.echo("No API tokens" + (f" for {name}" if name else "") + ".")


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(7860, "--port", help="Port to listen on."),
    index: Path = typer.Option(SETTINGS.index_dir, "--index", help="Index directory (created empty if missing)."),
    users_file: Path = typer.Option(SETTINGS.users_file, "--users", help="Users file (add users with `groundwork users add`)."),
    adapters: Path = typer.Option(SETTINGS.adapters_dir, "--adapters", help="Adapter registry directory."),
    uploads: Path = typer.Option(SETTINGS.documents_dir, "--uploads", help="Where documents uploaded by admins go."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Base model name, HF id or folder."),
    no_quantize: bool = typer.Option(False, "--no-quantize", help="Load the model in bf16 instead of 4-bit."),
    threads: int = typer.Option(1, "--threads", help="Torch threads per answer (1 suits a small shared CPU)."),
    decoding: str = typer.Option("quote", "--decoding", help=DECODING_HELP),
    refusal_threshold: Optional[float] = typer.Option(None, "--refusal-threshold", help=REFUSAL_THRESHOLD_HELP),
    llm_url: Optional[str] = typer.Option(SETTINGS.llm_url, "--llm-url", help=LLM_URL_HELP),
) -> None:
    """Start the web app (employees chat, admins manage documents, users, adapters and guardrails) and, on the same
    port, the OpenAI-compatible API at /v1 (tokens: `groundwork users token NAME`) and Prometheus metrics at /metrics
    (local clients only, unless GROUNDWORK_METRICS_TOKEN is set: then `Authorization: Bearer <token>`)."""
    from app.ui import ServeOptions, serve as run_server
    from app.users import UserStore

    if not UserStore(users_file).list():
        typer.echo(f"warning: no users in {users_file}: nobody can log in. Add one with "
                   f"`groundwork users add NAME --role admin`.", err=True)
    options = ServeOptions(host=host, port=port, index_dir=index, users_file=users_file,
                           guardrails_file=SETTINGS.guardrails_file, adapters_dir=adapters, docs_dir=uploads,
                           acl_file=SETTINGS.acl_file, model=model, quantize=not no_quantize,
                           decoding=decoding, selection_threshold=refusal_threshold, torch_threads=threads,
                           llm_url=llm_url or None)
    typer.echo(f"Starting: loading the index and {model} (its first start converts it once)...")
    run_server(options, on_ready=lambda url: typer.echo(f"Groundwork is running at {url}  (Ctrl-C to stop)"))


from app.finetune_cli import adapters_cli, finetune_command  # noqa: E402

cli.command("finetune")(finetune_command)
cli.add_typer(adapters_cli, name="adapters")

from app.records_cli import audit_command, feedback_cli  # noqa: E402

cli.command("audit")(audit_command)
cli.add_typer(feedback_cli, name="feedback")

from app.review_cli import review_cli  # noqa: E402

cli.add_typer(review_cli, name="review")

from app.routes_cli import routes_cli  # noqa: E402

cli.add_typer(routes_cli, name="routes")

from app.sync_cli import sync_cli  # noqa: E402

cli.add_typer(sync_cli, name="sync")

from app.llm_cli import llm_cli  # noqa: E402

cli.add_typer(llm_cli, name="llm")


def _add_plugin_commands() -> None:
    """Subcommands registered by packages under the `groundwork.commands` entry-point group (typer apps, added
    under the entry point's name): `groundwork eval` comes from eval.cli this way, so app/ never imports eval/."""
    from importlib.metadata import entry_points

    for point in sorted(entry_points(group=COMMANDS_GROUP), key=lambda p: p.name):
        cli.add_typer(point.load(), name=point.name)  # import-light: heavy imports happen inside the commands


_add_plugin_commands()


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions shown as one `error:` line: GroundworkError, plus (while every error class is being moved
    under it) the classes caught before it existed."""
    import importlib

    classes = []
    for module, name in (("ingest.errors", "GroundworkError"), ("app.users", "UserError"),
                         ("finetune.adapters", "AdapterError"), ("finetune.data", "DataError"),
                         ("finetune.models", "ModelLoadError"), ("finetune.train", "TrainingError"),
                         ("ingest.acl", "AclError"), ("ingest.pipeline", "IngestError"),
                         ("ingest.store", "IndexError_")):
        try:
            found = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(found, type) and issubclass(found, BaseException):
            classes.append(found)
    return tuple(classes)


def main() -> None:
    errors = _user_errors()
    try:
        cli()
    except errors as exc:
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
