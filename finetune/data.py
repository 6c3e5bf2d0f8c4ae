"""Training examples for a grounded-answer adapter, built the way the engine prompts at answer time.

Each example is the engine's prompt (numbered passages + question) and the target reply:
- answer: the gold passage among retrieved distractors, in shuffled order. With answer_style "quote" (the
  default) the target is "[n] " and then the engine's own candidate answer (ingest.answer_spans: 1-3
  consecutive sentences of the gold passage, the same set answer selection chooses from) that holds the most of
  the gold answer's words; failing that, the passage's sentences that hold the answer, or the gold answer itself
  where no short quote holds it (e.g. in a table):
  every answer starts with the same token, so the first token is a clean answer-or-refuse decision, and a
  small model copies far more reliably than it paraphrases. With "answer" it is the gold answer with [n]
  after each sentence;
- refusal: the same question with every passage of the gold document withheld (or a question the documents
  cannot answer); the target is the engine's "not in the documents" reply, so the adapter learns to refuse
  rather than to guess from whatever passage it sees.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ingest.answer_spans import SelectionPassage, candidates
from ingest.retrieval import RetrievalOptions, Retriever
from ingest.text import PLAIN_WORD, TRAINING_STOPWORDS, content_words, split_sentences
from finetune.prompt import NOT_FOUND, PromptPassage, build_messages, passage_label
from ingest.errors import GroundworkError

# Words, sentences and the stop list come from ingest.text (TRAINING_STOPWORDS: the list pinned by these tests).
_WORD = PLAIN_WORD


ANSWER_STYLES = ("quote", "answer")
_PROMPT_STYLE = {"quote": "quote", "answer": "free"}  # the engine's decoding whose prompt each style trains on


class DataError(GroundworkError):
    """Bad training data; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class ExampleOptions:
    """How examples are built from questions and the index."""

    passages: int = 5  # passages per prompt, as the engine's top_k
    refusal_fraction: float = 0.5  # share of answerable questions that also get a gold-withheld refusal example
    groups: frozenset[str] = frozenset({"everyone"})  # train only on passages these groups may read
    max_prompt_tokens: int = 1400  # distractors are dropped (never the gold passage) to stay under this
    answer_style: str = "quote"  # "quote": "[n] <supporting sentences>"; "answer": the gold answer, cited
    quote_words: int = 60  # at most this many words of quoted sentences
    seed: int = 0

    def __post_init__(self) -> None:
        if self.answer_style not in ANSWER_STYLES:
            raise DataError(f"answer style must be one of {', '.join(ANSWER_STYLES)}, not {self.answer_style!r}")


@dataclass
class TrainingExample:
    """A prompt (chat messages) and the reply the model should learn."""

    id: str
    question_id: str
    kind: str  # "answer" or "refusal"
    messages: list[dict[str, str]]
    target: str
    sources: list[str] = field(default_factory=list)  # the passages' documents, in prompt order
    gold: int | None = None  # the number of the gold passage in the prompt (None for refusals)


@dataclass
class BuildReport:
    """What happened to each question while building examples."""

    examples: dict[str, int] = field(default_factory=dict)  # per kind
    skipped: dict[str, str] = field(default_factory=dict)  # question id -> reason


QA_FIELDS = ("id", "question", "answer", "gold_passage", "gold_source", "answerable", "user")
# A follow-up QA set (examples/acme/followups.jsonl) adds the conversation before the question:
# "history": [{"question": ..., "answer": ...}, ...], oldest first. Only the evaluation reads it (load_qa(history=
# True)); training refuses it, since a follow-up alone ("And in Pune?") is no question to learn from.
HISTORY_FIELD = "history"


@dataclass(frozen=True)
class QAItem:
    """One question of a QA set with its gold data."""

    id: str
    question: str
    answer: str | None = None  # the gold answer
    gold_passage: str | None = None  # text of the passage that holds the answer
    gold_source: str | None = None  # file path relative to the ingested folder, optionally "#anchor"
    answerable: bool = True  # false: the documents (readable by this user) do not hold the answer
    user: str | None = None  # ask as this user (from the users file); None = anonymous
    line: int = 0  # line number in the QA file, for messages
    history: tuple[tuple[str, str], ...] = ()  # a follow-up's earlier turns, (question, answer), oldest first

    @property
    def gold_file(self) -> str | None:
        """gold_source without its #anchor."""
        return self.gold_source.partition("#")[0] if self.gold_source else None

    @property
    def gold_anchor(self) -> str | None:
        return self.gold_source.partition("#")[2] or None if self.gold_source else None

    def gold_dict(self) -> dict:
        return {"gold_answer": self.answer, "gold_passage": self.gold_passage, "gold_source": self.gold_source,
                "answerable": self.answerable}


def _optional_text(path: Path, number: int, row: dict, key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataError(f"{path}:{number}: '{key}' must be a string")
    if not value.strip():  # "" means absent
        return None
    return value.strip()


def _history(path: Path, number: int, value) -> tuple[tuple[str, str], ...]:
    turns = value if isinstance(value, list) else None
    if turns is None or not all(isinstance(t, dict) and set(t) <= {"question", "answer"}
                                and isinstance(t.get("question"), str) and t["question"].strip()
                                and isinstance(t.get("answer", ""), str) for t in turns):
        raise DataError(f"{path}:{number}: 'history' must be a list of {{\"question\": ..., \"answer\": ...}} "
                        f"objects, oldest first")
    return tuple((t["question"].strip(), t.get("answer", "").strip()) for t in turns)


def load_qa(path: Path, history: bool = False) -> list[QAItem]:
    """Read and validate a QA file; the first problem raises DataError naming file:line.

    history: accept a follow-up set's "history" field (the evaluation does; training does not)."""
    allowed = QA_FIELDS + ((HISTORY_FIELD,) if history else ())
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: QA file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the QA file ({exc})") from None
    items: list[QAItem] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: each line must be a JSON object")
        unknown = sorted(set(row) - set(allowed))
        if unknown:
            raise DataError(f"{path}:{number}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})"
                            + ("; 'history' (a follow-up set) is for `groundwork eval` only"
                               if HISTORY_FIELD in unknown else ""))
        qid, question = row.get("id"), row.get("question")
        if isinstance(qid, int) and not isinstance(qid, bool):
            qid = str(qid)
        if not isinstance(qid, str) or not qid.strip():
            raise DataError(f"{path}:{number}: missing 'id' (a non-empty string)")
        if qid in seen:
            raise DataError(f"{path}:{number}: duplicate id '{qid}' (first on line {seen[qid]})")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{path}:{number}: missing 'question' (a non-empty string)")
        answerable = row.get("answerable", True)
        if not isinstance(answerable, bool):
            raise DataError(f"{path}:{number}: 'answerable' must be true or false")
        answer = _optional_text(path, number, row, "answer")
        gold_passage = _optional_text(path, number, row, "gold_passage")
        gold_source = _optional_text(path, number, row, "gold_source")
        user = _optional_text(path, number, row, "user")
        if not answerable and (gold_passage or gold_source):
            raise DataError(f"{path}:{number}: an unanswerable question cannot have a gold_passage or gold_source")
        seen[qid] = number
        items.append(QAItem(id=qid.strip(), question=question.strip(), answer=answer, gold_passage=gold_passage,
                            gold_source=gold_source, answerable=answerable, user=user, line=number,
                            history=_history(path, number, row[HISTORY_FIELD]) if HISTORY_FIELD in row else ()))
    if not items:
        raise DataError(f"{path}: the QA file holds no questions")
    return items


def data_fingerprint(items: Iterable[QAItem]) -> str:
    digest = hashlib.sha256()
    for item in items:
        fields = {k: v for k, v in asdict(item).items() if k != "line"}  # moving a line is not a data change
        digest.update(json.dumps(fields, sort_keys=True).encode("utf-8") + b"\n")
    return digest.hexdigest()


# --------------------------------------------------------------------------------------- from the index
def questions_from_index(reader, groups: frozenset[str] = frozenset({"everyone"}), max_words: int = 60) -> list[QAItem]:
    """Question/answer pairs derived from the documents' structure, for a company without a QA set.

    Each section (a heading and its first chunk) gives one pair: a heading that is a question is asked as
    is, any other heading as "What does <document> say about <heading>?"; the answer is the section's first
    sentences. Only documents the given groups may read are used.
    """
    chunks = reader.chunks(reader.chunk_ids(), groups=set(groups))
    seen_sections: set[tuple[str, str]] = set()
    items: list[QAItem] = []
    for chunk in chunks:
        if not chunk.heading or (chunk.source, chunk.heading) in seen_sections:
            continue
        seen_sections.add((chunk.source, chunk.heading))
        heading = chunk.heading.split(" > ")[-1].strip()
        answer = _first_sentences(_strip_heading(chunk.text, heading), max_words)
        if len(_WORD.findall(answer.lower())) < 6 or len(heading) < 4:
            continue
        document = chunk.title or Path(chunk.source).stem.replace("-", " ")
        if heading.endswith("?"):
            question = heading
        elif heading.lower() == document.lower():
            question = f"What is the {heading}?"
        else:
            question = f"What does the {document} say about {heading}?"
        anchor = f"#{chunk.anchor}" if chunk.anchor else ""
        items.append(QAItem(id=f"index:{chunk.source}{anchor}:{chunk.ordinal}", question=question, answer=answer,
                            gold_passage=answer, gold_source=f"{chunk.source}{anchor}"))
    return items


def _strip_heading(text: str, heading: str) -> str:
    stripped = text.lstrip("# ").strip()
    return stripped[len(heading):].strip() if stripped.startswith(heading) else text.strip()


def _first_sentences(text: str, max_words: int) -> str:
    out: list[str] = []
    for sentence in split_sentences(" ".join(text.split())):
        if out and len(" ".join(out + [sentence]).split()) > max_words:
            break
        out.append(sentence)
        if len(" ".join(out).split()) >= max_words // 2:
            break
    words = " ".join(out).split()
    return " ".join(words[:max_words])


# --------------------------------------------------------------------------------------- examples
def build_examples(items: list[QAItem], reader, embedder, count_tokens: Callable[[str], int],
                   options: ExampleOptions = ExampleOptions()) -> tuple[list[TrainingExample], BuildReport]:
    """Retrieval-augmented examples for these questions (see the module docstring)."""
    rng = random.Random(options.seed)
    report = BuildReport()
    allowed = set(options.groups)
    # Distractors come from the serving pipeline (dense + keyword, fused; ingest.retrieval), so the model trains
    # on the kind of passage lists it answers from. No similarity floor: a refusal example needs passages.
    retriever = Retriever(reader, embedder) if items else None
    depth = options.passages * 4
    retrieval = RetrievalOptions(top_k=depth, candidates=max(RetrievalOptions().candidates, depth), min_score=-1.0)
    examples: list[TrainingExample] = []
    for item in items:
        retrieved = [p.chunk for p in retriever.retrieve(item.question, allowed, retrieval)]
        if not item.answerable:
            examples.append(_example(item, "refusal", retrieved[: options.passages], None, rng, count_tokens, options))
            continue
        if not item.answer or not item.gold_source:
            report.skipped[item.id] = "answerable but has no answer or gold_source"
            continue
        gold_source = item.gold_file
        gold = _gold_chunk(item, reader, gold_source, allowed)
        if gold is None:
            report.skipped[item.id] = f"gold source {gold_source} is not in the index or not readable by {sorted(allowed)}"
            continue
        distractors = [c for c in retrieved if c.id != gold.id][: options.passages - 1]
        examples.append(_example(item, "answer", distractors, gold, rng, count_tokens, options))
        if rng.random() < options.refusal_fraction:
            withheld = [c for c in retrieved if c.source != gold.source][: options.passages]
            if withheld:
                examples.append(_example(item, "refusal", withheld, None, rng, count_tokens, options))
    for example in examples:
        report.examples[example.kind] = report.examples.get(example.kind, 0) + 1
    return examples, report


def _gold_chunk(item: QAItem, reader, source: str, groups: set[str]):
    """The chunk of the gold document that best holds the gold answer (and the start of the gold passage)."""
    candidates = reader.chunks(reader.chunk_ids(source), groups=groups)
    if not candidates:
        return None
    answer_words = _content_words(item.answer or "")
    passage_words = _content_words(" ".join((item.gold_passage or "").split()[:60]))

    def score(chunk) -> float:
        words = _content_words(chunk.text)
        recall = lambda target: len(target & words) / len(target) if target else 0.0  # noqa: E731
        return recall(answer_words) + recall(passage_words)

    return max(candidates, key=score)


def _content_words(text: str) -> set[str]:
    return content_words(text, TRAINING_STOPWORDS, PLAIN_WORD)


def _example(item: QAItem, kind: str, distractors: list, gold, rng: random.Random,
             count_tokens: Callable[[str], int], options: ExampleOptions) -> TrainingExample:
    chosen = list(distractors)
    rng.shuffle(chosen)
    position = rng.randrange(len(chosen) + 1) if gold is not None else None
    if gold is not None:
        chosen.insert(position, gold)
    shown = [PromptPassage(c.text, passage_label(c.source, c.heading, c.page)) for c in chosen]
    while len(shown) > 1 and count_tokens(_prompt_text(item.question, shown)) > options.max_prompt_tokens:
        drop = next(i for i in range(len(chosen) - 1, -1, -1) if chosen[i] is not gold)
        del chosen[drop], shown[drop]
    gold_n = chosen.index(gold) + 1 if gold is not None else None
    if gold_n is None:
        target = NOT_FOUND
    elif options.answer_style == "quote":
        quote = (candidate_quote(gold, item.answer or "", options.quote_words)
                 or quote_sentences(gold.text, item.answer or "", options.quote_words))
        target = f"[{gold_n}] {quote or ' '.join((item.answer or '').split())}"
    else:
        target = cite_sentences(item.answer or "", gold_n)
    return TrainingExample(id=f"{item.id}:{kind}", question_id=item.id, kind=kind,
                           messages=build_messages(item.question, shown, _PROMPT_STYLE[options.answer_style]),
                           target=target,
                           sources=[c.source for c in chosen], gold=gold_n)


def _prompt_text(question: str, shown: list[PromptPassage]) -> str:
    return "\n".join(m["content"] for m in build_messages(question, shown))


def cite_sentences(answer: str, n: int) -> str:
    """Put the citation [n] at the end of every sentence of the answer, before its final punctuation."""
    out = []
    for sentence in split_sentences(" ".join(answer.split())):
        match = re.match(r"^(.*?)([.!?]*)$", sentence, flags=re.S)
        body, end = match.group(1), match.group(2) or "."
        out.append(f"{body} [{n}]{end}")
    return " ".join(out)


def candidate_quote(chunk, answer: str, max_words: int = 60, min_recall: float = 0.5) -> str | None:
    """The candidate answer of the chunk (ingest.answer_spans, as answer selection lists them) holding the most of
    the answer's content words, at least `min_recall` of them (the strict correctness of the evaluation), then the
    shortest; None when no candidate of at most `max_words` words does."""
    answer_words = _content_words(answer)
    if not answer_words:
        return None
    passage = SelectionPassage(chunk.text, chunk.heading, 0.0, chunk.continues)
    best: tuple[tuple[float, int], str] | None = None
    for candidate in candidates([passage], max_words=max_words):
        words = len(candidate.text.split())
        recall = len(answer_words & _content_words(candidate.text)) / len(answer_words)
        if words <= max_words and recall >= min_recall and (best is None or (recall, -words) > best[0]):
            best = ((recall, -words), candidate.text)
    return best[1] if best else None


def quote_sentences(passage: str, answer: str, max_words: int = 60, min_coverage: float = 0.6) -> str | None:
    """The passage's sentences that hold the answer, verbatim and in passage order, or None if none do.

    Sentences are taken greedily by how many still-missing content words of the answer they add. None when the quote would exceed max_words (a flattened table is one
    endless "sentence") or covers less than min_coverage of the answer's content words.
    """
    sentences = split_sentences(" ".join(passage.split()))
    answer_words = _content_words(answer)
    missing = set(answer_words)
    chosen: list[int] = []
    while missing:
        gain, i = max(((len(_content_words(s) & missing), -i) for i, s in enumerate(sentences) if -i not in chosen),
                      default=(0, 0))
        if gain == 0:
            break
        chosen.append(i)
        missing -= _content_words(sentences[-i])
    quote = " ".join(sentences[-i] for i in sorted(chosen, reverse=True))
    if not quote or len(quote.split()) > max_words:
        return None
    if answer_words and len(answer_words & _content_words(quote)) / len(answer_words) < min_coverage:
        return None
    return quote
