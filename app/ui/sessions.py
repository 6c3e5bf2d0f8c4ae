"""Web sessions that end: after an idle time, after a maximum age, and when the user's account changes.

Gradio keeps its logged-in sessions in `App.tokens` (cookie token -> user name) and reads them with
`tokens.get(token)` on every page, /config, queue and API request. SessionTable replaces that dict: it also records
when each session was issued, when it was last used, and the user's session stamp at login (app/users.py). `get`
answers None - logged out, so Gradio serves the login page or a 401 - when the session is past its idle or absolute
limit, or when the stamp in the users file has changed (password, role or groups changed; user removed or
created again).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from app.users import UserError, UserStore

log = logging.getLogger(__name__)


def cookie_names(gradio_app) -> tuple[str, str]:
    """Gradio's two session cookies (the secure one and the plain-HTTP one), named after the app's cookie_id."""
    cookie_id = getattr(gradio_app, "cookie_id", "")
    return f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"


def session_token(request, gradio_app) -> str | None:
    """The session token a request carries, read as Gradio reads it."""
    return next((request.cookies[name] for name in cookie_names(gradio_app) if request.cookies.get(name)), None)


@dataclass(frozen=True)
class SessionPolicy:
    """How long a session lasts. Defaults: 4 hours without a request, 12 hours at most after login.

    `groundwork serve` reads GROUNDWORK_SESSION_IDLE_MINUTES and GROUNDWORK_SESSION_MAX_HOURS.
    """

    idle_s: float = 4 * 3600
    max_age_s: float = 12 * 3600

    @classmethod
    def from_env(cls) -> SessionPolicy:
        def number(name: str, default: float, scale: float) -> float:
            raw = os.environ.get(name, "").strip()
            try:
                return float(raw) * scale if raw else default
            except ValueError:
                log.warning("%s=%r is not a number; using the default", name, raw)
                return default

        return cls(idle_s=number("GROUNDWORK_SESSION_IDLE_MINUTES", cls.idle_s, 60),
                   max_age_s=number("GROUNDWORK_SESSION_MAX_HOURS", cls.max_age_s, 3600))


@dataclass
class _Session:
    stamp: str | None  # the user's session stamp at login; None: not known (a session Gradio created itself)
    issued: float
    last_seen: float


class SessionTable(dict):
    """Gradio's token table (token -> user name) whose `get` refuses expired and stale sessions."""

    def __init__(self, users: UserStore, policy: SessionPolicy | None = None, clock=time.monotonic) -> None:
        super().__init__()
        self.users = users
        self.policy = policy or SessionPolicy()
        self.clock = clock
        self._meta: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._stamps: dict[str, str] = {}
        self._stamps_key: tuple | None = None

    # --- what Gradio calls ---------------------------------------------------------------------------------

    def get(self, token, default=None):
        if not token:
            return default
        with self._lock:
            name = super().get(token)
            if name is None:
                return default
            meta = self._meta.get(token)
            now = self.clock()
            why = self._invalid(name, meta, now)
            if why:
                self._drop(token)
                log.info("session of %r ended: %s", name, why)
                return default
            meta.last_seen = now
            return name

    def __setitem__(self, token, name) -> None:  # Gradio's own /login (not used while LoginGuard runs)
        self.issue(name, token)

    def __delitem__(self, token) -> None:
        with self._lock:
            self._drop(token)

    def __contains__(self, token) -> bool:
        return self.get(token) is not None

    # --- ours ----------------------------------------------------------------------------------------------

    def issue(self, name: str, token: str) -> None:
        """Record a new session for `name` with their current stamp."""
        stamp = self._current_stamps().get(name)
        now = self.clock()
        with self._lock:
            dict.__setitem__(self, token, name)
            self._meta[token] = _Session(stamp=stamp, issued=now, last_seen=now)
            self._prune(now)

    def end(self, token: str | None) -> str | None:
        """End one session; its user's name, or None if there was none."""
        if not token:
            return None
        with self._lock:
            name = super().get(token)
            self._drop(token)
            return name

    def _invalid(self, name: str, meta: _Session | None, now: float) -> str | None:
        if meta is None or meta.stamp is None:
            return "no session record"
        if now - meta.issued > self.policy.max_age_s:
            return "older than the maximum session age"
        if now - meta.last_seen > self.policy.idle_s:
            return "idle for too long"
        stamp = self._current_stamps().get(name)
        if stamp is None:
            return "the user no longer exists"
        if stamp != meta.stamp:
            return "the account changed (password, role or groups) or was created again"
        return None

    def _current_stamps(self) -> dict[str, str]:
        """The users file's stamps, read again only when the file changed (one stat per request)."""
        try:
            st = os.stat(self.users.path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            return {}
        if key != self._stamps_key:
            try:
                self._stamps = self.users.session_stamps()
            except UserError as exc:  # a broken users file logs nobody in
                log.warning("%s", exc)
                self._stamps = {}
            self._stamps_key = key
        return self._stamps

    def _drop(self, token) -> None:
        dict.pop(self, token, None)
        self._meta.pop(token, None)

    def _prune(self, now: float) -> None:
        """Forget expired sessions (called at each login, so the table cannot grow without bound)."""
        for token, meta in list(self._meta.items()):
            if now - meta.issued > self.policy.max_age_s or now - meta.last_seen > self.policy.idle_s:
                self._drop(token)
