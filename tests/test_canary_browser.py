"""The admin's Canary tab: its endpoints refuse employees (called directly, as an attacker would), and in a real
browser (headless Chromium through Playwright) the admin starts a canary from the form, questions are answered in
both arms, and the tab shows both arms side by side with the differences' intervals and the events. The screenshot
(artifacts/screenshots/canary.png; GROUNDWORK_UPDATE_SCREENSHOTS=1 also refreshes docs/screenshots/) is a canary in
progress. Locally the browser test skips without chromium; with CI=true it fails.
"""
from __future__ import annotations

import pytest
from gradio_client import Client
from ui_support import PASSWORDS, build_site, login, save_screenshot

from app.production.canary import CANDIDATE, CONTROL, RUNNING
from app.users import User

PATIENCE_MS = 300_000  # the outer bound of a wait on a loaded machine
QUESTIONS = ("How many days of annual leave do I get?", "When must expense claims be submitted?",
             "What is the meal allowance in Austin?", "How long must passwords be?",
             "What is the CEO's favourite colour?")


@pytest.fixture(scope="module")
def site(tmp_path_factory, _shared_embedder):
    built = build_site(tmp_path_factory.mktemp("canary-browser"), _shared_embedder, with_adapters=True)
    built.services.registry.promote("acme@v1")  # acme is the default adapter: its v2 is the candidate
    yield built
    built.close()


def test_admin_starts_a_canary_and_sees_both_arms(browser, site) -> None:
    page = browser.new_context(viewport={"width": 1360, "height": 1100}).new_page()
    login(page, site.url, "admin")
    page.get_by_role("tab", name="Admin").click()
    page.get_by_role("tab", name="Canary").click()
    page.locator("#gw-canary-headline").get_by_text("No canary has been started").wait_for(timeout=PATIENCE_MS)

    page.get_by_text("Start or stop a canary").click()
    page.locator("#gw-canary-candidate textarea, #gw-canary-candidate input").first.fill("acme@v2")
    page.locator("#gw-canary-share input").first.fill("30")
    page.locator("#gw-canary-rules textarea").first.fill("refusal_rate+10@200\nerror_rate>2%@200")
    page.locator("#gw-canary-start").click()
    page.locator("#gw-canary-message").get_by_text("Started: 30% of all users get acme@v2").wait_for(
        timeout=PATIENCE_MS)
    canary = site.services.conversations.canary
    assert canary.current().status == RUNNING and canary.current().started_by == "admin"

    # 40 people ask (through the service the chat uses), each in their arm for good
    site.generator.delay, delay = 0.0, site.generator.delay
    arms = []
    try:
        for i in range(40):
            turns = list(site.services.conversations.ask(User(f"employee{i:02d}"), QUESTIONS[i % len(QUESTIONS)]))
            arms.append(turns[-1].answer.arm)
    finally:
        site.generator.delay = delay
    assert set(arms) == {CANDIDATE, CONTROL}

    page.locator("#gw-canary-refresh").click()
    table = page.locator("#gw-canary-arms")
    page.wait_for_function("n => document.querySelector('#gw-canary-arms').innerText.includes(n)",
                           arg=f"{arms.count(CONTROL)}", timeout=PATIENCE_MS)
    text = table.inner_text()
    for label in ("Answers", "Refusals", "Latency p50", "First token p50", "Thumbs down (of rated)"):
        assert label in text, label
    assert "Newcombe hybrid score" in text and "bootstrap" in text
    assert "running" in page.locator("#gw-canary-headline").inner_text()
    assert "started" in page.locator("#gw-canary-events").inner_text()
    save_screenshot(page, "canary.png", full_page=True)
    page.context.close()


def test_employees_cannot_start_stop_or_read_a_canary_through_the_endpoints(site) -> None:
    alice = Client(site.url, auth=("alice", PASSWORDS["alice"]), verbose=False, analytics_enabled=False,
                   download_files=False)
    before = site.services.conversations.canary.events()
    for api_name, args in (("/admin_canary", ()), ("/admin_canary_stop", ()),
                           ("/admin_canary_start", ("acme@v2", 50, "", "refusal_rate+10@5"))):
        with pytest.raises(Exception, match="Only administrators"):
            alice.predict(*args, api_name=api_name)
    assert site.services.conversations.canary.events() == before
