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

# A sentence ends at . ! or ? followed by space and a capital, digit, quote or bracket; or at a line break.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n+")

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
    """The sentences of `text`, stripped, without empty ones ("" has none)."""
    return [s for s in (p.strip() for p in SENTENCE_END.split(text.strip())) if s]


def content_words(text: str, stopwords: frozenset[str] = STOPWORDS, word: re.Pattern = WORD) -> set[str]:
    """The distinct lower-case words of `text` less `stopwords`; `word` says what a word is (WORD or PLAIN_WORD).

    Apostrophes and hyphens at a word's ends are dropped ("'quoted'" is "quoted").
    """
    return {w.strip("'’-") for w in word.findall(text.lower())} - stopwords - {""}
