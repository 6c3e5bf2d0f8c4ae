"""The users file: names, roles, groups and scrypt password hashes (never plain passwords).

Each user also has a session stamp: a random value replaced whenever their password, role or groups change or the
name is removed and created again. A web session records the stamp it was issued with and ends when the stamp no
longer matches (app/ui/sessions.py), so such a change logs the person out everywhere on their next request.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from ingest.acl import EVERYONE
from ingest.errors import GroundworkError
from ingest.files import atomic_write_json

ROLES = ("employee", "admin")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class UserError(GroundworkError, ValueError):
    """A bad user operation; the message is one line for the user."""


@dataclass(frozen=True)
class User:
    name: str
    role: str = "employee"
    groups: tuple[str, ...] = (EVERYONE,)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


ANONYMOUS = User(name="anonymous", role="employee", groups=(EVERYONE,))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt${n}${r}${p}${salt}${digest}".format(**_SCRYPT, salt=base64.b64encode(salt).decode(),
                                                       digest=base64.b64encode(digest).decode())


_dummy_hash: str | None = None
_dummy_lock = threading.Lock()


def dummy_hash() -> str:
    """A hash no password matches, checked for unknown names so that they cost as much as known ones."""
    global _dummy_hash
    with _dummy_lock:
        if _dummy_hash is None:
            _dummy_hash = hash_password(secrets.token_urlsafe(24))
        return _dummy_hash


def new_stamp() -> str:
    return secrets.token_urlsafe(12)


def check_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        candidate = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), dklen=32,
                                   n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(candidate, base64.b64decode(digest))


class UserStore:
    """A JSON file of users, rewritten atomically on every change."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))["users"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"{self.path}: not a valid users file ({exc})") from None

    def _write(self, users: dict[str, dict]) -> None:
        atomic_write_json(self.path, {"users": users}, mode=0o600, indent=2, sort_keys=True)

    def add(self, name: str, password: str, role: str | None = None, groups: list[str] | None = None,
            replace: bool = False) -> User:
        """Add a user; with replace=True change an existing one (a role or groups not given are kept)."""
        if not _NAME.match(name):
            raise UserError(f"invalid user name '{name}': use letters, digits, '.', '_' or '-'")
        if role is not None and role not in ROLES:
            raise UserError(f"invalid role '{role}': use one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise UserError("password too short: use at least 8 characters")
        users = self._read()
        old = users.get(name)
        if old is not None and not replace:
            raise UserError(f"user '{name}' already exists (use --replace to change it)")
        role = role if role is not None else (old["role"] if old else "employee")
        group_set = _groups(groups) if groups is not None or old is None else list(old["groups"])
        if old is not None:
            _keep_an_admin(users, name, role)
        users[name] = {"role": role, "groups": group_set, "password": hash_password(password), "session": new_stamp()}
        if old is not None and old.get("tokens"):  # API tokens (app/api_tokens.py) survive a password change
            users[name]["tokens"] = old["tokens"]
        self._write(users)
        return User(name, role, tuple(group_set))

    def update(self, name: str, role: str, groups: list[str] | None = None) -> User:
        """Change a user's role and groups, keeping their password (their sessions end if either changes)."""
        if role not in ROLES:
            raise UserError(f"invalid role '{role}': use one of {', '.join(ROLES)}")
        users = self._read()
        if name not in users:
            raise UserError(f"no user '{name}'")
        _keep_an_admin(users, name, role)
        group_set = _groups(groups)
        entry = users[name]
        changed = entry["role"] != role or list(entry["groups"]) != group_set
        users[name] = {**entry, "role": role, "groups": group_set,
                       "session": new_stamp() if changed else entry.get("session", "")}
        self._write(users)
        return User(name, role, tuple(group_set))

    def remove(self, name: str) -> None:
        users = self._read()
        if name not in users:
            raise UserError(f"no user '{name}'")
        _keep_an_admin(users, name, None)
        del users[name]
        self._write(users)

    def session_stamps(self) -> dict[str, str]:
        """Each user's current session stamp ('' for entries written before stamps existed)."""
        return {name: entry.get("session", "") for name, entry in self._read().items()}

    def get(self, name: str) -> User:
        users = self._read()
        if name not in users:
            raise UserError(f"no user '{name}' in {self.path}")
        entry = users[name]
        return User(name, entry["role"], tuple(entry["groups"]))

    def list(self) -> list[User]:
        return [User(n, e["role"], tuple(e["groups"])) for n, e in sorted(self._read().items())]

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if the password is theirs. An unknown name costs one scrypt too (checked against a dummy
        hash), so the time taken does not tell which names exist."""
        entry = self._read().get(name)
        if entry is None:
            check_password(password, dummy_hash())
            return None
        if not check_password(password, entry["password"]):
            return None
        return User(name, entry["role"], tuple(entry["groups"]))

    def to_dict(self, user: User) -> dict:
        return asdict(user)


def _groups(groups: list[str] | None) -> list[str]:
    return sorted({EVERYONE, *(g.strip() for g in groups or [] if g.strip())})


def _keep_an_admin(users: dict[str, dict], name: str, new_role: str | None) -> None:
    """Refuse a change (new_role None: removal) that would leave the users file without an admin."""
    if users.get(name, {}).get("role") != "admin" or new_role == "admin":
        return
    if not any(entry.get("role") == "admin" for other, entry in users.items() if other != name):
        action = "remove" if new_role is None else "demote"
        raise UserError(f"refusing to {action} '{name}': they are the last admin (make another user admin first)")
