"""Per-user API tokens for the OpenAI-compatible API (app/api/): created, listed and revoked from the CLI, checked
on every /v1 request.

A token reads `gw_<id>_<secret>`: the id (8 hex characters) names it in listings and revocations, the secret is 32
random bytes (secrets.token_urlsafe). Only sha256(secret) is kept: a random 256-bit secret needs no slow hash, and
the check is a constant-time compare of digests.

Tokens live in the users file, in their user's entry (`"tokens": {id: {"sha256", "label", "created"}}`), not in a
file of their own: removing the user removes their tokens in the same atomic write, and a name removed and created
again starts with none. A password or group change keeps them (they are credentials an admin issued, revoked on
their own); the permissions they carry are always the user's groups at the time of each request.

No "last used" time is written: the server would rewrite the users file on every request, racing the CLI's and
the admin tab's edits (a revoke could be lost); the audit log records every API question with its user.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from app.users import User, UserError, UserStore

PREFIX = "gw"
_TOKEN = re.compile(r"gw_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
MAX_LABEL = 200


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: never its secret."""

    id: str
    user: str
    label: str
    created: float


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


class ApiTokens:
    """The tokens in a users file (see the module docstring)."""

    def __init__(self, users: UserStore) -> None:
        self.users = users

    def create(self, name: str, label: str = "") -> tuple[TokenInfo, str]:
        """A new token for an existing user: its info and the token itself (shown once, never stored)."""
        label = " ".join(label.split())
        if len(label) > MAX_LABEL:
            raise UserError(f"label too long: at most {MAX_LABEL} characters")
        entries = self.users._read()
        if name not in entries:
            raise UserError(f"no user '{name}' in {self.users.path}")
        taken = {token_id for entry in entries.values() for token_id in entry.get("tokens", {})}
        token_id = secrets.token_hex(4)
        while token_id in taken:  # ids are unique across users: a token names its user through its id
            token_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        info = TokenInfo(token_id, name, label, time.time())
        tokens = dict(entries[name].get("tokens", {}))
        tokens[token_id] = {"sha256": _digest(secret), "label": label, "created": info.created}
        entries[name] = {**entries[name], "tokens": tokens}
        self.users._write(entries)
        return info, f"{PREFIX}_{token_id}_{secret}"

    def list(self, name: str | None = None) -> list[TokenInfo]:
        """Every user's tokens (or one user's), oldest first."""
        entries = self.users._read()
        if name is not None and name not in entries:
            raise UserError(f"no user '{name}' in {self.users.path}")
        found = [TokenInfo(token_id, user, str(token.get("label", "")), float(token.get("created", 0)))
                 for user, entry in entries.items() if name is None or user == name
                 for token_id, token in entry.get("tokens", {}).items()]
        return sorted(found, key=lambda t: (t.created, t.id))

    def revoke(self, name: str, token_id: str) -> TokenInfo:
        """Remove one of the user's tokens; the next request with it is refused (401)."""
        entries = self.users._read()
        if name not in entries:
            raise UserError(f"no user '{name}' in {self.users.path}")
        tokens = dict(entries[name].get("tokens", {}))
        token = tokens.pop(token_id.strip(), None)
        if token is None:
            raise UserError(f"user '{name}' has no token '{token_id}' (see `groundwork users tokens {name}`)")
        entries[name] = {**entries[name], "tokens": tokens}
        self.users._write(entries)
        return TokenInfo(token_id.strip(), name, str(token.get("label", "")), float(token.get("created", 0)))

    def authenticate(self, token: str) -> User | None:
        """The token's user, with their role and groups as the users file says now; None for anything else
        (malformed, unknown, revoked, or its user removed)."""
        match = _TOKEN.fullmatch(token or "")
        if match is None:
            return None
        token_id, secret = match.groups()
        digest = _digest(secret)
        for name, entry in self.users._read().items():
            stored = entry.get("tokens", {}).get(token_id)
            if stored is not None:
                if hmac.compare_digest(str(stored.get("sha256", "")), digest):
                    return User(name, entry["role"], tuple(entry["groups"]))
                return None
        return None
