"""`groundwork routes ...`: the routing gate's routes and intents (routes.json beside the users file), and
`routes test`, which answers "who would answer this question for this user, and why" exactly as the chat
decides it (the same Router, file and registry). Thin shells over app.production.routes.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer

from app.config import Settings

SETTINGS = Settings.from_env()

routes_cli = typer.Typer(no_args_is_help=True,
                         help="The routing gate: which adapter answers for which user groups and question intents.")

USERS_HELP = "Users file (routes.json lives beside it)."
ADAPTERS_HELP = "Adapter registry directory."


def _file(users_file: Path):
    from app.production.routes import ROUTES_FILE, RoutesFile

    return RoutesFile(users_file.parent / ROUTES_FILE)


def _registry(adapters: Path):
    from finetune.adapters import AdapterRegistry

    return AdapterRegistry(adapters)


def _describe(route) -> str:
    groups = ", ".join(route.groups) if route.groups else "anyone"
    intent = f"  intent {route.intent}" if route.intent else ""
    return f"{route.name:<16} adapter {route.adapter:<16} groups {groups}{intent}"


@routes_cli.command("list")
def routes_list(users_file: Path = typer.Option(SETTINGS.users_file, "--users", help=USERS_HELP)) -> None:
    """The routes in the order they are tried (the first that matches answers), then the intents."""
    config = _file(users_file).load()
    typer.echo(f"Routes (version {config.version}, {_file(users_file).path}):")
    for n, route in enumerate(config.routes, 1):
        typer.echo(f"  {n}. {_describe(route)}")
    typer.echo(f"  {len(config.routes) + 1}. default          the promoted adapter (when no route matches)")
    if config.intents:
        typer.echo("Intents:")
        for intent in config.intents:
            typer.echo(f"  {intent.name:<16} threshold {intent.threshold:.2f}, {len(intent.examples)} examples: "
                       + " | ".join(intent.examples))


@routes_cli.command("set")
def routes_set(
    name: str = typer.Argument(..., help="The route's name (an existing route is changed in place)."),
    adapter: str = typer.Option(..., "--adapter", help="base (no adapter), NAME (its promoted version) or NAME@vN."),
    groups: Optional[str] = typer.Option(None, "--groups", help="Comma-separated groups; default: anyone."),
    intent: Optional[str] = typer.Option(None, "--intent", help="Only questions of this intent (see `routes intent`)."),
    position: Optional[int] = typer.Option(None, "--position", min=1,
                                           help="Its place in the order (1 = tried first); default: a new route "
                                                "goes last, an existing one stays where it is."),
    users_file: Path = typer.Option(SETTINGS.users_file, "--users", help=USERS_HELP),
    adapters: Path = typer.Option(SETTINGS.adapters_dir, "--adapters", help=ADAPTERS_HELP),
) -> None:
    """Add or change a route."""
    from app.production.routes import Route

    file = _file(users_file)
    config = file.load()
    route = Route(name, adapter, tuple(g.strip() for g in (groups or "").split(",") if g.strip()), intent or None)
    routes = list(config.routes)
    at = next((i for i, r in enumerate(routes) if r.name == name), None)
    if at is not None:
        routes.pop(at)
    where = position - 1 if position is not None else at if at is not None else len(routes)
    routes.insert(min(where, len(routes)), route)
    saved = file.save(replace(config, routes=tuple(routes)), _registry(adapters))
    typer.echo(f"{'Changed' if at is not None else 'Added'} route {_describe(route)} (version {saved.version})")


@routes_cli.command("remove")
def routes_remove(
    name: str = typer.Argument(..., help="The route to remove."),
    users_file: Path = typer.Option(SETTINGS.users_file, "--users", help=USERS_HELP),
    adapters: Path = typer.Option(SETTINGS.adapters_dir, "--adapters", help=ADAPTERS_HELP),
) -> None:
    """Remove a route."""
    from app.production.routes import RoutesError

    file = _file(users_file)
    config = file.load()
    if config.route(name) is None:
        raise RoutesError(f"no route named {name!r} (see `groundwork routes list`)")
    saved = file.save(replace(config, routes=tuple(r for r in config.routes if r.name != name)), _registry(adapters))
    typer.echo(f"Removed route {name} (version {saved.version})")


@routes_cli.command("intent")
def routes_intent(
    name: str = typer.Argument(..., help="The intent's name."),
    example: List[str] = typer.Option([], "--example", help="An example question (repeat; replaces the examples)."),
    threshold: Optional[float] = typer.Option(None, "--threshold",
                                              help="Least cosine similarity to its nearest example for a question "
                                                   "to have this intent (default 0.5, or the current one)."),
    remove: bool = typer.Option(False, "--remove", help="Remove the intent (no route may use it)."),
    users_file: Path = typer.Option(SETTINGS.users_file, "--users", help=USERS_HELP),
    adapters: Path = typer.Option(SETTINGS.adapters_dir, "--adapters", help=ADAPTERS_HELP),
) -> None:
    """Define or change an intent by example questions, or remove it."""
    from app.production.routes import DEFAULT_THRESHOLD, Intent, RoutesError

    file = _file(users_file)
    config = file.load()
    current = config.intent(name)
    others = tuple(i for i in config.intents if i.name != name)
    if remove:
        if current is None:
            raise RoutesError(f"no intent named {name!r}")
        saved = file.save(replace(config, intents=others), _registry(adapters))
        typer.echo(f"Removed intent {name} (version {saved.version})")
        return
    examples = tuple(example) or (current.examples if current else ())
    if not examples:
        raise RoutesError(f"intent {name!r}: give example questions with --example \"...\" (at least one)")
    chosen = threshold if threshold is not None else current.threshold if current else DEFAULT_THRESHOLD
    intents = tuple(Intent(name, examples, chosen) if i.name == name else i for i in config.intents) if current \
        else (*config.intents, Intent(name, examples, chosen))
    saved = file.save(replace(config, intents=intents), _registry(adapters))
    typer.echo(f"{'Changed' if current else 'Added'} intent {name}: {len(examples)} examples, threshold "
               f"{chosen:.2f} (version {saved.version})")


@routes_cli.command("test")
def routes_test(
    question: str = typer.Argument(..., help="The question."),
    user: Optional[str] = typer.Option(None, "--user", help="As this user (their groups); default: anonymous."),
    users_file: Path = typer.Option(SETTINGS.users_file, "--users", help=USERS_HELP),
    adapters: Path = typer.Option(SETTINGS.adapters_dir, "--adapters", help=ADAPTERS_HELP),
    index: Path = typer.Option(SETTINGS.index_dir, "--index", help="Index directory (its embedder classifies "
                                                                    "intents, as in the chat)."),
) -> None:
    """Which route and adapter would answer this question for this user, and why (nothing is answered)."""
    from app.production.routes import Router
    from app.users import ANONYMOUS, UserStore

    who = UserStore(users_file).get(user) if user else ANONYMOUS
    registry = _registry(adapters)
    router = Router.beside(users_file, registry, _LazyEmbedder(index))
    choice = router.choose(who, question)
    _, label = registry.resolve(choice.adapter, verify=False)
    typer.echo(f"route:   {choice.route}")
    typer.echo(f"adapter: {label or 'base model (no adapter)'}"
               + (" (the promoted adapter)" if choice.adapter is None and label else ""))
    if choice.arm:
        typer.echo(f"canary:  {choice.arm} arm")
    match = choice.match
    if match is None:
        typer.echo("intent:  not needed (no route that could match asks for one)")
    elif match.nearest is None:
        typer.echo("intent:  none defined")
    else:
        verdict = match.intent or f"none (below {match.nearest}'s threshold {match.threshold:.2f})"
        typer.echo(f"intent:  {verdict}; nearest {match.nearest} at similarity {match.similarity:.3f}")
    typer.echo(f"why:     {choice.reason}")


class _LazyEmbedder:
    """The index's embedder, loaded only if a question must be classified (routes without intents need none)."""

    def __init__(self, index: Path) -> None:
        self.index = index
        self._embedder = None

    def encode(self, texts):
        if self._embedder is None:
            from ingest.embedding import Embedder
            from ingest.vector_store import open_vector_store

            self._embedder = Embedder(open_vector_store(self.index).embedder)
        return self._embedder.encode(texts)
