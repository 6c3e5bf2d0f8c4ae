"""Document permissions: an ACL file maps path globs to the groups allowed to read matching documents.

Format (TOML), rules tried in order, the first matching glob wins; globs are matched with fnmatch
against the POSIX path relative to the ingested folder, where `*` also matches `/`:

    default = ["everyone"]

    [[rules]]
    glob = "hr/confidential/*"
    groups = ["hr"]
"""
from __future__ import annotations

import fnmatch
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ingest.errors import GroundworkError

EVERYONE = "everyone"


class AclError(GroundworkError, ValueError):
    """The ACL file is malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class AclRule:
    glob: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class AclRules:
    """Ordered glob rules plus the default groups for unmatched documents."""

    rules: tuple[AclRule, ...] = ()
    default: tuple[str, ...] = (EVERYONE,)
    source_text: str = field(default="", compare=False)

    def groups_for(self, relative_path: str) -> tuple[str, ...]:
        for rule in self.rules:
            if fnmatch.fnmatchcase(relative_path, rule.glob):
                return rule.groups
        return self.default

    @classmethod
    def parse(cls, text: str, origin: str = "ACL rules") -> "AclRules":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise AclError(f"{origin}: not valid TOML ({exc})") from None
        default = _groups(data.get("default", [EVERYONE]), f"{origin}: default")
        rules = []
        for i, raw in enumerate(data.get("rules", []), start=1):
            if not isinstance(raw, dict) or not isinstance(raw.get("glob"), str) or not raw["glob"]:
                raise AclError(f"{origin}: rule {i} needs a non-empty string 'glob'")
            rules.append(AclRule(glob=raw["glob"], groups=_groups(raw.get("groups"), f"{origin}: rule {i}")))
        unknown = set(data) - {"default", "rules"}
        if unknown:
            raise AclError(f"{origin}: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(rules=tuple(rules), default=default, source_text=text)

    @classmethod
    def load(cls, path: Path) -> "AclRules":
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise AclError(f"{path}: cannot read the ACL file ({exc.strerror})") from None
        return cls.parse(text, origin=str(path))


def _groups(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(g, str) and g.strip() for g in value):
        raise AclError(f"{where}: 'groups' must be a non-empty list of group names")
    return tuple(sorted({g.strip() for g in value}))


def encode_groups(groups: tuple[str, ...]) -> str:
    return json.dumps(sorted(groups))
