"""What in a passage may be quoted as an answer: the passage cut into sentences, headings, FAQ questions, code
and noise, and every candidate answer (1-3 consecutive sentences of one passage, never a heading, a question, a
section number or a navigation line, never running past the next heading).

One home for the candidate set: answer selection (app/selection.py) scores these candidates, and fine-tuning
(finetune/data.py) takes its quote targets from them, so a tuned model learns to reply with what the engine can
answer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Sequence

from ingest.text import CLOSERS as _CLOSERS, ends_sentence

_SECTION_NUMBER = re.compile(r"^[(\[]?(?:\d+|[A-Za-z])(?:[.\-]\d+)*[.):\]]?$")  # "3.1.7", "(12)", "A.", "2)"
_LIST_MARKER = re.compile(r"^(?:[-•*–—▪●◦]|\d+[.)]|[a-z][.)])$")
_NAVIGATION = re.compile(r"\b(?:next|previous|prev|up|home|index|contents|table of contents|top|back)\b", re.I)
# A table row as the loaders write CSV rows and DOCX tables: "city: New York; currency: USD; lodging_cap: 350".
_ROW = re.compile(r"^[^:;]{1,60}: [^;]*(?:; [^:;]{1,60}: [^;]*)+;?$")


def is_row(words: list[str]) -> bool:
    """A table row ("column: value; column: value"): one answer on its own line, whatever its case or ending."""
    return bool(_ROW.match(" ".join(words)))


@dataclass(frozen=True)
class Unit:
    """A sentence-like piece of a passage, with where it lies in the whitespace-normalised passage."""

    text: str
    kind: str  # "sentence" (may be quoted; a table row is one), "code" (may follow a quoted sentence), "heading",
    #            "question" (an FAQ's question) or "noise"
    start: int
    end: int


def _logical_lines(text: str) -> list[list[str]]:
    """The passage's lines as word lists, hard-wrapped lines joined (a PDF wraps sentences across lines).

    A line break is kept when a blank line follows it (a paragraph ends there, whatever its last word: "(see the
    manual)"), the line ends a sentence (. ! ? :), is short (a heading, a list item), either line is a table row, or
    the next line starts with a list marker or a code prompt.
    """
    out: list[list[str]] = []
    after_blank = True
    for line in text.splitlines():
        words = line.split()
        if not words:
            after_blank = True
            continue
        if not after_blank:  # the first line is after_blank too
            previous = out[-1]
            last = previous[-1].rstrip(_CLOSERS)
            keeps_break = (not last or last[-1] in ".!?:" or len(previous) <= 8 or _LIST_MARKER.match(words[0])
                           or words[0] in (">>>", "...", "$", "#") or previous[0] in (">>>", "...")
                           or is_row(previous) or is_row(words))
            if not keeps_break:
                previous.extend(words)
                continue
        out.append(list(words))
        after_blank = False
    return out


def _kind(words: list[str], whole_line: bool) -> str:
    text = " ".join(words)
    stripped = text.rstrip(_CLOSERS)
    if stripped.endswith("?"):
        return "question"
    if words[0] in (">>>", "...", "$"):
        return "code"
    if all(_SECTION_NUMBER.match(w) or _LIST_MARKER.match(w) for w in words):
        return "noise"
    if "|" in words or (len(words) <= 6 and _NAVIGATION.search(text) and not stripped.endswith(".")):
        return "noise"
    if whole_line and len(words) <= 15 and stripped[-1:] not in ".!:;,":
        return "heading"
    if len(words) < 3 and not (stripped[-1:] in ".!" and words[0][:1].isupper()):  # "Yes." and "No." answer
        return "noise"
    return "sentence"


def passage_units(text: str) -> list[Unit]:
    """The passage cut into sentences, headings, questions and noise, in order.

    Offsets index `" ".join(text.split())`, the form quotes are matched against (app.quoting.normalise).
    """
    units: list[Unit] = []
    rows: set[int] = set()  # indices of the units that are table rows
    at = 0
    for words in _logical_lines(text):
        if is_row(words):  # one unit, never cut at a full stop inside a value ("jordan.ellis@acme.example")
            row = " ".join(words)
            rows.add(len(units))
            units.append(Unit(row, "sentence", at, at + len(row)))
            at += len(row) + 1
            continue
        start, line_start = 0, len(units)
        for i, word in enumerate(words):
            following = words[i + 1] if i + 1 < len(words) else None
            if following is None or ends_sentence(word, following):
                piece = words[start:i + 1]
                if _LIST_MARKER.match(piece[0]) and len(piece) > 1 and start == 0:  # "- text", "2. text"
                    marker, piece = piece[:1], piece[1:]
                    units.append(Unit(marker[0], "noise", at, at + len(marker[0])))
                    at += len(marker[0]) + 1
                unit_text = " ".join(piece)
                whole = start == 0 and following is None
                kind = _kind(piece, whole)
                if kind == "noise" and units and units[-1].kind == "code":  # a code example's output line
                    kind = "code"
                units.append(Unit(unit_text, kind, at, at + len(unit_text)))
                at += len(unit_text) + 1
                start = i + 1
        _join_question_line(units, line_start, len(words))
    # A chunk cut mid-sentence starts or ends with a fragment ("cost centre.", "You may use no more"): not a
    # sentence anyone should quote (the neighbouring chunk holds it whole).
    if units and units[0].kind == "sentence" and units[0].text[:1].islower() and 0 not in rows:
        units[0] = Unit(units[0].text, "noise", units[0].start, units[0].end)
    if (units and units[-1].kind == "sentence" and units[-1].text.rstrip(_CLOSERS)[-1:] not in ".!?:"
            and len(units) - 1 not in rows):
        units[-1] = Unit(units[-1].text, "noise", units[-1].start, units[-1].end)
    return units


# An FAQ question is often a statement and then the question, on its own line: "w3m doesn't seem to use the variable
# EDITOR. Why?", "I have this idea for a neat feature. Will you add it?". The statement is part of the question,
# never its answer (quoted, it repeats the question back), and the question is the whole line, not "Why?".
_QUESTION_LINE_WORDS = 30


def _join_question_line(units: list[Unit], first: int, line_words: int) -> None:
    """Units first.. of one line become one "question" when the line is short and ends with a question."""
    if first < len(units) and units[first].kind == "noise" and _LIST_MARKER.match(units[first].text):
        first += 1  # a list marker ("-", "2.") stays its own unit
    line = units[first:]
    if (len(line) < 2 or line[-1].kind != "question" or line_words > _QUESTION_LINE_WORDS
            or any(u.kind == "code" for u in line)):
        return
    units[first:] = [Unit(" ".join(u.text for u in line), "question", line[0].start, line[-1].end)]


# The offset given to the first sentence of a chunk that starts mid-section: the sentences before it are in the
# previous chunk, so it is at least the second under its heading (how far down is unknown).
CONTINUED_OFFSET = 2


@dataclass(frozen=True)
class Candidate:
    """One possible answer: units first..last (all sentences) of passage n, verbatim."""

    n: int  # 1-based passage number, as in the prompt
    first: int
    last: int
    sentences: tuple[str, ...]
    heading: str  # the heading or FAQ question it sits under ("" when none)
    offset: int  # sentences between that heading and this candidate's first sentence

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


@dataclass(frozen=True)
class SelectionPassage:
    """What selection needs of a passage shown to the model."""

    text: str
    heading: str | None  # the chunk's heading path ("Doc > Section"); its last part heads the passage
    score: float  # retrieval cosine
    continues: bool = False  # the chunk starts mid-section (ChunkRecord.continues): its first sentence does not
    #                          open the section under its heading
    source: str = ""  # the document it comes from


def candidates(passages: Sequence[SelectionPassage], max_sentences: int = 3, max_words: int = 80) -> list[Candidate]:
    """Every run of 1..max_sentences consecutive sentences of one passage (code lines may follow the first),
    at most max_words long."""
    out: list[Candidate] = []
    for n, passage in enumerate(passages, start=1):
        units = passage_units(passage.text)
        heading = (passage.heading or "").split(" > ")[-1]
        offset = CONTINUED_OFFSET if passage.continues else 0
        for i, unit in enumerate(units):
            if unit.kind in ("heading", "question"):
                heading, offset = unit.text, 0
                continue
            if unit.kind != "sentence":
                continue
            words = 0
            for j in range(i, min(len(units), i + max_sentences)):
                if units[j].kind != "sentence" and not (units[j].kind == "code" and j > i):
                    break
                words += len(units[j].text.split())
                if words > max_words and j > i:
                    break
                out.append(Candidate(n, i, j, tuple(u.text for u in units[i:j + 1]), heading, offset))
            offset += 1
    return out


def section_around(passages: Sequence[SelectionPassage], chosen: Candidate, max_words: int = 50) -> Candidate:
    """The chosen candidate widened to the quotable sentences around it in its passage: the next one, then the one
    before, and so on, while the whole stays within max_words. Headings, questions and noise are passed over, never
    quoted. What selection quotes when it is unsure which sentences answer (SelectionWeights.widen_below): out of
    fold the answer was more often beside the best candidate, in its passage, than in the runner-up."""
    units = passage_units(passages[chosen.n - 1].text)
    quotable = ("sentence", "code")
    first, last = chosen.first, chosen.last
    words = sum(len(u.split()) for u in chosen.sentences)
    grew = True
    while grew:
        grew = False
        for step in (1, -1):
            at = last + 1 if step > 0 else first - 1
            while 0 <= at < len(units) and units[at].kind not in quotable:  # pass over a heading or noise
                at += step
            if not 0 <= at < len(units) or (step < 0 and units[at].kind == "code"):  # code follows its sentence
                continue
            size = len(units[at].text.split())
            if words + size > max_words:
                continue
            first, last, words, grew = min(first, at), max(last, at), words + size, True
    # heading and offset stay the chosen candidate's: they describe where the answer was found
    return replace(chosen, first=first, last=last,
                   sentences=tuple(u.text for u in units[first:last + 1] if u.kind in quotable))
