"""Quote-constrained decoding: the model may only answer "[n] <words copied from passage n>" or refuse.

A small model paraphrases badly: it misstates numbers, names and deadlines, and the citation check then
withdraws its answer. Constraining decoding to verbatim quotes leaves the model the decisions it is good at —
answer or refuse, which passage, where the quote starts and when it stops — and makes every sentence it writes
a faithful copy of the passage it cites. It works with any Hugging Face tokenizer: the constraint is on text,
each token's text is computed once per tokenizer, and a token is allowed when its text continues a valid answer.

The grammar of an answer, on whitespace-normalised passages:
    REFUSAL | SEGMENT (" " SEGMENT)*        at most `max_segments` segments
    SEGMENT = "[" n "]" " " QUOTE            1 <= n <= number of passages
    QUOTE   = passage n's text from a sentence start to the end of a sentence that is not a question, the end of
              a line, or the passage end; at most `max_sentences` sentences (lines count), and it may stop at
              any word once it is `max_chars` long
"""
from __future__ import annotations

import re
import threading
import weakref
from dataclasses import dataclass

from ingest.text import ends_sentence, split_sentences

_LOOKAHEAD = 24  # characters of each possible continuation matched against token texts
_token_tables: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> (by text, by id)
_token_tables_lock = threading.Lock()


def normalise(text: str) -> tuple[str, list[int], frozenset[int]]:
    """The passage as quotes are matched against it (whitespace runs become one space), where sentences start,
    and where lines end (a table row or a heading ends a quote as a full stop does).

    A sentence starts at the first word, after a word that ends a sentence (ingest.text.ends_sentence: not after
    "e.g." or an initial) or ends in ":", and at the start of a line.
    """
    words = list(re.finditer(r"\S+", text))
    starts, line_ends, at, previous = [], set(), 0, None
    for word in words:
        new_line = previous is not None and "\n" in text[previous.end():word.start()]
        if new_line:
            line_ends.add(at - 1)  # the space that stands for the line break
        if (previous is None or new_line or previous.group().endswith(":")
                or ends_sentence(previous.group(), word.group())):
            starts.append(at)
        at += len(word.group()) + 1
        previous = word
    return " ".join(w.group() for w in words), starts, frozenset(line_ends)


def token_texts(tokenizer) -> tuple[dict[str, list[int]], list[str | None]]:
    """(text -> token ids, id -> text) for every token that decodes to whole characters, built once per tokenizer.

    A token's text is decoded after an anchor token and the anchor's text cut off, so SentencePiece tokens
    keep their leading space. Special tokens and partial UTF-8 bytes ("\ufffd") get None.
    """
    with _token_tables_lock:
        if tokenizer not in _token_tables:
            anchor = tokenizer.encode("a", add_special_tokens=False)[-1]
            prefix = tokenizer.decode([anchor])
            size = len(tokenizer)
            decoded = tokenizer.batch_decode([[anchor, i] for i in range(size)], skip_special_tokens=False,
                                             clean_up_tokenization_spaces=False)
            special = set(tokenizer.all_special_ids)
            texts: list[str | None] = []
            for i, text in enumerate(decoded):
                piece = text[len(prefix):] if text.startswith(prefix) else None
                ok = piece and i not in special and "\ufffd" not in piece
                texts.append(piece if ok else None)
            by_text: dict[str, list[int]] = {}
            for i, piece in enumerate(texts):
                if piece is not None:
                    by_text.setdefault(piece, []).append(i)
            _token_tables[tokenizer] = (by_text, texts)
        return _token_tables[tokenizer]


@dataclass(frozen=True)
class _Refusal:
    matched: int  # characters of the refusal written so far


@dataclass(frozen=True)
class _Header:
    segment: int  # 0-based index of the segment being opened
    typed: str  # characters of its header ("[n]", preceded by " " after the first segment) written so far


@dataclass(frozen=True)
class _Space:
    segment: int
    n: int  # the passage chosen in the header; the quote's leading space comes next


@dataclass(frozen=True)
class _Quote:
    segment: int
    n: int
    start: int  # where the quote started in passage n
    at: int  # index in passage n of the next character to copy
    sentences: int  # sentence ends copied so far in this segment


@dataclass(frozen=True)
class QuotePlan:
    """What a quoted answer may copy: the passages in prompt order, and where its quotes may start."""

    passages: tuple[str, ...]  # the passages as numbered in the prompt
    starts: tuple[tuple[int, ...], ...] | None = None  # per passage, allowed sentence starts (normalised); None: all
    max_segments: int = 1  # "[n] quote" segments per answer
    max_sentences: int = 2  # sentences (or lines) per quote, questions not counted
    max_chars: int = 400  # past this length a quote may stop at any word
    similarity: float = 1.0  # cosine similarity of the question and the closest sentence (1.0 when not measured)


def sentences(passage: str) -> list[tuple[int, str]]:
    """(start, text) of each sentence of a normalised passage; a question is joined to the sentence after it."""
    text, starts, _ = normalise(passage)
    spans = [(a, text[a:b].strip()) for a, b in zip(starts, starts[1:] + [len(text)])]
    out = []
    for i, (start, sentence) in enumerate(spans):
        if sentence.endswith("?") and i + 1 < len(spans):
            sentence += " " + spans[i + 1][1]
        out.append((start, sentence))
    return out


def plan_quotes(question: str, passages: list[str], embed, candidates: int = 4, **limits) -> QuotePlan:
    """A QuotePlan whose quotes may start only at the `candidates` sentences closest to the question.

    The model still chooses among them (or refuses) and decides where the quote ends; narrowing the starts with
    the embedder fixes the small model's habit of quoting the first sentence it sees. `embed(texts)` returns
    unit vectors.
    """
    found = [(n, start, text) for n, passage in enumerate(passages) for start, text in sentences(passage)]
    if not found:
        return QuotePlan(tuple(passages), None, **limits)
    vectors = embed([question] + [text for _, _, text in found])
    scores = vectors[1:] @ vectors[0]
    best = sorted(range(len(found)), key=lambda i: -float(scores[i]))[:candidates]
    starts: list[list[int]] = [[] for _ in passages]
    for i in best:
        starts[found[i][0]].append(found[i][1])
    return QuotePlan(tuple(passages), tuple(tuple(sorted(s)) for s in starts), similarity=float(scores[best[0]]),
                     **limits)


def quote_choices(plan: QuotePlan, refusal: str | None) -> list[str]:
    """The plan's answers as a finite list, for servers that constrain output to a choice (structured outputs).

    Each candidate start gives "[n] <its sentence>" up to "[n] <it and the next max_sentences - 1>" (questions
    lead to their answer and do not count): the quotes QuoteConstraint lets the model write with its default
    limits (one segment), except that a line end does not stop the quote here. Then the refusal.
    """
    choices: list[str] = []
    for n, passage in enumerate(plan.passages, start=1):
        text, starts, _ = normalise(passage)
        spans = [(a, text[a:b].strip()) for a, b in zip(starts, starts[1:] + [len(text)])]
        allowed = None if plan.starts is None else set(plan.starts[n - 1])
        for i, (start, _) in enumerate(spans):
            if allowed is not None and start not in allowed:
                continue
            quote, counted = [], 0
            for _, sentence in spans[i:]:  # questions lead to their answer and do not count as a sentence
                quote.append(sentence)
                if not sentence.endswith("?"):
                    counted += 1
                    choices.append(f"[{n}] {' '.join(quote)}")
                    if counted >= plan.max_sentences:
                        break
    choices = list(dict.fromkeys(choices))
    return choices + ([refusal] if refusal else [])


_SEGMENT = re.compile(r"(\[\d+\])")


def drop_questions(answer: str) -> str:
    """A quoted answer without the questions it copied (an FAQ's question heads the answer it quotes).

    Text that is not "[n] quote" segments (a refusal, a free answer) is returned unchanged.
    """
    parts = _SEGMENT.split(answer.strip())
    if len(parts) < 3 or parts[0]:
        return answer
    out = []
    for marker, quote in zip(parts[1::2], parts[2::2]):
        kept = " ".join(s for s in split_sentences(quote) if not s.endswith("?"))
        if kept:
            out.append(f"{marker} {kept}")
    return " ".join(out)


class QuoteConstraint:
    """A transformers LogitsProcessor that only lets the model write verbatim, cited quotes or the refusal.

    Batch rows are constrained independently. When a quote reaches a character no token can write (a rare
    symbol in a tokenizer without byte tokens), the answer may end there.
    """

    def __init__(self, tokenizer, plan: QuotePlan, refusal: str, prompt_length: int) -> None:
        self.by_text, self.texts = token_texts(tokenizer)
        normalised = [normalise(p) for p in plan.passages]
        self.passages = [n[0] for n in normalised]
        self.sentence_starts = [n[1] for n in normalised] if plan.starts is None else [list(s) for s in plan.starts]
        self.line_ends = [n[2] for n in normalised]
        self.refusal = refusal
        self.prompt_length = prompt_length
        self.max_segments, self.max_sentences, self.max_chars = plan.max_segments, plan.max_sentences, plan.max_chars
        self.eos = sorted({tokenizer.eos_token_id} if isinstance(tokenizer.eos_token_id, int)
                          else set(tokenizer.eos_token_id or []))
        self._rows: dict[int, tuple[int, frozenset]] = {}

    # -- the grammar as a set of hypotheses, advanced one character at a time --

    def _start(self) -> frozenset:
        return frozenset({_Refusal(0), _Header(0, "")})

    def _headers(self, segment: int) -> list[str]:
        """The headers that may open a segment: passages with somewhere a quote may start."""
        lead = " " if segment else ""
        return [f"{lead}[{n}]" for n in range(1, len(self.passages) + 1) if self.sentence_starts[n - 1]]

    def _ends_quote(self, h: _Quote) -> bool:
        """Whether the quote may stop here: after a sentence or a line (not a question), or at the passage end."""
        text = self.passages[h.n - 1]
        if h.at >= len(text):
            return True
        if h.at <= h.start + 1 or text[h.at] != " ":
            return False
        ends = text[h.at - 1] in ".!" or (h.at in self.line_ends[h.n - 1] and text[h.at - 1] != "?")
        return ends or self._too_long(h)

    def _too_long(self, h: _Quote) -> bool:
        return h.at - h.start >= self.max_chars

    def _sentence_end(self, n: int, at: int) -> bool:
        """Whether copying passage n's character at `at` completes a sentence or a line that is not a question."""
        text = self.passages[n - 1]
        if text[at] == "?":  # a question (an FAQ's heading) leads to the answer; it does not count as one
            return False
        return at + 1 == len(text) or (text[at + 1] == " " and (text[at] in ".!" or at + 1 in self.line_ends[n - 1]))

    def _may_continue(self, h: _Quote) -> bool:
        text = self.passages[h.n - 1]
        if h.at >= len(text):
            return False
        return not (self._ends_quote(h) and (h.sentences >= self.max_sentences or self._too_long(h)))

    def _advance(self, hyps: frozenset, char: str) -> frozenset:
        out = set()
        for h in hyps:
            if isinstance(h, _Refusal):
                if h.matched < len(self.refusal) and self.refusal[h.matched] == char:
                    out.add(_Refusal(h.matched + 1))
            elif isinstance(h, _Header):
                typed = h.typed + char
                for header in self._headers(h.segment):
                    if header == typed:
                        out.add(_Space(h.segment, int(header.strip()[1:-1])))
                    elif header.startswith(typed):
                        out.add(_Header(h.segment, typed))
            elif isinstance(h, _Space):
                if char == " ":
                    out.update(_Quote(h.segment, h.n, w, w, 0) for w in self.sentence_starts[h.n - 1])
            else:
                text = self.passages[h.n - 1]
                if self._ends_quote(h) and h.segment + 1 < self.max_segments:
                    out.update(self._advance(frozenset({_Header(h.segment + 1, "")}), char))
                if self._may_continue(h) and text[h.at] == char:
                    out.add(_Quote(h.segment, h.n, h.start, h.at + 1, h.sentences + self._sentence_end(h.n, h.at)))
        return frozenset(out)

    def _continuations(self, hyps: frozenset) -> tuple[set[str], bool]:
        """The text each hypothesis may continue with (up to _LOOKAHEAD chars), and whether the answer may end."""
        texts: set[str] = set()
        may_end = False
        for h in hyps:
            if isinstance(h, _Refusal):
                if h.matched == len(self.refusal):
                    may_end = True
                texts.add(self.refusal[h.matched:])
            elif isinstance(h, _Header):
                for header in self._headers(h.segment):
                    if header.startswith(h.typed):
                        texts.add(header[len(h.typed):])
            elif isinstance(h, _Space):
                text = self.passages[h.n - 1]
                texts.update(" " + text[w:w + _LOOKAHEAD] for w in self.sentence_starts[h.n - 1])
            else:
                text = self.passages[h.n - 1]
                if self._ends_quote(h):
                    may_end = True
                    if h.segment + 1 < self.max_segments:
                        texts.update(self._headers(h.segment + 1))
                if self._may_continue(h):
                    texts.add(text[h.at:h.at + _LOOKAHEAD])
        return {t for t in texts if t}, may_end

    def allowed(self, hyps: frozenset) -> list[int]:
        texts, may_end = self._continuations(hyps)
        ids: set[int] = set()
        for text in texts:
            for k in range(1, len(text) + 1):
                ids.update(self.by_text.get(text[:k], ()))
        if may_end or not ids:  # nothing writable: let the answer end rather than emit an arbitrary token
            ids.update(self.eos)
        return sorted(ids)

    def state(self, row: int, generated: list[int]) -> frozenset:
        """The hypotheses after the generated tokens of a batch row (advanced incrementally between calls)."""
        done, hyps = self._rows.get(row, (0, self._start()))
        if done > len(generated):
            done, hyps = 0, self._start()
        for token in generated[done:]:
            for char in self.texts[token] or "":
                hyps = self._advance(hyps, char)
        self._rows[row] = (len(generated), hyps)
        return hyps

    def __call__(self, input_ids, scores):
        import torch

        mask = torch.full_like(scores, float("-inf"))
        for row in range(input_ids.shape[0]):
            generated = input_ids[row, self.prompt_length:].tolist()
            mask[row, self.allowed(self.state(row, generated))] = 0.0
        return scores + mask
