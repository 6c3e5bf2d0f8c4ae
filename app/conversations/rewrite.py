"""Follow-up questions: decide whether a question needs the conversation, and rewrite it into a standalone query.

"And can I carry them over?" searched as asked finds nothing about leave; searched as "And can I carry them over?
(paid time off days Austin)" it finds the leave policy. Two strategies, chosen per question (AnswerOptions.rewrite)
or per engine (EngineConfig.rewrite):

- "keywords" (deterministic, no model): the question plus the content words of the previous question that it does
  not already hold; when the follow-up names its own place or product ("What about Pune?"), the previous question's
  names are left out, so the query asks about Pune's allowance, not Paris's.
- "model": a chat model rewrites the question, then a guard removes every content word of the rewrite that is in
  neither the conversation nor the question (a 135M model invents them); an empty, failed or unchanged rewrite
  falls back to "keywords".

Only a question that needs context is rewritten (`needs_context`); a self-contained question is searched as asked.
The conversation is prior turns' text, i.e. untrusted like the documents: it only ever adds words to a query.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from finetune.prompt import is_refusal
from ingest.text import QUESTION_WORDS, STOPWORDS

STRATEGIES = ("keywords", "model", "none")
DEFAULT_STRATEGY = "keywords"  # measured on examples/acme/followups.jsonl (README: follow-up questions)

Turn = tuple[str, str]  # (question, answer), as app.engine.Turn

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’\-]*")
# Words that say nothing about the topic of a question: a question made of these alone needs the conversation.
_GENERIC = STOPWORDS | QUESTION_WORDS | frozenset(
    """also too else same one ones much many long still just tell please ok okay yes get got need know mean else
    again instead then what's who's where's how's that's it's i'm i'd i'll can't don't doesn't isn't aren't won't
    is are am was were be happen happens apply applies work works way anything something thing things case""".split())
_ANAPHORS = frozenset("it its they them their theirs those these that this there he she him his her hers one ones "
                      "same such former latter".split())
# "this year", "that day": a demonstrative before a time word points at the calendar, not at an earlier turn.
_TIME_WORDS = frozenset("year year's week week's month month's quarter quarter's morning afternoon evening day "
                        "time moment".split())
_EXISTENTIAL = frozenset("is are was were a an any no".split())  # "is there a dress code?" is self-contained
_OPENERS = ("and ", "and,", "what about", "how about", "what if", "also ", "but what", "but how", "same for",
            "what else", "anything else", "or ", "so ", "then ")
# "What is FleetView?", "Where do I get zsh?": one topic word, but it names the topic
_DEFINITION = re.compile(r"^(what|who|where)('s| is| are| was| were| do i get| can i get) (an? |the )?[\w.+#-]+\??$")
_SHORT = 3  # a question this short with "too"/"also" adds to the last one ("Contractors too?")
_ALSO = frozenset("too also either".split())
_DUMMY_IT = frozenset("possible true ok okay necessary allowed worth safe better normal mandatory required".split())
_MAX_CONTENT_WITH_ANAPHOR = 4  # a question with more content words than this names its own topic
_FEW_CONTENT = 2  # with this few, a pronoun points back even after a word ("who approves it?")
# "that" is a pronoun after these ("who approves that?", "is that", "does that"), a conjunction after most others.
_BEFORE_PRONOUN_THAT = frozenset("is does do did was will can about approves approve covers cover for with on in "
                                 "of to after before toward towards against from like than under over by at into "
                                 "within without beyond".split())
_BEFORE_ONE = frozenset("first second third other last same previous new old that this which another".split())
_AUXILIARIES = frozenset("does did will can could would should is was".split())
_FORWARD_VERBS = frozenset("called take takes cost costs matter mean make".split())  # "does it take long to ..."


@dataclass(frozen=True)
class Rewrite:
    """What retrieval searches for a question asked in a conversation."""

    query: str  # the standalone query (the question itself when not rewritten)
    rewritten: bool  # query differs from the question
    strategy: str  # "none" (not rewritten), "keywords" or "model"
    reason: str  # why the gate let it through or not, or why the model's rewrite was not used


def words(text: str) -> list[str]:
    return [w.lower().strip("'’-") for w in _WORD.findall(text)]


def _norm(word: str) -> str:
    """A word compared loosely: lower case, a plural or possessive 's' dropped ("allowances" = "allowance")."""
    word = word.lower().strip("'’-")
    for suffix in ("'s", "’s"):
        word = word.removesuffix(suffix)
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def content_words(text: str) -> list[str]:
    """The topic words of a text, in order, without repeats."""
    return list(dict.fromkeys(w for w in words(text) if w and w not in _GENERIC and len(w) > 1))


def needs_context(question: str) -> tuple[bool, str]:
    """Whether a question depends on earlier turns, and why (a short reason for logs and tests).

    Errs towards "self-contained": rewriting a question that names its own topic only dilutes its search.
    """
    text = question.strip()
    lowered = " ".join(text.lower().split())
    tokens = words(text)
    if not tokens:
        return False, "empty"
    if any(lowered.startswith(opener) for opener in _OPENERS):
        return True, "elliptical opener"
    content = content_words(text)
    if not content:
        return True, "no topic of its own"
    if len(content) == 1 and not _DEFINITION.match(lowered):
        return True, "one topic word only"  # "What should I bring?", "What happens if we go over?"
    if (len(tokens) <= _SHORT and set(tokens) & _ALSO) or (tokens[-1] in _ALSO and len(content) <= 3):
        return True, "adds to the last question"  # "Contractors too?", "Are SMS codes OK too?"
    for i, token in enumerate(tokens):
        if token not in _ANAPHORS:
            continue
        previous = tokens[i - 1] if i > 0 else ""
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token == "ones" or (token == "one" and previous in _BEFORE_ONE):  # "unused ones", "the second one"
            return True, f"'{token}' points back"
        if token in {"this", "that", "these", "those"} and following in _TIME_WORDS:
            continue
        if token in {"this", "these"} and following in content and len(content) >= 3:
            continue  # "what are these w3m files in my directory for?": a determiner of its own topic
        if token == "there" and (following in _EXISTENTIAL or previous in _EXISTENTIAL):
            continue  # "is there a dress code?", "are there restrictions?"
        if token == "it" and (following in _FORWARD_VERBS
                              or (following in _DUMMY_IT and {"to", "that"} & set(tokens[i:]))):
            continue  # "why is it called Python?", "is it possible to ...", "does it take long to ...": forward
        if token == "that" and previous and previous not in _BEFORE_PRONOUN_THAT:
            continue  # "the policy that applies", "is it true that": a relative or a conjunction
        if (token == "it" and previous in _AUXILIARIES and following not in _DUMMY_IT | _FORWARD_VERBS
                and len(content) <= _MAX_CONTENT_WITH_ANAPHOR):
            return True, "'it' as the subject, without an antecedent"  # "which positions does it approve?"
        if token in {"that", "this", "those", "these"} and i == len(tokens) - 1 and len(content) <= 4:
            return True, f"ends with '{token}'"  # "do business trips count toward that?"
        before = [t for t in tokens[:i] if t in content]
        if (not before and len(content) <= _MAX_CONTENT_WITH_ANAPHOR) or len(content) <= _FEW_CONTENT:
            return True, f"'{token}' without an antecedent"
    return False, "self-contained"



def _names(text: str) -> set[str]:
    """Capitalised words after the first ("Pune", "FleetView"): the places, products and people a question names."""
    found = _WORD.findall(text)
    return {_norm(w) for w in found[1:] if w[0].isupper() and w not in {"I", "I'm", "I'd", "I'll"}}


_PLACE = re.compile(r"\b(?:in|to|for|from|at)\s+(?:the\s+)?((?:[A-Z][\w'’-]*\s?)+)")


def _places(text: str) -> set[str]:
    """The names after in/to/for/from/at ("travel to Paris", "hours in Lyon"): what "What about Pune?" replaces.
    The other names ("IT Service Desk") stay the topic."""
    return {_norm(w) for match in _PLACE.finditer(text) for w in match.group(1).split()}


def _topic_turns(history: Sequence[Turn], limit: int = 3) -> list[Turn]:
    """The turns whose questions set the topic: the last one, and before it while each was itself a follow-up."""
    chosen: list[Turn] = []
    for turn in reversed(history[-limit:]):
        chosen.append(turn)
        if not needs_context(turn[0])[0]:
            break
    return chosen


def keyword_rewrite(question: str, history: Sequence[Turn], with_answer: bool = False) -> str:
    """The question plus the previous questions' content words it does not hold (and, with_answer, the last
    answer's); a follow-up naming its own place or product drops the previous question's names."""
    if not history:
        return question
    own = {_norm(w) for w in words(question)}
    replaced = _names(question)
    added: list[str] = []
    for previous, answer in _topic_turns(history):
        names = _places(previous) if replaced else set()
        texts = [previous] + ([answer] if with_answer and answer and not is_refusal(answer) else [])
        for text in texts:
            for word in _WORD.findall(text):
                key = _norm(word)
                if ((word.lower() in _GENERIC and not word.isupper()) or len(key) < 2 or key in own or key in names
                        or key in {_norm(a) for a in added}):
                    continue
                added.append(word)
    if not added:
        return question
    return f"{question.strip()} ({' '.join(added)})"


REWRITE_PROMPT = (
    "You rewrite the user's last question so that it can be understood without the conversation.\n"
    "Replace pronouns like it, they, them or that with what they refer to in the conversation.\n"
    "Use only words from the conversation. Reply with the rewritten question only, nothing else.")

_EXAMPLE = [  # one worked example: a 135M model follows an example far better than an instruction
    {"role": "user", "content": "Conversation:\nQ: How many vacation days do new employees in Boston get?\n"
                                "A: New employees in Boston get 20 vacation days.\n\n"
                                "Last question: And in Denver?"},
    {"role": "assistant", "content": "How many vacation days do new employees in Denver get?"},
]


def rewrite_messages(question: str, history: Sequence[Turn]) -> list[dict[str, str]]:
    """The chat messages that ask a model to rewrite the question (the last turns that set the topic)."""
    lines = []
    for previous, answer in reversed(_topic_turns(history)):
        lines.append(f"Q: {previous}")
        if answer and not is_refusal(answer):
            lines.append(f"A: {' '.join(answer.split()[:60])}")
    prompt = "Conversation:\n" + "\n".join(lines) + f"\n\nLast question: {question}"
    return [{"role": "system", "content": REWRITE_PROMPT}, *_EXAMPLE, {"role": "user", "content": prompt}]


def guard(rewrite: str, question: str, history: Sequence[Turn]) -> str:
    """The rewrite less every word that is in neither the conversation nor the question (and not a function word).

    The conversation's words are compared loosely (plural/possessive 's' ignored); what remains is one line with
    its spacing normalised; "" when nothing of it is left."""
    allowed = {_norm(w) for text in (question, *(t for turn in history for t in turn)) for w in words(text)}
    line = next((ln.strip() for ln in rewrite.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^(rewritten question|question|q)\s*:\s*", "", line, flags=re.IGNORECASE).strip(" \"'")
    kept = [token for token in line.split()
            if not (w := _WORD.search(token)) or w.group().lower() in _GENERIC or _norm(w.group()) in allowed]
    return " ".join(kept).strip()


Generate = Callable[[list[dict[str, str]]], str]  # chat messages -> the model's reply


def model_rewrite(question: str, history: Sequence[Turn], generate: Generate) -> tuple[str | None, str]:
    """The model's rewrite after the guard, or None (and why) when it is unusable: failed, empty, not a question
    (a small model often answers instead), missing a topic word of the question (it echoed the previous question:
    "What should I bring?" became "What time should I arrive?"), or adding no topic word."""
    try:
        reply = generate(rewrite_messages(question, history))
    except Exception as exc:  # noqa: BLE001 - any failure of the model means: search with the other strategy
        return None, f"model failed ({type(exc).__name__})"
    guarded = guard(reply, question, history)
    if not guarded:
        return None, "model's rewrite empty after the guard"
    if len(words(guarded)) > 3 * len(words(question)) + 25:
        return None, "model's rewrite too long"
    if not guarded.endswith("?"):
        return None, "model's rewrite is not a question"
    own = {_norm(w) for w in content_words(question)}
    kept = {_norm(w) for w in content_words(guarded)}
    if own - kept:
        return None, "model's rewrite lost words of the question"
    if not kept - own:
        return None, "model's rewrite adds no topic word"
    return guarded, "model"


def rewrite(question: str, history: Sequence[Turn] | None, strategy: str = DEFAULT_STRATEGY,
            generate: Generate | None = None) -> Rewrite:
    """The standalone query for a question asked after `history` ((question, answer) pairs, oldest first).

    strategy "model" needs `generate`; without it (or when its rewrite is unusable) "keywords" is used.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"rewrite strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if not history or strategy == "none":
        return Rewrite(question, False, "none", "no conversation" if not history else "rewriting off")
    needed, why = needs_context(question)
    if not needed:
        return Rewrite(question, False, "none", why)
    if strategy == "model" and generate is not None:
        query, reason = model_rewrite(question, history, generate)
        if query is not None and query.strip() != question.strip():
            return Rewrite(query, True, "model", why)
        why = f"{why}; {reason}, keywords instead"
    query = keyword_rewrite(question, history)
    return Rewrite(query, query != question, "keywords", why)
