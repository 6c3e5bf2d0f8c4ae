"""The web UI in a real browser: headless Chromium (Debian's package) driven by Playwright.

Employees and an admin log in, ask questions, read streamed answers and their citations, and an admin uploads
a document, re-ingests and asks about it. Screenshots and timings go to artifacts/ (GROUNDWORK_UPDATE_SCREENSHOTS=1
also refreshes the README's copies in docs/screenshots/).
Locally these tests skip without chromium; with CI=true they fail instead.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import build_corpus
from ui_support import ACL, DOCS, PASSWORDS, REPO, RequestLog, ask, build_site, free_port, login, save_screenshot

from app.users import UserStore

ARTIFACTS = REPO / "artifacts"
VIEWPORT = {"width": 1360, "height": 900}
PATIENCE = 300  # seconds: the outer bound of a wait on a loaded machine; what must be fast is timed separately


def record_timing(name: str, values: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "ui-timings.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = {k: round(v, 3) if isinstance(v, float) else v for k, v in values.items()}
    path.write_text(json.dumps(data, indent=1))
    print(f"\n{name}: " + ", ".join(f"{k} {v:.2f}s" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in values.items()))


@pytest.fixture(scope="module")
def site(tmp_path_factory, _shared_embedder):
    built = build_site(tmp_path_factory.mktemp("ui-browser"), _shared_embedder, with_adapters=True)
    yield built
    built.close()


@pytest.fixture
def requests_seen():
    return RequestLog()


def new_page(browser, requests_seen: RequestLog, height: int = VIEWPORT["height"]):
    context = browser.new_context(viewport={"width": VIEWPORT["width"], "height": height})
    requests_seen.attach(context)
    return context.new_page()


def test_employee_chat_streams_a_cited_answer(browser, site, requests_seen) -> None:
    page = new_page(browser, requests_seen)
    load = login(page, site.url, "alice")
    assert page.locator("#gw-username").inner_text() == "alice"
    assert page.get_by_role("tab", name="Admin").count() == 0  # not offered to employees

    result = ask(page, "When must expense claims be submitted?")
    growing = [p for p in dict.fromkeys(result["partials"]) if p.strip()]
    assert len(growing) >= 3, f"the answer was not streamed: {growing}"
    assert len(growing[0]) < len(growing[-1]) and result["first_token"] < result["total"]
    assert "30 days" in result["text"]

    cite = result["bubble"].locator(".gw-cite").first
    pop = cite.locator(".gw-pop")
    assert not pop.is_visible()
    cite.click()
    pop.wait_for(state="visible", timeout=5000)
    assert "expenses.md" in pop.inner_text() and "Deadline" in pop.inner_text()
    assert "within 30 days of the purchase" in pop.inner_text()

    sources = page.locator("#gw-sources .gw-source")
    assert sources.count() == len(set(re.findall(r'class="gw-cite-n">(\d+)<', result["html"])))
    assert "expenses.md" in sources.first.inner_text() and "leave.md" not in page.locator("#gw-sources").inner_text()
    save_screenshot(page, "chat.png")
    record_timing("scripted generator", {"page_load": load, "first_token_in_browser": result["first_token"],
                                         "answer_complete": result["total"]})
    assert requests_seen.foreign() == [], "the page fetched something from another host"
    page.context.close()


def test_restricted_document_never_appears_for_an_employee(browser, site, requests_seen) -> None:
    question = "How much does the salary band E4 pay?"
    page = new_page(browser, requests_seen)
    login(page, site.url, "alice")
    result = ask(page, question)
    assert "Not in the documents" in result["text"]
    content = page.content()
    assert "78,000" not in content and "salary-bands" not in content and "Salary bands" not in content
    page.context.close()

    page = new_page(browser, requests_seen)  # hannah is in hr: the same question is answered, so the check can fail
    login(page, site.url, "hannah")
    result = ask(page, question)
    assert "78,000" in result["text"] and "salary-bands.md" in page.locator("#gw-sources").inner_text()
    page.context.close()


def test_guardrail_flags_are_shown_and_the_allowed_switch_works(browser, site, requests_seen) -> None:
    page = new_page(browser, requests_seen)
    login(page, site.url, "alice")
    question = "My email is bob@example.com: how many days of annual leave do I get?"
    result = ask(page, question)
    flag = result["bubble"].locator(".gw-flag")
    assert flag.count() == 1 and "Personal data" in flag.inner_text() and "redacted 1 email" in flag.inner_text()

    assert page.locator("#gw-guards").get_by_text("Blocked topic").count() == 1
    blocked = ask(page, "Are there any layoffs planned this year?")
    assert "Blocked by a guardrail" in blocked["text"] and "layoffs" in blocked["text"]

    switches = page.locator("#gw-switches")
    assert switches.get_by_label("Personal data").count() == 1
    assert switches.get_by_label("Prompt injection").count() == 0  # not one the admin lets users switch off
    switches.get_by_label("Personal data").check()
    page.locator('#gw-guards [data-guard="pii"] .gw-guard-state').get_by_text("off").wait_for(timeout=10_000)
    result = ask(page, question)
    assert result["bubble"].locator(".gw-flag").count() == 0 and "27 days" in result["text"]
    page.context.close()


def test_admin_uploads_a_document_reingests_and_asks_about_it(browser, site, requests_seen, tmp_path) -> None:
    page = new_page(browser, requests_seen, height=1000)
    login(page, site.url, "admin")
    page.get_by_role("tab", name="Admin").click()
    page.locator("#gw-index-stats").wait_for()
    assert "4" in page.locator("#gw-index-stats .gw-stat").first.inner_text()

    document = tmp_path / "parking-policy.md"
    document.write_text("# Parking policy\n\n## Permits\n\nA parking permit for the staff garage costs 15 EUR per "
                        "month; request it from the facilities desk on the ground floor.\n")
    runner = site.services.runner  # the ingest job the button starts: waited on, rather than a wall clock
    runs_before = runner.state().run
    started = time.perf_counter()
    page.locator("#gw-upload input[type=file]").set_input_files(str(document))
    # The name shows once Gradio has sent the file to the server: its transfer, slow on a loaded machine.
    page.locator("#gw-upload").get_by_text("parking-policy.md").wait_for(timeout=PATIENCE * 1000)
    transfer = time.perf_counter() - started
    page.locator("#gw-upload-folder textarea, #gw-upload-folder input").first.fill("facilities")
    page.locator("#gw-upload-button").click()
    states = set()
    deadline = time.monotonic() + PATIENCE
    status = page.locator("#gw-ingest-status")
    job = runner.state()
    while time.monotonic() < deadline:  # until the job has finished and the page has shown how it ended
        job = runner.state()
        if status.count():
            states.add(status.first.get_attribute("data-state"))
        if job.run > runs_before and not job.running and ("done" in states or "failed" in states):
            break
        time.sleep(0.05)
    assert job.run == runs_before + 1, "the upload started no ingestion"
    assert job.state == "done", (job.state, job.error)
    assert job.summary.added == ["facilities/parking-policy.md"] and job.summary.unchanged == 4, job.summary
    # The work itself (the job's own clock: loading its embedder, embedding one file): a bound for a slow machine.
    assert job.elapsed < 60, f"ingesting one uploaded file took {job.elapsed:.1f} s"
    record_timing("admin upload", {"file_transfer": transfer, "ingest_job": job.elapsed})
    assert "running" in states and "done" in states, states
    summary = status.inner_text()
    assert "1 added" in summary and "4 unchanged" in summary, summary
    page.locator("#gw-documents").get_by_text("facilities/parking-policy.md").wait_for(timeout=PATIENCE * 1000)
    assert "5" in page.locator("#gw-index-stats .gw-stat").first.inner_text()
    save_screenshot(page, "admin.png", full_page=True)

    page.get_by_role("tab", name="Chat").click()
    result = ask(page, "How much does a parking permit cost?")
    assert "15 EUR" in result["text"]
    assert "parking-policy.md" in page.locator("#gw-sources").inner_text()
    assert requests_seen.foreign() == []
    page.context.close()


@pytest.mark.slow
def test_groundwork_serve_with_the_packaged_model(browser, tmp_path, _shared_embedder, requests_seen) -> None:
    """`groundwork serve` as a user starts it (the packaged model, 4-bit), driven from the browser: page load
    time and the time to the first streamed token as the browser sees it."""
    data = tmp_path / "groundwork-data"
    build_corpus(tmp_path, _shared_embedder, DOCS, ACL, index=data / "index")
    UserStore(data / "users.json").add("alice", PASSWORDS["alice"])
    port = free_port()
    env = {**os.environ, "GROUNDWORK_DATA": str(data), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    token = subprocess.run([sys.executable, "-m", "app.cli", "users", "token", "alice", "--users",
                            str(data / "users.json")], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120).stdout.strip()
    assert token.startswith("gw_"), token
    # --decoding constrained: the model writes (and streams) the answer; the default selection shows it whole
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--index",
                               str(data / "index"), "--users", str(data / "users.json"), "--decoding", "constrained"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, lines = None, []
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline and url is None:
            line = server.stdout.readline()
            if not line and server.poll() is not None:
                break
            lines.append(line)
            found = re.search(r"running at (http://\S+)", line)
            url = found.group(1) if found else None
        assert url, "groundwork serve did not start:\n" + "".join(lines[-30:])

        page = new_page(browser, requests_seen)
        load = login(page, url, "alice")
        result = ask(page, "When must expense claims be submitted?", timeout=300_000)
        final = result["bubble"]
        assert final.locator(".gw-cite").count() or final.locator(".gw-notfound").count()
        assert result["partials"], "no token was streamed to the page"
        second = ask(page, "How many days of annual leave do employees get?", timeout=300_000)
        record_timing("packaged model (smollm2-135m 4-bit, 1 thread), groundwork serve", {
            "page_load": load, "first_token_in_browser": result["first_token"], "answer_complete": result["total"],
            "second_question_first_token": second["first_token"], "second_question_complete": second["total"],
            "cited": bool(final.locator(".gw-cite").count())})
        assert requests_seen.foreign() == []
        page.context.close()

        # The same server answers the OpenAI API with alice's token (the `openai` client, as a program would)...
        from openai import OpenAI

        client = OpenAI(base_url=url + "v1", api_key=token, timeout=300)
        assert "base" in [model.id for model in client.models.list()]
        reply = client.chat.completions.create(model="base", messages=[
            {"role": "user", "content": "How many days of annual leave do employees get?"}])
        cited = [c["source"] for c in reply.model_extra["citations"]]
        assert reply.model_extra["groundwork"]["refused"] or cited == ["leave.md"], reply
        # ... and every question, from the page and from the API, is in the audit log: `groundwork audit`
        audit = subprocess.run([sys.executable, "-m", "app.cli", "audit", "--user", "alice", "--db",
                                str(data / "audit.sqlite")], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=120)
        assert audit.returncode == 0, audit.stderr
        assert audit.stdout.count(" web ") == 2 and audit.stdout.count(" api ") == 1, audit.stdout
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
