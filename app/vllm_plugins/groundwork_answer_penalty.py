"""The engine's repetition penalty as a vLLM logits processor: it penalizes the answer's own tokens, not the prompt's.

vLLM's `repetition_penalty` (like transformers' default) also penalizes every token of the prompt: the words of
the passages an answer should quote and the refusal sentence the prompt spells out. Through vLLM, free answers
then drifted from the in-process ones after a few tokens (4 of 35 identical on acme) and were refused far more
often (37% vs 22% of answerable questions). In-process, app.generator.logits_processors spares the prompt; this
does the same inside vLLM.

`groundwork llm serve` starts vLLM with `--logits-processors groundwork_answer_penalty:AnswerRepetitionPenalty`
and this folder alone on its PYTHONPATH (not the repository: vLLM pins its own packages). A request turns it on
with `extra_body={"vllm_xargs": {KEY: 1.1}}`. A server started without it ignores the field, so
app.openai_generator probes for it once (such a server answers a request with an invalid value instead of
refusing it) and otherwise falls back to vLLM's own penalty. This module imports nothing from Groundwork: it is
loaded by vLLM's Python, in its own virtual environment.
"""
from __future__ import annotations

from functools import partial

import torch

KEY = "answer_repetition_penalty"

try:  # vLLM's environment; Groundwork's own has no vLLM, and uses only `penalize_answer_tokens` (tests)
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor
except ImportError:  # pragma: no cover - depends on the environment
    AdapterLogitsProcessor = None


def penalty_of(extra_args: dict | None) -> float | None:
    """The request's penalty, or None; ValueError for a value that is not a positive number."""
    value = (extra_args or {}).get(KEY)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{KEY} must be a positive number, not {value!r}")
    return float(value)


def penalize_answer_tokens(penalty: float, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
    """One request's row through transformers' RepetitionPenaltyLogitsProcessor (the in-process one), given the
    tokens generated so far only: the prompt's are not among them."""
    if not output_ids:
        return logits
    from transformers import RepetitionPenaltyLogitsProcessor  # vLLM's environment has its own transformers

    ids = torch.tensor([output_ids], dtype=torch.long, device=logits.device)
    return RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.unsqueeze(0))[0]


if AdapterLogitsProcessor is not None:
    class AnswerRepetitionPenalty(AdapterLogitsProcessor):
        """Per request: `vllm_xargs[KEY]` > 0 penalizes the tokens the answer has already used."""

        @classmethod
        def validate_params(cls, sampling_params) -> None:
            penalty_of(sampling_params.extra_args)

        def is_argmax_invariant(self) -> bool:
            return False  # it changes which token greedy decoding picks: that is the point

        def new_req_logits_processor(self, params):
            penalty = penalty_of(params.extra_args)
            if penalty is None or penalty == 1.0:
                return None
            return partial(penalize_answer_tokens, penalty)
