"""Citation verification: parse [n] markers, drop impossible ones, check each cited passage supports its sentence.

Support is checked without any external model: the share of the sentence's content words found in the
passage (lexical) or, failing that, the embedding similarity between sentence and passage.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ingest.text import content_words, split_sentences

__all__ = ["SentenceCheck", "Verification", "VerifyOptions", "content_words", "cosine_embedder", "split_sentences",
           "verify"]

_MARKER = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")


@dataclass(frozen=True)
class VerifyOptions:
    """When a passage counts as supporting a sentence."""

    min_words: int = 3  # a sentence with fewer content words ("1 [2].", "Yes [3].") makes no checkable claim
    min_word_overlap: float = 0.5  # share of the sentence's content words that appear in the passage
    min_similarity: float = 0.55  # or: cosine similarity of sentence and passage embeddings
    add_missing: bool = True  # cite the best supporting passage for a sentence the model left uncited
    drop_unsupported: bool = True  # leave out sentences that no passage supports


@dataclass
class SentenceCheck:
    text: str
    cited: list[int]  # numbers the model wrote
    supported: list[int]  # numbers kept after the check (possibly added)
    unsupported: list[int]  # cited numbers whose passage does not support the sentence
    invalid: list[int]  # numbers with no such passage


@dataclass
class Verification:
    text: str  # the answer with invalid and unsupported markers removed and missing ones added
    cited: list[int]  # passage numbers the final text cites, in order of first use
    sentences: list[SentenceCheck] = field(default_factory=list)
    drop_unsupported: bool = False  # whether text leaves out sentences no passage supports

    @property
    def invalid(self) -> list[int]:
        return sorted({n for s in self.sentences for n in s.invalid})

    @property
    def unsupported(self) -> list[int]:
        return sorted({n for s in self.sentences for n in s.unsupported})

    @property
    def dropped(self) -> list[str]:
        """Sentences left out of text because no passage supports them."""
        return [s.text for s in self.sentences if self.drop_unsupported and s.text and not s.supported]


def _numbers(marker: str) -> list[int]:
    return [int(n) for n in re.split(r"\s*[,;]\s*", marker)]


def verify(answer: str, passages: list[str], embed=None, options: VerifyOptions = VerifyOptions()) -> Verification:
    """Check every [n] in `answer` against `passages` (1-based); `embed(texts) -> unit vectors` is optional."""
    sentences = split_sentences(answer)
    passage_words = [content_words(p) for p in passages]
    sentence_texts = [re.sub(r"\s+([.!?,;:])", r"\1", _MARKER.sub("", s)).strip() for s in sentences]
    vectors: list = []  # [sentence vectors, passage vectors], embedded on first need: most checks are lexical

    def similarity(i: int, n: int) -> float:
        if not vectors:
            vectors.extend([embed(sentence_texts), embed(passages)])
        return float(vectors[0][i] @ vectors[1][n - 1])

    def support(i: int, n: int) -> bool:
        words = content_words(sentence_texts[i])
        if len(words) < options.min_words:
            return False
        if len(words & passage_words[n - 1]) / len(words) >= options.min_word_overlap:
            return True
        return embed is not None and similarity(i, n) >= options.min_similarity

    checks: list[SentenceCheck] = []
    rebuilt: list[str] = []
    for i, sentence in enumerate(sentences):
        cited = [n for m in _MARKER.findall(sentence) for n in _numbers(m)]
        invalid = [n for n in cited if not 1 <= n <= len(passages)]
        valid = list(dict.fromkeys(n for n in cited if 1 <= n <= len(passages)))
        supported = [n for n in valid if support(i, n)]
        unsupported = [n for n in valid if n not in supported]
        if not supported and options.add_missing and content_words(sentence_texts[i]):
            candidates = [n for n in range(1, len(passages) + 1) if support(i, n)]
            if len(candidates) > 1 and embed is not None:
                candidates.sort(key=lambda n: -similarity(i, n))
            # "[2] A. B." cites [2] for B too: an uncited sentence keeps the previous sentence's passage when that
            # passage supports it (a quote's later sentences were re-attributed to a look-alike passage)
            previous = [n for n in (checks[-1].supported if checks else []) if n in candidates]
            supported = previous[:1] or candidates[:1]
        checks.append(SentenceCheck(sentence_texts[i], cited, supported, unsupported, invalid))
        body = sentence_texts[i]
        if options.drop_unsupported and not supported:
            continue
        if supported:
            end = body[-1] if body and body[-1] in ".!?" else ""
            body = (body[:-1] if end else body).rstrip() + " " + "".join(f"[{n}]" for n in supported) + end
        rebuilt.append(body)
    order = list(dict.fromkeys(n for c in checks for n in c.supported))
    return Verification(text=" ".join(r for r in rebuilt if r), cited=order, sentences=checks,
                        drop_unsupported=options.drop_unsupported)


def cosine_embedder(embedder):
    """Adapt an ingest Embedder to verify()'s embed callable."""
    return lambda texts: np.asarray(embedder.encode(list(texts)))
