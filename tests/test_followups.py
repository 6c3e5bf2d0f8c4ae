"""Follow-up questions: the gate, the standalone rewrite (keywords; the model's, guarded), the engine searching it,
and the follow-up QA set of examples/acme."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import build_corpus
from fakes import FakeGenerator

from app.conversations.rewrite import guard, needs_context, rewrite
from app.engine import AnswerOptions, Engine, EngineConfig
from app.users import User
from eval.qa import load_qa
from ingest.retrieval import RetrievalOptions

ROOT = Path(__file__).resolve().parents[1]
ACME = ROOT / "examples" / "acme"
ALICE = User("alice", "employee", ("everyone",))

PARIS = [("What's the daily meal allowance when I travel to Paris?", "The meal per diem in Paris is EUR 65 per day.")]


def _self_contained() -> list[str]:
    return [json.loads(line)["question"] for line in (ACME / "qa.jsonl").read_text().splitlines() if line.strip()]


# --- the gate --------------------------------------------------------------------------------------------------


def test_self_contained_questions_are_searched_as_asked_even_in_a_conversation() -> None:
    questions = _self_contained()
    assert len(questions) >= 50
    for question in questions:
        result = rewrite(question, PARIS)
        assert (result.query, result.rewritten, result.strategy) == (question, False, "none"), question


@pytest.mark.parametrize("question", ["What about Pune?", "And can I carry them over?", "Who approves it?",
                                      "Does it apply to contractors?", "And for contractors?", "Why?",
                                      "Is that the same in Austin?", "Can I split it?"])
def test_questions_that_point_back_need_the_conversation(question: str) -> None:
    assert needs_context(question)[0], question


def test_no_history_means_no_rewrite() -> None:
    assert rewrite("What about Pune?", []).query == "What about Pune?"
    assert rewrite("What about Pune?", None).rewritten is False


# --- the deterministic rewrite -------------------------------------------------------------------------------


def test_what_about_another_city_keeps_the_allowance_topic_and_drops_the_old_city() -> None:
    result = rewrite("What about Pune?", PARIS, "keywords")
    assert result.rewritten and result.strategy == "keywords"
    words = result.query.lower()
    assert "pune" in words and "meal" in words and "allowance" in words
    assert "paris" not in words  # the follow-up replaced it: searching both would find Paris's row


def test_a_follow_up_after_a_follow_up_takes_the_topic_from_the_turn_that_set_it() -> None:
    history = [*PARIS, ("And in London?", "GBP 70 per day.")]
    query = rewrite("What about Pune?", history, "keywords").query.lower()
    assert "allowance" in query and "pune" in query


# --- the model's rewrite, guarded ----------------------------------------------------------------------------


def test_the_guard_removes_words_in_neither_the_history_nor_the_question() -> None:
    guarded = guard("What is the daily meal allowance for unicorns in Pune?", "What about Pune?", PARIS)
    assert "unicorns" not in guarded
    assert "allowance" in guarded and "Pune" in guarded


def test_the_model_rewrite_is_used_after_the_guard() -> None:
    # the double stands in for the model: it rewrites well but invents a word ("hotel")
    result = rewrite("What about Pune?", PARIS, "model",
                     lambda messages: "What is the daily meal allowance and hotel when I travel to Pune?")
    assert result.strategy == "model" and result.rewritten
    assert "hotel" not in result.query
    assert "meal allowance" in result.query and "Pune" in result.query


@pytest.mark.parametrize("reply", ["", "   \n", "Unicorns gallop happily!", "What about Pune?"])
def test_an_empty_invented_or_unchanged_model_rewrite_falls_back_to_keywords(reply: str) -> None:
    result = rewrite("What about Pune?", PARIS, "model", lambda messages: reply)
    assert result.strategy == "keywords"
    assert result.query == rewrite("What about Pune?", PARIS, "keywords").query
    assert "unicorn" not in result.query.lower()


def test_a_failing_model_falls_back_to_keywords() -> None:
    def broken(messages):
        raise RuntimeError("out of memory")

    result = rewrite("What about Pune?", PARIS, "model", broken)
    assert result.strategy == "keywords" and "allowance" in result.query
    assert "model failed" in result.reason


# --- the engine ----------------------------------------------------------------------------------------------

DOCS = {
    "meals.md": "# Meal allowance\n\nThe daily meal allowance for business trips is 60 USD in Austin and "
                "3,000 INR in Pune.\n",
    "offices.md": "# Our offices\n\nThe Pune office is in Kalyani Nagar, Level 6, Tower B. The Austin office is "
                  "on East 6th Street.\n",
    "leave.md": "# Leave\n\nEmployees get 27 days of annual leave per year.\n",
}
HISTORY = [("What is the daily meal allowance in Austin?", "The daily meal allowance is 60 USD in Austin [1].")]
TOP1 = AnswerOptions(retrieval=RetrievalOptions(top_k=1, min_score=0.0))


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, _shared_embedder) -> Path:
    return build_corpus(tmp_path_factory.mktemp("followups"), _shared_embedder, DOCS, 'default = ["everyone"]\n')


@pytest.mark.parametrize("strategy", ["keywords", "model"])
def test_a_follow_up_retrieves_the_document_of_the_conversation(index_dir, embedder, strategy) -> None:
    # the double stands in for the model's rewrite (and invents "dinner", which the guard removes)
    model = FakeGenerator("What is the daily meal allowance for dinner in Pune?")
    engine = Engine(EngineConfig(index_dir=index_dir, rewrite=strategy), embedder=embedder, generator=model)
    alone = engine.answer("What about Pune?", ALICE, TOP1)
    assert [p.source for p in alone.retrieved] == ["offices.md"]  # searched as asked: the wrong document
    assert alone.searched_for is None and "rewrite" not in alone.timings

    followup = engine.answer("What about Pune?", ALICE, TOP1, history=HISTORY)
    assert [p.source for p in followup.retrieved] == ["meals.md"]
    assert followup.question == "What about Pune?"
    assert followup.searched_for and "allowance" in followup.searched_for and "Pune" in followup.searched_for
    assert "dinner" not in followup.searched_for
    assert followup.timings["rewrite"] >= 0
    assert not followup.refused and "3,000 INR" in followup.answer


def test_a_self_contained_question_in_a_conversation_is_searched_as_asked(index_dir, embedder) -> None:
    engine = Engine(EngineConfig(index_dir=index_dir), embedder=embedder, generator=FakeGenerator())
    answer = engine.answer("How many days of annual leave do employees get?", ALICE, TOP1, history=HISTORY)
    assert answer.searched_for is None
    assert [p.source for p in answer.retrieved] == ["leave.md"]


def test_the_rewrite_can_be_switched_off_per_question(index_dir, embedder) -> None:
    engine = Engine(EngineConfig(index_dir=index_dir), embedder=embedder, generator=FakeGenerator())
    off = AnswerOptions(retrieval=TOP1.retrieval, rewrite="none")
    answer = engine.answer("What about Pune?", ALICE, off, history=HISTORY)
    assert answer.searched_for is None and [p.source for p in answer.retrieved] == ["offices.md"]


# --- the follow-up QA set ------------------------------------------------------------------------------------


def _document_text(source: str) -> str:
    from ingest.loaders import load_document

    path = ACME / "docs" / source
    texts = [load_document(path).full_text()]
    if path.suffix in (".md", ".txt", ".csv"):
        texts.append(path.read_text(encoding="utf-8"))  # a CSV's gold passage is its raw row
    return "\n".join(" ".join(t.replace("**", "").split()) for t in texts)


def test_the_follow_up_set_loads_with_its_history_and_its_gold_passages_are_in_the_documents() -> None:
    items = load_qa(ACME / "followups.jsonl")
    assert len(items) >= 40
    assert all(len(item.history) == 1 and item.history[0][0] and item.gold_source for item in items)
    assert len({item.gold_file for item in items}) >= 15
    texts: dict[str, str] = {}
    for item in items:
        text = texts.setdefault(item.gold_file, _document_text(item.gold_file))
        assert " ".join(item.gold_passage.split()) in text, item.id


def test_training_data_refuses_a_follow_up_set() -> None:
    from finetune.data import DataError, load_qa as training_qa

    with pytest.raises(DataError, match="history"):
        training_qa(ACME / "followups.jsonl")


def test_a_follow_up_set_asks_as_users_who_may_read_the_gold_document() -> None:
    import tomllib
    from fnmatch import fnmatch

    acl = tomllib.loads((ACME / "acl.toml").read_text())
    groups = {"alice": {"everyone"}, "hannah": {"everyone", "hr"}, "frank": {"everyone", "finance"}}
    for item in load_qa(ACME / "followups.jsonl"):
        needed = next((rule["groups"] for rule in acl.get("rules", []) if fnmatch(item.gold_file, rule["glob"])),
                      acl["default"])
        assert groups[item.user] & set(needed), item.id


# --- the evaluation of a follow-up set -----------------------------------------------------------------------

# Six documents name Pune more prominently than the meal allowance does: "What about Pune?" searched as asked ranks
# the allowance below them; searched in its conversation, first.
PUNE_DOCS = {**DOCS, **{f"pune-{n}.md": f"# Pune news {n}\n\nWhat about Pune? Pune update {n}: the Pune office "
                                        f"in Pune has news number {n} about Pune.\n" for n in range(1, 7)}}


def test_eval_reports_follow_up_hit_at_5_with_and_without_the_rewrite(tmp_path, embedder) -> None:
    from eval.runner import EvalConfig, run_eval

    index = build_corpus(tmp_path, embedder, PUNE_DOCS, 'default = ["everyone"]\n')
    qa = tmp_path / "followups.jsonl"
    qa.write_text(json.dumps({"id": "fu-1", "question": "What about Pune?", "answer": "3,000 INR.",
                              "gold_passage": "3,000 INR in Pune", "gold_source": "meals.md",
                              "history": [{"question": HISTORY[0][0], "answer": HISTORY[0][1]}]}) + "\n")

    def factory() -> Engine:
        return Engine(EngineConfig(index_dir=index), embedder=embedder, generator=FakeGenerator())

    result = run_eval(EvalConfig(qa_file=qa, index_dir=index, out_dir=tmp_path / "run", mode="extractive",
                                 progress=False), factory, embedder)
    metrics = result.summary["metrics"]
    assert metrics["followup_hit@5"] == 1.0 and metrics["followup_hit@5_no_rewrite"] == 0.0
    assert metrics["followups_rewritten"] == 1.0 and metrics["rewrite_p50"] is not None
    assert "follow-ups hit@5 1.000 rewritten vs 0.000 as asked" in result.one_line()
    record = json.loads((tmp_path / "run" / "results.jsonl").read_text())
    assert record["searched_for"] and record["history"][0]["question"] == HISTORY[0][0]
    # The follow-up came after what the assistant said (the first question answered live: the extractive top
    # passage, cited), not after the set's own answer.
    [said] = record["history_answers"]
    assert said != HISTORY[0][1] and said.endswith("[1]") and "Austin" in said
