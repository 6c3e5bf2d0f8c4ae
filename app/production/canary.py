"""Canary rollouts: a share of users gets a candidate adapter version, the rest keep the promoted one; guard rules
roll the candidate back on their own when its live figures turn bad.

The state is canary.json beside the users file, written atomically (ingest.files) under a file lock, so the server,
the CLI and the admin tab see one canary. It holds the current (or last) canary and an event log: started,
rolled back (with the rule that fired and the figures), stopped, promoted.

Who gets the candidate: a user is in the candidate arm when sha256(canary id + user name) mod 10,000 is below
share × 100. The hash is stable across processes and restarts (Python's hash() is not), so each user stays in
one arm for the whole canary (a user never sees answers flip between versions), and a new canary draws anew.
Only questions that would have gone to the candidate's adapter NAME (a route naming it, or the default when NAME is
the promoted default), from users of the canary's groups (none = everyone), take part.

Guard rules are checked after every answer (`check`, called by Conversations.ask once the audit record is
written): the figures come from the audit log, counted incrementally (a check reads only the records written
since the last one), and the 👍/👎 on stored turns (re-read every FEEDBACK_REFRESH_S, only when a rule is about
them: a rating can change). A rule compares point estimates as the admin wrote it; the
admin sees the confidence intervals in `groundwork adapters canary --status` and the admin tab (canary_stats).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from filelock import FileLock

from app.production.canary_stats import RATES, ArmTally, Comparison, compare
from ingest.errors import GroundworkError
from ingest.files import atomic_write_json

log = logging.getLogger(__name__)

CANARY_FILE = "canary.json"
RUNNING, ROLLED_BACK, STOPPED, PROMOTED = "running", "rolled back", "stopped", "promoted"
CANDIDATE, CONTROL = "candidate", "control"
MAX_EVENTS = 500  # the event log keeps the newest
# A check re-reads the 👍/👎 of stored turns (every rated turn, each answer parsed: ~20 ms for 1,000) at most this
# often, and only when a rule is about them: a 👎 rule acts on ratings at most this old.
FEEDBACK_REFRESH_S = 30.0
INCREMENTAL_READ = 64  # records a check asks for first (the newest); more only when all of them are new
_RULE = re.compile(r"^\s*([a-z_]+)\s*([+>])\s*([0-9]*\.?[0-9]+)\s*(%?)\s*(?:@\s*([0-9]+))?\s*$")


class CanaryError(GroundworkError):
    """A canary cannot be started, stopped or read; the message is one line for the user."""


@dataclass(frozen=True)
class GuardRule:
    """Roll back when the candidate's rate rises `max_increase_points` percentage points above the control's, or
    passes `max` (a fraction), once the candidate arm (and for an increase, the control arm too) has `min_count`
    observations: answers, or rated answers for thumbs_down_rate."""

    metric: str
    max_increase_points: float | None = None
    max: float | None = None
    min_count: int = 0

    def __post_init__(self) -> None:
        if self.metric not in RATES:
            raise CanaryError(f"unknown guard metric {self.metric!r}: use one of {', '.join(RATES)}")
        if (self.max_increase_points is None) == (self.max is None):
            raise CanaryError(f"a guard rule on {self.metric} needs exactly one of max_increase_points and max")
        if self.max is not None and not 0 <= self.max <= 1:
            raise CanaryError(f"a guard rule's max is a fraction between 0 and 1, not {self.max}")
        if self.min_count < 0:
            raise CanaryError("a guard rule's minimum count cannot be negative")

    @property
    def _count_key(self) -> str:
        return "min_rated" if RATES[self.metric][2] == "rated" else "min_answers"

    @classmethod
    def from_dict(cls, data: dict) -> "GuardRule":
        """{"metric": "refusal_rate", "max_increase_points": 10, "min_answers": 50} or {..., "max": 0.02, ...}."""
        try:
            minimum = data.get("min_answers", data.get("min_rated", data.get("min_count", 0)))
            return cls(metric=str(data["metric"]), max_increase_points=_number(data.get("max_increase_points")),
                       max=_number(data.get("max")), min_count=int(minimum))
        except (KeyError, TypeError, ValueError) as exc:
            raise CanaryError(f"bad guard rule {data!r}: {exc}") from None

    def to_dict(self) -> dict:
        out: dict = {"metric": self.metric}
        if self.max_increase_points is not None:
            out["max_increase_points"] = self.max_increase_points
        if self.max is not None:
            out["max"] = self.max
        out[self._count_key] = self.min_count
        return out

    @classmethod
    def parse(cls, text: str) -> "GuardRule":
        """The CLI's short form: "refusal_rate+10@50" (10 points above the control over at least 50 answers),
        "error_rate>2%@50" or "error_rate>0.02@50" (above 2%), "thumbs_down_rate+15@30" (over 30 rated)."""
        match = _RULE.match(text or "")
        if not match:
            raise CanaryError(f"bad guard rule {text!r}: write e.g. refusal_rate+10@50 or error_rate>2%@50")
        metric, kind, number, percent, minimum = match.groups()
        value = float(number)
        if kind == "+":
            return cls(metric, max_increase_points=value, min_count=int(minimum or 0))
        return cls(metric, max=value / 100 if percent else value, min_count=int(minimum or 0))

    def describe(self) -> str:
        what = RATES[self.metric][0].lower()
        unit = "rated answers" if self._count_key == "min_rated" else "answers"
        limit = (f"+{self.max_increase_points:g} points over the control" if self.max_increase_points is not None
                 else f"above {self.max:.1%}")
        return f"{what} {limit}, after {self.min_count} {unit}"

    def fires(self, candidate: ArmTally, control: ArmTally) -> str | None:
        """Why the rule fires on these figures (one line), or None."""
        events, total = candidate.proportion(self.metric)
        if total == 0 or total < self.min_count:
            return None
        rate = events / total
        if self.max is not None:
            return f"{self.metric} {rate:.1%} ({events}/{total}) > {self.max:.1%}" if rate > self.max else None
        base_events, base_total = control.proportion(self.metric)
        if base_total == 0 or base_total < self.min_count:
            return None
        base = base_events / base_total
        if (rate - base) * 100 > self.max_increase_points:
            return (f"{self.metric} {rate:.1%} ({events}/{total}) vs control {base:.1%} ({base_events}/{base_total}):"
                    f" +{(rate - base) * 100:.1f} points > +{self.max_increase_points:g}")
        return None


def _with_ratings(tally: ArmTally, ratings: ArmTally) -> ArmTally:
    return replace(tally, rated=ratings.rated, thumbs_up=ratings.thumbs_up, thumbs_down=ratings.thumbs_down)


def _number(value) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Canary:
    id: str
    candidate: str  # NAME@vN
    control: str  # NAME@vM: the version promoted when the canary started (the control follows later promotions)
    share: float  # percent of the eligible users in the candidate arm
    groups: tuple[str, ...] = ()  # only users of these groups take part; () = everyone
    rules: tuple[GuardRule, ...] = ()
    status: str = RUNNING
    started_at: float = 0.0
    ended_at: float | None = None
    ended_reason: str | None = None
    started_by: str = ""

    @property
    def name(self) -> str:
        return self.candidate.partition("@")[0]

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def to_dict(self) -> dict:
        data = asdict(self)
        data["groups"] = list(self.groups)
        data["rules"] = [r.to_dict() for r in self.rules]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Canary":
        return cls(id=str(data["id"]), candidate=str(data["candidate"]), control=str(data["control"]),
                   share=float(data["share"]), groups=tuple(data.get("groups") or ()),
                   rules=tuple(GuardRule.from_dict(r) for r in data.get("rules") or ()),
                   status=str(data.get("status", RUNNING)), started_at=float(data.get("started_at", 0.0)),
                   ended_at=data.get("ended_at"), ended_reason=data.get("ended_reason"),
                   started_by=str(data.get("started_by", "")))

    def in_candidate_arm(self, user_name: str) -> bool:
        """Sticky: the same user always lands in the same arm of this canary."""
        digest = hashlib.sha256(f"{self.id}\x00{user_name}".encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % 10_000 < round(self.share * 100)


@dataclass
class CanaryReport:
    """What `--status` and the admin tab show."""

    canary: Canary | None
    candidate: ArmTally
    control: ArmTally
    comparisons: list[Comparison]
    events: list[dict]
    evaluations: dict[str, dict]  # version ref -> its card's evaluation figures (label -> figures)


@dataclass
class _Tallies:
    """The running counts of one canary, as far as the audit log has been read."""

    canary_id: str
    candidate: ArmTally = field(default_factory=ArmTally)
    control: ArmTally = field(default_factory=ArmTally)
    last_id: int = 0  # the newest audit record counted


class CanaryFile:
    """canary.json: start / stop / status / events, `assign` (per question) and `check` (after each answer).

    `registry` (finetune.adapters.AdapterRegistry) tells which version is promoted now: the control arm follows
    it, and a candidate promoted by any means (CLI, admin tab) ends the canary. Without one, the control is the
    version that was promoted when the canary started."""

    def __init__(self, path: Path, registry=None) -> None:
        self.path = Path(path)
        self.registry = registry
        self._lock = threading.Lock()
        self._cache: tuple[tuple, dict] | None = None
        self._tallies: _Tallies | None = None
        self._feedback: tuple[str, float, ArmTally, ArmTally] | None = None  # (canary id, read at, the two arms)
        self.feedback_every_s = FEEDBACK_REFRESH_S

    @classmethod
    def beside(cls, users_file: Path | str, registry=None) -> "CanaryFile":
        """The deployment's canary: canary.json beside the users file (the chat, the CLI and the admin tab)."""
        return cls(Path(users_file).parent / CANARY_FILE, registry)

    # --- the file ------------------------------------------------------------------------------------------
    def _file_lock(self) -> FileLock:
        return FileLock(str(self.path) + ".lock", timeout=10)

    def _read(self) -> dict:
        """The file's contents, re-read only when it changed (one stat per call otherwise)."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return {"canary": None, "events": []}
        key = (info.st_mtime_ns, info.st_size, info.st_ino)
        cached = self._cache
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("canary") is not None:
                Canary.from_dict(data["canary"])  # fails here, not mid-answer, when damaged
        except (OSError, ValueError, KeyError, TypeError, GroundworkError) as exc:
            raise CanaryError(f"{self.path}: unreadable canary file ({exc})") from None
        self._cache = (key, data)
        return data

    def _write(self, canary: Canary | None, events: list[dict]) -> None:
        atomic_write_json(self.path, {"canary": None if canary is None else canary.to_dict(),
                                      "events": events[-MAX_EVENTS:]}, indent=1)
        self._cache = None

    def current(self) -> Canary | None:
        """The running canary, or the last one (ended), or None."""
        data = self._read().get("canary")
        return None if data is None else Canary.from_dict(data)

    def events(self) -> list[dict]:
        """Every event, oldest first: {"at", "canary", "candidate", "event", "rule", "detail", "by"}."""
        return list(self._read().get("events", []))

    def _end(self, expected_id: str | None, status: str, reason: str, by: str = "", rule: GuardRule | None = None,
             only_if_candidate: str | None = None) -> Canary | None:
        """End the running canary (of that id, when given); None when there is none to end."""
        if not self.path.exists():
            return None
        with self._file_lock():
            self._cache = None
            data = self._read()
            canary = None if data.get("canary") is None else Canary.from_dict(data["canary"])
            if canary is None or not canary.running or (expected_id and canary.id != expected_id) \
                    or (only_if_candidate and canary.candidate != only_if_candidate):
                return None
            ended = replace(canary, status=status, ended_at=time.time(), ended_reason=reason)
            event = {"at": ended.ended_at, "canary": canary.id, "candidate": canary.candidate, "event": status,
                     "rule": rule.describe() if rule else None, "detail": reason, "by": by}
            self._write(ended, [*data.get("events", []), event])
        (log.warning if status == ROLLED_BACK else log.info)("canary %s of %s %s: %s", canary.id, canary.candidate,
                                                             status, reason)
        return ended

    # --- admin actions -------------------------------------------------------------------------------------
    def start(self, candidate: str, share: float, groups=(), rules=(), by: str = "") -> Canary:
        """Start a canary of NAME@vN against NAME's promoted version. One canary at a time."""
        name, _, version = candidate.partition("@")
        if not name or not version:
            raise CanaryError(f"name the candidate version, e.g. {candidate or 'NAME'}@v2")
        try:
            share = float(share)
        except (TypeError, ValueError):
            raise CanaryError(f"the share is a percentage, not {share!r}") from None
        if not 0 < share < 100:
            raise CanaryError(f"the share is a percentage between 0 and 100 (exclusive), not {share:g}")
        rules = tuple(r if isinstance(r, GuardRule) else GuardRule.parse(r) if isinstance(r, str)
                      else GuardRule.from_dict(r) for r in rules)
        groups = tuple(sorted({g.strip() for g in groups if g and g.strip()}))
        control = self._promoted(name)
        if self.registry is not None:
            self.registry.get(candidate)  # AdapterError (a GroundworkError) when there is no such version
            if control is None:
                raise CanaryError(f"{name} has no promoted version to compare with: promote one first "
                                  f"(`groundwork adapters promote {name}@vN`)")
            if control == candidate:
                raise CanaryError(f"{candidate} is already the promoted version")
        elif control is None:
            raise CanaryError("a canary needs the adapter registry to know the promoted version")
        with self._file_lock():
            self._cache = None
            data = self._read()
            running = data.get("canary")
            if running is not None and Canary.from_dict(running).running:
                raise CanaryError(f"a canary of {running['candidate']} is running: stop it first "
                                  "(`groundwork adapters canary --stop`)")
            canary = Canary(id=f"{candidate}-{secrets.token_hex(4)}", candidate=candidate, control=control,
                            share=share, groups=groups, rules=rules, started_at=time.time(), started_by=by)
            event = {"at": canary.started_at, "canary": canary.id, "candidate": candidate, "event": "started",
                     "rule": None, "by": by,
                     "detail": f"{share:g}% of {', '.join(groups) if groups else 'all users'} against {control}; "
                               f"guard rules: {'; '.join(r.describe() for r in rules) or 'none'}"}
            self._write(canary, [*data.get("events", []), event])
        log.info("canary %s started: %s", canary.id, event["detail"])
        return canary

    def stop(self, reason: str = "stopped by the admin", by: str = "") -> Canary:
        """Stop the running canary: everyone gets the promoted version again."""
        ended = self._end(None, STOPPED, reason, by)
        if ended is None:
            raise CanaryError("no canary is running")
        return ended

    def promoted(self, ref: str, by: str = "") -> Canary | None:
        """`adapters promote ref` happened: a running canary of that version ends (it is now everyone's)."""
        return self._end(None, PROMOTED, f"{ref} promoted: now the version for everyone", by,
                         only_if_candidate=ref)

    # --- per question --------------------------------------------------------------------------------------
    def _promoted(self, name: str) -> str | None:
        if self.registry is None:
            canary = self.current()
            return canary.control if canary is not None and canary.name == name else None
        version = self.registry.state(name).get("promoted")
        return f"{name}@{version}" if version else None

    def _default_name(self) -> str | None:
        """The name of the registry's default adapter (the most recently promoted), as AdapterRegistry.default()
        picks it, from the state files alone (default() also reads every version's card: 3-4x the cost)."""
        newest: tuple[float, str] | None = None
        for name in self.registry.names():
            try:
                state = self.registry.state(name)
            except GroundworkError:
                continue
            promoted = state.get("promoted")
            if promoted and (self.registry.root / name / "versions" / promoted).is_dir():
                if newest is None or state.get("promoted_at", 0) > newest[0]:
                    newest = (state.get("promoted_at", 0), name)
        return newest[1] if newest else None

    def assign(self, user, adapter: str | None) -> tuple[str | None, str | None]:
        """(adapter to use, arm) for a question of `user` that would go to `adapter` (None = the default).

        The arm is "candidate" or "control" when the running canary applies, else None (adapter unchanged). A
        damaged canary file or registry is logged and leaves the question as routed: answering goes on.
        """
        try:
            return self._assign(user, adapter)
        except GroundworkError as exc:
            log.error("canary not applied: %s", exc)
            return adapter, None

    def _assign(self, user, adapter: str | None) -> tuple[str | None, str | None]:
        data = self._read()
        if data.get("canary") is None or data["canary"].get("status") != RUNNING:
            return adapter, None
        canary = Canary.from_dict(data["canary"])
        if canary.groups and not set(canary.groups) & set(user.groups):
            return adapter, None
        control = self._promoted(canary.name) or canary.control
        if control == canary.candidate:  # promoted meanwhile (e.g. in the admin tab): it is everyone's now
            return adapter, None
        if self.registry is not None and not (self.registry.root / canary.name / "versions"
                                              / canary.candidate.partition("@")[2]).is_dir():
            return adapter, None  # the candidate was removed: nobody is sent to a version that is not there
        if adapter is None:
            if self.registry is not None and self._default_name() != canary.name:
                return adapter, None
        elif adapter != canary.name and adapter != control:
            return adapter, None
        if canary.in_candidate_arm(user.name):
            return canary.candidate, CANDIDATE
        return control, CONTROL

    # --- figures and guard rules ---------------------------------------------------------------------------
    def _read_audit(self, audit, canary: Canary, tallies: _Tallies) -> None:
        """Add the records written since the last read to the running counts.

        Writers are serialized (BEGIN IMMEDIATE), so record ids grow in commit order: the records not counted yet
        are exactly those above the last counted id. They are the newest, so a read asks for the newest few and
        widens only when all of them are new (the first read of a process takes everything at once)."""
        limit = None if tallies.last_id == 0 else INCREMENTAL_READ
        while True:
            batch = audit.query(since=canary.started_at, until=canary.ended_at, limit=limit)
            new = [r for r in batch if r.id > tallies.last_id]
            if limit is None or len(batch) < limit or len(new) < len(batch):
                break
            limit *= 8
        for record in new:
            if record.arm == CANDIDATE:
                tallies.candidate.add(record)
            elif record.arm == CONTROL:
                tallies.control.add(record)
        tallies.last_id = max([tallies.last_id, *(r.id for r in new)])

    @staticmethod
    def _read_feedback(store, canary: Canary, candidate: ArmTally, control: ArmTally) -> None:
        """👍/👎 given since the canary started on answers of either arm (the stored Answer keeps its arm)."""
        for record in store.feedback_records():
            if record.rated_at is not None and record.rated_at < canary.started_at:
                continue
            arm = getattr(record.answer, "arm", None)
            if arm == CANDIDATE:
                candidate.rate(record.rating)
            elif arm == CONTROL:
                control.rate(record.rating)

    def tallies(self, audit, store=None, canary: Canary | None = None) -> tuple[ArmTally, ArmTally]:
        """(candidate, control) counts of the canary (default: the current one), read afresh."""
        canary = canary or self.current()
        fresh = _Tallies(canary.id if canary else "")
        if canary is not None:
            self._read_audit(audit, canary, fresh)
            if store is not None:
                self._read_feedback(store, canary, fresh.candidate, fresh.control)
        return fresh.candidate, fresh.control

    def check(self, audit, store=None) -> Canary | None:
        """Evaluate the guard rules of the running canary; roll it back when one fires. Returns the rolled-back
        (or, when its candidate was promoted elsewhere, the ended) canary, else None. Never raises: a failing check
        is logged and must not fail the answer it follows."""
        try:
            return self._check(audit, store)
        except Exception:  # noqa: BLE001 - the answer was given; the check is retried after the next one
            log.exception("canary check failed")
            return None

    def _check(self, audit, store) -> Canary | None:
        data = self._read()
        if data.get("canary") is None or data["canary"].get("status") != RUNNING:
            return None
        canary = Canary.from_dict(data["canary"])
        if self.registry is not None and self._promoted(canary.name) == canary.candidate:
            return self.promoted(canary.candidate, by="registry")
        if not canary.rules:
            return None
        with self._lock:
            if self._tallies is None or self._tallies.canary_id != canary.id:
                self._tallies = _Tallies(canary.id)
            tallies = self._tallies
            self._read_audit(audit, canary, tallies)
            candidate, control = tallies.candidate, tallies.control
            if store is not None and any(RATES[r.metric][2] == "rated" for r in canary.rules):
                now = time.monotonic()
                cached = self._feedback
                if cached is None or cached[0] != canary.id or now - cached[1] >= self.feedback_every_s:
                    cached = (canary.id, now, ArmTally(), ArmTally())
                    self._read_feedback(store, canary, cached[2], cached[3])
                    self._feedback = cached
                candidate, control = _with_ratings(candidate, cached[2]), _with_ratings(control, cached[3])
        for rule in canary.rules:
            reason = rule.fires(candidate, control)
            if reason:
                return self._end(canary.id, ROLLED_BACK, reason, by="guard rule", rule=rule)
        return None

    def report(self, audit, store=None, with_latency_intervals: bool = True) -> CanaryReport:
        """Both arms side by side (the figures up to the canary's end when it has ended), and the events."""
        canary = self.current()
        candidate, control = self.tallies(audit, store, canary)
        evaluations: dict[str, dict] = {}
        if canary is not None and self.registry is not None:
            control_ref = (self._promoted(canary.name) or canary.control) if canary.running else canary.control
            for ref in (canary.candidate, control_ref):
                try:
                    evaluations[ref] = dict(self.registry.get(ref).card.get("evaluation") or {})
                except GroundworkError:
                    evaluations[ref] = {}
        return CanaryReport(canary, candidate, control, compare(candidate, control, with_latency_intervals),
                            self.events(), evaluations)
