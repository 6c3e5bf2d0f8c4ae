"""The routing gate: which adapter (or the base model) answers a question, by the asker's groups and, optionally,
by the question's intent.

Routes live in one versioned JSON file beside the users file (routes.json):

    {"version": 3,
     "routes":  [{"name": "it", "adapter": "helpdesk", "groups": [], "intent": "it-support"},
                 {"name": "hr", "adapter": "acme@v2", "groups": ["hr"]}],
     "intents": [{"name": "it-support", "examples": ["How do I reset my password?", ...], "threshold": 0.5}]}

A route's adapter is "base" (no adapter), NAME (its promoted version, following promotions) or NAME@vN (pinned).
Its groups (empty = anyone) must share one group with the asker; its intent, when set, must be the question's.
Routes are tried in order and the first that matches answers; when none does, the default route does: the
engine's own choice (the most recently promoted adapter).

Intents: each names a few example questions. The question's intent is the intent of its nearest example (cosine
of the engine's embeddings, which are unit vectors), unless that similarity is below the intent's threshold:
then the question has no intent. Nearest example rather than the centroid: a centroid of "reset my password"
and "the VPN drops" sits near neither, while a handful of examples per intent costs nothing to compare.

Every save validates the whole file (adapter names against the registry, intents defined, names unique),
increments the version and replaces the file atomically; a save made from an older version than the file's
is refused (two admins editing at once), so nobody overwrites a change they did not see.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from app.users import User
from finetune.adapters import NO_ADAPTER, AdapterError, AdapterRegistry
from ingest.errors import GroundworkError
from ingest.files import atomic_write_json

ROUTES_FILE = "routes.json"
DEFAULT_ROUTE = "default"  # the route that answers when no other matches: the engine's default adapter
BASE = "base"  # a route's adapter: the base model, no adapter
DEFAULT_THRESHOLD = 0.5  # cosine; all-MiniLM-L6-v2 puts paraphrases of one question above ~0.6
log = logging.getLogger(__name__)


class RoutesError(GroundworkError):
    """A routes file that cannot be read or saved as asked; one line for the user."""


@dataclass(frozen=True)
class Intent:
    name: str
    examples: tuple[str, ...]
    threshold: float = DEFAULT_THRESHOLD


@dataclass(frozen=True)
class Route:
    name: str
    adapter: str  # BASE, NAME or NAME@vN
    groups: tuple[str, ...] = ()  # empty: anyone
    intent: str | None = None


@dataclass(frozen=True)
class RoutesConfig:
    version: int = 0  # 0: never saved
    routes: tuple[Route, ...] = ()
    intents: tuple[Intent, ...] = ()

    def to_dict(self) -> dict:
        return {"version": self.version,
                "routes": [{**asdict(r), "groups": list(r.groups)} for r in self.routes],
                "intents": [{**asdict(i), "examples": list(i.examples)} for i in self.intents]}

    def route(self, name: str) -> Route | None:
        return next((r for r in self.routes if r.name == name), None)

    def intent(self, name: str) -> Intent | None:
        return next((i for i in self.intents if i.name == name), None)


@dataclass(frozen=True)
class IntentMatch:
    intent: str | None  # the question's intent; None when the nearest is below its threshold (or none defined)
    nearest: str | None  # the nearest intent, whatever its similarity
    similarity: float | None  # cosine to the nearest example
    threshold: float | None  # the nearest intent's threshold


@dataclass(frozen=True)
class RouteChoice:
    route: str
    adapter: str | None  # for AnswerOptions.adapter: NAME, NAME@vN, "none" (base) or None (the engine's default)
    reason: str  # why, in one line
    arm: str | None = None  # canary arm ("candidate" | "control") when a canary applied
    match: IntentMatch | None = None  # the question's intent, when a route asked for one


class Canary(Protocol):
    def assign(self, user: User, adapter: str | None) -> tuple[str | None, str | None]: ...


# --- reading, checking and saving the file -------------------------------------------------------------------

def parse(data: object) -> RoutesConfig:
    """A RoutesConfig from the file's JSON (shape only: `check` validates names against the registry)."""
    if not isinstance(data, dict):
        raise RoutesError("routes: expected a JSON object with \"routes\" and \"intents\"")
    unknown = set(data) - {"version", "routes", "intents"}
    if unknown:
        raise RoutesError(f"routes: unknown field {sorted(unknown)[0]!r} (expected version, routes, intents)")
    version = data.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise RoutesError(f"routes: version must be a whole number, not {version!r}")
    return RoutesConfig(version, tuple(_route(item) for item in _list(data, "routes")),
                        tuple(_intent(item) for item in _list(data, "intents")))


def _list(data: dict, key: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise RoutesError(f"routes: {key} must be a list")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RoutesError(f"{what} must be a non-empty string, not {value!r}")
    return value.strip()


def _route(item: object) -> Route:
    if not isinstance(item, dict):
        raise RoutesError(f"a route must be an object, not {item!r}")
    name = _text(item.get("name"), "a route's name")
    unknown = set(item) - {"name", "adapter", "groups", "intent"}
    if unknown:
        raise RoutesError(f"route {name!r}: unknown field {sorted(unknown)[0]!r} (name, adapter, groups, intent)")
    groups = item.get("groups") or []
    if isinstance(groups, str):
        groups = groups.split(",")
    if not isinstance(groups, list):
        raise RoutesError(f"route {name!r}: groups must be a list of group names")
    intent = item.get("intent")
    return Route(name, _text(item.get("adapter"), f"route {name!r}: adapter"),
                 tuple(_text(g, f"route {name!r}: a group") for g in groups if str(g).strip()),
                 None if intent in (None, "") else _text(intent, f"route {name!r}: intent"))


def _intent(item: object) -> Intent:
    if not isinstance(item, dict):
        raise RoutesError(f"an intent must be an object, not {item!r}")
    name = _text(item.get("name"), "an intent's name")
    unknown = set(item) - {"name", "examples", "threshold"}
    if unknown:
        raise RoutesError(f"intent {name!r}: unknown field {sorted(unknown)[0]!r} (name, examples, threshold)")
    examples = item.get("examples")
    if not isinstance(examples, list) or not examples:
        raise RoutesError(f"intent {name!r}: give at least one example question")
    threshold = item.get("threshold", DEFAULT_THRESHOLD)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not -1 <= threshold <= 1:
        raise RoutesError(f"intent {name!r}: threshold must be a cosine similarity between -1 and 1")
    return Intent(name, tuple(_text(e, f"intent {name!r}: an example") for e in examples), float(threshold))


def check(config: RoutesConfig, registry: AdapterRegistry) -> None:
    """RoutesError (one line, naming the culprit) unless every route can answer as written."""
    seen: set[str] = set()
    for route in config.routes:
        if route.name == DEFAULT_ROUTE:
            raise RoutesError(f"route name {DEFAULT_ROUTE!r} is reserved for the route used when none matches")
        if route.name in seen:
            raise RoutesError(f"route {route.name!r} is defined twice")
        seen.add(route.name)
        if route.intent is not None and config.intent(route.intent) is None:
            raise RoutesError(f"route {route.name!r}: unknown intent {route.intent!r} (define it first)")
        if route.adapter.lower() not in (BASE, NO_ADAPTER):
            if route.adapter.partition("@")[0] not in registry.names():
                raise RoutesError(f"route {route.name!r}: unknown adapter {route.adapter!r} (not in the registry "
                                  f"{registry.root}; see `groundwork adapters list`)")
            try:
                registry.get(route.adapter)
            except AdapterError as exc:
                raise RoutesError(f"route {route.name!r}: unknown adapter {route.adapter!r} ({exc})") from None
    names = [i.name for i in config.intents]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise RoutesError(f"intent {twice!r} is defined twice")


class RoutesFile:
    """routes.json: read (missing = no routes, version 0) and saved (validated, version + 1, atomically)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def load(self) -> RoutesConfig:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return RoutesConfig()
        except OSError as exc:
            raise RoutesError(f"{self.path}: unreadable ({exc})") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RoutesError(f"{self.path}: not valid JSON ({exc})") from None
        return parse(data)

    def save(self, config: RoutesConfig, registry: AdapterRegistry) -> RoutesConfig:
        """Validate and write `config` as the next version; refused when the file moved past config.version
        since it was read (a change made meanwhile). Returns what was written."""
        check(config, registry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # read-check-write as one step against other savers
            current = self.load().version
            if config.version != current:
                raise RoutesError(f"the routes changed meanwhile (now version {current}, edited from version "
                                  f"{config.version}): reload them and make your change again")
            saved = RoutesConfig(current + 1, config.routes, config.intents)
            atomic_write_json(self.path, saved.to_dict(), indent=2)
        return saved


# --- choosing -------------------------------------------------------------------------------------------------

@dataclass
class _Loaded:
    stamp: tuple | None  # (mtime_ns, size, inode) of the file it was read from
    config: RoutesConfig
    problem: str | None = None  # the file could not be read: routing uses the last good config
    examples: np.ndarray | None = None  # unit vectors, one row per example
    owners: list[Intent] = field(default_factory=list)  # the intent of each row


class Router:
    """Picks the route for each question. Reads the file again only when it changed (one stat per question);
    embeds the intents' examples once per version, and the question only when a route that could match it has
    an intent. Thread-safe."""

    def __init__(self, routes_file: Path | str, registry: AdapterRegistry, embedder, canary: Canary | None = None):
        self.file = RoutesFile(routes_file)
        self.registry = registry
        self.embedder = embedder
        self.canary = canary
        self._loaded = _Loaded(None, RoutesConfig())
        self._lock = threading.Lock()

    @classmethod
    def beside(cls, users_file: Path | str, registry: AdapterRegistry, embedder) -> "Router":
        """The router of a deployment: routes.json beside the users file, with the canary beside it (canary.json)
        deciding each asker's arm. Conversations.beside, `groundwork routes test` and the admin tab build it
        here, so the test answers as the chat does."""
        from app.production.canary import CanaryFile

        return cls(Path(users_file).parent / ROUTES_FILE, registry, embedder, CanaryFile.beside(users_file, registry))

    def config(self) -> RoutesConfig:
        return self._current().config

    def _current(self) -> _Loaded:
        try:
            info = os.stat(self.file.path)
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        except FileNotFoundError:
            stamp = None
        loaded = self._loaded
        if stamp == loaded.stamp:
            return loaded
        with self._lock:
            if self._loaded.stamp == stamp:
                return self._loaded
            try:
                config = self.file.load()
                problem = None
            except RoutesError as exc:  # a hand edit broke the file: keep answering with the last good routes
                log.warning("routing with the last good routes: %s", exc)
                config, problem = self._loaded.config, str(exc)
            owners = [intent for intent in config.intents for _ in intent.examples]
            if config.intents == self._loaded.config.intents and self._loaded.owners:
                examples = self._loaded.examples  # a change to routes only: the examples' vectors still hold
            else:
                texts = [example for intent in config.intents for example in intent.examples]
                examples = np.asarray(self.embedder.encode(texts), dtype=np.float32) if texts else None
            self._loaded = _Loaded(stamp, config, problem, examples, owners)
            return self._loaded

    def classify(self, question: str) -> IntentMatch:
        """The question's intent by its nearest example (None below that intent's threshold)."""
        return self._classify(self._current(), question)

    def _classify(self, loaded: _Loaded, question: str) -> IntentMatch:
        if loaded.examples is None or not loaded.owners:
            return IntentMatch(None, None, None, None)
        vector = np.asarray(self.embedder.encode([question]), dtype=np.float32)[0]
        similarities = loaded.examples @ vector
        best = int(np.argmax(similarities))
        nearest, similarity = loaded.owners[best], float(similarities[best])
        return IntentMatch(nearest.name if similarity >= nearest.threshold else None, nearest.name, similarity,
                           nearest.threshold)

    def choose(self, user: User, question: str) -> RouteChoice:
        """The first route matching the user's groups and the question's intent, else the default route; then
        the canary (if any) may swap the chosen adapter for its candidate."""
        loaded = self._current()
        groups = set(user.groups)
        match: IntentMatch | None = None
        choice = None
        passed: list[str] = []  # the routes tried before the one chosen, and why they did not match
        for route in loaded.config.routes:
            if route.groups and not groups & set(route.groups):
                passed.append(f"{route.name!r}: not in groups {', '.join(route.groups)}")
                continue
            if route.intent is not None:
                if match is None:
                    match = self._classify(loaded, question)
                if match.intent != route.intent:
                    passed.append(f"{route.name!r}: not intent {route.intent!r}")
                    continue
            adapter = NO_ADAPTER if route.adapter.lower() in (BASE, NO_ADAPTER) else route.adapter
            choice = RouteChoice(route.name, adapter, _why(route, groups, match), match=match)
            break
        if choice is None:
            why = "no route matched" if loaded.config.routes else "no routes defined"
            if match is not None:
                why += f" ({_intent_words(match)})"
            choice = RouteChoice(DEFAULT_ROUTE, None, why + ": the default adapter answers", match=match)
        if passed:
            choice = replace(choice, reason=f"{choice.reason}; passed over: {'; '.join(passed)}")
        if loaded.problem:
            choice = replace(choice, reason=f"{choice.reason}; routes file unreadable, last good routes used: "
                                            f"{loaded.problem}")
        if self.canary is not None:
            adapter, arm = self.canary.assign(user, choice.adapter)
            if arm is not None:
                choice = replace(choice, adapter=adapter, reason=f"{choice.reason}; canary: {arm} arm", arm=arm)
        return choice


def _intent_words(match: IntentMatch) -> str:
    if match.nearest is None:
        return "no intents defined"
    relation = ">=" if match.intent else "<"
    return (f"nearest intent {match.nearest!r} at similarity {match.similarity:.2f} {relation} threshold "
            f"{match.threshold:.2f}")


def _why(route: Route, groups: set[str], match: IntentMatch | None) -> str:
    parts = []
    if route.groups:
        parts.append(f"group {sorted(groups & set(route.groups))[0]!r} is in the route's groups")
    else:
        parts.append("open to anyone")
    if route.intent is not None and match is not None:
        parts.append(_intent_words(match))
    return f"route {route.name!r}: " + ", ".join(parts)
