"""Personal data detection and redaction: compact regular expressions plus checksum validators.

Why not Presidio: presidio-analyzer hard-depends on spaCy (19 extra packages, ~390 MB), its AnalyzerEngine
tries to download a spaCy model at start-up, and its email recognizer calls tldextract, which fetches the
public-suffix list from the network and rejects internal domains such as ``acme.example``. It also has no
French NIR recognizer. The few patterns needed here are short, checksum-validated and dependency-free.

What is found, and how false positives are kept out:

- EMAIL        local@domain.tld.
- PHONE        +CC international numbers (8–15 digits), North American (512) 555-0100 / 512-555-0100 /
               1 888 555 0199, French 04 72 00 00 00, Indian 98765 43210, UK 020 7946 0958, and any 7–15
               digit number right after "phone/tel/mobile/fax/call". Dates, times, version numbers, money,
               postcodes and 4-digit extensions do not have these shapes.
- CARD         13–19 digits, optionally in groups (first group of 4) separated by spaces or dashes, that pass
               the Luhn check AND start with a real card-network prefix (Visa, Mastercard, Amex, ...).
- IBAN         country code + check digits + BBAN, the country's exact length, and the ISO 7064 mod-97 check.
- NATIONAL_ID  US SSN 123-45-6789 (dashed; area 000/666/9xx, group 00, serial 0000 are invalid),
               French NIR (15 digits, key = 97 - first 13 mod 97, Corsica 2A/2B), UK NINO (valid prefixes),
               Indian Aadhaar (12 digits, Verhoeff check; grouped 4-4-4, or ungrouped after "Aadhaar").
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

KINDS = ("EMAIL", "PHONE", "CARD", "IBAN", "NATIONAL_ID")
PLACEHOLDER = {kind: f"[{kind}]" for kind in KINDS}
_LABELS = {
    "EMAIL": ("email address", "email addresses"),
    "PHONE": ("phone number", "phone numbers"),
    "CARD": ("card number", "card numbers"),
    "IBAN": ("IBAN", "IBANs"),
    "NATIONAL_ID": ("national ID number", "national ID numbers"),
}
# When two findings overlap, the checksum-validated kind wins.
_PRIORITY = {"IBAN": 0, "CARD": 1, "NATIONAL_ID": 2, "EMAIL": 3, "PHONE": 4}


@dataclass(frozen=True)
class PiiMatch:
    """One piece of personal data found in a text, by character offsets."""

    kind: str  # one of KINDS
    start: int
    end: int
    subtype: str = ""  # e.g. "US_SSN", "FR_NIR", "UK_NINO", "IN_AADHAAR"


@dataclass
class Redaction:
    """A text with its personal data replaced by typed placeholders, and how many of each kind."""

    text: str
    counts: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """'redacted 1 email address, 2 phone numbers' — counts only, never the values."""
        parts = []
        for kind in KINDS:
            n = self.counts.get(kind, 0)
            if n:
                singular, plural = _LABELS[kind]
                parts.append(f"{n} {singular if n == 1 else plural}")
        return "redacted " + ", ".join(parts) if parts else ""


# --------------------------------------------------------------------------- checksums


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_network_ok(d: str) -> bool:
    """The number starts with a real card network's prefix and has that network's length."""
    n = len(d)
    p2, p3, p4 = int(d[:2]), int(d[:3]), int(d[:4])
    if d[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16  # Mastercard
    if p2 in (34, 37):
        return n == 15  # American Express
    if p4 == 6011 or p2 == 65 or 644 <= p3 <= 649:
        return 16 <= n <= 19  # Discover
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19  # JCB
    if p2 in (36, 38, 39) or 300 <= p3 <= 305:
        return 14 <= n <= 19  # Diners Club
    if p2 == 62:
        return 16 <= n <= 19  # UnionPay
    if p2 == 50 or 56 <= p2 <= 69:
        return 12 <= n <= 19  # Maestro
    return False


# IBAN length per country (SWIFT IBAN registry).
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}


def iban_ok(iban: str) -> bool:
    iban = iban.upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def nir_ok(nir: str) -> bool:
    """French social security number (NIR): 13 characters + 2-digit key; Corsica 2A/2B count as 19/18."""
    nir = nir.upper()
    body, key = nir[:13], nir[13:]
    corsica = {"2A": "19", "2B": "18"}.get(body[5:7])
    if corsica:
        body = body[:5] + corsica + body[7:]
    if not (body.isdigit() and key.isdigit()):
        return False
    month = int(body[3:5])
    if not (1 <= month <= 12 or 20 <= month <= 42 or 50 <= month <= 99):
        return False
    return int(key) == 97 - int(body) % 97


_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4), (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7), (9, 4, 5, 3, 1, 2, 6, 8, 7, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def verhoeff_ok(digits: str) -> bool:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][ord(ch) - 48]]
    return c == 0


# --------------------------------------------------------------------------- patterns

_EMAIL = re.compile(
    r"(?<![\w.%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w\-]|\.\w)"
)
# A number must not run on into more digits or a version-like ".5" / "-5" tail.
_END = r"(?![\w@]|[.\-/]\d)"
_START = r"(?<![\w+.\-/@])"
_PHONES = (
    # international: +33 4 72 00 00 00, +1 512 555 0140, +91 98765 43210, +44 (0)20 7946 0958
    re.compile(_START + r"\+[1-9]\d{0,2}(?:[ .\-\u00a0]?\(0\))?(?:[ .\-\u00a0]?\(?\d{1,5}\)?){1,6}" + _END),
    # North America: (512) 555-0100, 512-555-0100, 512.555.0100, 1 888 555 0199
    re.compile(_START + r"(?:1[ .\-])?(?:\(\d{3}\)[ \-]?|\d{3}[ .\-])\d{3}[ .\-]\d{4}" + _END),
    # France: 04 72 00 00 00, 04.72.00.00.00
    re.compile(_START + r"0[1-9](?:[ .\-]\d{2}){4}" + _END),
    # India mobile: 98765 43210
    re.compile(_START + r"[6-9]\d{4}[ \-]\d{5}" + _END),
    # UK: 020 7946 0958, 07700 900123 (11 digits, checked below)
    re.compile(_START + r"0\d{2,4}[ \-]\d{3,4}(?:[ \-]?\d{3,4})?" + _END),
)
_PHONE_CONTEXT = re.compile(
    r"\b(?:phone|telephone|tel|mobile|mob|cell(?:phone)?|fax|whatsapp|call(?: me)?(?: on| at)?)\b"
    r"\.?[ \t]*(?:n(?:o|um(?:ber)?)\.?|#)?[ \t]*[:=]?[ \t]*"
    r"(\(?\+?\d[\d \t().\-]{5,22}\d)" + _END,
    re.IGNORECASE,
)
_DATE_LIKE = re.compile(r"^\d{4}[.\-/]\d{1,2}[.\-/]\d{1,2}$|^\d{1,2}[.\-/]\d{1,2}[.\-/]\d{2,4}$")
_CARD = re.compile(_START + r"(\d{4}(?:[ \-]?\d){9,15})" + _END)
_IBAN = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]){11,34})")
_SSN = re.compile(_START + r"(\d{3})-(\d{2})-(\d{4})" + _END)
_NIR = re.compile(
    r"(?<![\w+.\-/])([12] ?\d{2} ?\d{2} ?(?:\d{2}|2[ABab]) ?\d{3} ?\d{3} ?\d{2})(?![\w@]|[.\-/]\d)")
_NINO = re.compile(
    r"(?<![\w])(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?!\w)")
_AADHAAR_GROUPED = re.compile(_START + r"[2-9]\d{3}([ \-])\d{4}\1\d{4}" + _END)
_AADHAAR_PLAIN = re.compile(r"(?i)\b(?:aadhaar|aadhar|uidai|uid)\b[^\d\n]{0,30}([2-9]\d{11})" + _END)


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


_NUMBER_BEFORE = re.compile(r"\d[ \t]$")
_NUMBER_AFTER = re.compile(r"^[ \t]\d")


def _find_phones(text: str) -> list[PiiMatch]:
    found = []
    for i, pattern in enumerate(_PHONES):
        for m in pattern.finditer(text):
            n = len(_digits(m.group()))
            ok = (8 <= n <= 15) if i == 0 else (n in (10, 11)) if i == 1 else (n == 11) if i == 4 else True
            # a space-separated national format inside a longer run of space-separated numbers
            # ("89 144 233 377 610 987 1597") is a table or a sequence, not a phone number
            if ok and i > 0 and not re.search(r"[.\-()]", m.group()) and (
                    _NUMBER_BEFORE.search(text, 0, m.start()) or _NUMBER_AFTER.match(text[m.end():m.end() + 2])):
                ok = False
            if ok:
                found.append(PiiMatch("PHONE", m.start(), m.end()))
    for m in _PHONE_CONTEXT.finditer(text):
        value = m.group(1).strip(" \t")
        if 7 <= len(_digits(value)) <= 15 and not _DATE_LIKE.match(value):
            found.append(PiiMatch("PHONE", m.start(1), m.start(1) + len(value)))
    return found


def _find_cards(text: str) -> list[PiiMatch]:
    found = []
    for m in _CARD.finditer(text):
        value = m.group(1)
        groups = re.split(r"[ \-]", value)
        if len(groups) > 1 and not all(3 <= len(g) <= 6 for g in groups):
            continue
        digits = value.replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn_ok(digits) and _card_network_ok(digits):
            found.append(PiiMatch("CARD", m.start(1), m.end(1)))
    return found


def _find_ibans(text: str) -> list[PiiMatch]:
    found = []
    for m in _IBAN.finditer(text):
        value = m.group(1)
        length = _IBAN_LENGTHS.get(value[:2].upper())
        if length is None:
            continue
        taken, end = 0, None
        for offset, ch in enumerate(value):  # keep exactly the country's number of characters
            if ch.isalnum():
                taken += 1
                if taken == length:
                    end = offset + 1
                    break
        if end is None:
            continue
        after = text[m.start(1) + end: m.start(1) + end + 1]
        if after.isalnum():  # the number runs on without a separator: not this IBAN
            continue
        compact = "".join(ch for ch in value[:end] if ch.isalnum())
        if iban_ok(compact):
            found.append(PiiMatch("IBAN", m.start(1), m.start(1) + end))
    return found


def _find_national_ids(text: str) -> list[PiiMatch]:
    found = []
    for m in _SSN.finditer(text):
        if ssn_ok(*m.groups()):
            found.append(PiiMatch("NATIONAL_ID", m.start(), m.end(), "US_SSN"))
    for m in _NIR.finditer(text):
        if nir_ok(m.group(1).replace(" ", "")):
            found.append(PiiMatch("NATIONAL_ID", m.start(1), m.end(1), "FR_NIR"))
    for m in _NINO.finditer(text):
        found.append(PiiMatch("NATIONAL_ID", m.start(), m.end(), "UK_NINO"))
    for m in _AADHAAR_GROUPED.finditer(text):
        if verhoeff_ok(_digits(m.group())):
            found.append(PiiMatch("NATIONAL_ID", m.start(), m.end(), "IN_AADHAAR"))
    for m in _AADHAAR_PLAIN.finditer(text):
        if verhoeff_ok(m.group(1)):
            found.append(PiiMatch("NATIONAL_ID", m.start(1), m.end(1), "IN_AADHAAR"))
    return found


def _canonical(kind: str, value: str) -> str:
    if kind == "EMAIL":
        return value.strip().lower()
    return "".join(ch for ch in value if ch.isalnum()).upper()


class Allowlist:
    """Values never redacted: '@domain' entries allow that email domain and its subdomains; other entries
    are literal values, compared on their letters and digits only (so '+33 4 78 00 70 00' = '+33478007000')."""

    def __init__(self, entries: list[str] | tuple[str, ...] = ()) -> None:
        self.domains = tuple(e.strip().lower().lstrip("@") for e in entries if e.strip().startswith("@"))
        self.values = {_canonical("", e) for e in entries if not e.strip().startswith("@")}
        self.emails = {e.strip().lower() for e in entries if "@" in e and not e.strip().startswith("@")}

    def allows(self, kind: str, value: str) -> bool:
        if kind == "EMAIL":
            address = value.lower()
            domain = address.rsplit("@", 1)[-1]
            return address in self.emails or any(domain == d or domain.endswith("." + d) for d in self.domains)
        return bool(self.values) and _canonical(kind, value) in self.values

    def __bool__(self) -> bool:
        return bool(self.domains or self.values or self.emails)


def find_pii(text: str, allowlist: Allowlist | None = None) -> list[PiiMatch]:
    """All personal data in text, without overlaps (checksum-validated kinds win), in text order."""
    candidates = (_find_ibans(text) + _find_cards(text) + _find_national_ids(text)
                  + [PiiMatch("EMAIL", m.start(), m.end()) for m in _EMAIL.finditer(text)] + _find_phones(text))
    candidates.sort(key=lambda c: (_PRIORITY[c.kind], c.start, -(c.end - c.start)))
    chosen: list[PiiMatch] = []
    for c in candidates:
        if any(c.start < k.end and k.start < c.end for k in chosen):
            continue
        if allowlist and allowlist.allows(c.kind, text[c.start:c.end]):
            continue
        chosen.append(c)
    return sorted(chosen, key=lambda c: c.start)


def redact(text: str, allowlist: Allowlist | None = None) -> Redaction:
    """Replace personal data with [EMAIL], [PHONE], [CARD], [IBAN] or [NATIONAL_ID]."""
    matches = find_pii(text, allowlist)
    if not matches:
        return Redaction(text)
    out, last = [], 0
    for m in matches:
        out.append(text[last:m.start])
        out.append(PLACEHOLDER[m.kind])
        last = m.end
    out.append(text[last:])
    return Redaction("".join(out), Counter(m.kind for m in matches))


# The tail of a partial (streamed) text that may still grow into personal data: the last unfinished word
# (it could become an email address) and a trailing run of digits/capitals/separators (a phone, card,
# IBAN or ID number still being written).
_UNSAFE_TAIL = re.compile(r"(?:[+(]?[0-9A-Z](?:[ \t.\-/]?[0-9A-Z()])*[ \t.\-/]?)?\S*$")


_TAIL_WINDOW = 120  # longer than any phone, card, IBAN or ID number with its separators


def safe_prefix_length(text: str) -> int:
    """How much of a partial text can be shown now: everything before a tail that may still become PII."""
    offset = max(0, len(text) - _TAIL_WINDOW)
    m = _UNSAFE_TAIL.search(text, offset)
    return m.start() if m else len(text)
