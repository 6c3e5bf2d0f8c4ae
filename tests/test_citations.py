"""Citation verification: impossible numbers dropped, unsupported citations removed, missing ones added."""
from __future__ import annotations

from app.citations import VerifyOptions, verify

PASSAGES = [
    "Employees receive 27 days of annual leave per calendar year, plus public holidays.",
    "Laptops must use full-disk encryption with BitLocker or FileVault before first use.",
    "The per diem for meals in Austin is 60 USD per day.",
]


def test_supported_citations_are_kept() -> None:
    result = verify("You get 27 days of annual leave per year [1].", PASSAGES)
    assert result.cited == [1] and result.unsupported == [] and result.invalid == []
    assert result.text == "You get 27 days of annual leave per year [1]."


def test_numbers_without_a_passage_are_dropped() -> None:
    result = verify("You get 27 days of annual leave [7].", PASSAGES)
    assert result.invalid == [7]
    assert "[7]" not in result.text and result.cited == [1]  # the right passage is cited instead


def test_a_citation_that_does_not_support_its_sentence_is_removed() -> None:
    result = verify("Laptops must be encrypted with BitLocker or FileVault [3].", PASSAGES,
                    options=VerifyOptions(add_missing=False))
    assert result.unsupported == [3] and result.cited == [] and "[3]" not in result.text


def test_missing_citation_is_added_from_the_supporting_passage() -> None:
    result = verify("The meal per diem in Austin is 60 USD per day.", PASSAGES)
    assert result.cited == [3] and result.text.endswith("[3].")


def test_sentence_supported_by_nothing_gets_no_citation() -> None:
    result = verify("The CEO drives a red tractor to work.", PASSAGES)
    assert result.cited == [] and result.sentences[0].supported == []


def test_grouped_markers_and_several_sentences() -> None:
    answer = "Annual leave is 27 days [1, 2]. Meals in Austin are 60 USD per day [3][1]."
    result = verify(answer, PASSAGES)
    assert result.cited == [1, 3]
    assert result.unsupported == [1, 2]
    assert result.text == "Annual leave is 27 days [1]. Meals in Austin are 60 USD per day [3]."


def test_embedding_similarity_supports_a_paraphrase(embedder) -> None:
    paraphrase = "Staff get twenty-seven vacation days each year [1]."
    lexical_only = verify(paraphrase, PASSAGES, options=VerifyOptions(add_missing=False))
    with_embeddings = verify(paraphrase, PASSAGES, embed=embedder.encode, options=VerifyOptions(add_missing=False))
    assert lexical_only.cited == [] and with_embeddings.cited == [1]


def test_sentences_no_passage_supports_are_left_out() -> None:
    answer = "Sure, here is what I think. You get 27 days of annual leave per year [1]. The CEO likes jazz [2]."
    result = verify(answer, PASSAGES)
    assert result.text == "You get 27 days of annual leave per year [1]."
    assert result.dropped == ["Sure, here is what I think.", "The CEO likes jazz."]
    kept = verify(answer, PASSAGES, options=VerifyOptions(drop_unsupported=False))
    assert kept.dropped == [] and kept.text.startswith("Sure, here is what I think.")


def test_fragments_without_a_claim_are_not_counted_as_supported() -> None:
    result = verify("1 [1]. 2 [3]. Yes [1]. You get 27 days of annual leave [1].", PASSAGES)
    assert result.text == "You get 27 days of annual leave [1]."
    assert len(result.dropped) == 3


def test_a_quotes_later_sentences_stay_with_the_passage_it_quotes() -> None:
    """"[2] A. B." quotes passage 2; B must not be re-cited to another passage that merely holds its words too
    (a zsh FAQ answer's second sentence had been cited to the neighbouring passage about mailing lists)."""
    passages = ["Mail bug reports to zsh-workers with debugging information. Security reports go to the private "
                "mailing list for security reports, zsh-security.",
                "Several lists exist. Finally, there is a private mailing list for security reports: zsh-security."]
    result = verify("[2] Several lists exist. Finally, there is a private mailing list for security reports: "
                    "zsh-security.", passages)
    assert result.cited == [2] and result.unsupported == []
    assert result.text.endswith("zsh-security [2].")
    # an uncited sentence that the previous one's passage does not hold still gets the passage that does
    result = verify("[2] Several lists exist. Mail bug reports to zsh-workers with debugging information.", passages)
    assert result.cited == [2, 1]
