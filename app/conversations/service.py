"""Asking within a conversation: history from the store (re-checked against what the user may read now), the
engine's answer streamed through, the turn stored and exactly one audit record written per question.

Permissions come from the user asking now, on every turn: a turn whose answer cited or was drawn from a document
the user can no longer read gives the engine its question but not its answer text, and reopening a
conversation hides such answers and drops the passages of those documents.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

from app.audit import CHANNELS, AuditLog
from app.conversations.store import ConversationStore, ConversationSummary, StoredTurn
from app.engine import Answer, AnswerOptions, Engine
from app.production.canary import CanaryFile
from app.production.metrics import Metrics
from app.production.review import ReviewQueue
from app.production.routes import Router
from app.users import User
from finetune.adapters import AdapterRegistry

TITLE_CHARS = 80
HIDDEN_ANSWER = "(answer hidden: its source is no longer available to you)"
ERROR = "error"  # refusal_reason of the audit record of a question whose answering failed
INTERRUPTED = "interrupted"  # ... and of one whose reader went away before the answer was complete


@dataclass
class TurnResult:
    answer: Answer
    conversation_id: str | None  # None when nothing was stored (keep=False)
    turn_id: int | None


def title_of(question: str, limit: int = TITLE_CHARS) -> str:
    """A conversation's title: its first question on one line, cut at a word boundary."""
    text = " ".join(question.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] or text[: limit - 1]
    return cut.rstrip(" ,;:") + "…"


class Conversations:
    """Conversations, feedback and the audit log around one engine."""

    def __init__(self, engine: Engine, store: ConversationStore, audit: AuditLog, router: Router | None = None,
                 review: ReviewQueue | None = None, metrics: Metrics | None = None,
                 canary: CanaryFile | None = None) -> None:
        self.engine = engine
        self.store = store
        self.audit = audit
        self.router = router  # the routing gate (app.production.routes); None: the engine's default adapter
        self.review = review  # the human review queue (app.production.review); None: nothing is queued
        self.metrics = metrics  # Prometheus metrics (app.production.metrics, `groundwork serve`); None: not counted
        self.canary = canary  # a canary rollout's guard rules, checked after each answer (app.production.canary)

    @classmethod
    def beside(cls, engine: Engine, users_file: Path, metrics: Metrics | None = None) -> "Conversations":
        """The databases next to the users file (the names Settings uses: conversations.sqlite, audit.sqlite)."""
        folder = Path(users_file).parent
        registry = AdapterRegistry(engine.config.adapters_dir)
        canary = CanaryFile.beside(users_file, registry)
        router = Router.beside(users_file, registry, engine.embedder)
        router.canary = canary  # a running canary may swap the routed adapter for its candidate
        store = ConversationStore(folder / "conversations.sqlite")
        return cls(engine, store, AuditLog(folder / "audit.sqlite"), router=router,
                   review=ReviewQueue.beside(users_file, store), metrics=metrics, canary=canary)

    # --- permissions now -------------------------------------------------------------------------------
    def readable_sources(self, user: User) -> set[str]:
        """The sources of the indexed documents the user may read now (the index's current generation)."""
        reader = self.engine.reader
        reader.refresh()
        groups = set(user.groups)
        return {doc.source for doc in reader.documents() if groups & set(doc.groups)}

    def _history(self, turns: list[StoredTurn], readable: set[str]) -> list[tuple[str, str]]:
        history = []
        for turn in turns:
            sources = {c.source for c in turn.answer.citations} | {p.source for p in turn.answer.retrieved}
            history.append((turn.question, turn.answer.answer if sources <= readable else ""))
        return history

    # --- asking ------------------------------------------------------------------------------------------
    def ask(self, user: User, question: str, options: AnswerOptions = AnswerOptions(),
            conversation_id: str | None = None, history: Sequence[tuple[str, str]] | None = None,
            keep: bool = True, channel: str = "web") -> Iterator[str | TurnResult]:
        """Yield the answer text so far (like Engine.stream), then one TurnResult.

        With `conversation_id`, the history is the user's stored turns (ConversationNotFound if not theirs),
        answers drawn from documents the user cannot read now left out; otherwise `history` as given (the API's
        messages). keep=True stores the turn (in a new conversation titled by the question when there is none);
        keep=False stores nothing. Every question gets exactly one audit record, also when answering fails.
        """
        if channel not in CHANNELS:  # checked before answering: the audit record must be writable
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
        started = time.perf_counter()
        if conversation_id is not None:
            turns = self.store.turns(user.name, conversation_id)
            history = self._history(turns, self.readable_sources(user)) if turns else []
        final: Answer | None = None
        choice = None
        hold = self.review is not None and self.review.holds(user)  # shown only once a reviewer approves
        if self.metrics is not None:
            self.metrics.question_started()  # the in-flight gauge; _recorded() counts it out again
        try:
            # routing only where nobody chose: not the asker (options.adapter) nor the deployment (--adapter)
            if self.router is not None and options.adapter is None and self.engine.config.adapter is None:
                choice = self.router.choose(user, question)
                options = replace(options, adapter=choice.adapter)
            for item in self.engine.stream(question, user, options, list(history or [])):
                if isinstance(item, Answer):
                    final = item
                elif not hold:
                    yield item
            if final is None:
                raise RuntimeError("the engine finished without an answer")
        except BaseException as exc:
            reason = INTERRUPTED if isinstance(exc, (GeneratorExit, KeyboardInterrupt)) else ERROR
            failed = Answer(question=question, answer="", refused=True, refusal_reason=reason, citations=[],
                            retrieved=[], flags=[], timings={"total": time.perf_counter() - started},
                            user=user.name, route=choice.route if choice else None, arm=choice.arm if choice else None)
            self._recorded(failed, user, channel, conversation_id)
            raise
        if choice is not None:
            final.route, final.arm = choice.route, choice.arm
        turn_id = None
        shown = self.review.held(final) if hold else final
        try:
            if keep:
                if conversation_id is None:
                    conversation_id = self.store.create(user.name, title_of(question))
                turn_id = self.store.add_turn(user.name, conversation_id, question, shown)
        finally:
            self._recorded(final, user, channel, conversation_id)
        if self.review is not None:
            self.review.consider(final, user, turn_id, conversation_id if keep else None,
                                 self.engine.guardrails.config, held=hold)
        yield TurnResult(answer=shown, conversation_id=conversation_id if keep else None, turn_id=turn_id)

    def _recorded(self, answer: Answer, user: User, channel: str, conversation_id: str | None) -> None:
        """The one audit record of a question, then its metrics: both count the same questions."""
        try:
            self.audit.record(answer, user, channel, conversation_id)
        finally:
            if self.metrics is not None:
                self.metrics.observe(answer)
        if self.canary is not None:  # after every answer, failed ones too: a guard rule may roll back (never raises)
            self.canary.check(self.audit, self.store)

    # --- history and feedback ----------------------------------------------------------------------------
    def turns(self, user: User, conversation_id: str) -> list[StoredTurn]:
        """The user's turns; passages and citations of documents the user can no longer read are removed, and an
        answer that cited one is replaced by a short note."""
        turns = self.store.turns(user.name, conversation_id)
        if not turns:
            return turns
        readable = self.readable_sources(user)
        return [_visible(turn, readable) for turn in turns]

    def list(self, user: User) -> list[ConversationSummary]:
        return self.store.list(user.name)

    def delete(self, user: User, conversation_id: str) -> None:
        self.store.delete(user.name, conversation_id)

    def feedback(self, user: User, turn_id: int, rating: int, comment: str = "") -> None:
        self.store.set_feedback(user.name, turn_id, rating, comment)
        if self.metrics is not None:
            self.metrics.rated(rating)
        if self.review is not None and rating < 0:  # a 👎 goes to the review queue (when its rule is on)
            _, turn = self.store.turn_of(turn_id)
            self.review.on_feedback(turn.answer, user, turn_id, turn.conversation_id, rating, comment)


def _visible(turn: StoredTurn, readable: set[str]) -> StoredTurn:
    answer = turn.answer
    cited = {c.source for c in answer.citations}
    shown = {p.source for p in answer.retrieved}
    if (cited | shown) <= readable:
        return turn
    hidden = not cited <= readable
    answer = replace(answer,
                     answer=HIDDEN_ANSWER if hidden else answer.answer,
                     searched_for=None if hidden else answer.searched_for,  # may hold words of the hidden answer
                     citations=[c for c in answer.citations if c.source in readable],
                     retrieved=[p for p in answer.retrieved if p.source in readable],
                     flags=[f for f in answer.flags if f.source is None or f.source in readable])
    return replace(turn, answer=answer)
