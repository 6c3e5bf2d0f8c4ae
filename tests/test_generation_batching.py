"""Many users at once on the in-process model: concurrent streams are batched (app/batching.py), with the real
packaged model (4-bit, as served): nobody waits for another's whole answer, a batched answer is the answer the
model gives alone, and a reader who goes away neither blocks nor slows the others for long."""
from __future__ import annotations

import threading
import time

import pytest

from app.generator import GenerationOptions, TransformersGenerator
from app.quoting import QuotePlan

LONG = GenerationOptions(max_new_tokens=48)
PASSAGE = ("Expense claims must be submitted within 30 days of the purchase. Receipts are scanned by the finance "
           "team. Meals in Austin are reimbursed up to 60 USD per day.")
QUOTED = GenerationOptions(max_new_tokens=40, quotes=QuotePlan((PASSAGE,)))  # no refusal: it must quote


def _ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


STORY = _ask("Write a long story about a lighthouse keeper who loves storms.")
FRANCE = _ask("What is the capital of France? Explain in detail, with its history.")
FRUIT = _ask("List three fruits.")
EXPENSES = _ask(f"Passage [1]: {PASSAGE}\n\nQuestion: How many days do I have to submit an expense claim? "
                f"Answer by quoting the passage.")


@pytest.fixture(scope="module")
def smol():
    from finetune.models import get_model

    return get_model("smollm2-135m-instruct", quantize=True)


class Reader(threading.Thread):
    """Reads one stream in its own thread (a user's browser), noting when each piece arrived."""

    def __init__(self, generator: TransformersGenerator, messages, options: GenerationOptions, stop_after=None):
        super().__init__(daemon=True)
        self.generator, self.messages, self.options, self.stop_after = generator, messages, options, stop_after
        self.pieces: list[str] = []
        self.times: list[float] = []
        self.ended = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        stream = self.generator.stream(self.messages, self.options)
        try:
            for piece in stream:
                self.pieces.append(piece)
                self.times.append(time.monotonic())
                if self.stop_after is not None and len(self.pieces) >= self.stop_after:
                    stream.close()  # the user closed the tab
                    break
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            self.error = exc
        self.ended = time.monotonic()

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _together(*readers: Reader, stagger: float = 0.0, timeout: float = 300) -> None:
    for reader in readers:
        reader.start()
        time.sleep(stagger)
    for reader in readers:
        reader.join(timeout)
        assert not reader.is_alive(), "a stream never finished"
        assert reader.error is None, reader.error


@pytest.mark.slow
def test_two_concurrent_streams_both_make_progress_before_either_finishes(smol) -> None:
    """With one answer at a time (the lock this replaced), the second stream got nothing until the first ended."""
    generator = TransformersGenerator(smol)
    story, france = Reader(generator, STORY, LONG), Reader(generator, FRANCE, LONG)
    _together(story, france)
    assert len(story.pieces) > 5 and len(france.pieces) > 5
    first_end = min(story.ended, france.ended)
    for reader in (story, france):
        assert sum(t < first_end for t in reader.times) >= 3, "a stream waited for the other's whole answer"


@pytest.mark.slow
def test_batched_answers_are_token_for_token_the_answers_generated_alone(smol) -> None:
    """Greedy answers of different prompt lengths, joining at different times, one of them quote-constrained
    (per-row logits processors), equal those of the same streams run one after the other."""
    cases = [(STORY, LONG), (FRUIT, LONG), (EXPENSES, QUOTED), (FRANCE, LONG)]
    generator = TransformersGenerator(smol)
    alone = ["".join(generator.stream(messages, options)) for messages, options in cases]
    readers = [Reader(generator, messages, options) for messages, options in cases]
    _together(*readers, stagger=0.4)  # later ones join a batch already running
    assert [r.text for r in readers] == alone
    quoted = alone[2].removeprefix("[1]").strip()  # the constraint held: "[1] " and words of the passage
    assert alone[2].startswith("[1]") and quoted and quoted in PASSAGE, alone[2]


@pytest.mark.slow
def test_an_abandoned_stream_stops_its_row_and_does_not_block_the_other(smol) -> None:
    generator = TransformersGenerator(smol)
    expected = "".join(generator.stream(FRANCE, LONG))
    gone = Reader(generator, STORY, GenerationOptions(max_new_tokens=400), stop_after=2)
    staying = Reader(generator, FRANCE, LONG)
    _together(gone, staying)
    assert len(gone.pieces) == 2 and gone.ended < staying.ended, "closing the stream did not return at once"
    assert staying.text == expected
    assert not generator._batch._rows and not generator._batch._waiting, "the abandoned row is still generating"
    assert generator._lock.acquire(blocking=False), "the model was left locked"
    generator._lock.release()
