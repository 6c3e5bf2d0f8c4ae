"""Backoff for failed sign-ins, per user name and per client address.

After `free` failures in a row a key is locked for `base_s`, then twice as long after each further failure, up to
`max_s`. While locked, sign-ins for that key are refused without checking the password (the right one too), so
guessing costs the attacker time and the server nothing. A success clears the user name's count (not the client's:
an attacker with one account of their own could otherwise reset it); counts are forgotten after `forget_s` without a
failure. Unknown user names are counted like known ones, so a lockout does not tell which names exist.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    free: int  # failures allowed before the first lockout
    base_s: float
    max_s: float
    forget_s: float = 1800.0

    def lock_for(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return min(self.max_s, self.base_s * 2 ** (failures - self.free))


@dataclass(frozen=True)
class ThrottlePolicy:
    # a user name: 5 tries, then 2 s, 4 s, 8 s ... up to 5 minutes (50 guesses take hours, not seconds)
    user: Backoff = Backoff(free=5, base_s=2.0, max_s=300.0)
    # a client address (an office behind one NAT shares it): 20 tries, then 1 s, 2 s ... up to 5 minutes
    client: Backoff = Backoff(free=20, base_s=1.0, max_s=300.0)
    max_keys: int = 10_000  # counters kept at most per kind (oldest forgotten first)


@dataclass
class _Count:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    def __init__(self, policy: ThrottlePolicy | None = None, clock=time.monotonic) -> None:
        self.policy = policy or ThrottlePolicy()
        self.clock = clock
        self._lock = threading.Lock()
        self._users: dict[str, _Count] = {}
        self._clients: dict[str, _Count] = {}

    def client_wait(self, client: str) -> float:
        """Seconds until `client` may try again (0: now)."""
        return self._wait(self._clients, client, self.policy.client)

    def user_wait(self, name: str) -> float:
        return self._wait(self._users, _key(name), self.policy.user)

    def failed(self, name: str, client: str) -> tuple[int, int]:
        """Count a failure; the user name's and the client's failure counts."""
        return (self._fail(self._users, _key(name), self.policy.user),
                self._fail(self._clients, client, self.policy.client))

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._users.pop(_key(name), None)

    def _wait(self, table: dict[str, _Count], key: str, backoff: Backoff) -> float:
        now = self.clock()
        with self._lock:
            count = table.get(key)
            if count is None:
                return 0.0
            if now - count.last_failure > backoff.forget_s and now >= count.locked_until:
                del table[key]
                return 0.0
            return max(0.0, count.locked_until - now)

    def _fail(self, table: dict[str, _Count], key: str, backoff: Backoff) -> int:
        now = self.clock()
        with self._lock:
            count = table.pop(key, None) or _Count()
            if now - count.last_failure > backoff.forget_s and now >= count.locked_until:
                count = _Count()
            count.failures += 1
            count.last_failure = now
            count.locked_until = max(count.locked_until, now + backoff.lock_for(count.failures))
            table[key] = count  # re-inserted: the dict's order is the order of last failure
            while len(table) > self.policy.max_keys:
                del table[next(iter(table))]
            return count.failures


def _key(name: str) -> str:
    return name.strip().lower()[:128]
