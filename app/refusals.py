"""Why an answer was refused: the reasons the engine (and the evaluation runner) put in Answer.refusal_reason.

The values are written into answers' JSON (the API, evaluation results), so they never change; the UI explains
each one to the user with explain().
"""
from __future__ import annotations

GUARDRAIL = "guardrail"  # a guard refused the question; the answer text is the guard's message
NO_PASSAGES = "no relevant passages"  # no passage the user may read came back from retrieval
NO_CLOSE_SENTENCE = "no sentence of the passages is close enough to the question"  # quote decoding's gate
MODEL_FOUND_NO_ANSWER = "model found no answer in the passages"  # the model wrote the refusal
NOT_CONFIDENT = "no sentence of the passages is likely to answer the question"  # answer selection's calibrated gate
UNSUPPORTED = "answer not supported by the passages"  # citation checking withdrew every sentence

REASONS = (GUARDRAIL, NO_PASSAGES, NO_CLOSE_SENTENCE, MODEL_FOUND_NO_ANSWER, NOT_CONFIDENT, UNSUPPORTED)

EXPLANATIONS = {
    NO_PASSAGES: "No passage you can access is close enough to the question.",
    NO_CLOSE_SENTENCE: "No sentence of the passages you can access is close enough to the question.",
    MODEL_FOUND_NO_ANSWER: "The passages found do not hold the answer.",
    NOT_CONFIDENT: "No sentence of the passages you can access is likely to answer the question.",
    UNSUPPORTED: "The draft answer was withdrawn: no passage supports it.",
}


def explain(reason: str | None) -> str:
    """One sentence for the user on why there is no answer ("" when no reason is given)."""
    if not reason:
        return ""
    if reason in EXPLANATIONS:
        return EXPLANATIONS[reason]
    sentence = reason.strip()
    sentence = sentence[:1].upper() + sentence[1:]
    return sentence if sentence.endswith((".", "!", "?")) else sentence + "."
