"""The answering engine: guardrails → ACL-filtered retrieval → grounded prompt → generation → citation check.

Everything that answers a question (the CLI, the web UI, the batch evaluation) goes through Engine.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, Literal

from app.citations import VerifyOptions, cosine_embedder, verify
from app.generator import GenerationOptions, Generator, TransformersGenerator
from app.quoting import drop_questions, plan_quotes
from app.guardrails import GuardrailConfig, Guardrails
from finetune.prompt import NOT_FOUND, PromptPassage, build_messages, fit_passages, passage_label
from app.retrieval import Passage, RetrievalOptions, Retriever
from app.users import User
from ingest.embedding import Embedder
from ingest.reader import IndexReader


DECODINGS = ("quote", "free")  # how the model may write: verbatim cited quotes, or its own words


@dataclass(frozen=True)
class AnswerOptions:
    """Per-question settings."""

    retrieval: RetrievalOptions = field(default_factory=RetrievalOptions)
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    verification: VerifyOptions = field(default_factory=VerifyOptions)
    require_support: bool = True  # refuse when no sentence of the answer is supported by a passage
    disabled_guards: frozenset[str] = frozenset()  # guards the user switched off (only those the admin allows)
    adapter: str | None = None  # this question only: NAME, NAME@vN, a folder or "none"; None = the engine's choice
    decoding: Literal["quote", "free"] = "quote"  # quote: the model may only copy passages verbatim, cited, or refuse
    quote_candidates: int = 4  # quote: the sentences closest to the question that a quote may start at
    quote_refusal_threshold: float = 0.5  # quote, model without a calibrated threshold: it may refuse only when
    #                                       the refusal's first token gets at least this probability
    min_quote_similarity: float = 0.53  # quote: refuse, without the model, when no sentence is this close to the
    #                                     question (cosine; set on the acme train+validation splits, see README)


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
    flags: list[dict]
    timings: dict[str, float]
    user: str = ""
    model: str = ""
    adapter: str | None = None  # the LoRA adapter that wrote the answer (NAME@vN or folder), None = base model

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EngineConfig:
    """Which index and models the engine uses."""

    index_dir: Path = Path("groundwork-data/index")
    model: str = "smollm2-135m-instruct"  # registry name, Hugging Face id or local folder
    quantize: bool = True  # 4-bit NF4 (bitsandbytes); False loads bf16
    adapter: str | None = None  # NAME, NAME@vN, folder or "none"; None = the most recently promoted adapter, if any
    adapters_dir: Path = Path("groundwork-data/adapters")  # the adapter registry
    guardrails: GuardrailConfig = field(default_factory=GuardrailConfig)


class Engine:
    """Answers questions for users from one index. The model loads on the first question that needs it."""

    def __init__(self, config: EngineConfig = EngineConfig(), embedder: Embedder | None = None,
                 generator: Generator | None = None) -> None:
        self.config = config
        self.reader = IndexReader(config.index_dir)
        self.embedder = embedder or Embedder(self.reader.embedder)
        self.retriever = Retriever(self.reader, self.embedder)
        self.guardrails = Guardrails(config.guardrails)
        self._fixed_generator = generator
        self._generators: dict[str | None, Generator] = {}
        self._decoding: dict[str | None, dict] = {}  # per adapter: decoding settings from its card
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
        from finetune.adapters import AdapterRegistry, check_adapter_files, check_card_base, read_card
        from finetune.models import get_model

        folder, label = AdapterRegistry(self.config.adapters_dir).resolve(adapter, verify=False)
        key = str(folder) if folder is not None else None
        with self._generators_lock:
            if key not in self._generators:
                if folder is not None:
                    check_adapter_files(folder)  # once per adapter, before its first load
                loaded = get_model(self.config.model, quantize=self.config.quantize, adapter=folder)
                if folder is not None:
                    check_card_base(folder, loaded.base_sha256, self.config.model)
                self._generators[key] = TransformersGenerator(loaded)
            if folder is not None:  # re-read: calibrating a version updates its card
                self._decoding[key] = read_card(folder).get("decoding", {})
            return self._generators[key], label, self._decoding.get(key, {})

    def answer(self, question: str, user: User, options: AnswerOptions = AnswerOptions()) -> Answer:
        final = None
        for final in self.stream(question, user, options):
            pass
        assert isinstance(final, Answer)
        return final

    def stream(self, question: str, user: User, options: AnswerOptions = AnswerOptions()) -> Iterator[str | Answer]:
        """Yield the answer text so far (PII-redacted) as it is generated, then the final Answer."""
        started = time.perf_counter()
        timings: dict[str, float] = {}
        flags: list[dict] = []

        adapter_label: str | None = None

        def finish(text: str, refused: bool, reason: str | None, citations=(), retrieved=()) -> Answer:
            timings["total"] = time.perf_counter() - started
            return Answer(question=question, answer=text, refused=refused, refusal_reason=reason,
                          citations=list(citations), retrieved=list(retrieved), flags=flags, timings=timings,
                          user=user.name, model=self.config.model, adapter=adapter_label)

        disabled = options.disabled_guards
        checked = self.guardrails.check_question(question, disabled=disabled)
        flags += [e.to_dict() for e in checked.events]
        if checked.refusal:
            yield finish(checked.refusal, True, "guardrail")
            return

        passages = self.retriever.retrieve(checked.text, set(user.groups), options.retrieval)
        timings["retrieve"] = time.perf_counter() - started
        passages, events = self.guardrails.filter_passages(passages, text_of=lambda p: p.chunk.text,
                                                           source_of=lambda p: p.chunk.source, disabled=disabled)
        flags += [e.to_dict() for e in events]
        if not passages:
            yield finish(NOT_FOUND, True, "no relevant passages")
            return

        generator, adapter_label, decoding = self._generator_and_decoding(
            options.adapter if options.adapter is not None else self.config.adapter)
        generation = options.generation
        if generation.refusal_threshold is None and decoding.get("refusal_threshold"):
            generation = replace(generation, refusal=NOT_FOUND, refusal_threshold=decoding["refusal_threshold"])
        shown = [PromptPassage(p.chunk.text, passage_label(p.chunk.source, p.chunk.heading, p.chunk.page))
                 for p in passages]
        shown = fit_passages(checked.text, shown, generator.count_tokens, generator.context_tokens,
                             options.generation.max_new_tokens, options.decoding)
        passages = passages[: len(shown)]
        retrieved = [_retrieved(i, p, shown[i - 1].text) for i, p in enumerate(passages, start=1)]
        if options.decoding == "quote":
            plan = plan_quotes(checked.text, [s.text for s in shown], cosine_embedder(self.embedder),
                               options.quote_candidates)
            if plan.similarity < options.min_quote_similarity:
                yield finish(NOT_FOUND, True, "no sentence of the passages is close enough to the question",
                             retrieved=retrieved)
                return
            generation = replace(generation, quotes=plan, refusal=NOT_FOUND,
                                 refusal_threshold=generation.refusal_threshold or options.quote_refusal_threshold)

        generation_started = time.perf_counter()
        text = ""
        for piece in generator.stream(build_messages(checked.text, shown, options.decoding), generation):
            if not text:
                timings["first_token"] = time.perf_counter() - started
            text += piece
            yield self.guardrails.partial_answer(text, disabled)
        timings["generate"] = time.perf_counter() - generation_started
        if options.decoding == "quote":
            text = drop_questions(text)

        if _is_refusal(text):
            yield finish(NOT_FOUND, True, "model found no answer in the passages", retrieved=retrieved)
            return
        checked_citations = verify(text, [s.text for s in shown], cosine_embedder(self.embedder),
                                   options.verification)
        if options.require_support and not checked_citations.cited:
            flags.append({"guard": "citations", "stage": "answer", "action": "blocked",
                          "detail": "no sentence of the answer is supported by the passages", "source": None})
            yield finish(NOT_FOUND, True, "answer not supported by the passages", retrieved=retrieved)
            return
        if checked_citations.dropped:
            flags.append({"guard": "citations", "stage": "answer", "action": "redacted",
                          "detail": f"left out {len(checked_citations.dropped)} sentence(s) that no passage supports",
                          "source": None})
        if checked_citations.invalid or checked_citations.unsupported:
            removed = ([f"of passages that do not exist {checked_citations.invalid}"] if checked_citations.invalid
                       else []) + ([f"that do not support their sentence {checked_citations.unsupported}"]
                                   if checked_citations.unsupported else [])
            flags.append({"guard": "citations", "stage": "answer", "action": "redacted",
                          "detail": "removed citations " + " and ".join(removed), "source": None})
        final_text, events = self.guardrails.check_answer(checked_citations.text, disabled)
        flags += [e.to_dict() for e in events]
        citations = [Citation(n=n, source=r.source, page=r.page, heading=r.heading, text=r.text, score=r.score)
                     for n in checked_citations.cited for r in retrieved if r.n == n]
        yield finish(final_text, False, None, citations, retrieved)


def _retrieved(n: int, passage: Passage, text: str) -> RetrievedPassage:
    chunk = passage.chunk
    return RetrievedPassage(n=n, source=chunk.source, page=chunk.page, heading=chunk.heading, anchor=chunk.anchor,
                            text=text, score=round(passage.score, 4))


def _is_refusal(text: str) -> bool:
    lowered = " ".join(text.lower().split())
    return not lowered or any(s in lowered for s in (
        "could not find this in the documents", "couldn't find this in the documents",
        "not in the documents", "do not contain the answer", "don't contain the answer",
        "does not contain the answer", "no information about"))
