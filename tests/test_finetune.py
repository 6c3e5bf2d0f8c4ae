"""QLoRA training, the adapter registry and export, on a tiny random-initialised Llama (fast) and the packaged model (slow)."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import HR_DOCS, build_corpus

from finetune.adapters import AdapterError, AdapterRegistry
from finetune.data import (DataError, ExampleOptions, QAItem, TrainingExample, build_examples, cite_sentences, load_qa,
                           quote_sentences)
from finetune.models import load_model
from finetune.pipeline import FinetuneOptions, finetune
from finetune.prompt import NOT_FOUND, PromptPassage, build_messages
from finetune.splits import split_of
from finetune.train import TrainOptions, disable_cpu_repacking, tokenize, train

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
FAST = TrainOptions(max_steps=6, batch_size=2, learning_rate=1e-2, warmup_steps=1, save_every=2, seed=0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer trained on the spot: real shapes, no download."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    corpus = [m["content"] for e in _examples() for m in e.messages] + [e.target for e in _examples()] * 5
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<|im_start|>", "<|im_end|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", eos_token="<|im_end|>",
                                        pad_token="<pad>", bos_token="<|im_start|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def _examples() -> list[TrainingExample]:
    facts = [("How long do I have to file expenses?", "Expense claims must be filed within 30 days.", 1),
             ("Who approves travel?", "Your line manager approves every trip in TravelHub.", 2),
             ("How many leave days do I get?", "Employees get 27 days of annual leave.", 1),
             ("What is the meal allowance?", "The meal allowance is 60 USD per day.", 2)]
    filler = PromptPassage("The cafeteria opens at 8:00 and closes at 15:00.", "facilities.md")
    out = []
    for i, (question, answer, gold) in enumerate(facts):
        passages = [PromptPassage(answer, "policy.md"), filler] if gold == 1 else [filler, PromptPassage(answer, "policy.md")]
        out.append(TrainingExample(f"q{i}:answer", f"q{i}", "answer", build_messages(question, passages),
                                   cite_sentences(answer, gold)))
        out.append(TrainingExample(f"q{i}:refusal", f"q{i}", "refusal", build_messages(question, [filler]), NOT_FOUND))
    return out


def _lora_and_base(model) -> tuple[dict, dict]:
    lora, base = {}, {}
    for name, tensor in model.state_dict().items():
        (lora if "lora_" in name else base)[name] = tensor.detach().clone()
    return lora, base


# ------------------------------------------------------------------------------------------- data
def test_tokenize_masks_the_prompt_and_keeps_the_answer(tiny_model):
    tokenizer = load_model(str(tiny_model), quantize=False).tokenizer
    example = _examples()[0]
    ids, labels = tokenize(example, tokenizer, max_length=4096)
    answer_ids = [t for t in labels if t != -100]
    assert len(ids) == len(labels) and 0 < len(answer_ids) < len(ids)
    assert tokenizer.decode(answer_ids, skip_special_tokens=True).strip() == example.target
    # Cut to a budget: the answer survives whole, the prompt loses its start.
    short_ids, short_labels = tokenize(example, tokenizer, max_length=len(answer_ids) + 5)
    assert [t for t in short_labels if t != -100] == answer_ids and len(short_ids) == len(answer_ids) + 5


def test_cite_sentences_cites_every_sentence():
    assert cite_sentences("Claims are due in 30 days. Late ones are refused.", 3) == \
        "Claims are due in 30 days [3]. Late ones are refused [3]."


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, _shared_embedder) -> Path:
    docs = {**HR_DOCS,  # a question as a heading (questions_from_index asks it as is), a second hr-only file
            "leave.md": "# Leave policy\n\n## How many days of leave do I get?\n\nEmployees get 27 days of annual "
                        "leave per year, plus public holidays.\n",
            "travel.md": "# Travel\n\n## Approval\n\nEvery business trip must be approved by your line manager in "
                         "TravelHub before anything is booked.\n",
            "hr/salaries.md": "# Salaries\n\n## Bands\n\nThe salary band for engineers is secret.\n"}
    return build_corpus(tmp_path_factory.mktemp("ft-index"), _shared_embedder, docs)


def test_examples_put_the_gold_passage_in_the_prompt_and_cite_its_number(small_index, _shared_embedder):
    from ingest.reader import IndexReader

    reader = IndexReader(small_index)
    items = [QAItem("e1", "How long do I have to submit expenses?", "Claims are due within 30 days of the purchase.",
                    "Expense claims must be submitted within 30 days", "expenses.md"),
             QAItem("u1", "What is the CEO's favourite colour?", answerable=False),
             QAItem("s1", "What is the engineer salary band?", "It is secret.", "The salary band", "hr/salaries.md")]
    examples, report = build_examples(items, reader, _shared_embedder, lambda t: len(t.split()),
                                      ExampleOptions(passages=3, refusal_fraction=1.0))
    by_id = {e.id: e for e in examples}
    answer = by_id["e1:answer"]
    gold_n = answer.gold
    assert answer.sources[gold_n - 1] == "expenses.md"
    # Quote style: the citation first, then the supporting sentence copied from the passage, not paraphrased.
    assert answer.target == f"[{gold_n}] Expense claims must be submitted within 30 days of the purchase."
    assert f"[{gold_n}] (expenses.md, Deadline)\nExpense claims must be submitted within 30 days" in answer.messages[1]["content"]
    # The withheld-gold twin and the unanswerable question teach the refusal.
    assert by_id["e1:refusal"].target == NOT_FOUND and "expenses.md" not in by_id["e1:refusal"].sources
    assert by_id["u1:refusal"].target == NOT_FOUND
    # A restricted document never becomes training text for an adapter everyone will use.
    assert "s1" in report.skipped and all("hr/" not in s for e in examples for s in e.sources)


def test_answer_style_answer_cites_the_gold_answer_after_each_sentence(small_index, _shared_embedder):
    from ingest.reader import IndexReader

    items = [QAItem("e1", "How long do I have to submit expenses?", "Claims are due within 30 days of the purchase.",
                    "Expense claims must be submitted within 30 days", "expenses.md")]
    examples, _ = build_examples(items, IndexReader(small_index), _shared_embedder, lambda t: len(t.split()),
                                 ExampleOptions(passages=3, refusal_fraction=0.0, answer_style="answer"))
    assert examples[0].target == f"Claims are due within 30 days of the purchase [{examples[0].gold}]."
    with pytest.raises(DataError, match="answer style"):
        ExampleOptions(answer_style="poem")


def test_quote_takes_the_supporting_sentences_verbatim_or_none():
    passage = ("Welcome to the travel policy. Book flights at least 14 days ahead. "
               "Hotels are capped at EUR 150 per night. Trains are preferred under 4 hours.")
    assert quote_sentences(passage, "You must book flights 14 days ahead.") == "Book flights at least 14 days ahead."
    assert quote_sentences(passage, "Book 14 days ahead; hotels cost at most EUR 150.") == \
        "Book flights at least 14 days ahead. Hotels are capped at EUR 150 per night."
    # A flattened table is one endless "sentence": no quote, the caller falls back to the gold answer.
    table = "Mode Duration Class " + " ".join(f"Flight {h} hours Economy" for h in range(30))
    assert quote_sentences(table, "Economy for flights up to 6 hours.") is None
    assert quote_sentences(passage, "The CEO likes green.") is None


def test_quote_targets_are_answers_the_engine_can_select():
    """Training replies come from the candidate set answer selection chooses from: never a heading, a question or
    a section number, and consecutive sentences only (the supporting-sentence quote may skip one between)."""
    from types import SimpleNamespace

    from finetune.data import candidate_quote
    from ingest.answer_spans import SelectionPassage, candidates

    chunk = SimpleNamespace(text="3.1 Travel\nHow far ahead must I book?\nBook flights at least 14 days ahead. "
                                 "Hotels need no notice. Late bookings need the CFO's approval.\n",
                            heading="Policy > Travel", continues=False)
    listed = {c.text for c in candidates([SelectionPassage(chunk.text, chunk.heading, 0.0)])}
    quote = candidate_quote(chunk, "Book flights 14 days ahead.")
    assert quote == "Book flights at least 14 days ahead." and quote in listed
    both = candidate_quote(chunk, "Book 14 days ahead; late bookings need CFO approval.")
    assert both in listed and both.startswith("Book flights") and both.endswith("CFO's approval.")
    assert quote_sentences(chunk.text, "Book 14 days ahead; late bookings need CFO approval.") not in listed, \
        "the fixture's point: the older quote skips the sentence between, which selection never answers"
    assert candidate_quote(chunk, "The CEO likes green.") is None
    # ... and that is the reply a training example asks for
    import random

    from finetune.data import _example

    gold = SimpleNamespace(**vars(chunk), source="travel.md", page=None)
    item = QAItem("t1", "How far ahead must I book, and who approves late bookings?",
                  "Book 14 days ahead; late bookings need CFO approval.", None, "travel.md")
    example = _example(item, "answer", [], gold, random.Random(0), lambda t: len(t.split()), ExampleOptions())
    assert example.target == f"[1] {both}"


def test_split_is_deterministic_and_the_test_split_never_trains(small_index, tmp_path, tiny_model, _shared_embedder):
    ids = [f"q{i:03d}" for i in range(200)]
    assert [split_of(i) for i in ids] == [split_of(i) for i in ids]
    assert 60 < sum(split_of(i) == "test" for i in ids) < 140

    qa = tmp_path / "qa.jsonl"
    rows = [{"id": i, "question": f"How long do I have to submit expenses? ({i})",
             "answer": "Within 30 days of the purchase.", "gold_passage": "within 30 days",
             "gold_source": "expenses.md"} for i in ids[:24]]
    qa.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    version = finetune(FinetuneOptions(name="split", index_dir=small_index, registry_dir=tmp_path / "adapters",
                                       model=str(tiny_model), data=(qa,),
                                       training=TrainOptions(max_steps=1, batch_size=2, save_every=1)),
                       embedder=_shared_embedder, show_progress=False)
    used = version.card["data"]["question_ids"]
    assert set(used["train"]) == {i for i in ids[:24] if split_of(i) == "train"}
    assert set(used["test"]) == {i for i in ids[:24] if split_of(i) == "test"} and used["test"]
    assert not set(used["test"]) & (set(used["train"]) | set(used["validation"]))
    assert version.card["base"]["sha256"] and version.card["data"]["files"][0]["sha256"]


def test_questions_from_index_come_from_headings_of_readable_documents(small_index):
    from finetune.data import questions_from_index
    from ingest.reader import IndexReader

    items = {item.question: item for item in questions_from_index(IndexReader(small_index))}
    leave = items["How many days of leave do I get?"]  # a heading that is a question is asked as is
    assert leave.answer.startswith("Employees get 27 days of annual leave per year")
    assert leave.gold_source == "leave.md"
    deadline = items["What does the Expense policy say about Deadline?"]
    assert deadline.answer == "Expense claims must be submitted within 30 days of the purchase."
    assert not any("salary" in q.lower() or "Bands" in q for q in items)  # hr-only document left out


def test_load_qa_names_the_bad_line(tmp_path):
    from finetune.data import DataError

    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"id": "a", "question": "ok?"}\n{"id": "b"}\n')
    with pytest.raises(DataError, match=r"qa.jsonl:2: missing 'question'"):
        load_qa(qa)


# ------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("quantize", [True, False], ids=["qlora-4bit", "lora-16bit"])
def test_training_lowers_the_loss_and_changes_only_lora_weights(tiny_model, tmp_path, quantize):
    loaded = load_model(str(tiny_model), quantize=quantize)
    assert loaded.quantized == quantize
    before = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}
    few = _examples()[:2]  # a random 2-layer model learns slowly: fit two examples
    result = train(loaded, few, few, tmp_path, TrainOptions(**{**FAST.__dict__, "max_steps": 16, "quantize": quantize}),
                   show_progress=False)
    losses = [loss for _, loss in result.loss_curve]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5
    assert result.validation_loss[-1][1] < result.validation_loss[0][1]
    lora, base = _lora_and_base(loaded.model)
    assert lora and all(lora[k].abs().sum() > 0 for k in lora if "lora_B" in k)  # B starts at zero: it learned
    for name, tensor in base.items():  # the frozen base (4-bit codes included) is untouched
        original = before[name.replace("base_model.model.", "").replace(".base_layer", "")]
        assert original.shape == tensor.shape and original.to(tensor.dtype).equal(tensor), name
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_training_after_generate_still_gets_gradients(tiny_model, tmp_path):
    """bitsandbytes repacks CPU 4-bit weights on an eval forward; training must undo that, not train on zeros."""
    import torch

    loaded = load_model(str(tiny_model), quantize=True)
    inputs = loaded.tokenizer("hello there", return_tensors="pt")
    with torch.inference_mode():
        loaded.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    result = train(loaded, _examples(), [], tmp_path, FAST, show_progress=False)
    lora, _ = _lora_and_base(loaded.model)
    assert all(lora[k].abs().sum() > 0 for k in lora if "lora_B" in k)
    assert result.loss_curve[-1][1] < result.loss_curve[0][1]
    assert disable_cpu_repacking(loaded.model) > 0


def _train_in_child(model_dir: str, work_dir: str, options: TrainOptions, marker: str) -> None:
    def slow_down(step, total, loss):
        Path(marker).write_text(str(step))
        time.sleep(0.5)

    train(load_model(model_dir, quantize=True), _examples(), [], Path(work_dir), options, show_progress=False,
          on_step=slow_down)


def test_a_killed_run_resumes_from_its_last_checkpoint(tiny_model, tmp_path):
    options = TrainOptions(**{**FAST.__dict__, "max_steps": 8, "save_every": 2})
    reference = train(load_model(str(tiny_model), quantize=True), _examples(), [], tmp_path / "uninterrupted",
                      options, show_progress=False)

    marker = tmp_path / "step"
    work = tmp_path / "killed"
    child = multiprocessing.get_context("spawn").Process(target=_train_in_child,
                                                          args=(str(tiny_model), str(work), options, str(marker)))
    child.start()
    deadline = time.time() + 120
    while time.time() < deadline and not (marker.exists() and int(marker.read_text() or 0) >= 5):
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    saved = json.loads((work / "checkpoint" / "state.json").read_text())
    assert 2 <= saved["step"] < 8 and not (work / "adapter").exists()

    resumed = train(load_model(str(tiny_model), quantize=True), _examples(), [], work, options, show_progress=False)
    assert resumed.resumed_from_step == saved["step"] and resumed.steps == 8
    # Same data order, optimizer state and RNG: the resumed run ends where the uninterrupted one did.
    assert [loss for _, loss in resumed.loss_curve] == pytest.approx([loss for _, loss in reference.loss_curve], rel=1e-3)


# ------------------------------------------------------------------------------------------- registry
@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory) -> Path:
    """The registry with two versions of adapter "acme" trained on the tiny model."""
    registry = AdapterRegistry(tmp_path_factory.mktemp("registry"))
    for seed in (0, 1):
        work = registry.work_dir("acme")
        result = train(load_model(str(tiny_model), quantize=True), _examples(), [], work,
                       TrainOptions(**{**FAST.__dict__, "seed": seed}), show_progress=False)
        registry.add("acme", result.adapter_dir, {"base": {"model": str(tiny_model)}, "seed": seed})
    return registry.root


def test_promote_and_rollback(trained):
    registry = AdapterRegistry(trained)
    assert [v.version for v in registry.versions("acme")] == ["v1", "v2"]
    assert registry.default() is None and registry.resolve(None) == (None, None)
    registry.promote("acme@v1")
    registry.promote("acme@v2")
    assert registry.get("acme").version == "v2" and registry.resolve(None)[1] == "acme@v2"
    assert registry.rollback("acme").version == "v1"
    assert registry.get("acme").version == "v1"
    with pytest.raises(AdapterError, match="no earlier promoted version"):
        registry.rollback("acme")
    with pytest.raises(AdapterError, match="is promoted"):
        registry.remove("acme@v1")
    assert registry.resolve("none") == (None, None)
    registry.record_evaluation("acme@v1", "qa/test", {"grounded_accuracy": 0.5})
    assert registry.get("acme@v1").card["evaluation"] == {"qa/test": {"grounded_accuracy": 0.5}}
    assert registry.get("acme@v1").card["seed"] == 0  # the rest of the card is kept


def test_registry_refuses_escaping_names_and_corrupt_weights(trained, tmp_path):
    registry = AdapterRegistry(trained)
    for bad in ("../outside", ".hidden", "a/b", "none", ""):
        with pytest.raises(AdapterError, match="invalid adapter name"):
            registry.get(bad)
    copy = AdapterRegistry(tmp_path / "copy")
    version = copy.add("broken", registry.get("acme@v1").path, {})
    weights = version.path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(AdapterError, match="corrupt adapter weights"):
        copy.resolve("broken@v1")
    (version.path / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match="weights missing"):
        copy.resolve("broken@v1")


def test_adapter_loads_for_answers_and_is_refused_on_another_base(trained, tiny_model, tmp_path):
    from finetune.models import ModelLoadError

    registry = AdapterRegistry(trained)
    folder, _ = registry.resolve("acme@v2")
    loaded = load_model(str(tiny_model), quantize=True, adapter=folder)
    assert loaded.adapter == str(folder)
    other = tmp_path / "other-base"
    other.mkdir()
    for item in tiny_model.iterdir():
        (other / item.name).write_bytes(item.read_bytes())
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"]  # peft records the base; load_model compares it
    with pytest.raises(ModelLoadError, match="trained on"):
        load_model(str(other), quantize=True, adapter=folder)


def test_export_merged_matches_base_plus_adapter(trained, tmp_path):
    from finetune.export import export_adapter

    version = AdapterRegistry(trained).get("acme@v2")
    report = export_adapter(version, tmp_path / "merged", merged=True, max_new_tokens=8)
    assert report.greedy_identical and report.prompts_checked == 3
    merged = load_model(str(tmp_path / "merged"), quantize=False)
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    plain = export_adapter(version, tmp_path / "plain")
    assert (plain.out / "adapter_model.safetensors").is_file() and not plain.merged
    with pytest.raises(AdapterError, match="already exists"):
        export_adapter(version, tmp_path / "plain")


# ------------------------------------------------------------------------------------------- engine and CLI
def test_engine_answers_with_the_promoted_adapter_and_follows_a_rollback(trained, small_index, tiny_model, tmp_path,
                                                                          _shared_embedder):
    import shutil

    from app.engine import AnswerOptions, Engine, EngineConfig
    from app.generator import GenerationOptions
    from app.users import User

    root = tmp_path / "adapters"
    shutil.copytree(trained, root)
    registry = AdapterRegistry(root)
    registry.promote("acme@v1")
    registry.promote("acme@v2")
    engine = Engine(EngineConfig(index_dir=small_index, model=str(tiny_model), adapters_dir=root),
                    embedder=_shared_embedder)
    alice = User("alice", "employee", ("everyone",))
    # the model writes (constrained decoding): an answer names the adapter that wrote it
    options = AnswerOptions(generation=GenerationOptions(max_new_tokens=4), decoding="constrained")
    question = "How long do I have to submit expenses?"
    assert engine.answer(question, alice, options).adapter == "acme@v2"
    registry.rollback("acme")  # no restart: the next question uses the previous version
    assert engine.answer(question, alice, options).adapter == "acme@v1"
    base = AnswerOptions(generation=GenerationOptions(max_new_tokens=4), adapter="none", decoding="constrained")
    assert engine.answer(question, alice, base).adapter is None

    card = registry.get("acme@v2").path / "card.json"
    card.write_text(json.dumps({"base": {"sha256": "0" * 64}}))
    fresh = Engine(EngineConfig(index_dir=small_index, model=str(tiny_model), adapters_dir=root),
                   embedder=_shared_embedder)
    with pytest.raises(AdapterError, match="trained on a different base model"):
        fresh.answer(question, alice, AnswerOptions(adapter="acme@v2", decoding="constrained"))


def test_cli_finetune_then_manage_adapters(tiny_model, small_index, tmp_path):
    from test_cli import groundwork

    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps({"id": f"c{i}", "question": "How long do I have to submit expenses?",
                                        "answer": "Within 30 days of the purchase.", "gold_source": "expenses.md"})
                            for i in range(8)) + "\n")
    registry = str(tmp_path / "adapters")
    common = ["--index", str(small_index), "--model", str(tiny_model), "--adapters", registry, "-q"]
    for _ in range(2):
        result = groundwork("finetune", "--name", "demo", "--data", str(qa), "--max-steps", "2", "--batch-size", "2",
                            *common)
        assert result.returncode == 0, result.stderr
    assert "demo@v2" in result.stdout and "groundwork adapters promote demo@v2" in result.stdout

    def run(*args: str) -> subprocess.CompletedProcess:
        return groundwork("adapters", *args, "--adapters", registry)

    assert run("promote", "demo@v1").stdout.strip() == "Promoted demo@v1"
    assert run("promote", "demo").stdout.strip() == "Promoted demo@v2"  # a bare name promotes the newest
    listing = run("list").stdout
    assert "* demo@v2 (promoted)" in listing and "  demo@v1;" in listing
    assert json.loads(run("show", "demo").stdout)["version"] == "v2"
    assert run("rollback", "demo").stdout.strip() == "Rolled back demo to demo@v1"
    refused = run("remove", "demo@v1")
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "error: demo@v1 is promoted: promote another version or roll back first")
    escaped = run("show", "../../etc")
    assert escaped.returncode == 2 and escaped.stderr.startswith("error: invalid adapter name '../../etc'")
    assert run("remove", "demo@v2").returncode == 0 and "demo@v2" not in run("list").stdout
    exported = tmp_path / "exported"
    assert run("export", "demo@v1", "--out", str(exported)).stdout.strip() == f"Wrote the adapter to {exported}"
    imported = run("import", str(exported), "--name", "copy", "--promote")
    assert imported.stdout.strip() == f"Imported {exported} as copy@v1 (promoted)"
    assert json.loads(run("show", "copy").stdout)["data"]["question_ids"]["train"]  # the card came along


@pytest.mark.slow
def test_qlora_on_the_packaged_model_learns_to_cite(tmp_path):
    """The real base in 4-bit NF4: a few steps on two short grounded examples lower the loss on them."""
    loaded = load_model("smollm2-135m-instruct", quantize=True)
    assert loaded.quantized
    examples = [e for e in _examples() if e.kind == "answer"][:2]
    result = train(loaded, examples, examples, tmp_path,
                   TrainOptions(max_steps=6, batch_size=2, learning_rate=1e-3, warmup_steps=1, save_every=6),
                   show_progress=False)
    assert result.validation_loss[-1][1] < 0.6 * result.validation_loss[0][1]
    lora, _ = _lora_and_base(loaded.model)
    assert len([k for k in lora if "lora_A" in k]) == 30 * 7  # every linear projection of the 30 layers


def test_refusal_threshold_is_chosen_on_validation_and_applied_to_the_first_token_only():
    import torch

    from app.generator import RefusalThreshold
    from finetune.calibrate import choose_threshold

    # Answers' refusal probabilities sit below 0.6, refusals' above: the best threshold lies between.
    chosen = choose_threshold([0.1, 0.3, 0.55, 0.62, 0.8, 0.9], [False, False, False, True, True, True])
    assert 0.55 < chosen.threshold <= 0.62 and chosen.balanced_accuracy == 1.0

    processor = RefusalThreshold(token_id=2, threshold=0.5, prompt_length=4)
    unsure = torch.log(torch.tensor([[0.3, 0.3, 0.4]]))  # refusal token at 0.4 < 0.5: not allowed to start
    assert processor(torch.zeros((1, 4), dtype=torch.long), unsure.clone())[0, 2] == float("-inf")
    sure = torch.log(torch.tensor([[0.1, 0.1, 0.8]]))
    assert processor(torch.zeros((1, 4), dtype=torch.long), sure.clone())[0, 2] == sure[0, 2]
    later = processor(torch.zeros((1, 5), dtype=torch.long), unsure.clone())  # after the first token: untouched
    assert later[0, 2] == unsure[0, 2]
