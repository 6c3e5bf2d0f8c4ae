"""The routing gate: routes picked by group and by intent, first match wins, below-threshold intents fall back to
the default route, `groundwork routes test` says what a real question then gets, and routes.json is versioned
and checked on every save."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import HR_DOCS, build_corpus
from fakes import FakeGenerator
from typer.testing import CliRunner
from ui_support import make_adapters

from app.cli import cli
from app.conversations.service import Conversations, TurnResult
from app.engine import Answer, AnswerOptions, Engine, EngineConfig
from app.production.routes import Intent, Route, Router, RoutesConfig, RoutesError, RoutesFile
from app.users import UserStore
from finetune.adapters import AdapterRegistry

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "long-enough-password"
IT_DOC = "# Passwords\n\nTo reset your password, open the self-service portal and choose Forgot password.\n"
IT = Intent("it-support", ("How do I reset my password?", "My laptop cannot connect to the VPN.",
                           "The printer on my floor does not work."), 0.5)
EXPENSES = Intent("expenses", ("When must expense claims be submitted?", "What is the meal allowance?",
                               "How do I get reimbursed for a hotel?"), 0.5)
ROUTES = (Route("it", "helpdesk", (), "it-support"),  # anyone, IT questions: the helpdesk adapter
          Route("hr", "acme@v2", ("hr",)),  # the hr group, any question: acme pinned at v2
          Route("expenses", "base", (), "expenses"))  # expense questions: the base model


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, _shared_embedder):
    """An index, users (hannah in hr, bob not), a registry (acme v1 promoted last = the default; acme v2;
    helpdesk v1) and routes.json with ROUTES."""
    root = tmp_path_factory.mktemp("routes")
    index = build_corpus(root, _shared_embedder, {**HR_DOCS, "it.md": IT_DOC})
    users = UserStore(root / "users.json")
    users.add("hannah", PASSWORD, groups=["hr"])
    users.add("bob", PASSWORD)
    make_adapters(root / "adapters", {"helpdesk": 1, "acme": 2})  # promotes helpdesk@v1, then acme@v1
    registry = AdapterRegistry(root / "adapters")
    assert registry.default().ref == "acme@v1"
    RoutesFile(root / "routes.json").save(RoutesConfig(0, ROUTES, (IT, EXPENSES)), registry)
    return SimpleNamespace(root=root, index=index, users=users, registry=registry)


@pytest.fixture
def service(deployment, _shared_embedder, monkeypatch) -> Conversations:
    """The real engine and conversation service; the generator backend is a FakeGenerator per adapter folder, so
    the answer's adapter is the one the engine really resolved and loaded."""
    from app import engine as engine_module

    loaded: dict = {}
    monkeypatch.setitem(engine_module.GENERATOR_BACKENDS, "fake-per-adapter",
                        lambda model, quantize, folder: loaded.setdefault(folder, FakeGenerator()))
    engine = Engine(EngineConfig(index_dir=deployment.index, adapters_dir=deployment.root / "adapters",
                                 generator="fake-per-adapter", decoding="free"), embedder=_shared_embedder)
    return Conversations.beside(engine, deployment.root / "users.json")


def ask(service: Conversations, user: str, question: str, options: AnswerOptions = AnswerOptions()) -> Answer:
    result = list(service.ask(service_user(service, user), question, options, keep=False))[-1]
    assert isinstance(result, TurnResult)
    return result.answer


def service_user(service: Conversations, name: str):
    return UserStore(service.router.file.path.parent / "users.json").get(name)


def routes_cli(deployment, *args: str) -> str:
    result = CliRunner().invoke(cli, ["routes", *args, "--users", str(deployment.root / "users.json"),
                                      "--adapters", str(deployment.root / "adapters")]
                                + (["--index", str(deployment.index)] if args[0] == "test" else []))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def cli_says(output: str) -> dict[str, str]:
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in output.splitlines() if ":" in line}


CASES = [  # user, question, route, adapter that answers (Answer.adapter)
    ("hannah", "How can I reset my password?", "it", "helpdesk@v1"),  # hr too, but "it" comes first
    ("hannah", "How many days of annual leave do employees get?", "hr", "acme@v2"),  # by group
    ("bob", "How many days of annual leave do employees get?", "default", "acme@v1"),  # no route matches
    ("bob", "When do I have to submit my expense claims?", "expenses", None),  # by intent: the base model
    ("hannah", "When do I have to submit my expense claims?", "hr", "acme@v2"),  # "hr" comes before "expenses"
]


@pytest.mark.parametrize("user, question, route, adapter", CASES)
def test_routes_by_group_and_intent_first_match_wins_and_routes_test_agrees(
        deployment, service, user, question, route, adapter) -> None:
    answer = ask(service, user, question)
    assert not answer.refused, answer
    assert (answer.route, answer.adapter) == (route, adapter)
    said = cli_says(routes_cli(deployment, "test", question, "--user", user))
    assert said["route"] == answer.route
    assert said["adapter"].split(" ")[0] == (answer.adapter or "base")
    assert said["why"]


def test_an_intent_below_its_threshold_gets_the_default_route(deployment, _shared_embedder) -> None:
    router = Router.beside(deployment.root / "users.json", deployment.registry, _shared_embedder)
    bob = deployment.users.get("bob")
    close = router.classify("How can I reset my password?")
    assert close.intent == "it-support" and close.similarity >= 0.5
    far = router.classify("What does the salary band E4 pay?")
    assert far.intent is None and far.similarity < far.threshold
    choice = router.choose(bob, "What does the salary band E4 pay?")
    assert (choice.route, choice.adapter) == ("default", None)
    assert "nearest intent" in choice.reason and "< threshold" in choice.reason  # says how close it came
    # the same close question, with the bar raised above its similarity: no intent, so the default route
    strict = RoutesConfig(0, ROUTES, (Intent(IT.name, IT.examples, round(close.similarity + 0.01, 3)), EXPENSES))
    RoutesFile(deployment.root / "strict" / "routes.json").save(strict, deployment.registry)
    strict_router = Router.beside(deployment.root / "strict" / "users.json", deployment.registry, _shared_embedder)
    assert strict_router.choose(bob, "How can I reset my password?").route == "default"


def test_a_question_with_a_chosen_adapter_is_not_routed(service) -> None:
    answer = ask(service, "hannah", "How can I reset my password?", AnswerOptions(adapter="acme@v1"))
    assert (answer.route, answer.adapter) == (None, "acme@v1")


def test_every_save_increments_the_version_and_a_stale_save_is_refused(deployment, tmp_path) -> None:
    file = RoutesFile(tmp_path / "routes.json")
    assert file.load().version == 0  # no file: no routes
    first = file.save(RoutesConfig(0, ROUTES[:1], (IT,)), deployment.registry)
    second = file.save(RoutesConfig(first.version, ROUTES[:2], (IT,)), deployment.registry)
    assert (first.version, second.version) == (1, 2)
    assert json.loads(file.path.read_text())["version"] == 2 and file.load().routes == ROUTES[:2]
    with pytest.raises(RoutesError, match="changed meanwhile"):  # edited from version 1 while it became 2
        file.save(RoutesConfig(1, (), ()), deployment.registry)
    assert file.load() == second
    # the CLI saves through the same file: each change is one more version
    users = tmp_path / "users.json"
    common = ["--users", str(users), "--adapters", str(deployment.root / "adapters")]
    for args in (["set", "sales", "--adapter", "acme@v1", "--groups", "sales, hr"], ["remove", "it"]):
        result = CliRunner().invoke(cli, ["routes", *args, *common])
        assert result.exit_code == 0, result.output
    assert [r.name for r in file.load().routes] == ["hr", "sales"] and file.load().version == 4
    listed = CliRunner().invoke(cli, ["routes", "list", "--users", str(users)]).output
    assert "version 4" in listed and "1. hr" in listed and "2. sales" in listed and "3. default" in listed


@pytest.mark.parametrize("args, message", [
    (["set", "it", "--adapter", "nosuch"], "error: route 'it': unknown adapter 'nosuch' (not in the registry"),
    (["set", "it", "--adapter", "acme@v9"], "error: route 'it': unknown adapter 'acme@v9' (adapter 'acme' has no "
                                            "version 'v9')"),
    (["set", "it", "--adapter", "base", "--intent", "nosuch"], "error: route 'it': unknown intent 'nosuch'"),
])
def test_a_bad_route_is_refused_with_one_line_and_nothing_changes(deployment, tmp_path, args, message) -> None:
    users = tmp_path / "users.json"
    before = RoutesFile(tmp_path / "routes.json").save(RoutesConfig(0, ROUTES[1:2]), deployment.registry)
    result = subprocess.run([sys.executable, "-m", "app.cli", "routes", *args, "--users", str(users),
                             "--adapters", str(deployment.root / "adapters")], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert RoutesFile(tmp_path / "routes.json").load() == before


def test_the_admin_tab_saves_valid_routes_tests_questions_and_refuses_employees(deployment, service,
                                                                                 tmp_path) -> None:
    import gradio as gr

    from app.ui import admin_routes, make_services

    root = deployment.root
    services = make_services(service.engine, root / "users.json", tmp_path / "guardrails.json", root / "adapters",
                             tmp_path / "uploads", tmp_path / "acl.toml")
    deployment.users.add("admin", PASSWORD, role="admin")
    admin, bob = SimpleNamespace(username="admin"), SimpleNamespace(username="bob")
    file = RoutesFile(root / "routes.json")
    before = file.path.read_bytes()
    edited = json.dumps({**file.load().to_dict(), "routes": [{"name": "all", "adapter": "helpdesk"}]})
    for call in (lambda: admin_routes.load(services, bob), lambda: admin_routes.save(services, edited, bob),
                 lambda: admin_routes.test(services, "How can I reset my password?", "bob", bob)):
        with pytest.raises(gr.Error, match="Only administrators"):
            call()
    assert file.path.read_bytes() == before  # the employee changed nothing

    text, _ = admin_routes.load(services, admin)
    assert json.loads(text) == file.load().to_dict()
    verdict = admin_routes.test(services, "How can I reset my password?", "hannah", admin)
    assert "**Route:** it" in verdict and "helpdesk@v1" in verdict and "it-support" in verdict
    with pytest.raises(gr.Error, match="unknown adapter 'nosuch'"):  # checked before saving: nothing changes
        admin_routes.save(services, text.replace('"helpdesk"', '"nosuch"'), admin)
    with pytest.raises(gr.Error, match="not valid JSON"):
        admin_routes.save(services, text[:-2], admin)
    assert file.path.read_bytes() == before
    try:
        saved, note = admin_routes.save(services, edited, admin)
        assert f"Saved version {json.loads(before)['version'] + 1}" in note
        assert "route all" in render_footer(ask(service, "bob", "How many days of annual leave do employees get?"))
        with pytest.raises(gr.Error, match="changed meanwhile"):  # a second admin saving what they loaded before
            admin_routes.save(services, text, admin)
    finally:
        file.path.write_bytes(before)


def render_footer(answer: Answer) -> str:
    from app.ui.render import footer

    shown = footer(answer)
    assert answer.adapter is None or answer.adapter in shown
    return shown


def test_the_footer_names_the_route_unless_it_is_the_default() -> None:
    from app.ui.render import footer

    answer = Answer("q", "a", False, None, [], [], [], {"total": 1.0}, model="m", adapter="acme@v2", route="hr")
    assert "m + acme@v2 · route hr" in footer(answer)
    assert "route" not in footer(Answer("q", "a", False, None, [], [], [], {}, model="m", route="default"))


def test_the_chat_routes_by_default_and_the_api_offers_auto(deployment, service, tmp_path) -> None:
    """The chat's adapter picker starts on "Automatic" (the routes decide); picking an adapter overrides them.
    The API's model `auto` is routed too; `base` and adapter names are not."""
    from app.api.routes import OpenAiApi
    from app.ui import make_services
    from app.ui.chat import respond
    from app.ui.services import AUTOMATIC

    services = make_services(service.engine, deployment.root / "users.json", tmp_path / "guardrails.json",
                             deployment.root / "adapters", tmp_path / "uploads", tmp_path / "acl.toml")
    choices, default = services.adapter_choices()
    assert default == AUTOMATIC and choices[0][1] == AUTOMATIC
    hannah = SimpleNamespace(username="hannah")
    question = "How can I reset my password?"
    *_, last = respond(services, question, [], None, default, hannah)
    assert "helpdesk@v1 · route it" in last[0][-1]["content"]
    *_, last = respond(services, question, [], None, "acme", hannah)  # her own pick: no routing
    assert "acme@v1" in last[0][-1]["content"] and "route" not in last[0][-1]["content"]

    api = OpenAiApi(services)
    offered = api.models()
    assert offered["auto"] is None and offered["base"] == "none"
    user = deployment.users.get("hannah")
    for model, expected in (("auto", ("it", "helpdesk@v1")), ("acme@v1", (None, "acme@v1"))):
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": question}]}).encode()
        _, chat, options = api.prepare(user, body)
        *_, answer = api.answers(user, chat, options)
        assert (answer.route, answer.adapter) == expected


def test_the_chats_embedder_embeds_a_routed_question_once(_shared_embedder) -> None:
    """Intent routing embeds the question, then retrieval does: served, the second gets the first's vector."""
    from app.ui import LockedEmbedder

    served = LockedEmbedder()
    served.__dict__["model"] = _shared_embedder.model
    calls = []
    real = served.model.encode
    served.__dict__["model"] = SimpleNamespace(encode=lambda *a, **k: calls.append(a) or real(*a, **k))
    first = served.encode(["How can I reset my password?"])
    kept = first.copy()
    first[0, 0] += 1.0  # a caller changing its copy does not change what the next caller gets
    again = served.encode(["How can I reset my password?"])
    assert len(calls) == 1 and (again == kept).all()
    served.encode(["How can I reset my password?", "And the VPN?"])  # batches are not remembered
    served.encode(["And the VPN?"])
    assert len(calls) == 3


def test_a_hand_broken_routes_file_keeps_the_last_good_routes(deployment, _shared_embedder, tmp_path) -> None:
    file = RoutesFile(tmp_path / "routes.json")
    file.save(RoutesConfig(0, ROUTES, (IT, EXPENSES)), deployment.registry)
    router = Router.beside(tmp_path / "users.json", deployment.registry, _shared_embedder)
    hannah = deployment.users.get("hannah")
    assert router.choose(hannah, "How many days of annual leave do employees get?").route == "hr"
    file.path.write_text('{"version": 2, "routes": [', encoding="utf-8")  # an editor saved half a file
    choice = router.choose(hannah, "How many days of annual leave do employees get?")
    assert choice.route == "hr" and "routes file unreadable" in choice.reason and "not valid JSON" in choice.reason
    assert "passed over: 'it': not intent 'it-support'" in choice.reason
    with pytest.raises(RoutesError, match="not valid JSON"):  # and `routes list` / the admin tab say so
        file.load()
