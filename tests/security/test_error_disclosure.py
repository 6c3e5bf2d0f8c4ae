"""An unexpected failure is not shown to the user in its own words: its text can hold server paths, addresses or
library internals (the probe saw an SSL error on the page). The page says something went wrong; the server log
keeps the details and the traceback. Expected, one-line failures (GroundworkError) are still shown as written."""
from __future__ import annotations

import logging

from fakes import FakeGenerator
from gradio_client import Client
from ui_support import PASSWORDS, build_site

from app.ui.chat import INTERNAL_ERROR
from ingest.errors import GroundworkError

SECRET = "/srv/groundwork/models/smollm2/model.safetensors: SSL handshake with 10.0.0.7:8443 failed"


class FailingGenerator(FakeGenerator):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def reply(self, messages: list[dict]) -> str:
        raise self.error


def _ask(site, question: str) -> str:
    client = Client(site.url, auth=("alice", PASSWORDS["alice"]), verbose=False, analytics_enabled=False)
    chatbot = client.predict(question, [], None, api_name="/ask")[0]
    content = chatbot[-1]["content"]
    if isinstance(content, list):
        content = "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return content


def test_an_unexpected_failure_is_logged_not_shown(tmp_path, _shared_embedder, caplog) -> None:
    site = build_site(tmp_path, _shared_embedder, generator=FailingGenerator(RuntimeError(SECRET)))
    try:
        with caplog.at_level(logging.ERROR):
            html = _ask(site, "How many days of annual leave do I get?")
    finally:
        site.close()
    assert "10.0.0.7" not in html and "/srv/groundwork" not in html
    assert INTERNAL_ERROR.split(".")[0] in html
    assert any(SECRET in (r.exc_text or "") + r.getMessage() or r.exc_info for r in caplog.records)


def test_an_expected_failure_is_still_explained(tmp_path, _shared_embedder) -> None:
    message = "The index is being rebuilt; ask again in a minute."
    site = build_site(tmp_path, _shared_embedder, generator=FailingGenerator(GroundworkError(message)))
    try:
        html = _ask(site, "How many days of annual leave do I get?")
    finally:
        site.close()
    assert "being rebuilt" in html
