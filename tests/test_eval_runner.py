"""The batch runner end to end on a small real index: modes, results.jsonl, resume, the leak detector, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import HR_DOCS, build_corpus
from fakes import FakeGenerator, LeakyRetriever
from typer.testing import CliRunner

from app.engine import Engine, EngineConfig, GroundedAnswer
from app.users import UserStore
from eval.errors import EvalError
from eval.runner import EvalConfig, read_results, run_eval

ANSWERS = {  # question keyword -> what the scripted model says
    "expense claims": "Expense claims must be submitted within 30 days of the purchase.",
    "annual leave": "Employees get 27 days of annual leave per year.",
    "salary band": "The salary band E4 pays 78,000 EUR per year.",
}
QUESTIONS = [
    {"id": "q-expenses", "question": "When are expense claims due?", "answer": "Within 30 days of the purchase.",
     "gold_passage": "Expense claims must be submitted within 30 days of the purchase.",
     "gold_source": "expenses.md", "user": "alice"},
    {"id": "q-leave", "question": "How many days of annual leave do employees get?",
     "answer": "27 days of annual leave per year.", "gold_source": "leave.md"},
    {"id": "q-band", "question": "How much does salary band E4 pay?", "answer": "78,000 EUR per year.",
     "gold_passage": "The salary band E4 pays 78,000 EUR per year.", "gold_source": "hr/bands.md",
     "user": "hannah"},
    {"id": "q-band-outsider", "question": "How much does salary band E4 pay?", "answerable": False,
     "user": "alice"},
    {"id": "q-triton", "question": "What is the orbital period of Neptune's moon Triton?", "answerable": False},
]


def scripted_model(fail_after: int | None = None) -> FakeGenerator:
    """Stands in for the model: answers from ANSWERS by a keyword of the question, records its prompts."""
    return FakeGenerator(answers=ANSWERS, fail_after=fail_after)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, _shared_embedder) -> Path:
    root = tmp_path_factory.mktemp("eval")
    build_corpus(root, _shared_embedder)
    (root / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    store = UserStore(root / "users.json")
    store.add("alice", "password123")
    store.add("hannah", "password123", groups=["hr"])
    return root


def _config(corpus: Path, out: Path, **kwargs) -> EvalConfig:
    # the scripted fakes write the answers (decoding "constrained"); the default selection never asks them to
    kwargs.setdefault("decoding", "constrained")
    # an empty registry of the test's own: the default (groundwork-data/adapters under the working directory) is the
    # checkout's real one after `make install`, whose promoted adapter's card the run would otherwise write to
    kwargs.setdefault("adapters_dir", corpus / "adapters")
    return EvalConfig(qa_file=corpus / "qa.jsonl", index_dir=corpus / "index", out_dir=out,
                      users_file=corpus / "users.json", progress=False, **kwargs)


def _factory(corpus: Path, embedder, model: FakeGenerator, leaky: bool = False):
    def build() -> Engine:
        engine = Engine(EngineConfig(index_dir=corpus / "index"), embedder=embedder, generator=model)
        if leaky:
            engine.retriever = LeakyRetriever(engine.retriever)
        return engine

    return build


def test_rag_run_writes_one_line_per_question_and_a_summary(corpus, tmp_path, embedder) -> None:
    model = scripted_model()
    result = run_eval(_config(corpus, tmp_path / "run"), _factory(corpus, embedder, model), embedder)
    records = read_results(tmp_path / "run" / "results.jsonl")
    assert [r["id"] for r in records] == [q["id"] for q in QUESTIONS]
    by_id = {r["id"]: r for r in records}
    answer_keys = {"question", "answer", "refused", "refusal_reason", "citations", "retrieved", "flags", "timings",
                   "user", "model"}
    assert answer_keys | {"id", "mode", "gold_answer", "gold_passage", "gold_source", "answerable", "ranking",
                          "metrics"} <= set(by_id["q-expenses"])
    expenses = by_id["q-expenses"]
    assert not expenses["refused"] and expenses["citations"][0]["source"] == "expenses.md"
    assert expenses["retrieved"][0]["text"] and "score" in expenses["retrieved"][0]
    assert expenses["metrics"]["gold_rank"] == 1 and expenses["metrics"]["cites_gold"]
    assert by_id["q-band"]["user"] == "hannah" and not by_id["q-band"]["refused"]
    assert by_id["q-band-outsider"]["refused"] and all(p["source"] != "hr/bands.md"
                                                        for p in by_id["q-band-outsider"]["retrieved"])
    assert by_id["q-triton"]["refused"] and by_id["q-triton"]["user"] == "anonymous"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["ids"] == [q["id"] for q in QUESTIONS] and summary["split"] == "all"
    m = summary["metrics"]
    assert m["grounded_accuracy"] == 1.0 and m["correct"] == 1.0 and m["hit@1"] == 1.0
    assert m["unanswerable_refused"] == 1.0 and m["answerable_refused"] == 0.0 and m["leaked_passages"] == 0
    assert m["latency_p50"] > 0 and result.leaks == 0 and "grounded accuracy 1.000" in result.one_line()
    # the scripted answers are the gold passages' sentences: strictly correct too
    assert m["correct_strict"] == 1.0 and m["grounded_accuracy_strict"] == 1.0
    assert "(strict 1.000)" in result.one_line() and expenses["metrics"]["answer_recall"] == 1.0
    assert m["answer_words_p50"] == 9.0  # the three answers have 10, 9 and 9 words


def test_extractive_and_closed_book_baselines(corpus, tmp_path, embedder) -> None:
    model = scripted_model()
    run_eval(_config(corpus, tmp_path / "extractive", mode="extractive"), _factory(corpus, embedder, model),
             embedder)
    assert model.prompts == []  # no model
    extractive = {r["id"]: r for r in read_results(tmp_path / "extractive" / "results.jsonl")}
    top = extractive["q-expenses"]["retrieved"][0]
    assert extractive["q-expenses"]["answer"] == f"{top['text']} [1]"
    assert [c["n"] for c in extractive["q-expenses"]["citations"]] == [1]
    assert extractive["q-triton"]["refused"]  # nothing relevant enough to quote

    run_eval(_config(corpus, tmp_path / "closed", mode="closed-book"), _factory(corpus, embedder, model), embedder)
    closed = {r["id"]: r for r in read_results(tmp_path / "closed" / "results.jsonl")}
    assert len(model.prompts) == len(QUESTIONS)
    assert all("Passages" not in m["content"] for call in model.prompts for m in call)  # no passages at all
    assert closed["q-expenses"]["retrieved"] == [] and closed["q-expenses"]["ranking"] is None
    summary = json.loads((tmp_path / "closed" / "summary.json").read_text())
    assert summary["metrics"]["hit@5"] is None and summary["metrics"]["grounded_accuracy"] == 0.0
    assert summary["metrics"]["correct"] > 0  # the scripted model knows the answers without passages


def test_interrupted_run_resumes_without_answering_again(corpus, tmp_path, embedder) -> None:
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crashed"):
        run_eval(_config(corpus, out), _factory(corpus, embedder, scripted_model(fail_after=1)), embedder)
    saved = read_results(out / "results.jsonl")
    assert [r["id"] for r in saved] == ["q-expenses"]  # the answered question was saved before the crash
    with open(out / "results.jsonl", "a") as handle:  # and a line torn by a crash mid-write
        handle.write('{"id": "q-leave", "question": "How many')
    model = scripted_model()
    result = run_eval(_config(corpus, out), _factory(corpus, embedder, model), embedder)
    assert result.resumed == 1 and result.answered_now == len(QUESTIONS) - 1
    assert not any("expense claims" in call[-1]["content"].lower() for call in model.prompts)
    ids = [r["id"] for r in read_results(out / "results.jsonl")]
    assert sorted(ids) == sorted(q["id"] for q in QUESTIONS) and len(ids) == len(set(ids))
    again = scripted_model()
    run_eval(_config(corpus, out, workers=2), _factory(corpus, embedder, again), embedder)
    assert again.prompts == []  # all done: nothing is asked again, the summary is rewritten

    lines = (out / "results.jsonl").read_text().splitlines()  # --rescore recomputes metrics, keeps the answers
    damaged = [json.loads(line) for line in lines]
    for record in damaged:
        record["metrics"]["gold_rank"] = 99
        record["metrics"].pop("answer_recall", None)  # as scored before the strict metrics existed
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in damaged))
    run_eval(_config(corpus, out, rescore=True), _factory(corpus, embedder, again), embedder)
    rescored = read_results(out / "results.jsonl")
    assert again.prompts == [] and [r["answer"] for r in rescored] == [r["answer"] for r in damaged]
    expenses = next(r for r in rescored if r["id"] == "q-expenses")
    assert expenses["metrics"]["gold_rank"] == 1 and expenses["metrics"]["answer_recall"] == 1.0
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    assert metrics["correct_strict"] == 1.0 and metrics["grounded_accuracy_strict"] == 1.0


def test_resuming_with_other_settings_is_refused(corpus, tmp_path, embedder) -> None:
    out = tmp_path / "run"
    run_eval(_config(corpus, out, limit=1), _factory(corpus, embedder, scripted_model()), embedder)
    with pytest.raises(EvalError) as info:
        run_eval(_config(corpus, out, mode="extractive"), _factory(corpus, embedder, scripted_model()), embedder)
    assert "holds a run with mode='rag', not 'extractive'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(EvalError, match="top_k=5, not 3"):
        run_eval(_config(corpus, out, top_k=3), _factory(corpus, embedder, scripted_model()), embedder)


def test_planted_leak_is_caught(corpus, tmp_path, embedder) -> None:
    result = run_eval(_config(corpus, tmp_path / "leaky"), _factory(corpus, embedder, scripted_model(), leaky=True),
                      embedder)
    summary = json.loads((tmp_path / "leaky" / "summary.json").read_text())
    leaked = {leak["id"] for leak in summary["leaks"]}
    assert "q-band-outsider" in leaked and "q-band" not in leaked  # hannah may read hr/bands.md; alice may not
    assert result.leaks == summary["metrics"]["leaked_passages"] > 0
    outsider = next(r for r in read_results(tmp_path / "leaky" / "results.jsonl") if r["id"] == "q-band-outsider")
    wheres = {(leak["where"], leak["source"]) for leak in outsider["metrics"]["leaks"]}
    assert {("retrieved", "hr/bands.md"), ("citations", "hr/bands.md"), ("ranking", "hr/bands.md")} <= wheres


def test_two_workers_give_the_same_results(corpus, tmp_path, embedder) -> None:
    run_eval(_config(corpus, tmp_path / "one"), _factory(corpus, embedder, scripted_model()), embedder)
    run_eval(_config(corpus, tmp_path / "two", workers=2), _factory(corpus, embedder, scripted_model()), embedder)

    def answers(folder: str) -> dict:
        return {r["id"]: (r["answer"], r["refused"], [c["source"] for c in r["citations"]])
                for r in read_results(tmp_path / folder / "results.jsonl")}

    assert answers("one") == answers("two")


def test_split_is_recorded_with_its_ids(corpus, tmp_path, embedder) -> None:
    from finetune.splits import split_of

    expected = [q["id"] for q in QUESTIONS if split_of(q["id"]) == "test"]
    if not expected:
        pytest.skip("no question of this set falls in the test split")
    run_eval(_config(corpus, tmp_path / "test", split="test", mode="extractive"),
             _factory(corpus, embedder, scripted_model()), embedder)
    summary = json.loads((tmp_path / "test" / "summary.json").read_text())
    assert summary["split"] == "test" and summary["ids"] == expected


def test_cli_runs_compares_and_reports_leaks_loudly(corpus, tmp_path, embedder, monkeypatch) -> None:
    import eval.runner
    import ingest.embedding
    from app.cli import cli

    monkeypatch.setattr(ingest.embedding, "Embedder", lambda *args, **kwargs: embedder)  # no second model load
    runner = CliRunner()
    common = ["eval", "--qa", str(corpus / "qa.jsonl"), "--index", str(corpus / "index"), "--users",
              str(corpus / "users.json"), "--adapters", str(corpus / "adapters"), "--quiet"]
    result = runner.invoke(cli, [*common, "--extractive", "--out", str(tmp_path / "ext")])
    assert result.exit_code == 0, result.output
    assert "Evaluated 5 questions" in result.output and "permission leaks 0" in result.output

    monkeypatch.setattr(eval.runner, "_default_engine_factory",
                        lambda config, emb: _factory(corpus, embedder, scripted_model(), leaky=True))
    result = runner.invoke(cli, [*common, "--out", str(tmp_path / "leaky"), "--name", "leaky rag"])
    assert result.exit_code == 3 and "PERMISSION LEAKS" in result.output

    result = runner.invoke(cli, ["eval", "compare", str(tmp_path / "ext"), str(tmp_path / "leaky"), "--out",
                                 str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "| grounded-answer accuracy |" in result.output and "PERMISSION LEAKS" in result.output
    assert (tmp_path / "report" / "report.html").exists()

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "x"}\n{"id": "a", "question": "y"}\n')
    result = runner.invoke(cli, ["eval", "--qa", str(bad), "--index", str(corpus / "index")])
    assert isinstance(result.exception, EvalError) and "bad.jsonl:2: duplicate id 'a'" in str(result.exception)


# --- the first-sentence and oracle baselines (eval.baselines) -------------------------------------------------

FAQ = ("# Travel FAQ\n\n## Refunds\n\nCan I get a refund for a cancelled trip? Is it automatic?\n\n"
       "Refunds for cancelled trips are paid back within 14 days. Send the booking number to the travel desk.\n")
REFUND_GOLD = "Refunds for cancelled trips are paid back within 14 days."
BASELINE_QUESTIONS = [
    {"id": "q-refund", "question": "How fast are refunds for cancelled trips paid?", "answer": "Within 14 days.",
     "gold_passage": REFUND_GOLD, "gold_source": "faq.md#refunds"},
    {"id": "q-leave", "question": "How many days of annual leave do employees get?",
     "answer": "27 days of annual leave per year.", "gold_source": "leave.md"},  # no gold passage
    {"id": "q-triton", "question": "What is the orbital period of Neptune's moon Triton?", "answerable": False},
]


@pytest.fixture(scope="module")
def faq_corpus(tmp_path_factory, _shared_embedder) -> Path:
    root = tmp_path_factory.mktemp("eval-faq")
    build_corpus(root, _shared_embedder, {**HR_DOCS, "faq.md": FAQ})
    (root / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in BASELINE_QUESTIONS))
    UserStore(root / "users.json").add("alice", "password123")
    return root


class RecordingStage(GroundedAnswer):
    """The engine's default stage, noting the passages each question gets."""

    def __init__(self) -> None:
        self.passages: list[list] = []

    def run(self, turn):
        self.passages.append(list(turn.passages))
        yield from super().run(turn)


def test_first_sentence_baseline_answers_the_top_passages_first_statement(faq_corpus, tmp_path, embedder) -> None:
    model = scripted_model()
    run_eval(_config(faq_corpus, tmp_path / "fs", mode="first-sentence"), _factory(faq_corpus, embedder, model),
             embedder)
    assert model.prompts == []  # no model
    records = {r["id"]: r for r in read_results(tmp_path / "fs" / "results.jsonl")}
    refund = records["q-refund"]
    assert refund["mode"] == "first-sentence" and refund["retrieved"][0]["source"] == "faq.md"
    assert refund["retrieved"][0]["text"].startswith("Can I get a refund")  # the FAQ's question heads the passage
    assert refund["answer"] == "Refunds for cancelled trips are paid back within 14 days. [1]"  # not the question
    assert [(c["n"], c["source"]) for c in refund["citations"]] == [(1, "faq.md")]
    leave = records["q-leave"]
    assert leave["answer"] == f"{leave['retrieved'][0]['text']} [1]"  # a one-sentence passage: all of it
    assert records["q-triton"]["refused"]
    # verbatim from its cited passage, like extractive: no citation to check, one marker per answer
    assert refund["metrics"]["unsupported_citations"] == [] and refund["metrics"]["markers"] == 1
    assert refund["metrics"]["answer_recall"] == 1.0 and refund["metrics"]["gold_rank"] == 1
    summary = json.loads((tmp_path / "fs" / "summary.json").read_text())
    assert summary["mode"] == "first-sentence" and summary["metrics"]["correct_strict"] == 1.0
    assert summary["metrics"]["unsupported_citation_rate"] == 0.0 and summary["run"]["fingerprint"]["model"] is None


def test_oracle_gives_the_engines_stage_only_the_gold_passage(faq_corpus, tmp_path, embedder) -> None:
    rag_stage, oracle_stage = RecordingStage(), RecordingStage()

    def factory(stage, model):
        def build() -> Engine:
            return Engine(EngineConfig(index_dir=faq_corpus / "index"), embedder=embedder, generator=model,
                          answer_stage=stage)
        return build

    rag_model, oracle_model = FakeGenerator(), FakeGenerator()  # extractive: the first sentence of passage [1]
    run_eval(_config(faq_corpus, tmp_path / "rag"), factory(rag_stage, rag_model), embedder)
    run_eval(_config(faq_corpus, tmp_path / "oracle", mode="oracle"), factory(oracle_stage, oracle_model), embedder)
    rag = {r["id"]: r for r in read_results(tmp_path / "rag" / "results.jsonl")}
    oracle = {r["id"]: r for r in read_results(tmp_path / "oracle" / "results.jsonl")}

    # the wrapped stage (the engine's own) got one passage: the gold passage, from the gold source's file
    gold = oracle_stage.passages[0]
    assert len(gold) == 1 and gold[0].chunk.text == REFUND_GOLD and gold[0].chunk.source == "faq.md"
    assert gold[0].chunk.anchor == "refunds" and gold[0].chunk.heading == "Travel FAQ > Refunds"
    assert len(rag_stage.passages[0]) == 2  # retrieval alone gives it two
    prompt = oracle_model.prompts[0][-1]["content"]
    assert REFUND_GOLD in prompt and "[2]" not in prompt and "Can I get a refund" not in prompt
    refund = oracle["q-refund"]
    assert refund["mode"] == "oracle" and [p["text"] for p in refund["retrieved"]] == [REFUND_GOLD]
    assert refund["answer"].startswith("Refunds for cancelled trips are paid back within 14 days")
    assert refund["citations"][0]["source"] == "faq.md" and refund["metrics"]["gold_passage_coverage"] == 1.0
    assert "raw_answer" in refund
    # retrieval still runs: the evaluator's ranking, and so the ranking metrics, are those of RAG
    assert all(oracle[q]["ranking"] == rag[q]["ranking"] for q in rag)
    assert refund["metrics"]["gold_rank"] == rag["q-refund"]["metrics"]["gold_rank"] == 1
    # no gold passage: the stage gets the retrieved passages, as in RAG
    assert [p.chunk.text for p in oracle_stage.passages[1]] == [p.chunk.text for p in rag_stage.passages[1]]
    assert oracle["q-leave"]["answer"] == rag["q-leave"]["answer"]
    summary = json.loads((tmp_path / "oracle" / "summary.json").read_text())
    assert summary["mode"] == "oracle" and summary["metrics"]["hit@1"] == 1.0
    assert summary["run"]["fingerprint"]["decoding"] == "constrained"


def test_baseline_option_and_default_folder_names(faq_corpus, tmp_path, embedder, monkeypatch) -> None:
    import ingest.embedding
    from app.cli import cli
    from eval.cli import _default_out

    monkeypatch.setattr(ingest.embedding, "Embedder", lambda *args, **kwargs: embedder)
    runner = CliRunner()
    common = ["eval", "--qa", str(faq_corpus / "qa.jsonl"), "--index", str(faq_corpus / "index"), "--users",
              str(faq_corpus / "users.json"), "--adapters", str(faq_corpus / "adapters"), "--quiet"]
    result = runner.invoke(cli, [*common, "--baseline", "first-sentence", "--out", str(tmp_path / "fs")])
    assert result.exit_code == 0, result.output
    assert "Evaluated 3 questions" in result.output and "(strict " in result.output
    assert {r["mode"] for r in read_results(tmp_path / "fs" / "results.jsonl")} == {"first-sentence"}
    result = runner.invoke(cli, [*common, "--baseline", "extractive", "--out", str(tmp_path / "ext")])
    assert result.exit_code == 0, result.output
    assert {r["mode"] for r in read_results(tmp_path / "ext" / "results.jsonl")} == {"extractive"}
    result = runner.invoke(cli, [*common, "--baseline", "firstsentence"])
    assert isinstance(result.exception, EvalError) and "unknown --baseline 'firstsentence'" in str(result.exception)
    result = runner.invoke(cli, [*common, "--baseline", "oracle", "--extractive"])
    assert isinstance(result.exception, EvalError) and "oracle and extractive" in str(result.exception)
    result = runner.invoke(cli, [*common, "--baseline", "extractive", "--extractive", "--out", str(tmp_path / "ext")])
    assert result.exit_code == 0, result.output  # the same baseline twice is fine

    qa = Path("examples/acme/qa.jsonl")
    assert _default_out(qa, "test", "first-sentence", "acme", None).name == "acme-test-first-sentence"  # no model
    assert _default_out(qa, "test", "oracle", "acme", 5).name == "acme-test-oracle-acme-first5"
    assert _default_out(qa, "test", "oracle", None, None).name == "acme-test-oracle"
