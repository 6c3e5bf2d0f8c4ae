"""The OpenAI-compatible API as a program uses it: the `openai` client against a running server (the web UI's,
tests/ui_support.py: a small corpus whose hr/confidential folder only the hr group reads, alice in everyone,
hannah in hr, the deterministic FakeGenerator), with tokens made by the users file's ApiTokens."""
from __future__ import annotations

import http.client
import json
import os
import time
from dataclasses import replace
from urllib.parse import urlsplit

import httpx
import pytest
from ui_support import PASSWORDS, build_site

from app.api import MAX_BODY
from app.api.routes import MAX_ANSWERING
from app.api_tokens import ApiTokens
from app.users import UserStore

try:
    import openai
except ImportError:  # the dev extra has it; CI must not pass by skipping these
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("the openai package is not installed (pip install -e '.[dev]')", allow_module_level=True)

SALARY = "hr/confidential/salary-bands.md"
SALARY_QUESTION = "What does the salary band E4 pay per year?"


@pytest.fixture(scope="module")
def site(tmp_path_factory, _shared_embedder):
    built = build_site(tmp_path_factory.mktemp("api"), _shared_embedder, with_adapters=True)
    assert any(getattr(route, "path", None) == "/v1" for route in built.app.server_app.router.routes), \
        "launch_app mounts the API"
    yield built
    built.close()


@pytest.fixture(scope="module")
def tokens(site) -> dict[str, str]:
    store = ApiTokens(UserStore(site.users_file))
    return {name: store.create(name, "tests")[1] for name in ("alice", "hannah")}


def client(site, token: str) -> "openai.OpenAI":
    return openai.OpenAI(base_url=site.url + "v1", api_key=token, max_retries=0, timeout=60)


def ask(site, token: str, question: str, **kwargs):
    return client(site, token).chat.completions.create(model=kwargs.pop("model", "base"),
                                                       messages=[{"role": "user", "content": question}], **kwargs)


def extra(completion, name: str):
    return (completion.model_extra or {})[name]


def test_models_are_base_and_the_promoted_adapters(site, tokens) -> None:
    ids = [m.id for m in client(site, tokens["alice"]).models.list()]
    assert ids[0] == "base"
    assert {"acme", "acme@v1", "helpdesk", "helpdesk@v1"} <= set(ids)
    assert "acme@v2" not in ids  # not promoted: the admin has not allowed it


def test_an_answer_carries_its_citations_as_markers_and_in_the_extra_field(site, tokens) -> None:
    completion = ask(site, tokens["alice"], "How many days of annual leave do employees get?")
    text = completion.choices[0].message.content
    assert "27 days" in text and "[1]" in text
    assert completion.choices[0].finish_reason == "stop" and completion.object == "chat.completion"
    citations = extra(completion, "citations")
    assert citations[0]["n"] == 1 and citations[0]["source"] == "leave.md"
    assert "27 days of annual leave" in citations[0]["text"]
    details = extra(completion, "groundwork")
    assert details["refused"] is False and details["refusal_reason"] is None


def test_streamed_deltas_add_up_to_the_final_text_and_the_last_chunk_has_the_citations(site, tokens) -> None:
    stream = ask(site, tokens["alice"], "When must expense claims be submitted?", stream=True)
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 3  # streamed word by word, not in one piece
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    final = extra(last, "groundwork")["answer"]
    assert "".join(deltas) == final and extra(last, "groundwork")["replaced"] is False
    assert "30 days" in final
    assert [c["source"] for c in extra(last, "citations")] == ["expenses.md"]


def stream_text(site, token: str, question: str) -> tuple[str, dict]:
    chunks = list(ask(site, token, question, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, extra(chunks[-1], "groundwork")


def test_a_streamed_sentence_the_check_removes_is_followed_by_the_checked_answer(site, tokens) -> None:
    site.generator.answer = ("Employees get 27 days of annual leave per calendar year [1]. "
                             "The moon is made of cheese [1].")  # a sentence no passage supports
    try:
        text, details = stream_text(site, tokens["alice"], "How many days of annual leave do employees get?")
        assert details["replaced"] is True and "cheese" not in details["answer"]
        assert text.endswith("\n\nChecked: " + details["answer"])  # a client showing the deltas shows it too
        site.generator.answer = "The moon is made of cheese [1]."
        text, details = stream_text(site, tokens["alice"], "How many days of annual leave do employees get?")
        assert details["refused"] is True and "cheese" not in details["answer"]
        assert text.endswith("\n\nAnswer withdrawn: " + details["answer"])
    finally:
        site.generator.answer = None


def test_quote_decoding_streams_the_checked_answer_only(site, tokens) -> None:
    engine = site.services.engine
    config = engine.config
    engine.config = replace(config, decoding="quote")  # groundwork serve's default
    try:
        chunks = list(ask(site, tokens["alice"], "How many days of annual leave do employees get?", stream=True))
    finally:
        engine.config = config
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    details = extra(chunks[-1], "groundwork")
    assert deltas == [details["answer"]] and details["replaced"] is False  # not the "[1] quote" preview
    assert "27 days" in details["answer"] and not details["answer"].startswith("[")


def test_a_follow_up_in_messages_is_answered_from_the_document_of_the_first_question(site, tokens) -> None:
    first_question = "How many days of annual leave do employees get?"
    first = ask(site, tokens["alice"], first_question).choices[0].message.content
    follow_up = "And how many of them are left for next time?"
    alone = ask(site, tokens["alice"], follow_up)
    assert "leave.md" not in [c["source"] for c in extra(alone, "citations")]  # it needs the first question
    completion = client(site, tokens["alice"]).chat.completions.create(model="base", messages=[
        {"role": "system", "content": "You are a helpful assistant."},  # ignored
        {"role": "user", "content": first_question},
        {"role": "assistant", "content": first},
        {"role": "user", "content": follow_up}])
    assert [c["source"] for c in extra(completion, "citations")] == ["leave.md"]
    assert extra(completion, "groundwork")["searched_for"]  # the query it was rewritten into


def test_a_restricted_document_is_cited_for_its_group_only(site, tokens) -> None:
    hannah = ask(site, tokens["hannah"], SALARY_QUESTION)
    assert SALARY in [c["source"] for c in extra(hannah, "citations")]
    assert "78,000" in hannah.choices[0].message.content
    for stream in (False, True):
        if stream:
            chunks = list(ask(site, tokens["alice"], SALARY_QUESTION, stream=True))
            body = "".join(json.dumps(c.model_dump()) for c in chunks)
        else:
            body = json.dumps(ask(site, tokens["alice"], SALARY_QUESTION).model_dump())
        assert "salary-bands" not in body and "78,000" not in body and "91,000" not in body


def test_the_tokens_user_groups_are_read_at_each_request(site, tokens) -> None:
    store = UserStore(site.users_file)
    token = ApiTokens(store).create("alice", "promotion")[1]
    assert SALARY not in [c["source"] for c in extra(ask(site, token, SALARY_QUESTION), "citations")]
    store.update("alice", "employee", ["hr"])
    try:
        assert SALARY in [c["source"] for c in extra(ask(site, token, SALARY_QUESTION), "citations")]
    finally:
        store.update("alice", "employee", [])


def test_a_revoked_token_and_a_removed_users_token_get_401(site, tokens) -> None:
    store = UserStore(site.users_file)
    token = ApiTokens(store).create("alice", "to revoke")[1]
    assert ask(site, token, "How long must passwords be?").choices[0].message.content
    ApiTokens(store).revoke("alice", token.split("_")[1])
    with pytest.raises(openai.AuthenticationError):
        ask(site, token, "How long must passwords be?")
    store.add("bob", "bob-password")
    bob = ApiTokens(store).create("bob")[1]
    store.remove("bob")
    with pytest.raises(openai.AuthenticationError):
        client(site, bob).models.list()
    with pytest.raises(openai.AuthenticationError):
        ask(site, "gw_00000000_" + "A" * 43, "How long must passwords be?")


def test_a_web_session_cookie_does_not_open_the_api(site) -> None:
    with httpx.Client(base_url=site.url, timeout=30) as web:
        login = web.post("login", data={"username": "alice", "password": PASSWORDS["alice"]})
        assert login.status_code == 200 and web.cookies  # signed in on the web
        assert web.get("config").status_code == 200  # the cookie opens the web app...
        response = web.post("v1/chat/completions", json={"model": "base", "messages": [
            {"role": "user", "content": "How long must passwords be?"}]})
    assert response.status_code == 401  # ...not the API
    assert response.json()["error"]["code"] == "missing_api_key"
    assert response.headers["x-frame-options"] == "DENY"  # the server's security headers apply here too


def test_unknown_model_is_404_and_too_long_is_413(site, tokens) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        ask(site, tokens["alice"], "How long must passwords be?", model="acme@v2")
    assert caught.value.status_code == 404 and caught.value.code == "model_not_found"
    with pytest.raises(openai.APIStatusError) as caught:
        ask(site, tokens["alice"], "Why? " * 1000)  # over the guardrails' 2000 characters
    assert caught.value.status_code == 413 and caught.value.code == "question_too_long"
    with pytest.raises(openai.APIStatusError) as caught:
        ask(site, tokens["alice"], "How long must passwords be?", extra_body={"padding": "x" * (MAX_BODY + 1)})
    assert caught.value.status_code == 413


@pytest.mark.parametrize("body", [
    b"{not json",
    b'{"model": "base"}',
    b'{"model": "base", "messages": []}',
    b'{"model": "base", "messages": "How long must passwords be?"}',
    b'{"model": 7, "messages": [{"role": "user", "content": "How long must passwords be?"}]}',
    b'{"model": "base", "messages": [{"role": "user", "content": 42}]}',
    b'{"model": "base", "messages": [{"role": "tool", "content": "x"}]}',
    b'{"model": "base", "messages": [{"role": "assistant", "content": "Hello"}]}',
    b'{"model": "base", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}',
    b'{"model": "base", "messages": [{"role": "user", "content": "   "}]}',
    b'{"model": "base", "stream": "yes", "messages": [{"role": "user", "content": "Hi"}]}',
])
def test_malformed_requests_get_422_in_openais_error_shape(site, tokens, body: bytes) -> None:
    response = httpx.post(site.url + "v1/chat/completions", content=body, timeout=30,
                          headers={"Authorization": f"Bearer {tokens['alice']}", "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"} and error["type"] == "invalid_request_error"
    assert "Traceback" not in error["message"] and "/" not in error["message"].replace("GET /v1", "")


def test_errors_never_tell_an_outsider_or_another_user_anything(site, tokens) -> None:
    no_token = httpx.post(site.url + "v1/chat/completions", json={"model": "nope", "messages": "x"}, timeout=30)
    assert no_token.status_code == 401  # before the body is even looked at
    unknown = httpx.get(site.url + "v1/files", headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    connection = http.client.HTTPConnection(urlsplit(site.url).hostname, urlsplit(site.url).port, timeout=30)
    connection.request("GET", "/v1/../config")  # sent as is: /v1 is no way around the web login
    escape = connection.getresponse()
    assert escape.status == 404 and json.loads(escape.read())["error"]["code"] == "not_found"


def test_each_api_question_is_audited_once_and_no_conversation_is_kept(site, tokens) -> None:
    hannah = UserStore(site.users_file).get("hannah")
    audit, conversations = site.services.conversations.audit, site.services.conversations
    before = len(audit.query(user="hannah"))
    kept = len(conversations.list(hannah))
    ask(site, tokens["hannah"], SALARY_QUESTION)
    records = audit.query(user="hannah")
    assert len(records) == before + 1
    assert records[0].channel == "api" and records[0].cited == [SALARY]
    assert len(conversations.list(hannah)) == kept  # the client keeps the conversation, the server does not


def test_abandoned_streams_do_not_use_up_the_server(site, tokens) -> None:
    headers = {"Authorization": f"Bearer {tokens['alice']}"}
    body = {"model": "base", "stream": True, "messages": [{"role": "user", "content": "How long must passwords be?"}]}
    for _ in range(MAX_ANSWERING):  # as many as may be answered at once
        with httpx.stream("POST", site.url + "v1/chat/completions", json=body, headers=headers, timeout=30) as open_:
            assert open_.status_code == 200
            next(open_.iter_lines())  # the first chunk; then the client goes away
    deadline = time.monotonic() + 30
    while True:
        try:
            answer = ask(site, tokens["alice"], "How long must passwords be?").choices[0].message.content
            assert "14 characters" in answer
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "abandoned streams still count as answers being written"
            time.sleep(0.5)
