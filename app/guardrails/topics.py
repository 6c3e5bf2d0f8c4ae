"""Blocked topics: keyword matching on word boundaries, case-insensitive, tolerant of simple plurals.

Keyword matching is the whole mechanism: a topic is recognised only through the words its administrator
listed (no embeddings, no classifier), so list the forms people actually type ("layoff", "redundancy",
"job cuts"). "salary" also matches "salaries", "layoffs" also matches "layoff"; words inside longer words
do not match ("union" does not match "reunion").
"""
from __future__ import annotations

import re
import unicodedata

from app.guardrails.config import BlockedTopic


def _singulars(word: str) -> set[str]:
    """The word and, if it looks like a regular plural, its singular."""
    forms = {word}
    if len(word) > 4 and word.endswith("ies"):
        forms.add(word[:-3] + "y")
    elif len(word) > 3 and word.endswith(("ses", "xes", "zes", "ches", "shes")):
        forms.add(word[:-2])
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        forms.add(word[:-1])
    return forms


def _word_with_plurals(word: str) -> str:
    alternatives = set()
    for base in _singulars(word):
        escaped = re.escape(base)
        if base.endswith("y") and len(base) > 2 and base[-2] not in "aeiou":
            alternatives.add(escaped[:-1] + "(?:y|ies)")
        elif base.endswith(("s", "x", "z", "ch", "sh")):
            alternatives.add(escaped + "(?:es)?")
        else:
            alternatives.add(escaped + "(?:s|es)?")
    return "(?:" + "|".join(sorted(alternatives)) + ")"


def keyword_pattern(keyword: str) -> re.Pattern:
    """A keyword (one or more words) as a regex: word boundaries, any whitespace/hyphen between words,
    a simple plural (or singular) on the last word."""
    words = unicodedata.normalize("NFKC", keyword).casefold().split()
    parts = [re.escape(w) for w in words[:-1]] + [_word_with_plurals(words[-1])]
    return re.compile(r"(?<!\w)" + r"[\s\-]+".join(parts) + r"(?!\w)", re.IGNORECASE)


class TopicMatcher:
    """Finds the first blocked topic a text mentions."""

    def __init__(self, topics: list[BlockedTopic]) -> None:
        self._topics = [(topic, [(k, keyword_pattern(k)) for k in topic.keywords]) for topic in topics]

    def match(self, text: str) -> tuple[BlockedTopic, str] | None:
        """(topic, keyword) for the first topic whose keyword appears in text, else None."""
        folded = unicodedata.normalize("NFKC", text).casefold()
        for topic, patterns in self._topics:
            for keyword, pattern in patterns:
                if pattern.search(folded):
                    return topic, keyword
        return None
