"""Helpers for the web UI tests: a small corpus with a restricted folder, users, a server on a free port,
the deterministic generator of fakes.py, and headless Chromium (Debian's package) through Playwright."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import build_corpus
from fakes import FakeGenerator

from app.engine import Engine, EngineConfig
from app.guardrails import BlockedTopic, GuardrailConfig
from app.users import UserStore
from ingest.embedding import Embedder

CHROMIUM = Path(os.environ.get("GROUNDWORK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
PASSWORDS = {"alice": "alice-password", "hannah": "hannah-password", "admin": "admin-password"}
REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "artifacts" / "screenshots"  # every run (ignored by git)
DOC_SCREENSHOTS = REPO / "docs" / "screenshots"  # the README's copies: GROUNDWORK_UPDATE_SCREENSHOTS=1 refreshes them

DOCS = {
    "expenses.md": "# Expense policy\n\n## Deadline\n\nExpense claims must be submitted within 30 days of the "
                   "purchase, with the receipt attached.\n\n## Meals\n\nThe meal allowance in Austin is 60 USD per "
                   "day, alcohol excluded.\n",
    "leave.md": "# Leave policy\n\n## Annual leave\n\nEmployees get 27 days of annual leave per calendar year. "
                "Up to 5 unused days carry over to the next year.\n",
    "it/passwords.md": "# Password policy\n\n## Rotation\n\nPasswords must be at least 14 characters long and are "
                       "never rotated on a schedule; change yours at once if you suspect it leaked.\n",
    "hr/confidential/salary-bands.md": "# Salary bands 2026\n\n## Engineering\n\nThe salary band E4 pays between "
                                       "78,000 and 91,000 EUR per year.\n",
}
ACL = 'default = ["everyone"]\n\n[[rules]]\nglob = "hr/confidential/*"\ngroups = ["hr"]\n'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class UiSite:
    """A running server and what it was built from."""

    url: str
    root: Path
    docs: Path
    uploads: Path
    index: Path
    users_file: Path
    guardrails_file: Path
    adapters: Path
    services: object
    app: object
    generator: FakeGenerator

    def close(self) -> None:
        self.app.close()


def build_site(root: Path, embedder, generator=None, with_adapters: bool = False, embedder_factory=Embedder) -> UiSite:
    """Corpus → index (hr/confidential readable by hr only) → users → guardrails → a server on a free port."""
    from app.ui import LockedEmbedder, build_app, launch_app, make_services

    docs = root / "docs"
    index = build_corpus(root, embedder, DOCS, ACL)
    users = UserStore(root / "users.json")
    users.add("alice", PASSWORDS["alice"])
    users.add("hannah", PASSWORDS["hannah"], groups=["hr"])
    users.add("admin", PASSWORDS["admin"], role="admin")
    guardrails_file = root / "guardrails.json"
    config = GuardrailConfig(blocked_topics=[BlockedTopic("layoffs", ["layoff", "redundancy"])],
                             user_may_disable={"pii"})
    guardrails_file.write_text(json.dumps(config.to_dict()), encoding="utf-8")
    adapters = root / "adapters"
    if with_adapters:
        make_adapters(adapters, {"acme": 2, "helpdesk": 1})
    generator = generator or FakeGenerator(delay=0.04)  # extractive: the first sentence of passage [1], cited
    chat_embedder = LockedEmbedder()
    chat_embedder.__dict__["model"] = embedder.model  # share the loaded weights; the lock is the chat's own
    # decoding "constrained": the fake writes (and streams) the answer, as a model does in the UI's tests
    engine = Engine(EngineConfig(index_dir=index, adapters_dir=adapters, guardrails=config, decoding="constrained"),
                    embedder=chat_embedder, generator=generator)
    services = make_services(engine, root / "users.json", guardrails_file, adapters, root / "uploads",
                             root / "acl-edited.toml", embedder_factory=embedder_factory)
    app = build_app(services)
    url = launch_app(app, services, port=free_port(), block=False, quiet=True)
    return UiSite(url=url, root=root, docs=docs, uploads=root / "uploads", index=index, users_file=root / "users.json",
                  guardrails_file=guardrails_file, adapters=adapters, services=services, app=app, generator=generator)


def make_adapters(root: Path, versions: dict[str, int]) -> None:
    """Registry entries with tiny (random) LoRA weights: enough for listing, promoting and rolling back."""
    import torch
    from safetensors.torch import save_file

    from finetune.adapters import AdapterRegistry

    registry = AdapterRegistry(root)
    staging = root.parent / "adapter-staging"
    staging.mkdir(parents=True, exist_ok=True)
    save_file({"base_model.model.layers.0.q_proj.lora_A.weight": torch.zeros(2, 4)},
              str(staging / "adapter_model.safetensors"))
    (staging / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    for name, count in versions.items():
        for _ in range(count):
            registry.add(name, staging, {"base": {"model": "smollm2-135m-instruct"},
                                         "training": {"validation_loss": [[0, 2.5], [1, 1.25]]},
                                         "data": {"examples": {"train": {"answer": 8, "refusal": 4}}}})
        registry.promote(f"{name}@v1")
    shutil.rmtree(staging)


def save_screenshot(page, name: str, full_page: bool = False) -> Path:
    """Save a screenshot under artifacts/screenshots/ (and docs/screenshots/ when asked to refresh those)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("GROUNDWORK_UPDATE_SCREENSHOTS") == "1":
        DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_SCREENSHOTS / name)
    return path


# --- the browser ---------------------------------------------------------------------------------------------

def chromium_or_fail():
    """Playwright's sync API and the path of Debian's chromium; skip without them locally, fail in CI."""
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "the playwright package is not installed (pip install -e '.[dev]')"
    if problem is None and not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests cannot run: {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    return sync_playwright


class RequestLog:
    """Every URL the page asked for, to check that nothing goes to another host."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def attach(self, context) -> None:
        context.on("request", lambda request: self.urls.append(request.url))

    def foreign(self) -> list[str]:
        bad = []
        for url in self.urls:
            parsed = urlparse(url)
            if parsed.scheme in ("data", "blob", "about", "chrome-extension"):
                continue
            if parsed.hostname not in ("127.0.0.1", "localhost"):
                bad.append(url)
        return bad


def login(page, url: str, user: str, password: str | None = None, timeout: float = 60_000) -> float:
    """Log in through Gradio's login page; return the seconds from opening the URL to a usable chat page."""
    started = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded")
    page.locator("input[type=text], input[name=username]").first.fill(user)
    page.locator("input[type=password]").first.fill(password or PASSWORDS[user])
    page.get_by_role("button", name=re.compile("log ?in", re.I)).click()
    page.locator("#gw-username").wait_for(timeout=timeout)
    page.locator("#gw-question textarea").wait_for(timeout=timeout)
    return time.perf_counter() - started


_POLL = """() => {
  const streaming = document.querySelectorAll('#gw-chat .gw-streaming');
  return {partial: streaming.length ? streaming[streaming.length - 1].innerText : null,
          finals: document.querySelectorAll('#gw-chat .gw-meta').length};
}"""


def ask(page, question: str, timeout: float = 120_000) -> dict:
    """Type a question, send it, and follow the answer: when its first words appeared, when it was final."""
    before = page.evaluate(_POLL)["finals"]  # every final answer ends with a .gw-meta footer
    page.locator("#gw-question textarea").fill(question)
    started = time.perf_counter()
    page.locator("#gw-send").click()
    first_token = None
    partials: list[str] = []
    deadline = time.monotonic() + timeout / 1000
    while time.monotonic() < deadline:
        state = page.evaluate(_POLL)  # one snapshot: no waiting on elements that streaming replaces
        if state["partial"] is not None:
            if first_token is None and state["partial"].strip():
                first_token = time.perf_counter() - started
            partials.append(state["partial"])
        if state["finals"] > before:
            break
        time.sleep(0.03)
    else:
        raise AssertionError(f"no final answer to {question!r} within {timeout / 1000:.0f} s")
    total = time.perf_counter() - started
    last = page.locator("#gw-chat [data-testid=bot]").last
    return {"first_token": first_token if first_token is not None else total, "total": total,
            "partials": [p for p in partials if p.strip()], "html": last.inner_html(), "text": last.inner_text(),
            "bubble": last}
