"""The users file: names, roles, groups and scrypt password hashes (never plain passwords)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
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

    def add(self, name: str, password: str, role: str = "employee", groups: list[str] | None = None,
            replace: bool = False) -> User:
        if not _NAME.match(name):
            raise UserError(f"invalid user name '{name}': use letters, digits, '.', '_' or '-'")
        if role not in ROLES:
            raise UserError(f"invalid role '{role}': use one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise UserError("password too short: use at least 8 characters")
        users = self._read()
        if name in users and not replace:
            raise UserError(f"user '{name}' already exists (use --replace to change it)")
        group_set = sorted({EVERYONE, *(g.strip() for g in groups or [] if g.strip())})
        users[name] = {"role": role, "groups": group_set, "password": hash_password(password)}
        self._write(users)
        return User(name, role, tuple(group_set))

    def update(self, name: str, role: str, groups: list[str] | None = None) -> User:
        """Change a user's role and groups, keeping their password."""
        if role not in ROLES:
            raise UserError(f"invalid role '{role}': use one of {', '.join(ROLES)}")
        users = self._read()
        if name not in users:
            raise UserError(f"no user '{name}'")
        group_set = sorted({EVERYONE, *(g.strip() for g in groups or [] if g.strip())})
        users[name] = {**users[name], "role": role, "groups": group_set}
        self._write(users)
        return User(name, role, tuple(group_set))

    def remove(self, name: str) -> None:
        users = self._read()
        if name not in users:
            raise UserError(f"no user '{name}'")
        del users[name]
        self._write(users)

    def get(self, name: str) -> User:
        users = self._read()
        if name not in users:
            raise UserError(f"no user '{name}' in {self.path}")
        entry = users[name]
        return User(name, entry["role"], tuple(entry["groups"]))

    def list(self) -> list[User]:
        return [User(n, e["role"], tuple(e["groups"])) for n, e in sorted(self._read().items())]

    def authenticate(self, name: str, password: str) -> User | None:
        entry = self._read().get(name)
        if entry is None or not check_password(password, entry["password"]):
            return None
        return User(name, entry["role"], tuple(entry["groups"]))

    def to_dict(self, user: User) -> dict:
        return asdict(user)
