"""The answering engine: guardrails → ACL-filtered retrieval → grounded prompt → generation → citation check.

Everything that answers a question (the CLI, the web UI, the batch evaluation) goes through Engine.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Literal, Protocol, Sequence

from app import refusals
from app.conversations import rewrite as followups
from app.citations import VerifyOptions, cosine_embedder, verify
from app.generator import FULL_CAPABILITIES, GENERATOR_BACKENDS, GenerationOptions, Generator, capabilities_of
from app.quoting import drop_questions, plan_quotes
from app.selection import SelectionWeights, select, selection_weights
from app.guardrails import GuardrailConfig, GuardrailEvent, Guardrails
from finetune.models import DEFAULT_MODEL
from finetune.prompt import (CLOSED_BOOK_PROMPT, CLOSED_BOOK_REFUSAL_PHRASES, NOT_FOUND, PromptPassage,
                             build_messages, fit_passages, is_refusal, passage_label)
from ingest.answer_spans import SelectionPassage
from ingest.retrieval import Passage, RetrievalOptions, Retriever
from app.users import User
from ingest.embedding import Embedder
from ingest.vector_store import VectorStore, open_vector_store


# How the answer is written: "quote" (default) selects the best 1-3 consecutive sentences of one passage
# (app.selection: every candidate scored, the model among the scorers) and quotes them verbatim, cited, or refuses;
# "constrained" lets the model write the quote token by token under the quote constraint (app.quoting, the
# previous default); "free": the model's own words, cited.
DECODINGS = ("quote", "constrained", "free")

Turn = tuple[str, str]  # one prior exchange of a conversation: (question, answer)


@dataclass(frozen=True)
class AnswerOptions:
    """Per-question settings."""

    retrieval: RetrievalOptions = field(default_factory=RetrievalOptions)
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    verification: VerifyOptions = field(default_factory=VerifyOptions)
    require_support: bool = True  # refuse when no sentence of the answer is supported by a passage
    disabled_guards: frozenset[str] = frozenset()  # guards the user switched off (only those the admin allows)
    adapter: str | None = None  # this question only: NAME, NAME@vN, a folder or "none"; None = the engine's choice
    decoding: Literal["quote", "constrained", "free"] | None = None  # see DECODINGS; None = EngineConfig.decoding
    selection_threshold: float | None = None  # quote: refuse below this P(right); None = the fitted weights' own
    quote_candidates: int = 4  # constrained: the sentences closest to the question that a quote may start at
    quote_refusal_threshold: float = 0.5  # constrained, model without a calibrated threshold: it may refuse only
    #                                       when the refusal's first token gets at least this probability
    min_quote_similarity: float = 0.53  # constrained: refuse, without the model, when no sentence is this close
    #                                     to the question (cosine; set on the acme train+validation splits)
    rewrite: str | None = None  # follow-ups: "keywords", "model" or "none" (app.conversations.rewrite);
    #                             None = EngineConfig.rewrite


@dataclass
class Citation:
    n: int
    source: str
    page: int | None
    heading: str | None
    text: str
    score: float


@dataclass
class RetrievedPassage:
    n: int
    source: str
    page: int | None
    heading: str | None
    anchor: str | None
    text: str
    score: float


@dataclass
class Answer:
    question: str
    answer: str
    refused: bool
    refusal_reason: str | None
    citations: list[Citation]
    retrieved: list[RetrievedPassage]
    flags: list[GuardrailEvent]
    timings: dict[str, float]
    user: str = ""
    model: str = ""
    adapter: str | None = None  # the LoRA adapter that wrote the answer (NAME@vN or folder), None = base model
    searched_for: str | None = None  # a follow-up rewritten into a standalone question: what retrieval searched
    route: str | None = None  # the routing gate's route that picked the adapter (app.production.routes)
    arm: str | None = None  # canary arm the asker fell in: "candidate", "control"; None = no canary applied
    confidence: float | None = None  # quote selection's calibrated P(the chosen quote is right); None = not scored

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EngineConfig:
    """Which index and models the engine uses."""

    index_dir: Path = Path("groundwork-data/index")
    model: str = DEFAULT_MODEL  # registry name, Hugging Face id or local folder
    quantize: bool = True  # 4-bit NF4 (bitsandbytes); False loads bf16
    adapter: str | None = None  # NAME, NAME@vN, folder or "none"; None = the most recently promoted adapter, if any
    adapters_dir: Path = Path("groundwork-data/adapters")  # the adapter registry
    guardrails: GuardrailConfig = field(default_factory=GuardrailConfig)
    generator: str = "transformers"  # the generator backend, a key of app.generator.GENERATOR_BACKENDS
    llm_url: str | None = None  # an OpenAI-compatible server (http://host:8000/v1) runs the model: the "openai"
    #                             backend, whatever `generator` says; None = `generator`, in-process
    decoding: str = "quote"  # how answers are written unless a question says otherwise (DECODINGS)
    selection_threshold: float | None = None  # quote: refuse below this P(right) unless a question says otherwise;
    #                                           None = the fitted weights' own (a deployment's trade, see README)
    rewrite: str = followups.DEFAULT_STRATEGY  # how a follow-up becomes a standalone query unless a question says


class Engine:
    """Answers questions for users from one index. The model loads on the first question that needs it."""

    def __init__(self, config: EngineConfig = EngineConfig(), embedder: Embedder | None = None,
                 generator: Generator | None = None, answer_stage: "AnswerStage | None" = None) -> None:
        self.config = config
        # What turns the question and its passages into an answer: GroundedAnswer (the model, citations checked)
        # by default; eval's baselines are ExtractiveAnswer and ClosedBookAnswer. Settable after construction.
        self.answer_stage: AnswerStage = answer_stage or GroundedAnswer()
        self.reader: VectorStore = open_vector_store(config.index_dir)
        self.embedder = embedder or Embedder(self.reader.embedder)
        self.retriever = Retriever(self.reader, self.embedder)
        self.guardrails = Guardrails(config.guardrails)
        self._fixed_generator = generator
        self._generators: dict[str | None, Generator] = {}
        self._generators_lock = threading.Lock()

    @property
    def generator(self) -> Generator:
        """The generator for the engine's configured adapter (resolved now)."""
        return self.generator_for(self.config.adapter)[0]

    def generator_for(self, adapter: str | None) -> tuple[Generator, str | None]:
        generator, label, _ = self._generator_and_decoding(adapter)
        return generator, label

    def _generator_and_decoding(self, adapter: str | None) -> tuple[Generator, str | None, dict]:
        """The generator for an adapter reference, and the adapter's label.

        The registry is read on every call (a few small files), so promoting or rolling back an adapter takes
        effect on the next question without a restart; each adapter's model is loaded once and kept.
        """
        if self._fixed_generator is not None:
            return self._fixed_generator, None, {}
        backend = "openai" if self.config.llm_url else self.config.generator
        try:
            load = GENERATOR_BACKENDS[backend]
        except KeyError:
            raise ValueError(f"unknown generator backend {backend!r}: one of "
                             f"{', '.join(GENERATOR_BACKENDS)}") from None
        remote = {"url": self.config.llm_url} if self.config.llm_url else {}
        folder, label, decoding = self.adapter_decoding(adapter)
        key = str(folder) if folder is not None else None
        with self._generators_lock:
            if key not in self._generators:
                self._generators[key] = load(self.config.model, self.config.quantize, folder, **remote)
            return self._generators[key], label, decoding

    def adapter_decoding(self, adapter: str | None) -> tuple[Path | None, str | None, dict]:
        """(folder, label, decoding settings of its card) for an adapter reference, without loading any model.

        The card is re-read on every call: calibrating or re-fitting a version updates it.
        """
        if self._fixed_generator is not None:
            return None, None, {}
        from finetune.adapters import AdapterRegistry, read_card

        folder, label = AdapterRegistry(self.config.adapters_dir).resolve(adapter, verify=False)
        return folder, label, (read_card(folder).get("decoding", {}) if folder is not None else {})

    def answer(self, question: str, user: User, options: AnswerOptions = AnswerOptions(),
               history: Sequence[Turn] | None = None) -> Answer:
        final = None
        for final in self.stream(question, user, options, history):
            pass
        assert isinstance(final, Answer)
        return final

    def stream(self, question: str, user: User, options: AnswerOptions = AnswerOptions(),
               history: Sequence[Turn] | None = None) -> Iterator[str | Answer]:
        """Yield the answer text so far (PII-redacted) as it is generated, then the final Answer.

        `history`: the conversation so far, (question, answer) pairs, oldest first. A question that needs it
        ("And can I carry them over?") is rewritten into a standalone query (app.conversations.rewrite): retrieval
        and the answer stage work on that query, Answer.searched_for shows it, Answer.question stays as asked.
        Permissions are the asking user's, now: history only adds words to the query, never passages.
        """
        started = time.perf_counter()
        timings: dict[str, float] = {}
        flags: list[GuardrailEvent] = []
        stage = self.answer_stage
        outcome = {"adapter": None, "model": stage.model if stage.model is not None else self.config.model,
                   "searched_for": None}

        def finish(text: str, refused: bool, reason: str | None, citations=(), retrieved=()) -> Answer:
            timings["total"] = time.perf_counter() - started
            return Answer(question=question, answer=text, refused=refused, refusal_reason=reason,
                          citations=list(citations), retrieved=list(retrieved), flags=flags, timings=timings,
                          user=user.name, model=outcome["model"], adapter=outcome["adapter"],
                          searched_for=outcome["searched_for"], confidence=outcome.get("confidence"))

        disabled = options.disabled_guards
        checked = self.guardrails.check_question(question, disabled=disabled)
        flags += checked.events
        if checked.refusal:
            yield finish(checked.refusal, True, refusals.GUARDRAIL)
            return

        query = checked.text
        if history:
            rewrite_started = time.perf_counter()
            query = self.standalone_query(checked.text, history, options)
            timings["rewrite"] = time.perf_counter() - rewrite_started  # its own cost (the model's, if it writes)
            if query != checked.text:
                outcome["searched_for"] = query
        passages: list[Passage] = []
        if stage.retrieves:
            passages = self.retriever.retrieve(query, set(user.groups), options.retrieval)
            timings["retrieve"] = time.perf_counter() - started
            passages, events = self.guardrails.filter_passages(
                passages, text_of=lambda p: p.chunk.text, source_of=lambda p: p.chunk.source, disabled=disabled,
                with_text=lambda p, text: replace(p, chunk=replace(p.chunk, text=text)))  # offending sentences cut
            flags += events
            if not passages:
                yield finish(NOT_FOUND, True, refusals.NO_PASSAGES)
                return
        # The answer stage gets the standalone query too: quote selection ranks sentences by their similarity to it.
        yield from stage.run(AnswerTurn(engine=self, question=query, passages=passages, options=options,
                                        flags=flags, timings=timings, started=started, finish=finish,
                                        outcome=outcome))

    def standalone_query(self, question: str, history: Sequence[Turn], options: AnswerOptions = AnswerOptions()
                         ) -> str:
        """What retrieval searches for `question` (already through the question guardrails) after `history`.

        The rewrite goes through the question guardrails too (the history's words are the user's earlier text);
        if they would refuse it, the question is searched as asked.
        """
        strategy = options.rewrite or self.config.rewrite
        generate = None
        if strategy == "model":
            def generate(messages: list[dict[str, str]]) -> str:
                generator, _ = self.generator_for(options.adapter if options.adapter is not None
                                                  else self.config.adapter)
                return "".join(generator.stream(messages, REWRITE_GENERATION))
        result = followups.rewrite(question, history, strategy, generate)
        if not result.rewritten:
            return question
        checked = self.guardrails.check_question(result.query, disabled=options.disabled_guards)
        return question if checked.refusal else checked.text


# The model's rewrite of a follow-up: one short line, greedy, no penalty (it should repeat the history's words).
REWRITE_GENERATION = GenerationOptions(max_new_tokens=40, temperature=0.0, repetition_penalty=1.0)


@dataclass
class AnswerTurn:
    """What an answer stage gets from Engine.stream: the checked question, its passages, and how to finish."""

    engine: Engine
    question: str  # after the question guardrails
    passages: list[Passage]  # ACL-filtered, guardrail-filtered (empty when the stage does not retrieve)
    options: AnswerOptions
    flags: list[GuardrailEvent]  # append guardrail events here
    timings: dict[str, float]
    started: float  # time.perf_counter() when the question arrived
    finish: Callable[..., Answer]  # finish(text, refused, reason, citations=(), retrieved=()) -> Answer
    outcome: dict  # "adapter": label of the adapter that wrote the answer; "model": the model label
    card: dict = field(default_factory=dict)  # decoding settings from the adapter's card (set by generator())

    def generator(self) -> Generator:
        """The generator for this question's adapter (recorded as the answer's adapter)."""
        engine, options = self.engine, self.options
        generator, self.outcome["adapter"], self.card = engine._generator_and_decoding(
            options.adapter if options.adapter is not None else engine.config.adapter)
        return generator

    def selection_weights(self) -> SelectionWeights:
        """The quote selection weights for this question's adapter (its card's, else the packaged ones), read
        without loading the model; records the adapter and its card like generator()."""
        engine, options = self.engine, self.options
        _, self.outcome["adapter"], self.card = engine.adapter_decoding(
            options.adapter if options.adapter is not None else engine.config.adapter)
        return selection_weights(self.card)

    def generate(self, generator: Generator, messages: list[dict[str, str]],
                 generation: GenerationOptions) -> Iterator[str]:
        """Stream the model's text; yields the text so far (PII-redacted) and returns the full text."""
        engine, disabled = self.engine, self.options.disabled_guards
        generation_started = time.perf_counter()
        text = ""
        for piece in generator.stream(messages, generation):
            if not text:
                self.timings["first_token"] = time.perf_counter() - self.started
            text += piece
            yield engine.guardrails.partial_answer(text, disabled)
        self.timings["generate"] = time.perf_counter() - generation_started
        return text


class AnswerStage(Protocol):
    """The last stage of the engine: turns a question and its passages into the final Answer."""

    retrieves: bool  # False: the stage answers without passages (retrieval is skipped)
    model: str | None  # the model label of its answers; None = EngineConfig.model

    def run(self, turn: AnswerTurn) -> Iterator[str | Answer]:
        """Yield partial answer texts, then exactly one Answer (made with turn.finish)."""


class GroundedAnswer:
    """The default: numbered passages → the answer (selected quote, constrained quote or free) → verify citations
    → guardrails.

    Quote selection scores candidates with the model when the backend exposes log-probabilities and ranks them
    on the other features alone when it does not. Constrained decoding needs a backend whose capabilities include
    logits processors (in-process) or choices (a server's structured outputs: the answer is one of the plan's
    candidate quotes or the refusal); with neither (e.g. a plain remote API), the engine degrades explicitly: it
    prompts for free (cited) answers instead, skips the adapter's calibrated refusal threshold, and records a
    "decoding" flag saying so; the citation check still withdraws what the passages do not support.
    """

    retrieves = True
    model = None

    def run(self, turn: AnswerTurn) -> Iterator[str | Answer]:
        engine, options, flags, finish = turn.engine, turn.options, turn.flags, turn.finish
        question, passages = turn.question, turn.passages
        decoding = options.decoding or engine.config.decoding
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, not {decoding!r}")
        # Selection whose weights do not use the model never loads it: the first question (and each adapter)
        # would otherwise wait for a model that has no say in the answer.
        weights = turn.selection_weights() if decoding == "quote" else None  # reads the adapter's card once
        generator = turn.generator() if weights is None or weights.uses_model else None
        card = turn.card
        capabilities = capabilities_of(generator) if generator is not None else FULL_CAPABILITIES
        # Quotes are constrained by logits processors in-process, by the server's choice list (structured outputs)
        # on a server backend (app.openai_generator), or not at all: then free, flagged.
        constrains = capabilities.logits_processors or capabilities.choices
        if decoding == "constrained" and not constrains:
            decoding = "free"
            flags.append(GuardrailEvent("decoding", "generate", "degraded",
                                        "this generator backend cannot constrain decoding: answered in free form "
                                        "instead of verbatim quotes"))
        style = "free" if decoding == "free" else "quote"
        generation = options.generation
        if (generation.refusal_threshold is None and card.get("refusal_threshold")
                and (capabilities.logits_processors or (decoding == "constrained" and constrains))):
            generation = replace(generation, refusal=NOT_FOUND, refusal_threshold=card["refusal_threshold"])
        shown = [PromptPassage(p.chunk.text, passage_label(p.chunk.source, p.chunk.heading, p.chunk.page))
                 for p in passages]
        if generator is not None:  # without the model, nothing has a context window to fit
            shown = fit_passages(question, shown, generator.count_tokens, generator.context_tokens,
                                 options.generation.max_new_tokens, style)
        passages = passages[: len(shown)]
        retrieved = [_retrieved(i, p, shown[i - 1].text) for i, p in enumerate(passages, start=1)]
        if decoding == "quote":
            text = yield from self._select(turn, weights, generator, shown, passages)
            if text is None:
                yield finish(NOT_FOUND, True, refusals.NOT_CONFIDENT, retrieved=retrieved)
                return
        else:
            if decoding == "constrained":
                plan = plan_quotes(question, [s.text for s in shown], cosine_embedder(engine.embedder),
                                   options.quote_candidates)
                if plan.similarity < options.min_quote_similarity:
                    yield finish(NOT_FOUND, True, refusals.NO_CLOSE_SENTENCE, retrieved=retrieved)
                    return
                generation = replace(generation, quotes=plan, refusal=NOT_FOUND, refusal_threshold=(
                    generation.refusal_threshold or options.quote_refusal_threshold))
            text = yield from turn.generate(generator, build_messages(question, shown, style), generation)
            if decoding == "constrained":
                text = drop_questions(text)

        if is_refusal(text):
            yield finish(NOT_FOUND, True, refusals.MODEL_FOUND_NO_ANSWER, retrieved=retrieved)
            return
        checked_citations = verify(text, [s.text for s in shown], cosine_embedder(engine.embedder),
                                   options.verification)
        if options.require_support and not checked_citations.cited:
            flags.append(GuardrailEvent("citations", "answer", "blocked",
                                        "no sentence of the answer is supported by the passages"))
            yield finish(NOT_FOUND, True, refusals.UNSUPPORTED, retrieved=retrieved)
            return
        if checked_citations.dropped:
            flags.append(GuardrailEvent("citations", "answer", "redacted",
                                        f"left out {len(checked_citations.dropped)} sentence(s) that no passage "
                                        "supports"))
        if checked_citations.invalid or checked_citations.unsupported:
            removed = ([f"of passages that do not exist {checked_citations.invalid}"] if checked_citations.invalid
                       else []) + ([f"that do not support their sentence {checked_citations.unsupported}"]
                                   if checked_citations.unsupported else [])
            flags.append(GuardrailEvent("citations", "answer", "redacted",
                                        "removed citations " + " and ".join(removed)))
        final_text, events = engine.guardrails.check_answer(checked_citations.text, options.disabled_guards)
        flags += events
        citations = [Citation(n=n, source=r.source, page=r.page, heading=r.heading, text=r.text, score=r.score)
                     for n in checked_citations.cited for r in retrieved if r.n == n]
        yield finish(final_text, False, None, citations, retrieved)


    @staticmethod
    def _select(turn: AnswerTurn, weights: SelectionWeights, generator: Generator | None,
                shown: list[PromptPassage], passages: list[Passage]) -> Iterator[str]:
        """Choose the quote (app.selection); yields it and returns "[n] quote", or None to refuse.

        `generator` is None when the selection weights do not use the model."""
        started = time.perf_counter()
        views = [SelectionPassage(s.text, p.chunk.heading, p.score, p.chunk.continues, p.chunk.source)
                 for s, p in zip(shown, passages)]
        score = None
        if generator is not None and capabilities_of(generator).logprobs and hasattr(generator, "score"):
            messages = build_messages(turn.question, shown, "quote")
            score = lambda texts: generator.score(messages, texts)  # noqa: E731
        elif generator is not None:  # the weights use the model's score, the backend cannot give it: say so
            turn.flags.append(GuardrailEvent("decoding", "generate", "degraded",
                                             "this generator backend gives no token log-probabilities: the quote "
                                             "was selected without the model's score"))
        threshold = turn.options.selection_threshold
        if threshold is None:
            threshold = turn.engine.config.selection_threshold
        chosen = select(turn.question, views, cosine_embedder(turn.engine.embedder), weights, score, threshold)
        if score is None or not weights.uses_model:
            turn.outcome["adapter"] = None  # chosen without the model: no adapter had a say in this answer
        turn.timings["select"] = time.perf_counter() - started
        turn.outcome["confidence"] = float(chosen.probability)  # also when it refuses: monitoring plots both
        if chosen.refuse or chosen.best is None:
            return None
        text = f"[{chosen.best.n}] {chosen.best.text}"
        turn.timings["first_token"] = time.perf_counter() - turn.started
        yield turn.engine.guardrails.partial_answer(text, turn.options.disabled_guards)
        return text


class ExtractiveAnswer:
    """Baseline (no model): the top retrieved passage, whole, is the answer, cited as [1]."""

    retrieves = True
    model = "extractive"

    def run(self, turn: AnswerTurn) -> Iterator[str | Answer]:
        retrieved = [_retrieved(i, p, p.chunk.text) for i, p in enumerate(turn.passages, start=1)]
        top = retrieved[0]
        citation = Citation(n=top.n, source=top.source, page=top.page, heading=top.heading, text=top.text,
                            score=top.score)
        text, events = turn.engine.guardrails.check_answer(f"{top.text} [1]", turn.options.disabled_guards)
        turn.flags.extend(events)
        yield turn.finish(text, False, None, [citation], retrieved)


class ClosedBookAnswer:
    """Baseline: the same model and adapter answer from what they know, with no passages and no citations."""

    retrieves = False
    model = None

    def run(self, turn: AnswerTurn) -> Iterator[str | Answer]:
        generator = turn.generator()
        messages = [{"role": "system", "content": CLOSED_BOOK_PROMPT}, {"role": "user", "content": turn.question}]
        text = yield from turn.generate(generator, messages, turn.options.generation)
        if is_refusal(text, CLOSED_BOOK_REFUSAL_PHRASES):
            yield turn.finish(NOT_FOUND, True, "model does not know")
            return
        text, events = turn.engine.guardrails.check_answer(text.strip(), turn.options.disabled_guards)
        turn.flags.extend(events)
        yield turn.finish(text, False, None)


def _retrieved(n: int, passage: Passage, text: str) -> RetrievedPassage:
    chunk = passage.chunk
    return RetrievedPassage(n=n, source=chunk.source, page=chunk.page, heading=chunk.heading, anchor=chunk.anchor,
                            text=text, score=round(passage.score, 4))
