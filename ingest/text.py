"""Text helpers shared by citation checking (app), training data (finetune) and evaluation (eval).

The one home for splitting text into sentences and for the content words of a text (its words less the
stop words). It is the lowest layer, so app, finetune and eval may all import it.

Two stop lists exist because their callers ignore different words, and each caller's behaviour is pinned by
tests:
- STOPWORDS: function words that carry no claim. Citation checking (app.citations) uses it to measure how much
  of a sentence a passage supports; "not" and "no" are in it, question words are not.
- TRAINING_STOPWORDS: the shorter list that training data (finetune.data) uses to find the sentences of a
  passage that hold an answer; it keeps "not", "no", "should", ... and drops the question words
  (QUESTION_WORDS), which a question shares with any passage.
"""
from __future__ import annotations

import re

# A sentence ends at . ! or ? followed by space and a capital, digit, quote or bracket (unless the word is an
# abbreviation or an initial, see ends_sentence); or at a line break.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n+")

# Words after which a full stop does not end the sentence ("e.g. Python", "Dr. Okafor", "No. 5", "Fig. 2").
ABBREVIATIONS = frozenset("""e.g i.e cf vs viz mr mrs ms dr prof st jr sr inc ltd co corp no nos fig figs approx
incl esp al resp dept eq sec ch vol pp ed eds rev gen lt col sgt a.m p.m ca""".split())
_OPENERS = "\"'‘“(["
CLOSERS = "\"'’”)]"  # closing quotes and brackets that may follow a sentence's final punctuation
_INITIALS = re.compile(r"[A-Za-z](?:\.[A-Za-z])*")  # "J", "J.H.M", "U.S"


def ends_sentence(word: str, next_word: str | None) -> bool:
    """Whether a sentence ends after `word`, given the word that follows it (None at the end of the text).

    It ends after . ! or ? (closing quotes and brackets allowed after it) when the next word starts with a
    capital, a digit, a quote or a bracket, except after an abbreviation ("e.g.", "Dr.") or an initial ("J.",
    "J.H.M."), which are followed by capitals without ending anything.
    """
    core = word.rstrip(CLOSERS)
    if not core or core[-1] not in ".!?":
        return False
    if next_word is None:
        return True
    first = next_word[:1]
    if not (first.isupper() or first.isdigit() or first in "\"'‘“("):  # not "[": "... purchase. [1]" cites
        return False
    if core[-1] != ".":
        return True
    stem = core[:-1].lstrip(_OPENERS)
    return stem.lower() not in ABBREVIATIONS and not _INITIALS.fullmatch(stem)


# A word with its inner apostrophes and hyphens ("don't", "e-mail"), as citation checking reads words.
WORD = re.compile(r"[a-z0-9][a-z0-9'’\-]*")
# A run of letters and digits ("don't" is "don" and "t"), as training data reads words.
PLAIN_WORD = re.compile(r"[a-z0-9]+")

STOPWORDS = frozenset("""a an the and or but if of to in on at by for with from as is are was were be been being it its
this that these those there their they them you your we our us he she his her i me my not no do does did can could
will would shall should may might must have has had about into over under than then so such per each any all""".split())

# Words a question shares with any passage; training data ignores them, citation checking does not.
QUESTION_WORDS = frozenset("how what when where which who why".split())

TRAINING_STOPWORDS = frozenset("a an and are as at be by can do does for from has have i if in is it its may must of "
                               "on or the this to was will with you your".split()) | QUESTION_WORDS


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, stripped, without empty ones ("" has none); a line break ends a sentence."""
    out = []
    for line in re.split(r"\n+", text):
        words = list(re.finditer(r"\S+", line))
        start = 0
        for i, word in enumerate(words):
            following = words[i + 1].group() if i + 1 < len(words) else None
            if following is None or ends_sentence(word.group(), following):
                out.append(line[words[start].start():word.end()])
                start = i + 1
    return out


def content_words(text: str, stopwords: frozenset[str] = STOPWORDS, word: re.Pattern = WORD) -> set[str]:
    """The distinct lower-case words of `text` less `stopwords`; `word` says what a word is (WORD or PLAIN_WORD).

    Apostrophes and hyphens at a word's ends are dropped ("'quoted'" is "quoted").
    """
    return {w.strip("'’-") for w in word.findall(text.lower())} - stopwords - {""}
