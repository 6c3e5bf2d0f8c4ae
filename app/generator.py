"""Text generation behind a small protocol; the default runs a transformers model in-process, streamed."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

from app.batching import BATCH_THREAD, BatchedGeneration, Row


@dataclass(frozen=True)
class GenerationOptions:
    """How the model writes its answer."""

    max_new_tokens: int = 200  # longest answer
    temperature: float = 0.0  # 0 = greedy (reproducible)
    repetition_penalty: float = 1.1  # small models loop without it
    refusal: str | None = None  # the fixed "not in the documents" reply the model was tuned to give
    refusal_threshold: float | None = None  # start `refusal` only if its first token gets at least this probability
    quotes: object | None = None  # an app.quoting.QuotePlan: the answer may only quote its passages, or be `refusal`


@dataclass(frozen=True)
class GeneratorCapabilities:
    """What a generator backend can do; the engine adapts its decoding to it (see Engine.stream)."""

    streaming: bool = True  # yields the answer in pieces as it is generated (else one piece at the end)
    logits_processors: bool = True  # runs our logits processors: quote decoding and the refusal threshold
    logprobs: bool = True  # exposes token probabilities: refusal calibration, and `score` (answer selection)
    adapters: bool = True  # a LoRA adapter can be chosen per request
    choices: bool = False  # constrains an answer to a list of texts (server-side structured outputs): quote
    #                         decoding without logits processors (app.openai_generator)


# The in-process transformers backend can do everything. A generator without a `capabilities` attribute is
# taken to be such a backend (what the engine assumed before capabilities were declared).
FULL_CAPABILITIES = GeneratorCapabilities()


def capabilities_of(generator) -> GeneratorCapabilities:
    """The declared capabilities of a generator (FULL_CAPABILITIES when it declares none)."""
    return getattr(generator, "capabilities", None) or FULL_CAPABILITIES


class Generator(Protocol):
    context_tokens: int
    capabilities: GeneratorCapabilities

    def count_tokens(self, text: str) -> int: ...

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions) -> Iterator[str]:
        """Yield pieces of the answer as they are generated."""

    # A backend whose capabilities include logprobs also has:
    # def score(self, messages, replies: list[str]) -> list[float]:
    #     """Each reply's mean token log-probability as the answer to `messages`."""


GENERATION_THREAD = BATCH_THREAD


def logits_processors(options: GenerationOptions, tokenizer, prompt_length: int):
    """The repetition penalty over the answer only, then the refusal threshold, then the quote constraint.

    transformers' own repetition_penalty also penalizes every token of the prompt, i.e. the words of the
    passages the answer should quote, and the "[" of their numbers: measured on the tuned adapter, it raised the
    probability of starting the refusal from 0.37 to 0.87 and made it refuse every acme question.
    """
    from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    processors = LogitsProcessorList()
    if options.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(float(options.repetition_penalty),
                                                           prompt_ignore_length=prompt_length))
    if options.refusal and options.refusal_threshold:
        first = tokenizer.encode(options.refusal, add_special_tokens=False)[0]
        processors.append(RefusalThreshold(first, options.refusal_threshold, prompt_length))
    if options.quotes:
        from app.quoting import QuoteConstraint

        processors.append(QuoteConstraint(tokenizer, options.quotes, options.refusal or "", prompt_length))
    return processors


class TransformersGenerator:
    """A causal LM from finetune.models; concurrent streams are batched (app/batching.py: each advances one token
    per forward pass, a new one joins at the next step), up to `max_batch` answers at once (the default backend)."""

    capabilities = FULL_CAPABILITIES

    def __init__(self, loaded, max_batch: int = 8) -> None:
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        config = loaded.model.config
        self.context_tokens = int(getattr(config, "max_position_embeddings", 2048) or 2048)
        self._lock = threading.Lock()  # held around every forward pass: the batch's steps and score()
        self._batch = BatchedGeneration(loaded.model, _eos_token_ids(loaded.model, self.tokenizer), self._lock,
                                        max_rows=max_batch)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)["input_ids"][0].tolist()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        streamer.put(torch.tensor([prompt]))  # skipped: it only tells the streamer where the answer starts
        row = Row(tokens=prompt, max_new_tokens=options.max_new_tokens, temperature=options.temperature,
                  processors=logits_processors(options, self.tokenizer, len(prompt)), streamer=streamer)
        self._batch.submit(row)
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            # A reader that stops early (a closed browser tab) must not leave its row generating: the loop drops
            # it at its next step; wait for that, so that nothing runs on behalf of a gone reader.
            row.abandoned.set()
            row.finished.wait()
            self._batch.wait_idle()
        if row.error is not None:
            raise row.error

    def score(self, messages: list[dict[str, str]], replies: list[str]) -> list[float]:
        """Each reply's mean token log-probability as the model's answer to `messages`.

        The prompt is run once; its key/value cache is repeated for the replies, which run as one batch
        (right-padded), so scoring k short replies costs about one prefill plus k * (reply length) tokens.
        """
        import torch

        if not replies:
            return []
        model, tokenizer = self.loaded.model, self.tokenizer
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)["input_ids"].to(model.device)
        encoded = [tokenizer.encode(r, add_special_tokens=False) or [tokenizer.eos_token_id] for r in replies]
        width = max(len(e) for e in encoded)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([e + [pad] * (width - len(e)) for e in encoded], device=model.device)
        real = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded], device=model.device)
        with self._lock, torch.inference_mode():
            first = model(input_ids=prompt, use_cache=True, logits_to_keep=1)  # the output head only where needed
            cache = first.cache
            cache.batch_repeat_interleave(len(replies))
            mask = torch.cat([torch.ones((len(replies), prompt.shape[1]), dtype=real.dtype, device=model.device),
                              real], dim=1)
            rest = model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True)
            logits = torch.cat([first.logits[:, -1:].expand(len(replies), -1, -1), rest.logits[:, :-1]], dim=1)
            logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
            totals = (logprobs * real).sum(dim=1) / real.sum(dim=1)
        return [float(t) for t in totals]


def _eos_token_ids(model, tokenizer) -> set[int]:
    """The tokens that end an answer: the model's generation config's (as generate() stops), else the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None:
        configured = tokenizer.eos_token_id
    return set(configured if isinstance(configured, (list, tuple)) else [configured]) - {None}


class RefusalThreshold:
    """A logits processor: the refusal may start only when the model gives it at least `threshold` probability.

    A tuned model's refusal is one fixed sentence, so all its probability sits on one first token, while an
    answer's is spread over many possible first words; greedy decoding then refuses whenever the model is
    unsure how to *start* the answer. Requiring a calibrated minimum probability (stored in the adapter's
    card) undoes that bias; the citation check still withdraws answers that the passages do not support.
    """

    def __init__(self, token_id: int, threshold: float, prompt_length: int) -> None:
        self.token_id, self.threshold, self.prompt_length = token_id, threshold, prompt_length

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == self.prompt_length:  # the first generated token only
            probability = scores.float().softmax(-1)[:, self.token_id]
            scores[probability < self.threshold, self.token_id] = float("-inf")
        return scores


# --- backends, chosen by EngineConfig.generator ---------------------------------------------------------------
def load_transformers_generator(model: str, quantize: bool, adapter: Path | None) -> TransformersGenerator:
    """The in-process backend: the base model from the registry (4-bit or bf16), with the adapter folder if any."""
    from finetune.adapters import check_adapter_files, check_card_base
    from finetune.models import get_model

    if adapter is not None:
        check_adapter_files(adapter)  # once per adapter, before its first load
    loaded = get_model(model, quantize=quantize, adapter=adapter)
    if adapter is not None:
        check_card_base(adapter, loaded.base_sha256, model)
    return TransformersGenerator(loaded)


def load_openai_generator(model: str, quantize: bool, adapter: Path | None, *, url: str) -> Generator:
    """An OpenAI-compatible server (EngineConfig.llm_url; the engine passes `url`): app.openai_generator."""
    from app.openai_generator import OpenAIGenerator

    return OpenAIGenerator(url, model, adapter)


# name -> loader(model, quantize, adapter folder or None, **backend options) -> Generator; the engine passes `url`
# to the "openai" loader (EngineConfig.llm_url). Another backend adds its class and one entry here, declaring
# what it cannot do in its `capabilities`.
GENERATOR_BACKENDS: dict[str, Callable[..., Generator]] = {
    "transformers": load_transformers_generator,
    "openai": load_openai_generator,
}
