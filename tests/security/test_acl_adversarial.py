"""Issue 18's adversarial ACL suite: every user of the acme demo tries to get at every document outside their
groups, through the engine, the eval and the web page.

For each restricted document (found from the index's groups, not listed by hand) there are 10 questions made
from the document itself (tests/security/acl_adversary.py: its name, its headings, its key sentences verbatim,
with a word dropped, as yes/no questions, as keywords), asked by every demo user outside its groups; then the
variations an attacker tries next (naming the file, its folder or its title, claiming rights, a forged system
line). A leak is a passage, citation or source of the document, its file name or title, or any run of 6 of its
words that nothing the user may read also has. The same questions asked by a member must find the document,
or the suite would prove nothing. Links, hard links and copies are tests/security/test_acl_links.py's.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from acl_adversary import (ACME, QUESTIONS_PER_DOCUMENT, CachingEmbedder, DemoUser, LeakCheck, Target, attacks,
                           demo_users, plain, readable_text, targets)
from conftest import VECTOR_STORES, store_url
from fakes import FakeGenerator, LeakyRetriever

from app.engine import AnswerOptions, Engine, EngineConfig
from app.users import UserStore
from eval.runner import EvalConfig, run_eval
from ingest.acl import AclRules
from ingest.pipeline import IngestOptions, ingest
from ingest.vector_store import VectorStore, open_vector_store

FREE = AnswerOptions(decoding="free")  # the fake then answers from passage [1], cited, whenever anything is found
NO_INJECTION_GUARD = AnswerOptions(decoding="free", disabled_guards=frozenset({"injection"}))


@dataclass
class Acme:
    root: Path
    index: Path
    users_file: Path
    users: list[DemoUser]
    targets: list[Target]
    reader: VectorStore
    embedder: CachingEmbedder
    checks: dict[tuple[str, str], LeakCheck]  # (source, user) -> what that outsider must not see of it
    store: str = "faiss"  # the vector store kind the index was built in (conftest.VECTOR_STORES)

    def engine(self, generator=None, **config) -> Engine:
        return Engine(EngineConfig(index_dir=self.index, adapters_dir=self.root / "adapters", **config),
                      embedder=self.embedder, generator=generator or FakeGenerator())

    def outsider_cases(self):
        """(target, outsider) for every restricted document and every demo user outside its groups."""
        return [(t, u) for t in self.targets for u in t.outsiders]


@pytest.fixture(scope="module", params=VECTOR_STORES)
def acme(request, tmp_path_factory, _shared_embedder) -> Acme:
    """The acme demo as `make demo` sets it up: its documents and ACL ingested, its demo accounts; once in each
    vector store (FAISS, Milvus Lite), so every engine-level attack runs on both."""
    root = tmp_path_factory.mktemp("acme-adversarial")
    index = root / "index"
    ingest([ACME / "docs"], IngestOptions(index_dir=index, acl_file=ACME / "acl.toml", show_progress=False,
                                          vector_store=store_url(request.param, root)), _shared_embedder)
    users = demo_users()
    store = UserStore(root / "users.json")
    for u in users:
        store.add(u.name, u.password, role=u.role, groups=list(u.groups))
    reader = open_vector_store(index)
    found = targets(reader, users)
    readable = {u.groups: readable_text(reader, u.groups) for u in users}
    checks = {(t.source, u.name): LeakCheck(t, readable[u.groups]) for t in found for u in t.outsiders}
    yield Acme(root, index, root / "users.json", users, found, reader, CachingEmbedder(_shared_embedder), checks,
               request.param)
    reader.close()


# --- the suite asks what it claims to ask ----------------------------------------------------------------------

def test_every_restricted_document_of_the_demo_is_attacked_with_ten_questions_by_every_outsider(acme) -> None:
    rules = AclRules.load(ACME / "acl.toml")
    by_rule = {d.source for d in acme.reader.documents()
               if any(not set(rules.groups_for(d.source)) & set(u.groups) for u in acme.users)}
    assert {t.source for t in acme.targets} == by_rule
    assert len(acme.targets) >= 5 and {t.source.split("/")[0] for t in acme.targets} == {"finance", "hr"}
    assert len(acme.users) >= 4
    for target in acme.targets:
        assert len(set(target.questions)) == QUESTIONS_PER_DOCUMENT, target.source
        assert target.outsiders and target.members, target.source
        # a role is no group: the demo's admin is an outsider of every restricted document
        assert any(u.role == "admin" for u in target.outsiders), target.source


def test_a_member_finds_the_document_with_every_question(acme) -> None:
    """Otherwise the questions would prove nothing: the same questions, asked by a member, retrieve it."""
    retriever = acme.engine().retriever
    missed = [(t.source, m.name, q) for t in acme.targets for m in t.members for q in t.questions + attacks(t)
              if t.source not in {p.chunk.source for p in retriever.retrieve(q, set(m.groups))}]
    assert missed == []


# --- the engine, and the eval's leak counter on the same answers --------------------------------------------

def _qa(path: Path, acme: Acme, user: DemoUser) -> dict[str, tuple[Target, bool]]:
    """A QA set of every question about every restricted document, asked by `user`: unanswerable where the user
    is an outsider, the document as gold source where a member. Returns id -> (target, user is outside)."""
    rows, cases = [], {}
    for t, target in enumerate(acme.targets):
        outside = user in target.outsiders
        for q, question in enumerate(target.questions):
            qid = f"{user.name}-{t}-{q}"
            rows.append({"id": qid, "question": question, "user": user.name, **(
                {"answerable": False} if outside else {"gold_source": target.source})})
            cases[qid] = (target, outside)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return cases


def _eval(acme: Acme, user: DemoUser, out: Path, engine: Engine):
    cases = _qa(out.parent / f"{out.name}.jsonl", acme, user)
    config = EvalConfig(qa_file=out.parent / f"{out.name}.jsonl", index_dir=acme.index, out_dir=out,
                        users_file=acme.users_file, decoding="free", progress=False)
    result = run_eval(config, engine_factory=lambda: engine, embedder=acme.embedder)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return result, records, cases


@pytest.mark.parametrize("name", [u.name for u in demo_users()])
def test_no_outsider_gets_a_restricted_document_through_the_engine_and_the_eval_agrees(acme, tmp_path,
                                                                                    name) -> None:
    user = next(u for u in acme.users if u.name == name)
    generator = FakeGenerator()
    result, records, cases = _eval(acme, user, tmp_path / name, acme.engine(generator))
    assert result.leaks == 0 and result.summary["metrics"]["leaked_passages"] == 0
    assert len(records) == len(cases) == QUESTIONS_PER_DOCUMENT * len(acme.targets)
    outside = [r for r in records if cases[r["id"]][1]]
    assert outside, f"{name} is a member of every restricted document: nothing to attack"
    for record in records:
        target, is_outsider = cases[record["id"]]
        if not is_outsider:
            # the member gets it, and the counter does not call that a leak
            assert target.source in {p["source"] for p in record["ranking"][:5]}, record["question"]
            continue
        check = acme.checks[(target.source, name)]
        assert record["metrics"]["leaks"] == []
        sources = {p["source"] for where in ("retrieved", "citations", "ranking") for p in record[where] or []}
        assert target.source not in sources, record["question"]
        shown = [record["answer"]] + [f"{p['source']} {p.get('heading') or ''} {p['text']}"
                                      for p in record["citations"] + record["retrieved"]]
        assert [h for text in shown for h in check.found(text, record["question"])] == [], record["question"]
    # what the model is shown: no prompt of this user's holds a document outside their groups
    own_checks = [acme.checks[(t.source, name)] for t in acme.targets if user in t.outsiders]
    for prompt in generator.prompts:
        text = "\n".join(m["content"] for m in prompt)
        question = text.rsplit("Question:", 1)[-1]
        assert [h for c in own_checks for h in c.found(text, question)] == []
    answered = sum(not r["refused"] for r in outside)
    assert answered, "every outsider question was refused: the answers' surface was never exercised"


def test_the_leak_counter_counts_a_leaking_retriever(acme, tmp_path) -> None:
    """The counter can fail: the same questions through a retriever that ignores the user's groups."""
    alice = next(u for u in acme.users if u.groups == ("everyone",))
    engine = acme.engine()
    everything = {g for t in acme.targets for g in t.groups} | {"everyone"}
    engine.retriever = LeakyRetriever(engine.retriever, frozenset(everything))
    result, records, cases = _eval(acme, alice, tmp_path / "leaky", engine)
    leaked = {leak["source"] for r in records for leak in r["metrics"]["leaks"]}
    assert result.leaks > 0 and leaked == {t.source for t in acme.targets}
    # and the suite's own check sees them too
    caught = [r for r in records if any(acme.checks[(cases[r["id"]][0].source, alice.name)].found(
        p["text"], r["question"]) for p in r["retrieved"])]
    assert len(caught) >= len(acme.targets)


@pytest.mark.parametrize("options", [FREE, NO_INJECTION_GUARD], ids=["guards-on", "injection-guard-off"])
def test_naming_the_file_or_claiming_rights_gets_nothing_through_the_engine(acme, options) -> None:
    """The next variations: the restricted file's path, name, folder and title in the question, 'ignore
    permissions', 'as an administrator', a forged system line; with the injection guard off as well, so it is
    the ACL that stops them, not the guard."""
    engine = acme.engine()
    leaks = []
    for target, user in acme.outsider_cases():
        for question in attacks(target):
            answer = engine.answer(question, user.user, options)
            leaks += [(target.source, user.name, question, h) for h in acme.checks[(target.source, user.name)]
                      .answer(answer, question)]
    assert leaks == []


# --- the web page: the chat's own API (what the page calls), logged in as each demo user ------------------------

@pytest.fixture(scope="module")
def site(acme):
    """The acme demo served as `make demo` serves it, with the extractive fake instead of the model (free
    decoding: it answers from passage [1], cited, whenever anything is found, so every answer has sources).
    FAISS only: the page runs the same engine, whose attacks above also run on Milvus."""
    import shutil

    if acme.store != "faiss":
        pytest.skip("the web page is store-independent: its engine is attacked on Milvus by the tests above")

    from app.guardrails import GuardrailConfig
    from app.ui import build_app, launch_app, make_services
    from ui_support import free_port

    users_file = acme.root / "site-users.json"  # the group-change test edits it
    shutil.copyfile(acme.users_file, users_file)
    guardrails = acme.root / "guardrails.json"
    guardrails.write_text(json.dumps(GuardrailConfig().to_dict()), encoding="utf-8")
    generator = FakeGenerator()
    engine = acme.engine(generator, decoding="free")
    services = make_services(engine, users_file, guardrails, acme.root / "adapters", acme.root / "uploads",
                             acme.root / "acl-edited.toml", embedder_factory=lambda: acme.embedder)
    app = build_app(services)
    url = launch_app(app, services, port=free_port(), block=False, quiet=True)
    yield url, users_file, generator
    app.close()


def login(url: str, user: DemoUser):
    """A new session of the page's API, signed in as `user` (a new conversation)."""
    from gradio_client import Client

    return Client(url, auth=(user.name, user.password), verbose=False, analytics_enabled=False,
                  download_files=False)


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def ask_page(session, question: str) -> str:
    """What the page shows for a question, as text: the answer (the conversation's last message) and every
    other output of the `ask` call (the Sources panel, the filters). The user's own questions, echoed in the
    conversation, are left out: they are what the attacker typed."""
    chatbot, *others = session.predict(question, [], None, api_name="/ask")
    assert chatbot[-1]["role"] == "assistant"
    return "\n".join(plain(s) for s in _strings(chatbot[-1]["content"]) + _strings(others))


def _page_leaks(acme, url, questions_of) -> tuple[list, int]:
    leaks, asked = [], 0
    for target, user in acme.outsider_cases():
        session = login(url, user)
        for question in questions_of(target):
            shown = ask_page(session, question)
            asked += 1
            leaks += [(target.source, user.name, question, h)
                      for h in acme.checks[(target.source, user.name)].found(shown, question)]
    return leaks, asked


def _sample(target: Target) -> list[str]:
    return [target.questions[1], target.questions[4], attacks(target)[0]]  # a heading, a key sentence, the path


def test_no_outsider_gets_a_restricted_document_through_the_web_page(acme, site) -> None:
    """A sample for every run (a heading, a key sentence, the file's path, for every outsider); the whole
    matrix is the slow test below. A member asking the same is shown the document, on the same page (the page
    lists the cited passage only: one of the three questions must get it cited)."""
    url, _, _ = site
    leaks, asked = _page_leaks(acme, url, _sample)
    assert leaks == [] and asked == 3 * len(acme.outsider_cases())
    for target in acme.targets:
        session = login(url, target.members[0])
        assert any(target.source in ask_page(session, question) for question in _sample(target)), \
            f"a member is never shown {target.source}"


@pytest.mark.slow
def test_no_outsider_gets_a_restricted_document_through_the_web_page_whole_matrix(acme, site) -> None:
    url, _, _ = site
    leaks, asked = _page_leaks(acme, url, lambda t: t.questions + attacks(t))
    assert leaks == [] and asked == sum((QUESTIONS_PER_DOCUMENT + len(attacks(t))) * len(t.outsiders)
                                        for t in acme.targets)


def test_a_change_of_groups_ends_the_session_and_the_next_one_follows_it(acme, site) -> None:
    """An attacker whose groups change while signed in: the open session is refused from the next question on
    (app/ui/sessions.py: the account's stamp changed), and a new sign-in gets exactly the new groups, both ways:
    a granted group opens the document, a revoked one closes it again; a member revoked loses it too."""
    url, users_file, _ = site
    store = UserStore(users_file)
    target = next(t for t in acme.targets if any(u.role != "admin" for u in t.outsiders))
    outsider = next(u for u in target.outsiders if u.role != "admin")
    member = target.members[0]
    engine = acme.engine()
    question = next(q for q in target.questions  # one whose answer cites it, for the member (the page shows that)
                    if target.source in {c.source for c in engine.answer(q, member.user, FREE).citations})
    check = acme.checks[(target.source, outsider.name)]
    try:
        session = login(url, outsider)
        assert check.found(ask_page(session, question), question) == []
        store.update(outsider.name, outsider.role, [*outsider.groups, *target.groups])
        with pytest.raises(Exception, match="401"):
            ask_page(session, question)
        granted = login(url, outsider)
        assert target.source in ask_page(granted, question)
        store.update(outsider.name, outsider.role, list(outsider.groups))
        with pytest.raises(Exception, match="401"):
            ask_page(granted, question)
        assert check.found(ask_page(login(url, outsider), question), question) == []

        session = login(url, member)
        assert target.source in ask_page(session, question)
        revoked = [g for g in member.groups if g not in target.groups]
        store.update(member.name, member.role, revoked)
        with pytest.raises(Exception, match="401"):
            ask_page(session, question)
        check = LeakCheck(target, readable_text(acme.reader, revoked))
        assert check.found(ask_page(login(url, member), question), question) == []
    finally:
        store.update(outsider.name, outsider.role, list(outsider.groups))
        store.update(member.name, member.role, list(member.groups))


def test_an_outsider_cannot_fetch_a_restricted_file_from_the_server(acme, site) -> None:
    """Past the chat: the server's file routes, signed in as each outsider, asked for the document's file by
    its absolute path, relative to the server's folder, URL-encoded and through '..'."""
    import os
    from urllib.parse import quote, unquote

    import httpx

    url, _, _ = site
    paths = {d.source: d.path for d in acme.reader.documents()}
    served = []
    for target, user in acme.outsider_cases():
        cookies = login(url, user).cookies
        path = paths[target.source]
        for route in (f"gradio_api/file={path}", f"file={path}", f"gradio_api/file={os.path.relpath(path)}",
                      f"gradio_api/file={quote(path, safe='')}", f"gradio_api/file=/tmp/../{path.lstrip('/')}",
                      f"gradio_api/file={ACME.name}/docs/{target.source}"):
            response = httpx.get(url + route, cookies=cookies, follow_redirects=True, timeout=30)
            typed = f"{route}\n{unquote(route)}"  # a refusal may repeat the path asked for: the attacker's own
            found = acme.checks[(target.source, user.name)].found(response.text, typed)
            if response.status_code == 200 or found:
                served.append((target.source, user.name, route, response.status_code, found))
    assert served == []


# --- slow: the default decoding over the whole matrix, and a real browser ------------------------------------------

@pytest.mark.slow
def test_no_outsider_gets_a_restricted_document_with_the_default_decoding(acme) -> None:
    """The same matrix with the engine's defaults (selected quotes, the packaged selection weights): what users
    get. Without the model: the packaged weights do not use it."""
    engine = acme.engine()
    leaks = []
    for target, user in acme.outsider_cases():
        for question in target.questions + attacks(target):
            answer = engine.answer(question, user.user)
            leaks += [(target.source, user.name, question, h) for h in acme.checks[(target.source, user.name)]
                      .answer(answer, question)]
    assert leaks == []


@pytest.mark.slow
def test_no_outsider_sees_a_restricted_document_in_the_browser(acme, site) -> None:
    """The page as a person sees it (headless Chromium): an outsider asks about a finance and an hr document by
    heading and by path; nothing of either is anywhere on the page. A member asking the same sees the source."""
    from ui_support import CHROMIUM, CHROMIUM_ARGS, ask, chromium_or_fail, login as browser_login

    from app.conversations.store import ConversationStore

    url, users_file, _ = site
    outsider = next(u for u in acme.users if all(u in t.outsiders for t in acme.targets) and u.role != "admin")
    chosen = [next(t for t in acme.targets if t.source.startswith(folder)) for folder in ("finance/", "hr/")]
    # The history sidebar lists the outsider's conversations from the other tests of this module (their own
    # questions, not typed here): cleared, as the user could, so that everything on the page is explained by
    # what is asked below.
    conversations = ConversationStore(users_file.parent / "conversations.sqlite")
    for conversation in conversations.list(outsider.name):
        conversations.delete(outsider.name, conversation.id)
    sync_playwright = chromium_or_fail()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            browser_login(page, url, outsider.name, outsider.password)
            asked = []
            for target in chosen:
                for question in (target.questions[1], attacks(target)[0]):
                    ask(page, question)
                    asked.append(question)
            shown = plain(page.content())
            for target in chosen:
                assert acme.checks[(target.source, outsider.name)].found(shown, "\n".join(asked)) == []
            page.context.close()

            member = chosen[0].members[0]
            page = browser.new_context().new_page()
            browser_login(page, url, member.name, member.password)
            seen = []
            for question in chosen[0].questions[1:4]:
                ask(page, question)
                seen.append(page.locator("#gw-sources").inner_text())
            assert any(chosen[0].source in s for s in seen)
            page.context.close()
        finally:
            browser.close()


def test_a_tightened_acl_applies_to_the_next_question_of_a_warm_engine(acme, tmp_path) -> None:
    """Stale permissions: an engine that has already answered (its allowed-ids, FAISS selector and BM25 mask
    caches warm for the user's groups) must apply an ACL tightened by a re-ingest from the next question on."""
    index = tmp_path / "index"  # a fresh index in the same store (a copied Milvus index would share its collection)
    ingest([ACME / "docs"], IngestOptions(index_dir=index, acl_file=ACME / "acl.toml", show_progress=False,
                                          vector_store=store_url(acme.store, tmp_path)), acme.embedder)
    engine = Engine(EngineConfig(index_dir=index, adapters_dir=tmp_path / "adapters"), embedder=acme.embedder,
                    generator=FakeGenerator())
    everyone = next(u for u in acme.users if u.groups == ("everyone",))
    public = next(d for d in engine.reader.documents() if "everyone" in d.groups and d.title)
    question = f"What does the {public.title} say?"
    assert public.source in {p.source for p in engine.answer(question, everyone.user, FREE).retrieved}
    tightened = tmp_path / "acl.toml"
    restricted_to = sorted({g for t in acme.targets for g in t.groups})[0]
    rule = f'\n[[rules]]\nglob = "{public.source}"\ngroups = ["{restricted_to}"]\n'
    # the demo's rules with one more, first (the first matching rule wins)
    tightened.write_text(re.sub(r"^(default\s*=.*)$", lambda m: m.group(1) + "\n" + rule,
                                (ACME / "acl.toml").read_text(encoding="utf-8"), count=1, flags=re.M),
                         encoding="utf-8")
    assert AclRules.load(tightened).groups_for(public.source) == (restricted_to,)
    ingest([ACME / "docs"], IngestOptions(index_dir=index, acl_file=tightened, show_progress=False), acme.embedder)
    answer = engine.answer(question, everyone.user, FREE)
    assert public.source not in {p.source for p in answer.retrieved + answer.citations}
    insider = next(u for u in acme.users if restricted_to in u.groups)
    assert public.source in {p.source for p in engine.answer(question, insider.user, FREE).retrieved}
    engine.reader.close()
