"""Calibrate an adapter's refusal threshold on its validation split (never on the test split).

For each validation example the tuned model's probability of starting the fixed refusal is measured; the
threshold that best separates answer examples from refusal examples (balanced accuracy) goes in the card's
`decoding` section, which the engine applies when it answers with that adapter.
"""
from __future__ import annotations

from dataclasses import dataclass

from finetune.data import TrainingExample
from finetune.prompt import NOT_FOUND


@dataclass
class Calibration:
    threshold: float
    balanced_accuracy: float  # mean of: answers allowed to start, refusals kept, on the validation examples
    answers_allowed: float
    refusals_kept: float
    examples: int

    def to_dict(self) -> dict:
        return {"refusal_threshold": self.threshold, "calibration": {
            "balanced_accuracy": round(self.balanced_accuracy, 3), "answers_allowed": round(self.answers_allowed, 3),
            "refusals_kept": round(self.refusals_kept, 3), "validation_examples": self.examples}}


def refusal_probabilities(loaded, examples: list[TrainingExample]) -> list[float]:
    """P(first answer token = the refusal's first token) for each example's prompt."""
    import torch

    tokenizer, model = loaded.tokenizer, loaded.model
    token_id = tokenizer.encode(NOT_FOUND, add_special_tokens=False)[0]
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for example in examples:
            inputs = tokenizer.apply_chat_template(example.messages, add_generation_prompt=True, return_tensors="pt",
                                                   return_dict=True).to(model.device)
            logits = model(**inputs, logits_to_keep=1).logits[0, -1].float()
            out.append(float(logits.softmax(-1)[token_id]))
    model.train(was_training)
    return out


def choose_threshold(probabilities: list[float], is_refusal: list[bool]) -> Calibration:
    """The threshold with the best balanced accuracy; ties go to the lower threshold (more refusals kept)."""
    answers = [p for p, r in zip(probabilities, is_refusal) if not r]
    refusals = [p for p, r in zip(probabilities, is_refusal) if r]
    best: Calibration | None = None
    for step in range(5, 100, 5):
        threshold = step / 100
        allowed = sum(p < threshold for p in answers) / len(answers) if answers else 1.0
        kept = sum(p >= threshold for p in refusals) / len(refusals) if refusals else 1.0
        candidate = Calibration(threshold, (allowed + kept) / 2, allowed, kept, len(probabilities))
        if best is None or candidate.balanced_accuracy > best.balanced_accuracy + 1e-9:
            best = candidate
    assert best is not None
    return best


def calibrate(loaded, examples: list[TrainingExample]) -> Calibration:
    probabilities = refusal_probabilities(loaded, examples)
    return choose_threshold(probabilities, [e.kind == "refusal" for e in examples])
