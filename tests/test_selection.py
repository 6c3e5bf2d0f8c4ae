"""Answer selection (app/selection.py): what may be quoted, which candidate wins, and when it refuses.

These run the packaged weights (app/selection_weights.json) with the real embedder: a regression in the
features, the candidates or the fitted weights shows here as a wrong choice.
"""
from __future__ import annotations

import numpy as np
import pytest

from app.selection import select, selection_weights
from ingest.answer_spans import SelectionPassage, candidates, passage_units
from conftest import build_corpus
from fakes import FakeGenerator

FAQ = (
    "3.1.7 How long do I have to submit my expenses?\n"
    "Claims must reach Finance within 30 days of the purchase. Late claims need the CFO's approval.\n"
    "3.1.8 Who approves my travel?\n"
    "Your line manager approves every trip before you book it.\n"
)


def _embed(embedder):
    return lambda texts: np.asarray(embedder.encode(list(texts)))


def test_headings_section_numbers_and_navigation_are_never_candidates() -> None:
    text = "Travel guide\nNext | Previous | Index\n" + FAQ + "3.1.9\n"
    kinds = {u.text: u.kind for u in passage_units(text)}
    assert kinds["Travel guide"] == "heading"
    assert kinds["3.1.7 How long do I have to submit my expenses?"] == "question"
    assert kinds["Next | Previous | Index"] == "noise"
    assert kinds["3.1.9"] == "noise"
    quoted = {c.text for c in candidates([SelectionPassage(text, None, 0.6)])}
    assert quoted, "the answers are candidates"
    assert not any("?" in q or q.startswith(("3.1", "Travel guide", "Next")) for q in quoted)
    assert "Claims must reach Finance within 30 days of the purchase." in quoted
    # a span never runs past the next heading into another question's answer
    assert not any("Claims" in q and "line manager" in q for q in quoted)


def test_an_abbreviation_or_an_initial_does_not_end_a_sentence() -> None:
    text = "The FAQ was written by J.H.M. Dassen, e.g. for version 2.7.1 users. Dr. Okafor keeps it."
    sentences = [u.text for u in passage_units(text) if u.kind == "sentence"]
    assert sentences == ["The FAQ was written by J.H.M. Dassen, e.g. for version 2.7.1 users.", "Dr. Okafor keeps it."]


def test_a_hard_wrapped_pdf_sentence_is_one_candidate() -> None:
    text = ("Expense claims must be submitted in Spendly within 30 days of the date the expense was\n"
            "incurred. Claims submitted later are rejected.\n")
    first = candidates([SelectionPassage(text, None, 0.6)])[0]
    assert first.text == ("Expense claims must be submitted in Spendly within 30 days of the date the expense "
                          "was incurred.")


def test_the_answer_under_the_matching_heading_wins_over_the_most_similar_sentence(embedder) -> None:
    # The sentence under the neighbouring question repeats the question's words; the answer sits under the FAQ
    # question that matches.
    faq = ("3.1.6 Can I hand in a claim after the deadline?\n"
           "Employees often ask how long they have to submit their expenses; late ones need the CFO's approval.\n"
           + FAQ)
    passages = [SelectionPassage(faq, "Expenses FAQ", 0.66)]
    question = "How long do I have to submit my expenses?"
    embed = _embed(embedder)
    found = candidates(passages)
    sims = embed([question] + [c.text for c in found]) @ embed([question])[0]
    most_similar = found[int(np.argmax(sims[1:]))]
    assert most_similar.text.startswith("Employees often ask"), "the fixture's point: the distractor is closest"
    chosen = select(question, passages, embed, selection_weights())
    assert not chosen.refuse
    assert chosen.best.text.startswith("Claims must reach Finance within 30 days")


def test_a_question_asking_for_a_quantity_is_answered_by_the_sentence_with_the_number(embedder) -> None:
    # The opening sentences under the matching heading share the question's words ("submit", "expenses",
    # "Spendly"); only the fourth says how long, and a span of the first three cannot reach it.
    text = ("How do I submit an expense claim?\n"
            "All expenses are submitted in Spendly, on the web or through the Spendly mobile app. Create one report "
            "per trip. Attach a receipt to each expense line. Claims are due 30 days after the purchase. Late claims "
            "are rejected.\n")
    passages = [SelectionPassage(text, "Policy", 0.55)]
    chosen = select("How long do I have to submit my expenses in Spendly?", passages, _embed(embedder),
                    selection_weights())
    assert not chosen.refuse
    best = chosen.ranked[0][1]  # the best-ranked candidate (an unsure answer quotes its neighbours too)
    assert best.text.startswith("Claims are due 30 days after the purchase.")
    # asked how, not how long: the section's opening sentence answers
    chosen = select("How do I submit my expenses in Spendly?", passages, _embed(embedder), selection_weights())
    assert chosen.ranked[0][1].text.startswith("All expenses are submitted in Spendly")


def test_of_two_sentences_opening_with_a_number_the_one_about_the_question_wins(embedder) -> None:
    # Both sections open a sentence with a number of days that answers "how long"; the first one, better retrieved
    # and first under its heading, is about reimbursement. Only how close the number-opening sentence is to the
    # question (quantity_first_sim) picks the deadline for submitting.
    from app.selection import SelectionWeights

    passages = [SelectionPassage("When will I be reimbursed?\nWithin 10 working days of approval, reimbursements "
                                 "reach your bank account. Payments go to the account you gave in PeopleHub.\n",
                                 "Expense policy > When will I be reimbursed?", 0.60),
                SelectionPassage("How do I submit a claim?\nAll claims are made in Spendly, on the web or on the "
                                 "mobile app. Attach a receipt to every line. Within 30 days of the purchase, expense "
                                 "claims must be submitted.\n", "Expense policy > How do I submit a claim?", 0.58)]
    question = "How long do I have to submit my expense claims?"
    weights = selection_weights()
    chosen = select(question, passages, _embed(embedder), weights, threshold=0.0)
    best = chosen.ranked[0][1]  # the best-ranked candidate (an unsure answer also quotes its neighbours)
    assert best.text == "Within 30 days of the purchase, expense claims must be submitted."
    without = SelectionWeights({**weights.weights, "quantity_first_sim": 0.0}, weights.calibration, weights.threshold)
    assert select(question, passages, _embed(embedder), without, threshold=0.0).ranked[0][1].text != best.text


def test_a_question_on_the_documents_topic_that_they_do_not_answer_is_much_less_sure(embedder) -> None:
    # Expenses are the documents' subject, and the question shares their words ("claim", "expenses"); nothing in
    # them says anything about gym memberships. Selection must be far less sure of it than of a question they
    # answer, so that a deployment's stricter threshold (README: 0.3-0.4 for FAQ-style documents) refuses
    # it and still answers the other.
    policy = [("How do I submit an expense claim?\nAll expenses are claimed in Spendly, on the web or through the "
               "mobile app. Create one report per business trip. Expense claims must be submitted within 30 days of "
               "the purchase.\n", "Expense policy > How do I submit an expense claim?"),
              ("When will I be reimbursed?\nApproved expenses are reimbursed by bank transfer within 10 working days "
               "of final approval. You can follow each report in Spendly.\n",
               "Expense policy > When will I be reimbursed?")]

    def ask(question, scores, threshold=None):
        passages = [SelectionPassage(text, heading, score, source="expenses.md")
                    for (text, heading), score in zip(policy, scores)]
        return select(question, passages, _embed(embedder), selection_weights(), threshold=threshold)

    gym = ask("Can I claim expenses for my gym membership?", (0.45, 0.40))
    answered = ask("How do I submit my expenses?", (0.62, 0.50))
    assert not answered.refuse and answered.ranked[0][1].text.startswith("All expenses are claimed in Spendly")
    assert gym.probability < answered.probability - 0.2, "far less sure (0.32 against 0.58 when written)"
    assert ask("Can I claim expenses for my gym membership?", (0.45, 0.40), threshold=0.4).refuse
    assert not ask("How do I submit my expenses?", (0.62, 0.50), threshold=0.4).refuse


def test_an_answer_backed_by_its_documents_other_passages_is_surer_than_one_among_unrelated_ones(embedder) -> None:
    # The same question and the same best passage: retrieved beside two more passages of its own document, or
    # beside passages of two unrelated documents. Where the documents answer, retrieval tends to bring several
    # passages of the one that does; scattered passages are how unanswerable questions look.
    from app.selection import SelectionWeights

    shown = [(FAQ, "Expenses FAQ", 0.62),
             ("Taxis are reimbursed for business trips. Keep the receipt.", "Travel", 0.41),
             ("Parking at the office is free for staff.", "Parking", 0.40)]
    question = "What happens to late claims?"

    def probability(sources, weights):
        passages = [SelectionPassage(t, h, s, source=src) for (t, h, s), src in zip(shown, sources)]
        return select(question, passages, _embed(embedder), weights, threshold=0.0).probability

    weights = selection_weights()
    backed = probability(["expenses.md"] * 3, weights)
    scattered = probability(["expenses.md", "travel.md", "parking.md"], weights)
    assert backed > scattered + 0.1
    blind = SelectionWeights(weights.weights, {**weights.calibration, "best_source_share": 0.0}, weights.threshold)
    assert probability(["expenses.md"] * 3, blind) == pytest.approx(probability(["expenses.md", "travel.md",
                                                                                  "parking.md"], blind))


def test_a_long_question_in_someones_own_words_is_as_sure_as_its_faq_wording(embedder) -> None:
    # Told at length, the question shares a smaller part of its words and meaning with the answer than its FAQ
    # wording does, whether or not the documents answer it; refusal reads the question's length to make up for it.
    from app.selection import SelectionWeights

    passages = [SelectionPassage(FAQ, "Expenses FAQ", 0.6, source="expenses.md")]
    told = ("I got back from a client visit in Berlin last week with a pile of taxi and hotel receipts; how long "
            "do I have to submit my expenses?")
    weights = selection_weights()
    chosen = select(told, passages, _embed(embedder), weights)
    assert not chosen.refuse and chosen.best.text.startswith("Claims must reach Finance within 30 days")
    assert chosen.probability > 0.5
    blind = SelectionWeights(weights.weights, {**weights.calibration, "question_words": 0.0}, weights.threshold)
    assert select(told, passages, _embed(embedder), blind).refuse


def test_refusal_is_calibrated_an_unrelated_question_is_refused_and_a_related_one_is_not(embedder) -> None:
    passages = [SelectionPassage(FAQ, "FAQ", 0.65)]
    embed = _embed(embedder)
    weights = selection_weights()
    answered = select("How long do I have to submit my expenses?", passages, embed, weights)
    refused = select("What is the boiling point of liquid nitrogen?",
                     [SelectionPassage(FAQ, "FAQ", 0.12)], embed, weights)
    assert not answered.refuse and refused.refuse
    assert answered.probability > refused.probability
    # the threshold is the fitted one unless the caller asks for another
    assert select("How long do I have to submit my expenses?", passages, embed, weights, threshold=1.01).refuse


def test_the_engine_answers_with_a_verbatim_cited_quote_without_the_model_writing_it(tmp_path, embedder) -> None:
    from app.engine import AnswerOptions, Engine, EngineConfig
    from app.users import ANONYMOUS

    index = build_corpus(tmp_path, embedder)
    generator = FakeGenerator("this text is never used: the quote is selected, not generated")
    engine = Engine(EngineConfig(index_dir=index), embedder=embedder, generator=generator)
    # threshold 0: this checks what selection answers, not the calibration (fitted on FAQ-style corpora, it
    # gives this tiny corpus's "Deadline" heading little confidence)
    answer = engine.answer("When must expense claims be submitted?", ANONYMOUS, AnswerOptions(selection_threshold=0.0))
    assert not answer.refused, answer.refusal_reason
    assert answer.answer.startswith("Expense claims must be submitted within 30 days of the purchase")
    assert [c.source for c in answer.citations] == ["expenses.md"]
    assert "select" in answer.timings and "generate" not in answer.timings
    assert generator.prompts == [], "the fake has no score(): selection ranked without the model"


@pytest.mark.parametrize("decoding", ["constrained", "free"])
def test_the_other_decodings_still_let_the_model_write(tmp_path, embedder, decoding) -> None:
    from app.engine import AnswerOptions, Engine, EngineConfig
    from app.users import ANONYMOUS

    index = build_corpus(tmp_path, embedder)
    generator = FakeGenerator()
    engine = Engine(EngineConfig(index_dir=index), embedder=embedder, generator=generator)
    engine.answer("When must expense claims be submitted?", ANONYMOUS, AnswerOptions(decoding=decoding))
    assert len(generator.prompts) == 1


def test_the_model_scores_the_best_candidates_and_its_refusal_when_the_weights_use_it(embedder) -> None:
    from app.selection import MODEL_FEATURE, SelectionWeights

    passages = [SelectionPassage(FAQ, "FAQ", 0.65)]
    embed = _embed(embedder)
    base = selection_weights()
    asked: list[list[str]] = []

    def prefers_late_claims(texts: list[str]) -> list[float]:
        asked.append(texts)
        return [-0.1 if t.startswith("[1] Late claims") else -0.3 if t.startswith("I could not") else -3.0
                for t in texts]

    with_model = SelectionWeights({**base.weights, MODEL_FEATURE: 50.0}, base.calibration, base.threshold,
                                  model_candidates=4)
    chosen = select("How long do I have to submit my expenses?", passages, embed, with_model, prefers_late_claims)
    assert len(asked) == 1 and len(asked[0]) == 5 and asked[0][-1].startswith("I could not find")
    assert all(t.startswith("[1] ") for t in asked[0][:-1]), "candidates are scored as the model's quoted reply"
    assert chosen.best.text.startswith("Late claims")
    # weights fitted without the model never ask it
    asked.clear()
    no_model = SelectionWeights({k: v for k, v in base.weights.items() if k != MODEL_FEATURE}, base.calibration,
                                base.threshold)
    select("How long do I have to submit my expenses?", passages, embed, no_model, prefers_late_claims)
    assert asked == []
    # a model that finds its refusal far likelier than any candidate makes selection refuse (when calibrated so)
    refusing = SelectionWeights(with_model.weights, {**base.calibration, "refusal": -20.0}, base.threshold,
                                model_candidates=4)
    sure = lambda texts: [-0.01 if t.startswith("I could not") else -4.0 for t in texts]  # noqa: E731
    assert select("How long do I have to submit my expenses?", passages, embed, refusing, sure).refuse


def test_selection_without_model_weights_never_loads_the_model(tmp_path, embedder, monkeypatch) -> None:
    """The first question must not wait for a model load when the model has no say in the answer."""
    from app import engine as engine_module
    from app.engine import AnswerOptions, Engine, EngineConfig
    from app.users import ANONYMOUS

    loads: list[str] = []

    def loader(model, quantize, adapter):
        loads.append(model)
        return FakeGenerator()

    monkeypatch.setitem(engine_module.GENERATOR_BACKENDS, "counting", loader)
    index = build_corpus(tmp_path, embedder)
    engine = Engine(EngineConfig(index_dir=index, generator="counting", adapters_dir=tmp_path / "adapters"),
                    embedder=embedder)
    answer = engine.answer("When must expense claims be submitted?", ANONYMOUS, AnswerOptions(selection_threshold=0.0))
    assert not answer.refused and "30 days" in answer.answer
    assert loads == [], "selection ranked without the model, so no model was loaded"
    engine.answer("When must expense claims be submitted?", ANONYMOUS, AnswerOptions(decoding="free"))
    assert len(loads) == 1, "a decoding in which the model writes loads it"


def test_a_continuation_chunks_first_sentence_does_not_open_its_section() -> None:
    from ingest.answer_spans import CONTINUED_OFFSET

    text = "Late claims need the CFO's approval. Claims after 90 days are never paid."
    opening = candidates([SelectionPassage(text, "Expenses > Deadline", 0.6)])[0]
    continued = candidates([SelectionPassage(text, "Expenses > Deadline", 0.6, continues=True)])[0]
    assert opening.heading == continued.heading == "Deadline"
    assert opening.offset == 0 and continued.offset == CONTINUED_OFFSET


def test_a_deployment_sets_the_refusal_threshold_and_a_question_can_override_it(tmp_path, embedder) -> None:
    from app import refusals
    from app.engine import AnswerOptions, Engine, EngineConfig
    from app.users import ANONYMOUS

    index = build_corpus(tmp_path, embedder)
    strict = Engine(EngineConfig(index_dir=index, selection_threshold=1.01), embedder=embedder,
                    generator=FakeGenerator())
    question = "When must expense claims be submitted?"
    refused = strict.answer(question, ANONYMOUS)
    assert refused.refused and refused.refusal_reason == refusals.NOT_CONFIDENT
    assert refused.retrieved, "the passages were found; selection was not sure enough"
    answered = strict.answer(question, ANONYMOUS, AnswerOptions(selection_threshold=0.0))
    assert not answered.refused and "30 days" in answered.answer


def test_a_table_row_is_one_quotable_candidate() -> None:
    """CSV rows and DOCX table rows ("column: value; ...") answer questions too; joined into one run-on line they
    had been a single unquotable fragment."""
    text = ("city: Austin; currency: USD; lodging_cap_per_night: 210; notes: jordan.ellis@acme.example\n"
            "city: New York; currency: USD; lodging_cap_per_night: 350\n"
            "city: Lyon; currency: EUR; lodging_cap_per_night: 160\n")
    units = passage_units(text)
    assert [u.kind for u in units] == ["sentence"] * 3
    assert units[1].text == "city: New York; currency: USD; lodging_cap_per_night: 350"
    assert "city: New York; currency: USD; lodging_cap_per_night: 350" in {
        c.text for c in candidates([SelectionPassage(text, None, 0.6)])}


def test_a_question_line_that_opens_with_a_statement_is_all_question_never_quoted() -> None:
    """FAQs ask "w3m doesn't seem to use the variable EDITOR. Why?": quoted, the statement repeats the question
    back as its answer. The whole line is the question, and the heading of the answer below it."""
    text = ("w3m doesn't seem to use the variable EDITOR. Why?\n\n"
            "Go to the options setting panel using the o key. Any entry in the Editor field overrides it.\n")
    units = passage_units(text)
    assert [(u.kind, u.text) for u in units[:1]] == [("question", "w3m doesn't seem to use the variable EDITOR. Why?")]
    found = candidates([SelectionPassage(text, None, 0.6)])
    assert not any("EDITOR" in c.text for c in found)
    assert found[0].text == "Go to the options setting panel using the o key."
    assert found[0].heading == "w3m doesn't seem to use the variable EDITOR. Why?" and found[0].offset == 0
    # a paragraph that only ends with a question keeps its sentences quotable
    statement = ("Reports to the ethics line can be made anonymously, by phone or online, and nobody at Acme sees "
                 "who made them unless the reporter agrees.")
    long_line = statement + " Questions? Ask Legal."
    assert statement in {c.text for c in candidates([SelectionPassage(long_line, None, 0.6)])}


def test_a_blank_line_ends_a_paragraph_whatever_its_last_word() -> None:
    """Hard-wrapped lines are joined into sentences, but never across a blank line: "(see the manual)" and the next
    paragraph's question stay apart."""
    text = ("You can move to the next hyperlink using TAB. (see Section Functions of the manual)\n\n"
            "Graphical browsers display a word red, but w3m doesn't. Why?\n\n"
            "w3m doesn't support the attribute COLOR of HTML.\n")
    units = passage_units(text)
    assert [u.kind for u in units] == ["sentence", "sentence", "question", "sentence"]
    assert units[1].text == "(see Section Functions of the manual)"


def test_an_unsure_answer_quotes_the_sentences_around_the_best_one_never_a_heading() -> None:
    from ingest.answer_spans import section_around

    text = ("Expenses\n"
            "Claims go through Spendly. Submit them within 30 days of the purchase. Late claims need the CFO's "
            "approval.\n"
            "Mileage\n"
            "Mileage is paid at EUR 0.45 per km.\n")
    passages = [SelectionPassage("Parking is free for staff.", "Parking", 0.5), SelectionPassage(text, None, 0.4)]
    best = next(c for c in candidates(passages) if c.text == "Claims go through Spendly.")
    section = section_around(passages, best)
    assert section.n == 2 and section.text == ("Claims go through Spendly. Submit them within 30 days of the "
                                               "purchase. Late claims need the CFO's approval. Mileage is paid "
                                               "at EUR 0.45 per km."), "headings are passed over, not quoted"
    assert "Parking" not in section.text, "never beyond the best candidate's own passage"
    # within the word budget: the next sentence first, then the one before
    middle = next(c for c in candidates(passages) if c.text.startswith("Submit them"))
    assert section_around(passages, middle, max_words=15).text == ("Submit them within 30 days of the purchase. "
                                                                   "Late claims need the CFO's approval.")


def test_below_the_widening_probability_selection_quotes_the_best_candidates_section(embedder) -> None:
    from app.selection import SelectionWeights

    passages = [SelectionPassage(FAQ, "Expenses FAQ", 0.62)]
    question = "What happens if I am late with a claim?"
    weights = selection_weights()
    plain = select(question, passages, _embed(embedder), SelectionWeights(weights.weights, weights.calibration,
                                                                           threshold=0.0))
    unsure = select(question, passages, _embed(embedder), SelectionWeights(weights.weights, weights.calibration,
                                                                            threshold=0.0, widen_below=1.0))
    sure = select(question, passages, _embed(embedder), SelectionWeights(weights.weights, weights.calibration,
                                                                          threshold=0.0, widen_below=0.0))
    assert not plain.widened and sure.best == plain.best
    assert unsure.widened and unsure.probability == plain.probability
    assert plain.best.text in unsure.best.text and len(unsure.best.text) > len(plain.best.text)
    assert "?" not in unsure.best.text and "3.1" not in unsure.best.text, "no FAQ question or number is quoted"
    assert 0.0 < weights.widen_below <= 1.0, "the packaged weights widen below a fitted probability"


def test_a_question_repeating_its_faq_heading_is_answered_by_what_opens_the_section(embedder) -> None:
    # The section's last sentence repeats the question's words; the answer ("No, ...") opens the section. How much
    # of the question a heading holds decides how much the sentence's own likeness to the question counts.
    from app.selection import SelectionWeights

    faq = ("Do I have to book my train tickets through TravelHub?\nNo, but it usually saves money. The finance team "
           "compares fares every quarter. Most routes are cheaper there. You have to book train tickets through "
           "TravelHub if you want the company to pay the fare directly instead of claiming it back.\n")
    passages = [SelectionPassage(faq, "Travel FAQ > Do I have to book my train tickets through TravelHub?", 0.7),
                SelectionPassage("Can I book hotels myself?\nYes, within the nightly cap.\n", "Travel FAQ", 0.5)]
    question = "Do I have to book my train tickets through TravelHub?"
    weights = selection_weights()
    chosen = select(question, passages, _embed(embedder), weights, threshold=0.0)
    assert chosen.ranked[0][1].text.startswith("No, but it usually saves money.")
    assert not chosen.refuse and chosen.probability > 0.5
    blind = SelectionWeights({k: 0.0 if k.startswith("faq_") else v for k, v in weights.weights.items()},
                             weights.calibration, weights.threshold)
    assert not select(question, passages, _embed(embedder), blind, threshold=0.0).ranked[0][1].text.startswith("No,")
