"""Quote-constrained decoding: whatever the model prefers, it writes a cited verbatim quote or the refusal."""
from __future__ import annotations

import re

import pytest

from app.quoting import QuoteConstraint, QuotePlan, drop_questions, normalise, plan_quotes, sentences
from finetune.prompt import NOT_FOUND

PASSAGES = [
    "Expenses\nWhen do I need a receipt? An itemised receipt is required for every expense of EUR 25 or more. "
    "Submit claims within 30 days.",
    "Travel | Class\nFlight up to 6 hours | Economy\nBusiness class needs director approval! Book 21 days ahead.",
    "Café policy: the café on level 2 opens at 08:00. Coffee is free for employees.",
]


def _tokenizer(kind: str):
    """A small BPE tokenizer trained on the spot: byte-level (GPT-2, SmolLM2) or Metaspace (Llama, Mistral)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = PASSAGES * 5 + [NOT_FOUND] * 5
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    if kind == "byte-level":
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        bpe.pre_tokenizer = pre_tokenizers.Metaspace()
        bpe.decoder = decoders.Metaspace()
        alphabet = sorted(set("".join(corpus)) | set("[]0123456789 "))
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<eos>", "<pad>"],
                                                        initial_alphabet=alphabet))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", eos_token="<eos>", pad_token="<pad>")


@pytest.fixture(scope="module", params=["byte-level", "metaspace"])
def tokenizer(request):
    return _tokenizer(request.param)


def _write(constraint: QuoteConstraint, tokenizer, text: str) -> frozenset:
    """Feed `text` through the grammar as the model would, one allowed token at a time (longest match first)."""
    hyps = constraint.state(0, [])
    written = ""
    ids: list[int] = []
    while written != text:
        allowed = constraint.allowed(hyps)
        options = [(len(constraint.texts[i] or ""), i) for i in allowed
                   if constraint.texts[i] and text.startswith(written + constraint.texts[i])]
        assert options, f"the grammar does not allow {text[len(written):]!r} after {written!r}"
        _, token = max(options)
        ids.append(token)
        written += constraint.texts[token]
        hyps = constraint.state(0, ids)
    return hyps


def _may_end(constraint: QuoteConstraint, hyps) -> bool:
    return any(e in constraint.allowed(hyps) for e in constraint.eos)


def test_a_whole_sentence_quote_may_end_and_a_question_may_not(tokenizer) -> None:
    constraint = QuoteConstraint(tokenizer, QuotePlan(tuple(PASSAGES)), NOT_FOUND, prompt_length=0)
    assert not _may_end(constraint, _write(constraint, tokenizer, "[1] When do I need a receipt?"))
    done = _write(constraint, tokenizer, "[1] When do I need a receipt? An itemised receipt is required for every "
                                         "expense of EUR 25 or more.")
    assert _may_end(constraint, done)
    assert not _may_end(constraint, _write(constraint, tokenizer, "[1] Submit claims within"))
    assert _may_end(constraint, _write(constraint, tokenizer, NOT_FOUND))
    # a table row is a line: it ends a quote like a full stop
    assert _may_end(constraint, _write(constraint, tokenizer, "[2] Flight up to 6 hours | Economy"))


def test_quotes_start_only_at_sentences_and_copy_only_the_cited_passage(tokenizer) -> None:
    constraint = QuoteConstraint(tokenizer, QuotePlan(tuple(PASSAGES)), NOT_FOUND, prompt_length=0)
    for bad in ("[1] receipt is required", "[2] An itemised receipt", "[4] Coffee", "The answer is",
                "[1] Submit claims within 31 days"):
        with pytest.raises(AssertionError, match="does not allow"):
            _write(constraint, tokenizer, bad)
    _write(constraint, tokenizer, "[3] Coffee is free for employees.")  # non-ASCII passage, any sentence


def test_sentence_and_length_limits_end_the_quote(tokenizer) -> None:
    plan = QuotePlan(tuple(PASSAGES), max_sentences=1)
    constraint = QuoteConstraint(tokenizer, plan, NOT_FOUND, prompt_length=0)
    hyps = _write(constraint, tokenizer, "[1] When do I need a receipt? An itemised receipt is required for every "
                                         "expense of EUR 25 or more.")
    assert constraint.allowed(hyps) == constraint.eos, "a second sentence was allowed past max_sentences=1"
    short = QuoteConstraint(tokenizer, QuotePlan(tuple(PASSAGES), max_chars=20), NOT_FOUND, prompt_length=0)
    assert not _may_end(short, _write(short, tokenizer, "[1] When do I need a"))  # 16 characters
    hyps = _write(short, tokenizer, "[1] When do I need a receipt?")  # past 20: it stops at the next word end
    assert short.allowed(hyps) == short.eos


def test_planned_starts_narrow_the_quotes_and_the_passages(tokenizer) -> None:
    text, starts, _ = normalise(PASSAGES[1])
    last = starts[-1]  # "Book 21 days ahead."
    plan = QuotePlan(tuple(PASSAGES), starts=((), (last,), ()))
    constraint = QuoteConstraint(tokenizer, plan, NOT_FOUND, prompt_length=0)
    assert _may_end(constraint, _write(constraint, tokenizer, "[2] Book 21 days ahead."))
    for bad in ("[1] Submit claims", "[2] Business class"):
        with pytest.raises(AssertionError, match="does not allow"):
            _write(constraint, tokenizer, bad)


def test_a_random_model_under_the_constraint_writes_only_verbatim_cited_quotes(tokenizer) -> None:
    """Sampling from random weights is the most hostile model there is: every output must still parse."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    prompt = torch.tensor([tokenizer.encode("Question: when?", add_special_tokens=False)])
    plan = QuotePlan(tuple(PASSAGES), max_sentences=2)
    normalised = [normalise(p)[0] for p in PASSAGES]
    answers = set()
    for seed in range(12):
        torch.manual_seed(seed)
        constraint = QuoteConstraint(tokenizer, plan, NOT_FOUND, prompt_length=prompt.shape[1])
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, max_new_tokens=80,
                             logits_processor=LogitsProcessorList([constraint]), pad_token_id=tokenizer.pad_token_id)
        answer = "".join(constraint.texts[t] or "" for t in out[0, prompt.shape[1]:].tolist())
        answers.add(answer)
        if answer.startswith(NOT_FOUND[:1]) and NOT_FOUND.startswith(answer):
            continue
        match = re.fullmatch(r"\[(\d)\] (.+)", answer)
        assert match, answer
        assert match.group(2) in normalised[int(match.group(1)) - 1], answer
    assert len(answers) > 3, "sampling found a single path: the test exercises nothing"


def test_drop_questions_keeps_the_answer_the_question_led_to() -> None:
    assert drop_questions("[1] When do I need a receipt? A receipt is needed from EUR 25.") == \
        "[1] A receipt is needed from EUR 25."
    assert drop_questions("[2] Who approves? Where?") == ""
    assert drop_questions(NOT_FOUND) == NOT_FOUND
    assert drop_questions("Free text [1].") == "Free text [1]."


def test_sentences_join_a_question_to_its_answer() -> None:
    texts = [t for _, t in sentences(PASSAGES[0])]
    assert "When do I need a receipt? An itemised receipt is required for every expense of EUR 25 or more." in texts
    assert "Submit claims within 30 days." in texts


def test_plan_quotes_keeps_the_sentences_closest_to_the_question(embedder) -> None:
    plan = plan_quotes("How far ahead must I book a trip?", PASSAGES, lambda t: embedder.encode(list(t)), candidates=1)
    text, starts, _ = normalise(PASSAGES[1])
    assert plan.starts == ((), (starts[-1],), ()), plan.starts  # "Book 21 days ahead."
