"""Canary rollouts: sticky assignment with the asked share, both arms' live figures with their intervals, a bad
candidate rolled back by a guard rule within the configured count (then it gets no traffic), promote ends the
canary, the CLI's --status shows both arms, and the admin tab's handlers refuse employees on the server."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from conftest import HR_DOCS, build_corpus
from fakes import FakeGenerator
from typer.testing import CliRunner
from ui_support import make_adapters

from app.audit import AuditLog
from app.cli import cli
from app.conversations.service import Conversations, TurnResult
from app.conversations.store import ConversationStore
from app.engine import Answer, Engine, EngineConfig
from app.production.canary import (CANDIDATE, CONTROL, PROMOTED, ROLLED_BACK, RUNNING, STOPPED, CanaryError,
                                   CanaryFile, GuardRule)
from app.production.canary_stats import ArmTally, bootstrap_quantile_difference, newcombe, wilson
from app.ui.admin_canary import show_canary, start_canary, stop_canary
from app.users import User, UserStore
from finetune.adapters import AdapterRegistry
from finetune.prompt import NOT_FOUND
from ingest.embedding import Embedder

PASSWORD = "long-enough-password"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def registry(tmp_path) -> AdapterRegistry:
    """acme v1 (promoted: the default) and v2 (the candidate); helpdesk v1 promoted before acme."""
    make_adapters(tmp_path / "adapters", {"helpdesk": 1, "acme": 2})
    registry = AdapterRegistry(tmp_path / "adapters")
    assert registry.default().ref == "acme@v1"
    return registry


def users(n: int, groups=("everyone",)) -> list[User]:
    return [User(name=f"user{i:04d}", groups=tuple(groups)) for i in range(n)]


# --- who gets the candidate -------------------------------------------------------------------------------------

def test_assignment_is_sticky_per_user_and_gives_the_share_asked(tmp_path, registry) -> None:
    canary = CanaryFile(tmp_path / "canary.json", registry)
    canary.start("acme@v2", 10)
    people = users(2000)
    first = [canary.assign(u, None) for u in people]
    assert {arm for _, arm in first} == {CANDIDATE, CONTROL}
    assert all(adapter == ("acme@v2" if arm == CANDIDATE else "acme@v1") for adapter, arm in first)
    share = sum(arm == CANDIDATE for _, arm in first) / len(people)
    assert 0.07 <= share <= 0.13, share
    # sticky: again, in another process's instance (a stable hash, not Python's salted hash()), via the route's NAME
    again = CanaryFile(tmp_path / "canary.json", registry)
    assert [again.assign(u, "acme") for u in people] == first
    assert [canary.assign(u, None) for u in people] == first
    # questions routed elsewhere are not part of the canary
    assert canary.assign(people[0], "helpdesk") == ("helpdesk", None)
    assert canary.assign(people[0], "none") == ("none", None)
    # a damaged canary file does not stop answering: the question goes where it was routed
    (tmp_path / "canary.json").write_text("{not json")
    assert canary.assign(people[0], "acme") == ("acme", None)


def test_only_the_canary_groups_take_part_and_a_new_canary_draws_anew(tmp_path, registry) -> None:
    canary = CanaryFile(tmp_path / "canary.json", registry)
    canary.start("acme@v2", 50, groups=["hr"])
    assert canary.assign(User("bob", groups=("everyone",)), None) == (None, None)
    hr = users(400, groups=("everyone", "hr"))
    first = [canary.assign(u, None)[1] for u in hr]
    assert set(first) == {CANDIDATE, CONTROL}
    canary.stop()
    assert canary.assign(hr[0], None) == (None, None)  # stopped: everyone gets the promoted version
    canary.start("acme@v2", 50, groups=["hr"])
    assert [canary.assign(u, None)[1] for u in hr] != first


def test_start_refuses_what_cannot_be_a_canary(tmp_path, registry) -> None:
    canary = CanaryFile(tmp_path / "canary.json", registry)
    for candidate, share, message in (("acme", 10, "name the candidate version"),
                                      ("acme@v1", 10, "already the promoted version"),
                                      ("acme@v2", 0, "between 0 and 100"),
                                      ("acme@v9", 10, "no version")):
        with pytest.raises(Exception, match=message):
            canary.start(candidate, share)
    with pytest.raises(CanaryError, match="unknown guard metric"):
        canary.start("acme@v2", 10, rules=["latency+1@5"])
    canary.start("acme@v2", 10)
    with pytest.raises(CanaryError, match="is running: stop it first"):
        canary.start("acme@v2", 20)


def test_guard_rules_read_as_written() -> None:
    assert GuardRule.parse("refusal_rate+10@50") == GuardRule("refusal_rate", max_increase_points=10, min_count=50)
    assert GuardRule.parse("error_rate>2%@50") == GuardRule("error_rate", max=0.02, min_count=50)
    assert GuardRule.parse("error_rate > 0.02 @ 50") == GuardRule("error_rate", max=0.02, min_count=50)
    rule = GuardRule.from_dict({"metric": "thumbs_down_rate", "max_increase_points": 15, "min_rated": 30})
    assert rule.to_dict() == {"metric": "thumbs_down_rate", "max_increase_points": 15, "min_rated": 30}
    assert GuardRule.from_dict(rule.to_dict()) == rule
    for bad in ("refusal_rate", "refusal_rate*10@5", "nonsense+1@1"):
        with pytest.raises(CanaryError):
            GuardRule.parse(bad)


# --- the intervals ----------------------------------------------------------------------------------------------

def test_intervals_match_published_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II example (a): 56/70 vs 48/80, method 10
    low, high = newcombe(56, 70, 48, 80)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    # Wilson score interval of 0/10 and of 81/263 (Newcombe 1998b, Wilson 1927)
    assert tuple(round(x, 4) for x in wilson(0, 10)) == (0.0, 0.2775)
    assert tuple(round(x, 4) for x in wilson(81, 263)) == (0.2553, 0.3662)
    assert all(math.isnan(x) for x in newcombe(1, 0, 1, 10))  # an empty arm: no interval, not a made-up one
    # bootstrap: fixed seed (same data, same interval); a constant shift is found exactly
    a, b = [1.0 + 0.01 * (i % 7) for i in range(200)], [0.5 + 0.01 * (i % 7) for i in range(200)]
    interval = bootstrap_quantile_difference(a, b)
    assert interval == bootstrap_quantile_difference(a, b)
    assert interval[0] <= 0.5 <= interval[1] and interval[1] - interval[0] < 0.1


# --- a bad candidate, live --------------------------------------------------------------------------------------

class RememberingEmbedder(Embedder):
    """The session's real embedder, remembering each text's vector: the tests ask one question hundreds of times
    and the canary, not retrieval, is what they check."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__()
        self.__dict__["model"] = inner.model
        self.seen: dict[str, np.ndarray] = {}

    def encode(self, texts):
        missing = [t for t in texts if t not in self.seen]
        if missing:
            self.seen.update(zip(missing, super().encode(missing)))
        return np.stack([self.seen[t] for t in texts]) if texts else super().encode(texts)


@pytest.fixture
def deployment(tmp_path, registry, _shared_embedder, monkeypatch):
    """A real engine and conversation service; the generator backend loads, per adapter folder, a FakeGenerator
    that always refuses for acme@v2 (the bad candidate) and answers from the passages for the others."""
    from app import engine as engine_module

    index = build_corpus(tmp_path, _shared_embedder, HR_DOCS)
    bad = registry.get("acme@v2").path
    loaded: dict = {}
    monkeypatch.setitem(engine_module.GENERATOR_BACKENDS, "fake-per-adapter",
                        lambda model, quantize, folder: loaded.setdefault(
                            folder, FakeGenerator(NOT_FOUND) if folder == bad else FakeGenerator()))
    engine = Engine(EngineConfig(index_dir=index, adapters_dir=registry.root, generator="fake-per-adapter",
                                 decoding="free"), embedder=RememberingEmbedder(_shared_embedder))
    store = UserStore(tmp_path / "users.json")
    store.add("admin", PASSWORD, role="admin")
    store.add("alice", PASSWORD)
    service = Conversations.beside(engine, tmp_path / "users.json")
    assert service.canary is not None and service.router.canary is service.canary
    return SimpleNamespace(root=tmp_path, service=service, registry=registry, users=store)


def ask(service: Conversations, user: User, question: str = "How many days of annual leave do I get?") -> Answer:
    result = list(service.ask(user, question, keep=True))[-1]
    assert isinstance(result, TurnResult)
    return result.answer


def test_a_candidate_that_always_refuses_is_rolled_back_by_its_guard_rule(deployment) -> None:
    service = deployment.service
    canary = service.canary
    canary.start("acme@v2", 25, rules=["refusal_rate+10@20", "error_rate>2%@20"])
    people = users(2000)
    asked = 0
    for user in people:
        answer = ask(service, user)
        asked += 1
        if answer.arm == CANDIDATE:
            assert answer.adapter == "acme@v2" and answer.refused
        elif answer.arm == CONTROL:
            assert answer.adapter == "acme@v1" and not answer.refused
        if canary.current().status != RUNNING:
            break
    ended = canary.current()
    assert ended.status == ROLLED_BACK, f"not rolled back after {asked} questions"
    candidate = deployment.service.audit.query(arm=CANDIDATE)
    control = deployment.service.audit.query(arm=CONTROL)
    assert len(candidate) == 20  # rolled back on the answer that reached the rule's count
    assert len(control) >= 20 and all(not r.refused for r in control)
    event = canary.events()[-1]
    assert event["event"] == ROLLED_BACK and event["rule"].startswith("refusals +10 points")
    assert "refusal_rate 100.0% (20/20)" in event["detail"] and event["by"] == "guard rule"
    # from now on the candidate gets no traffic: the same users get the promoted version, no arm
    for user in [u for u in people[:asked] if canary.current().in_candidate_arm(u.name)][:10]:
        answer = ask(service, user)  # users who had the candidate
        assert answer.adapter == "acme@v1" and answer.arm is None and not answer.refused
    assert len(deployment.service.audit.query(arm=CANDIDATE)) == 20
    # the report keeps the canary's figures: the refusal difference is +100 points, its interval excludes 0
    report = canary.report(service.audit, service.store)
    refusals = next(c for c in report.comparisons if c.metric == "refusal_rate")
    assert refusals.difference == pytest.approx(1.0) and refusals.interval[0] > 0.8
    assert report.candidate.answers == 20 and report.control.answers == len(control)


def test_thumbs_down_rule_counts_the_feedback_of_each_arm(deployment) -> None:
    service = deployment.service
    canary = service.canary
    canary.start("acme@v2", 50, rules=["thumbs_down_rate+15@5"])
    canary.feedback_every_s = 0  # every check re-reads the ratings (the server's default is every 30 s)
    rated = {CANDIDATE: 0, CONTROL: 0}
    for user in users(200):
        result = list(service.ask(user, "How many days of annual leave do I get?"))[-1]
        arm = result.answer.arm
        if rated[arm] < 5:
            # the candidate's answers are disliked, the control's liked
            service.feedback(user, result.turn_id, -1 if arm == CANDIDATE else 1)
            rated[arm] += 1
        if min(rated.values()) == 5:
            break
    assert canary.current().status == RUNNING  # feedback alone does not check; the next answer does
    ask(service, users(1)[0])
    assert canary.current().status == ROLLED_BACK
    assert "thumbs_down_rate 100.0% (5/5) vs control 0.0% (0/5)" in canary.events()[-1]["detail"]


def test_promote_ends_the_canary_with_the_candidate_for_everyone(deployment) -> None:
    service, root = deployment.service, deployment.root
    service.canary.start("acme@v2", 10)
    result = CliRunner().invoke(cli, ["adapters", "promote", "acme@v2", "--adapters", str(deployment.registry.root),
                                      "--users", str(root / "users.json")])
    assert result.exit_code == 0, result.output
    assert "canary of acme@v2 has ended" in result.output
    assert service.canary.current().status == PROMOTED
    assert service.canary.events()[-1]["event"] == PROMOTED
    for user in users(30):
        answer = ask(service, user)
        assert answer.adapter == "acme@v2" and answer.arm is None


def test_promoting_the_candidate_elsewhere_also_ends_it(deployment) -> None:
    """The admin tab's Promote goes to the registry directly: the next answer's check sees it."""
    service = deployment.service
    service.canary.start("acme@v2", 10)
    deployment.registry.promote("acme@v2")
    answer = ask(service, users(1)[0])
    assert answer.adapter == "acme@v2" and answer.arm is None
    assert service.canary.current().status == PROMOTED


# --- the CLI ----------------------------------------------------------------------------------------------------

def _record(audit: AuditLog, user: str, arm: str, adapter: str, refused: bool, latency: float) -> None:
    answer = Answer(question="q", answer="" if refused else "a [1].", refused=refused,
                    refusal_reason="model found no answer in the passages" if refused else None, citations=[],
                    retrieved=[], flags=[], timings={"total": latency, "first_token": latency / 4}, user=user,
                    adapter=adapter, arm=arm)
    audit.record(answer, User(user), "web")


def canary_cli(root: Path, registry: AdapterRegistry, *args: str):
    return CliRunner().invoke(cli, ["adapters", "canary", *args, "--users", str(root / "users.json"),
                                    "--adapters", str(registry.root)])


def test_cli_starts_shows_both_arms_and_stops(tmp_path, registry) -> None:
    nothing = canary_cli(tmp_path, registry, "--status")
    assert nothing.exit_code == 0 and "No canary has been started" in nothing.output
    assert not (tmp_path / "audit.sqlite").exists()  # a status look creates nothing
    started = canary_cli(tmp_path, registry, "acme@v2", "--share", "10", "--groups", "sales,hr",
                         "--rule", "refusal_rate+10@500")
    assert started.exit_code == 0, started.output
    assert "10% of hr, sales get acme@v2, the others acme@v1" in started.output
    saved = json.loads((tmp_path / "canary.json").read_text())
    assert saved["canary"]["rules"] == [{"metric": "refusal_rate", "max_increase_points": 10.0, "min_answers": 500}]
    audit = AuditLog(tmp_path / "audit.sqlite")
    for i in range(20):
        _record(audit, f"c{i}", CANDIDATE, "acme@v2", refused=i < 6, latency=2.0)
    for i in range(80):
        _record(audit, f"k{i}", CONTROL, "acme@v1", refused=i < 8, latency=1.0)
    _record(audit, "x", None, "helpdesk@v1", refused=True, latency=9.0)  # no arm: not counted
    status = canary_cli(tmp_path, registry, "--status")
    assert status.exit_code == 0, status.output
    out = status.output
    assert "Canary acme@v2 (candidate) vs acme@v1 (control): running" in out
    assert "Candidate acme@v2" in out and "Control acme@v1" in out
    refusals = next(line for line in out.splitlines() if line.startswith("Refusals"))
    low, high = newcombe(6, 20, 8, 80)
    assert "30.0% (6/20)" in refusals and "10.0% (8/80)" in refusals
    assert f"+20.0 pts [{low * 100:+.1f}, {high * 100:+.1f}]" in refusals and "Newcombe" in refusals
    latency = next(line for line in out.splitlines() if line.startswith("Latency p50"))
    assert "2.00 (n=20)" in latency and "1.00 (n=80)" in latency and "+1.00 s [+1.00, +1.00]" in latency
    assert "groundwork eval compare" in out and "started" in out
    assert canary_cli(tmp_path, registry, "--stop").exit_code == 0
    assert json.loads((tmp_path / "canary.json").read_text())["canary"]["status"] == STOPPED
    again = subprocess.run([sys.executable, "-m", "app.cli", "adapters", "canary", "--stop", "--users",
                            str(tmp_path / "users.json"), "--adapters", str(registry.root)], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stderr.strip() == "error: no canary is running", again.stderr


# --- the admin tab ----------------------------------------------------------------------------------------------

def test_admin_canary_handlers_refuse_employees(tmp_path, registry) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add("admin", PASSWORD, role="admin")
    store.add("alice", PASSWORD)
    conversations = Conversations(None, ConversationStore(tmp_path / "conversations.sqlite"),
                                  AuditLog(tmp_path / "audit.sqlite"),
                                  canary=CanaryFile.beside(tmp_path / "users.json", registry))
    services = SimpleNamespace(users=store, conversations=conversations, registry=registry)
    alice, admin = gr.Request(username="alice"), gr.Request(username="admin")
    for call in (lambda r: show_canary(services, r), lambda r: stop_canary(services, r),
                 lambda r: start_canary(services, "acme@v2", 10, "", "refusal_rate+10@50", r)):
        with pytest.raises(gr.Error, match="Only administrators"):
            call(alice)
    assert not (tmp_path / "canary.json").exists()  # nothing was started
    message, headline, rows, notes, events = start_canary(services, "acme@v2", 10, "", "refusal_rate+10@50", admin)
    assert "acme@v2" in message and "running" in headline and rows[0][0] == "Answers"
    assert events[0][2] == "started" and events[0][5] == "admin"
    with pytest.raises(gr.Error, match="Only administrators"):
        stop_canary(services, alice)
    assert conversations.canary.current().status == RUNNING
    message, headline, *_ = stop_canary(services, admin)
    assert "stopped" in headline and conversations.canary.current().status == STOPPED
