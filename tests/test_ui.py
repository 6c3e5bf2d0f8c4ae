"""The web UI without a browser: the HTML it writes, the server-side role checks (called directly with
gradio_client, as an attacker would), concurrency, re-ingestion while people chat, and the admin actions."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from fakes import FakeGenerator
from gradio_client import Client, handle_file
from ui_support import PASSWORDS, build_site

from app.engine import Answer, Citation
from app.guardrails import GuardrailEvent
from app.ui import render
from ingest.embedding import Embedder


def client(site, user: str | None) -> Client:
    return Client(site.url, auth=(user, PASSWORDS[user]) if user else None, verbose=False, analytics_enabled=False,
                  download_files=False)


def answer_html(result) -> str:
    """The last assistant message of the chatbot returned by the `ask` endpoint."""
    chatbot = result[0]
    content = chatbot[-1]["content"]
    if isinstance(content, list):  # Gradio may hand message content back as a list of parts
        content = "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return content


# --- the HTML -----------------------------------------------------------------------------------------------

def _answer(text: str, citations=(), refused=False, reason=None, flags=()) -> Answer:
    return Answer(question="q", answer=text, refused=refused, refusal_reason=reason, citations=list(citations),
                  retrieved=[], flags=list(flags), timings={"first_token": 0.4, "total": 1.2}, model="m")


def test_answer_html_escapes_everything_and_links_only_cited_passages() -> None:
    cited = Citation(n=2, source="hr/<b>x</b>.md", page=None, heading="Leave > Annual",
                     text="27 days <script>x</script>", score=0.8)
    html = render.answer(_answer('Take 27 days [2] <img src=x onerror=alert(1)> [see](javascript:alert(1)) [7].',
                                 [cited]))
    assert "<img" not in html and "<script>" not in html and "<b>x</b>" not in html
    assert "](javascript" not in html and "&#91;see&#93;" in html  # Markdown link syntax neutralised
    assert html.count('class="gw-cite"') == 1 and '<span class="gw-cite-n">2</span>' in html
    assert "[7]" not in html and "&#91;7&#93;" not in html  # a marker with no cited passage is dropped
    assert "Leave › Annual" in html and "27 days &lt;script&gt;" in html


def test_refusal_states_are_distinct() -> None:
    not_found = render.answer(_answer("I could not find this in the documents.", refused=True,
                                      reason="no relevant passages"))
    assert "gw-notfound" in not_found and "Not in the documents" in not_found
    blocked = render.answer(_answer("I can't help with questions about layoffs.", refused=True, reason="guardrail",
                                    flags=[GuardrailEvent("blocked_topic", "question", "blocked",
                                                          "blocked topic 'layoffs'")]))
    assert "gw-blocked" in blocked and "gw-notfound" not in blocked
    assert "Blocked topic" in blocked and "blocked topic &#x27;layoffs&#x27;" in blocked


def test_every_refusal_reason_is_explained_in_a_sentence() -> None:
    from app import refusals

    for reason in refusals.REASONS:
        if reason != refusals.GUARDRAIL:
            html = render.answer(_answer("I could not find this in the documents.", refused=True, reason=reason))
            assert f'<div class="gw-state-why">{render.text(refusals.EXPLANATIONS[reason])}</div>' in html
    assert refusals.explain("index being rebuilt") == "Index being rebuilt."  # an unknown reason still reads well
    assert refusals.explain(None) == ""


def test_searched_for_is_shown_escaped_and_only_for_a_rewritten_follow_up() -> None:
    from dataclasses import replace

    plain = _answer("Up to 5 unused days carry over [1].")
    assert "Searched for" not in render.answer(plain)  # searched as asked: nothing to say
    rewritten = replace(plain, searched_for='carry over <img src=x onerror=alert(1)> [x](javascript:alert(1)) days')
    html = render.answer(rewritten)
    assert 'class="gw-searched"' in html and "Searched for:" in html and "carry over" in html
    assert "<img" not in html and "](javascript" not in html and "&lt;img" in html
    redacted = render.redacted(replace(plain, searched_for="leave of bob@example.com"), lambda v: v.replace(
        "bob@example.com", "[EMAIL]"))
    assert redacted.searched_for == "leave of [EMAIL]"  # the page's redaction covers it too


def test_sources_panel_lists_only_citations() -> None:
    cited = Citation(n=1, source="leave.md", page=3, heading=None, text="27 days", score=0.71)
    html = render.sources(_answer("x [1]", [cited]))
    assert html.count('class="gw-source"') == 1 and "page 3" in html and "relevance 0.71" in html
    assert "not answered from the documents" in render.sources(_answer("no", refused=True, reason="guardrail"))


# --- a running server ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory, _shared_embedder):
    built = build_site(tmp_path_factory.mktemp("ui-api"), _shared_embedder, with_adapters=True)
    yield built
    built.close()


def _snapshot(site) -> dict:
    services = site.services
    services.engine.reader.refresh()
    state = {name: (site.adapters / name / "state.json").read_text() for name in ("acme", "helpdesk")}
    return {"users": site.users_file.read_bytes(), "guardrails": site.guardrails_file.read_bytes(),
            "documents": [(d.path, d.sha256, d.groups) for d in services.engine.reader.documents()],
            "generation": services.engine.reader.generation, "adapters": state,
            "uploads": sorted(p.name for p in site.uploads.rglob("*")) if site.uploads.exists() else [],
            "acl_saved": (site.root / "acl-edited.toml").exists(), "runs": services.runner.state().run,
            "routes": (site.root / "routes.json").exists()}


ADMIN_CALLS = [
    ("/admin_overview", ()),
    ("/admin_users", ()),
    ("/admin_acl", ()),
    ("/admin_adapters", ()),
    ("/admin_guardrails", ()),
    ("/admin_ingest", ("",)),
    ("/admin_remove_document", ("{docs}/leave.md",)),
    ("/admin_save_acl", ('default = ["everyone"]\n',)),
    ("/admin_save_user", ("mallory", "mallory-password", "admin", "hr")),
    ("/admin_save_user", ("alice", "", "admin", "hr")),
    ("/admin_remove_user", ("admin",)),
    ("/admin_promote", ("acme@v2",)),
    ("/admin_rollback", ("acme",)),
    ("/admin_save_guardrails", (False, False, 0, ["pii", "injection", "blocked_topic", "length"], "", "")),
    ("/admin_upload", ("FILE", "hr/confidential")),
    ("/admin_routes", ()),
    ("/admin_save_routes", ('{{"routes": [{{"name": "all", "adapter": "base"}}]}}',)),
    ("/admin_test_route", ("How many days of leave?", "hannah")),
]


def test_employee_cannot_reach_admin_actions_even_by_calling_the_endpoints(site, tmp_path) -> None:
    upload = tmp_path / "planted.md"
    upload.write_text("# Planted\n\nThe CEO's password is hunter2.\n")
    before = _snapshot(site)
    alice = client(site, "alice")
    for api_name, args in ADMIN_CALLS:
        args = tuple([handle_file(str(upload))] if a == "FILE" else a.format(docs=site.docs) if isinstance(a, str)
                     else a for a in args)
        with pytest.raises(Exception) as error:
            alice.predict(*args, api_name=api_name)
        # an upload is refused sooner: Gradio's upload route itself answers 403 (app/ui/upload_limits.py)
        refusal = "403 Forbidden" if api_name == "/admin_upload" else "Only administrators"
        assert refusal in str(error.value), (api_name, str(error.value))
    # nor read the users file or a restricted document through Gradio's file route
    import httpx

    with httpx.Client(base_url=site.url.rstrip("/")) as http:
        assert http.post("/login", data={"username": "alice", "password": PASSWORDS["alice"]}).status_code == 200
        for path in (site.users_file, site.docs / "hr/confidential/salary-bands.md", site.guardrails_file):
            response = http.get(f"/gradio_api/file={path}")
            assert response.status_code in (403, 404) and "78,000" not in response.text
    time.sleep(0.5)
    assert _snapshot(site) == before
    # the same endpoints do work for an admin (so the refusals above come from the role check)
    admin = client(site, "admin")
    users = admin.predict(api_name="/admin_users")[0]
    assert {row[0] for row in users["data"]} == {"admin", "alice", "hannah"}
    assert _snapshot(site) == before


def test_the_app_requires_a_login(site) -> None:
    with pytest.raises(Exception):
        Client(site.url, verbose=False, analytics_enabled=False).predict("How many days of leave?", api_name="/ask")
    with pytest.raises(Exception):
        Client(site.url, auth=("alice", "wrong-password"), verbose=False, analytics_enabled=False)


def test_answers_use_the_logged_in_users_groups(site) -> None:
    question = "How much does the salary band E4 pay?"
    alice = answer_html(client(site, "alice").predict(question, [], None, api_name="/ask"))
    assert "Not in the documents" in alice and "78,000" not in alice and "salary-bands" not in alice
    hannah = answer_html(client(site, "hannah").predict(question, [], None, api_name="/ask"))
    assert "78,000" in hannah and "hr/confidential/salary-bands.md" in hannah


def test_a_forged_adapter_or_guard_switch_is_ignored(site) -> None:
    question = "My email is bob@example.com. How many days of annual leave do I get?"
    html = answer_html(client(site, "alice").predict(question, [], "../../etc", api_name="/ask"))
    assert "27 days" in html and "gw-meta" in html  # an unknown adapter falls back to the default
    with pytest.raises(Exception, match="not in the list of choices"):  # Gradio refuses switches it never offered
        client(site, "alice").predict(question, ["injection"], None, api_name="/ask")
    # and the handler itself honours only the switches the admin allows ("pii"), whatever it is sent
    from types import SimpleNamespace

    from app.ui.chat import respond

    *_, last = respond(site.services, question, [], ["injection", "blocked_topic"], None,
                       SimpleNamespace(username="alice"))
    assert "Personal data" in last[0][-1]["content"]  # still redacted
    *_, last = respond(site.services, question, [], ["pii"], None, SimpleNamespace(username="alice"))
    assert "Personal data" not in last[0][-1]["content"]


def test_two_users_chat_at_once_while_an_admin_reingests(tmp_path, _shared_embedder) -> None:
    """Chats run concurrently (no one-at-a-time handler), and during a re-ingest answers come from the last
    complete index, switching to the new one when it is published."""
    gate = threading.Event()

    class GatedEmbedder(Embedder):  # the real embedder, held at the gate
        def encode(self, texts):
            assert gate.wait(60)
            return super().encode(texts)

    generator = FakeGenerator(delay=0.15)  # extractive, slow enough to be mid-answer during the re-ingest
    site = build_site(tmp_path, _shared_embedder, generator=generator, embedder_factory=GatedEmbedder)
    try:
        (site.docs / "parking.md").write_text("# Parking\n\nA parking permit for the staff garage costs 15 EUR per "
                                              "month and is requested from the facilities desk.\n")
        admin = client(site, "admin")
        job = admin.submit("", api_name="/admin_ingest")
        deadline = time.monotonic() + 30
        while not site.services.runner.state().running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert site.services.runner.state().running

        questions = {"alice": "When must expense claims be submitted?", "hannah": "How long must passwords be?"}
        clients = {name: client(site, name) for name in questions}
        alone = {}
        for name, question in questions.items():  # one after the other (this also opens each client's session)
            clients[name].predict(question, [], None, api_name="/ask")
            started = time.perf_counter()
            clients[name].predict(question, [], None, api_name="/ask")
            alone[name] = time.perf_counter() - started
        started = time.perf_counter()
        jobs = {name: clients[name].submit(q, [], None, api_name="/ask") for name, q in questions.items()}
        results = {name: answer_html(j.result(timeout=60)) for name, j in jobs.items()}
        both = time.perf_counter() - started
        assert "30 days" in results["alice"] and "14 characters" in results["hannah"]
        assert both < 0.8 * sum(alone.values()), f"two answers at once took {both:.1f}s, one after the other " \
                                                 f"{sum(alone.values()):.1f}s: the chat handler is serialized"

        parking = "How much does a parking permit cost?"
        during = answer_html(clients["alice"].predict(parking, [], None, api_name="/ask"))
        assert "15 EUR" not in during and site.services.runner.state().running  # still the previous generation
        gate.set()
        job.result(timeout=120)
        assert site.services.runner.state().state == "done"
        after = answer_html(clients["alice"].predict(parking, [], None, api_name="/ask"))
        assert "15 EUR" in after and "parking.md" in after
    finally:
        gate.set()
        site.close()


def test_admin_actions_take_effect(tmp_path, _shared_embedder) -> None:
    site = build_site(tmp_path, _shared_embedder, with_adapters=True)
    try:
        admin, alice = client(site, "admin"), client(site, "alice")
        # users: add, change groups without a new password, refuse to remove oneself, remove
        admin.predict("bob", "bob-password", "employee", "finance", api_name="/admin_save_user")
        admin.predict("bob", "", "employee", "finance, hr", api_name="/admin_save_user")
        assert site.services.users.authenticate("bob", "bob-password").groups == ("everyone", "finance", "hr")
        with pytest.raises(Exception, match="cannot remove yourself"):
            admin.predict("admin", api_name="/admin_remove_user")
        admin.predict("bob", api_name="/admin_remove_user")
        assert "bob" not in {u.name for u in site.services.users.list()}

        # guardrails: a new blocked topic applies from the next question on; the file is valid JSON
        admin.predict(True, True, 2000, ["pii"], "layoffs: layoff\nparking: parking permit", "",
                      api_name="/admin_save_guardrails")
        saved = json.loads(site.guardrails_file.read_text())
        assert [t["name"] for t in saved["blocked_topics"]] == ["layoffs", "parking"]
        assert "Blocked by a guardrail" in answer_html(alice.predict("Do I need a parking permit?", [], None,
                                                                     api_name="/ask"))
        with pytest.raises(Exception, match="minimum value"):
            admin.predict(True, True, -5, [], "", "", api_name="/admin_save_guardrails")

        # adapters: promote and roll back
        admin.predict("acme@v2", api_name="/admin_promote")
        assert site.services.registry.get("acme").version == "v2"
        admin.predict("acme", api_name="/admin_rollback")
        assert site.services.registry.get("acme").version == "v1"

        # ACL: restricting it/ to hr takes the password policy away from alice
        question = "How long must passwords be?"
        assert "14 characters" in answer_html(alice.predict(question, [], None, api_name="/ask"))
        rules = 'default = ["everyone"]\n\n[[rules]]\nglob = "hr/confidential/*"\ngroups = ["hr"]\n\n' \
                '[[rules]]\nglob = "it/*"\ngroups = ["hr"]\n'
        admin.predict(rules, api_name="/admin_save_acl")
        assert "Not in the documents" in answer_html(alice.predict(question, [], None, api_name="/ask"))
        assert admin.predict(api_name="/admin_acl").strip() == rules.strip()
        with pytest.raises(Exception, match="not valid TOML"):
            admin.predict("default = [", api_name="/admin_save_acl")

        # removing a document
        leave = str((site.docs / "leave.md").resolve())
        admin.predict(leave, api_name="/admin_remove_document")
        assert "Not in the documents" in answer_html(alice.predict("How many days of annual leave do I get?", [],
                                                                   None, api_name="/ask"))
        assert leave not in [d.path for d in site.services.engine.reader.documents()]

        # uploads: a file name that could leave the folder is refused
        with pytest.raises(Exception, match="invalid folder name"):
            admin.predict([handle_file(str(site.docs / "expenses.md"))], "../outside", api_name="/admin_upload")
    finally:
        site.close()


def test_serve_starts_on_a_fresh_data_folder_with_an_empty_index(tmp_path: Path) -> None:
    """`groundwork serve` on a machine with no index yet: an empty index is created and the app answers
    "not in the documents" until an admin adds documents."""
    from app.ui.library import ensure_index
    from ingest.reader import IndexReader

    ensure_index(tmp_path / "index", "all-MiniLM-L6-v2")
    reader = IndexReader(tmp_path / "index")
    assert reader.stats().documents == 0 and reader.generation == 0
    reader.close()


def test_audit_view_filters_whole_days_and_says_what_it_shows(tmp_path) -> None:
    from datetime import datetime

    from app.audit import AuditLog
    from app.ui import audit_view
    from app.users import User

    log = AuditLog(tmp_path / "audit.sqlite")
    day = lambda d, h: datetime(2026, 12, d, h).timestamp()  # noqa: E731 (local time, as the page's dates)
    cited = Citation(n=1, source="leave.md", page=None, heading=None, text="27 days", score=0.8)
    for at, who in [(day(1, 0), "alice"), (day(2, 23), "alice"), (day(3, 0), "bob")]:
        log.record(_answer("27 days [1].", [cited]), User(who), "web", at=at)
    chosen = audit_view.parse_filter("", "leave.md", "2026-12-01", "2026-12-02")
    records = chosen.query(log)
    assert [r.at for r in records] == [day(2, 23), day(1, 0)]  # until: the whole day it names, not one past it
    rows = audit_view.rows(records)
    assert rows[0][1] == "alice" and rows[0][6] == "leave.md" and rows[0][8] == "no"
    counts = log.users(document=chosen.document, since=chosen.since, until=chosen.until)
    assert audit_view.summary(counts, chosen) == "2 question(s) by 1 user(s) for document leave.md."
    for bad in [("", "", "12/01/2026", ""), ("", "", "2026-12-03", "2026-12-01")]:
        with pytest.raises(audit_view.AuditFilterError):
            audit_view.parse_filter(*bad)


def test_asking_in_a_conversation_deleted_meanwhile_says_so(site) -> None:
    from types import SimpleNamespace

    from app.ui.chat import GONE, respond

    request = SimpleNamespace(username="alice")
    alice = site.services.users.get("alice")
    before = len(site.services.conversations.list(alice))
    *_, last = respond(site.services, "How many days of annual leave do I get?", [], [], None, request)
    conversation_id, turn_ids = last[5], last[6]
    assert conversation_id and turn_ids[-1] is not None  # the turn was stored; its id goes with the answer
    site.services.conversations.delete(alice, conversation_id)
    *_, last = respond(site.services, "Can I carry them over?", last[1], [], None, request, conversation_id, turn_ids)
    assert render.text(GONE) in last[0][-1]["content"]
    assert len(site.services.conversations.list(alice)) == before  # nothing stored in a conversation that is gone
