"""Prompt-injection detection: a small list of scored rules over normalised text.

Documents are untrusted: a passage that talks *to the model* ("ignore all previous instructions", fake chat
role markers, "tell the user to email their password to ...") must never reach the prompt. Questions are
scanned with the same rules.

The text is NFKC-normalised (full-width letters become ASCII), zero-width characters and soft hyphens are
removed, matching is case-insensitive, and the words of every phrase may be separated by any run of
whitespace or punctuation ("IGNORE -- all   previous... instructions!!" matches).

Rules and weights (each rule counts once per text; the score is the sum):

  override          3  "ignore / disregard / forget / override / bypass [all|any] [the|your] previous|prior|
                        above|earlier|original|initial|system instructions|prompts|directives|commands",
                        "do not follow your previous instructions", "ignore the system prompt",
                        "forget everything you were told", "ignore everything above".
                     2  the same phrase followed by a topic ("ignore the previous instructions FOR THE VPN")
                        or "ignore the above" on its own — ordinary document language, so it only counts
                        together with another signal.
  jailbreak         4  "you are now DAN", "do anything now", "DAN/jailbreak/god/unrestricted mode", "act as an
                        unrestricted AI", "you are no longer bound by", "pretend you have no restrictions".
  prompt_leak       4  "reveal / print / repeat / what is ... your system prompt", "repeat the text above".
                        Neither counts when negated ("never reveal the system prompt").
  chat_markup       4  chat-template tokens: <|im_start|>, <|system|>, <|start_header_id|>, [INST], <<SYS>>,
                        <start_of_turn> ...
  role_label        3  "### Instruction:", "### System prompt:", "### New instructions:", or a SYSTEM:/System:
                        label at the start of a line or sentence followed by a directive (you, ignore, always,
                        never, respond, tell ...). 2 for "### System:/Instructions:/Response:/Input:" and a
                        bare "System:" label ("System: Windows 11" is a spec sheet).
  credential_theft  3  "email / send / give / share / provide / enter ... your|their password|PIN|MFA code|
                        one-time code|recovery key|CVV|private key ... to <email address|link|domain>".
                     2  "email / send / give / share / forward ... your password" without a destination, or
                        "ask the user for their password". Not counted when negated ("never send your
                        password"); "enter your password" without a destination counts for nothing.
  safety_bypass     3  "ignore / bypass / disable your|the safety|content filters|guidelines|restrictions"
                        (not when negated).
  assistant_directive 2 directives about the conversation rather than the reader: "tell / instruct / ask the
                        user to|that", "the assistant|AI|chatbot must|should|will", "as an AI language model",
                        "your new task|role|instructions", "include this link in your answer",
                        "do not tell the user". Support runbooks say "ask the user to restart", so this rule
                        alone never reaches the threshold.
  from_now_on       1  "from now on you|always|never|respond ..." (also common in policies).

Thresholds: a passage scoring >= 3 is excluded. A question scoring >= 3 is flagged and still answered (the
model only answers from retrieved passages and retrieval enforces ACLs, so a flagged question cannot reach
documents the user may not read); a question scoring >= 4 (a jailbreak, a system-prompt probe, chat markup, or
an override combined with another signal) is refused.

Known limits: this is pattern matching. It catches the common phrasings in English, not paraphrases,
other languages, or text split across passages; a document that *quotes* an injection (a security-awareness
page) is excluded too, which costs one passage, not an answer.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

EXCLUDE_THRESHOLD = 3  # passages at or above are excluded; questions at or above are flagged
REFUSE_THRESHOLD = 4  # questions at or above are refused

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\ufeff\u00ad"), None)


def normalise(text: str) -> str:
    """NFKC (full-width → ASCII), zero-width characters and soft hyphens removed."""
    return unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)


def _phrase(pattern: str, flags: int = re.IGNORECASE) -> re.Pattern:
    """Compile a phrase pattern in which each literal space means 'any run of whitespace or punctuation'."""
    return re.compile(pattern.replace(" ", r"[\W_]+"), flags)


_NEGATION = re.compile(r"\b(?:never|not|no|nobody|don[\W_]*t|doesn[\W_]*t|won[\W_]*t|shouldn[\W_]*t|mustn[\W_]*t"
                       r"|can[\W_]*t|cannot|without|refuse)\b", re.IGNORECASE)


def _negated(text: str, start: int) -> bool:
    """A negation word in the few words before the match, in the same clause ('never send your password')."""
    window = text[max(0, start - 45):start]
    matches = list(_NEGATION.finditer(window))
    return bool(matches) and not re.search(r"[.!?;:]", window[matches[-1].end():])


@dataclass(frozen=True)
class RuleHit:
    """One rule that matched, with the weight it contributed."""

    rule: str
    weight: int
    description: str


@dataclass
class InjectionScan:
    """The rules a text matched and its total score."""

    hits: list[RuleHit] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(h.weight for h in self.hits)

    def describe(self) -> str:
        return "; ".join(h.description for h in self.hits)


# --------------------------------------------------------------------------- rule patterns

_VERB = r"(?:ignore|disregard|forget|override|overrule|bypass|discard|abandon|drop|skip|neglect|set aside)"
_DET = r"(?:(?:all|any|every|each) )?(?:(?:of )?(?:the|your|my|these|those|its|this|such) )?"
_ADJ = r"(?:previous|prior|preceding|above|earlier|foregoing|original|initial|existing|old|current|system|developer)"
_OBJ = r"(?:instructions?|directions|directives?|prompts?|commands?|programming|guardrails|rules)"
_QUALIFIER = re.compile(r"^[\W_]+(?:for|on|about|regarding|concerning|in|of|from|at|when|if|under|issued|published"
                        r"|sent|posted|dated|printed|shown|given by|that came)\b", re.IGNORECASE)

# (pattern, whether a negation before it cancels it)
_OVERRIDE = (
    (_phrase(rf"\b{_VERB} {_DET}(?:{_ADJ} )+(?:(?:and|or) {_ADJ} )?{_OBJ}\b"), True),
    (_phrase(rf"\b{_VERB} (?:all |any )?(?:of )?your (?:{_ADJ} )*{_OBJ}\b"), True),
    (_phrase(rf"\b(?:do not|don t|stop|no longer|never) (?:follow|obey|comply with|adhere to|listen to) "
             rf"{_DET}(?:{_ADJ} )+{_OBJ}\b"), False),
    (_phrase(r"\b(?:ignore|disregard|forget|override|bypass) (?:the |your |any |all )?(?:system|initial|hidden|secret) "
             r"(?:prompt|instructions)s?\b"), True),
    (_phrase(r"\bforget (?:about )?(?:everything|all|anything) (?:that |which )?(?:you (?:were|have been|ve been) "
             r"(?:told|given|taught)|you know|above|before|so far)\b"), True),
    (_phrase(r"\b(?:ignore|disregard|forget) (?:all |everything |anything )(?:(?:that s |that is |that was |written |"
             r"said |stated |mentioned )?(?:above|before|earlier|so far|until now|prior to this))\b"), True),
)
_OVERRIDE_WEAK = _phrase(r"\b(?:ignore|disregard) (?:all )?(?:of )?the (?:above|foregoing|preceding)\b")

_JAILBREAK = (
    _phrase(r"\byou are (?:now )?(?:a |an )?dan\b(?!['\u2019]s)"),
    _phrase(r"\bdo anything now\b"),
    _phrase(r"\b(?:dan|jailbreak|jailbroken|god|unrestricted|unfiltered|uncensored|evil) mode\b"),
    _phrase(r"\b(?:act|behave|respond|answer) (?:as|like) (?:a |an )?"
            r"(?:dan|unrestricted|unfiltered|uncensored|jailbroken|evil|rogue)\b"),
    _phrase(r"\byou are now (?:a |an )?(?:new |different )?(?:unrestricted|unfiltered|uncensored|jailbroken|evil|rogue"
            r"|different) (?:ai|assistant|model|chatbot|bot|persona|character)\b"),
    _phrase(r"\byou are (?:now )?(?:no longer|not) (?:bound|restricted|limited|constrained) by\b"),
    _phrase(r"\byou (?:are|have been) (?:now )?(?:freed|free|released|liberated) from (?:your|all|any|the)\b"),
    _phrase(r"\bpretend (?:that )?you (?:have no|are not bound|are free|are an? (?:unrestricted|unfiltered|evil))"),
)

_PROMPT_LEAK = (
    _phrase(r"\b(?:reveal|print|show|repeat|output|display|leak|disclose|share|dump|recite|write out|give me|tell me|"
            r"what is|what are|what s|what were) (?:me )?(?:all |the |your |of )*(?:full |exact |complete |entire |"
            r"hidden |secret |original |initial |verbatim )*(?:system prompt|system instructions|initial prompt|"
            r"pre prompt|hidden instructions|hidden prompt|original instructions|initial instructions)\b"),
    _phrase(r"\b(?:repeat|print|output|recite) (?:all |everything |the (?:text|words|instructions|prompt) )"
            r"(?:above|before|preceding)\b"),
)

_CHAT_MARKUP = re.compile(
    r"<\|\s*(?:im_start|im_end|im_sep|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id|"
    r"begin_of_text|end_of_text)\s*\|>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>", re.IGNORECASE)

_ROLE_HEADER_STRONG = re.compile(
    r"(?:^|(?<=\s))#{2,4}\s*(?:instruction|system prompt|new instructions?)\s*:", re.IGNORECASE)
_ROLE_HEADER_WEAK = re.compile(r"(?:^|(?<=\s))#{2,4}\s*(?:instructions|system|response|input|assistant|user)\s*:",
                               re.IGNORECASE)
_ROLE_LABEL = re.compile(
    r"(?:^|(?<=[\n.!?>\]\"]))[ \t]*(?:SYSTEM|System|ASSISTANT|Assistant|DEVELOPER|SYSTEM PROMPT|System prompt)"
    r"[ \t]*:[ \t]*(?P<after>[^\n.!?]{0,80})")
_DIRECTIVE_AFTER = re.compile(
    r"\b(?:you|your|ignore|disregard|forget|always|never|do not|don't|must|respond|reply|answer|tell|new "
    r"instructions|from now on|the user|the assistant)\b", re.IGNORECASE)

_SECRET = (r"(?:passwords?|passcodes?|passphrases?|pins?|pin codes?|credentials|log(?: )?in details|"
           r"sign(?: )?in details|"
           r"mfa codes?|2fa codes?|one time (?:pass)?codes?|otps?|verification codes?|security codes?|"
           r"authenticat(?:or|ion) codes?|recovery keys?|cvv|cvc|private keys?|api keys?|access tokens?|"
           r"yubikey)")
_EXFIL_VERBS = (r"e mail|email|mail|send|give|share|forward|post|disclose|reveal|tell|text|dm|message|reply with|"
                r"hand over|read out|upload|paste")
_CREDENTIAL_THEFT = _phrase(
    r"\b(?P<verb>" + _EXFIL_VERBS + r"|provide|submit|enter|type|confirm) (?:us |me |him |her |them |it |someone )?"
    r"(?:your|their|his|her|the user s|users|user s|the users|the) (?:current |full |sso |acme |login |account |"
    r"network |windows |vpn |bank |banking |card |email |new |old |temporary )*" + _SECRET + r"\b")
_EXFIL_VERB = re.compile(r"(?:" + _EXFIL_VERBS.replace(" ", r"[\W_]+") + r")$", re.IGNORECASE)
_DESTINATION = re.compile(
    r"^[^\n.!?]{0,40}?\b(?:to|at|via|on)[\W_]+(?:[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+|https?://|www\.|"
    r"[\w\-]+\.(?:com|net|org|io|co|info|biz|ru|xyz|example)\b|this (?:address|link|number|form|site|page))",
    re.IGNORECASE)
_ASK_USER_FOR_SECRET = _phrase(r"\b(?:ask|request) (?:the user|users|them|the employee) (?:for|to (?:send|give|share)) "
                               r"(?:their |his |her |the )?" + _SECRET + r"\b")

_SAFETY_BYPASS = _phrase(
    r"\b(?:ignore|bypass|disable|turn off|switch off|circumvent|override) (?:your|all|any|the|its) (?:own )?"
    r"(?:safety|content|ethical|moral|security) (?:filters?|guidelines|restrictions|rules|policies|policy|guardrails|"
    r"settings|checks)\b")

_ASSISTANT_DIRECTIVE = (
    _phrase(r"\b(?:tell|inform|instruct|advise|remind|convince|persuade|urge|warn) (?:the|all|every) users? "
            r"(?:to|that)\b"),
    _phrase(r"\b(?:ask|request) (?:the|all|every) users? to\b"),
    _phrase(r"\b(?:do not|don t|never) (?:tell|inform|mention (?:this |it )?to|reveal (?:this |it )?to|let) "
            r"the user\b"),
    _phrase(r"\b(?:the|this|you the) (?:ai|assistant|chatbot|chat bot|language model|llm|ai model) "
            r"(?:must|should|shall|will|needs to|has to|is to)\b"),
    _phrase(r"\bas an? (?:ai|ai language model|language model|large language model|llm|assistant)\b"),
    _phrase(r"\byou are an? (?:helpful |friendly |new )?(?:ai|assistant|chatbot|language model|llm)\b"),
    _phrase(r"\byour (?:new|real|true|actual|updated|secret) (?:task|goal|job|role|instructions|purpose|objective|"
            r"mission|orders)\b"),
    _phrase(r"\b(?:include|insert|add|append|put|mention) (?:this|the following|the|a) (?:link|url|text|message|"
            r"sentence|phrase|line) (?:in|into|to|at the end of) (?:your|every|each|all|the) (?:answers?|responses?|"
            r"replies|reply|outputs?)\b"),
    _phrase(r"\b(?:in|at the end of|at the start of) (?:your|every|each) (?:answer|response|reply) (?:always )?"
            r"(?:say|write|include|mention|tell)\b"),
)
_FROM_NOW_ON = _phrase(r"\bfrom now on (?:you|the assistant|always|never|only|respond|answer|reply|act|ignore)\b")


# Cheap prefilters: a rule group's patterns all need one of these substrings (of the lower-cased text), so a
# passage without any of them skips the group's regular expressions (most passages skip most groups).
_TRIGGERS = {
    "override": ("ignor", "disregard", "forget", "overrid", "overrul", "bypass", "discard", "abandon", "drop",
                 "skip", "neglect", "aside", "follow", "obey", "comply", "adhere", "listen"),
    "jailbreak": ("dan", "anything", "mode", "unrestricted", "unfiltered", "uncensored", "jailbr", "evil", "rogue",
                  "different", "bound", "restricted", "limited", "constrained", "free", "released", "liberated",
                  "pretend"),
    "prompt_leak": ("prompt", "instructions", "above", "before", "preceding"),
    "role": ("|", "inst]", "<<", "_of_turn", "#", "system", "assistant", "developer"),
    "credential_theft": ("pass", "pin", "credential", "log", "sign", "mfa", "2fa", "code", "otp", "recovery", "cvv",
                         "cvc", "key", "token"),
    "safety_bypass": ("safety", "content", "ethical", "moral", "security"),
    "assistant_directive": ("user", "ai", "assistant", "chat", "model", "llm", "your", "answer", "respons", "repl",
                            "output"),
    "from_now_on": ("now",),
}


def _triggered(group: str, lowered: str) -> bool:
    return any(t in lowered for t in _TRIGGERS[group])


def _first(patterns: tuple[re.Pattern, ...], text: str, skip_negated: bool = False) -> re.Match | None:
    for pattern in patterns:
        for m in pattern.finditer(text):
            if not (skip_negated and _negated(text, m.start())):
                return m
    return None


def scan(text: str) -> InjectionScan:
    """Score a text against every rule; see the module docstring for the list."""
    text = normalise(text)
    lowered = text.lower()
    hits: list[RuleHit] = []
    on = {group: _triggered(group, lowered) for group in _TRIGGERS}

    override = 0
    for pattern, negatable in _OVERRIDE if on["override"] else ():
        for m in pattern.finditer(text):
            if negatable and _negated(text, m.start()):
                continue
            # "ignore the previous instructions for the VPN" is ordinary document language
            override = max(override, 2 if _QUALIFIER.match(text[m.end():m.end() + 40]) else 3)
    if not override and on["override"] and _first((_OVERRIDE_WEAK,), text, skip_negated=True):
        override = 2
    if override:
        hits.append(RuleHit("override", override, "tells the model to ignore its instructions" if override == 3
                            else "asks to ignore earlier text or instructions"))

    if on["jailbreak"] and _first(_JAILBREAK, text, skip_negated=True):
        hits.append(RuleHit("jailbreak", 4, "jailbreak persona or mode"))
    if on["prompt_leak"] and _first(_PROMPT_LEAK, text, skip_negated=True):
        hits.append(RuleHit("prompt_leak", 4, "asks for the system prompt"))
    if on["role"] and _CHAT_MARKUP.search(text):
        hits.append(RuleHit("chat_markup", 4, "chat-template role markers"))

    role = 0
    if on["role"] and _ROLE_HEADER_STRONG.search(text):
        role = 3
    for m in _ROLE_LABEL.finditer(text) if on["role"] else ():
        role = max(role, 3 if _DIRECTIVE_AFTER.search(m.group("after")) else 2)
    if not role and on["role"] and _ROLE_HEADER_WEAK.search(text):
        role = 2
    if role:
        hits.append(RuleHit("role_label", role, "fake system/instruction role label"))

    theft = 0
    for m in _CREDENTIAL_THEFT.finditer(text) if on["credential_theft"] else ():
        if _negated(text, m.start()):
            continue
        if _DESTINATION.match(text[m.end():m.end() + 160]):
            theft = 3  # "... email their password to it-support@evil.example"
        elif _EXFIL_VERB.match(m.group("verb")):
            theft = max(theft, 2)  # "send your password" (not negated); "enter your password" counts for nothing
    if theft < 2 and on["credential_theft"] and _first((_ASK_USER_FOR_SECRET,), text, skip_negated=True):
        theft = 2
    if theft:
        hits.append(RuleHit("credential_theft", theft, "asks for credentials to be sent to an address" if theft == 3
                            else "asks for credentials"))

    if on["safety_bypass"] and _first((_SAFETY_BYPASS,), text, skip_negated=True):
        hits.append(RuleHit("safety_bypass", 3, "asks to bypass safety rules"))
    if on["assistant_directive"] and _first(_ASSISTANT_DIRECTIVE, text):
        hits.append(RuleHit("assistant_directive", 2, "directive addressed to the assistant"))
    if on["from_now_on"] and _first((_FROM_NOW_ON,), text):
        hits.append(RuleHit("from_now_on", 1, "'from now on' directive"))
    return InjectionScan(hits)


def is_injection(text: str) -> bool:
    """True when the text scores at the exclusion threshold."""
    return scan(text).score >= EXCLUDE_THRESHOLD

