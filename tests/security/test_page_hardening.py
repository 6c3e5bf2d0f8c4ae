"""What the page shows and what it accepts (issue 18, items 6, 7 and part of 8), against a real server.

6. PII redacted in the answer was shown in full in the Sources panel and the citation pop-over.
7. Any logged-in employee could POST files to Gradio's upload route; they stayed in its temp folder forever.
8. Failed uploads could not be deleted from the page and were reported on every run; accented file names were
   refused ("plain file names only"); every refused action wrote a traceback to the server log.

The server is build_site() (tests/ui_support.py): the real app with the deterministic FakeGenerator, no model.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from gradio_client import Client, handle_file
from ui_support import PASSWORDS, build_site

from app.engine import Answer, Citation
from app.guardrails import GuardrailConfig, GuardrailEvent, Guardrails
from app.ui import render
from app.ui.chat import respond
from app.ui.library import LibraryError, safe_name, safe_subfolder
from app.ui.upload_limits import UploadLimits, clean_upload_cache

EMAIL, PHONE, IBAN = "jane.roe@acme.example", "+33 4 72 00 00 00", "FR76 3000 6000 0112 3456 7890 189"
CONTACTS = (f"# Payroll\n\n## Contact {EMAIL}\n\nPayroll questions go to Jane Roe at {EMAIL} or {PHONE}. Salaries "
            f"are paid into the company account IBAN {IBAN} on the 25th of each month.\n")
RAW = (EMAIL, PHONE, IBAN, "3000 6000")


def client(site, user: str) -> Client:
    return Client(site.url, auth=(user, PASSWORDS[user]), verbose=False, analytics_enabled=False,
                  download_files=False)


@contextlib.contextmanager
def http(site, user: str | None):
    """An HTTP session logged in as `user` (None: not logged in)."""
    with httpx.Client(base_url=site.url.rstrip("/"), timeout=30, headers={"Origin": site.url.rstrip("/")}) as session:
        if user:
            response = session.post("/login", data={"username": user, "password": PASSWORDS[user]})
            assert response.status_code in (200, 302, 303), response.text
        yield session


def wait_for_ingest(site, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while site.services.runner.state().running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert site.services.runner.state().state == "done", site.services.runner.state()


@pytest.fixture(scope="module")
def site(tmp_path_factory, _shared_embedder):
    built = build_site(tmp_path_factory.mktemp("hardening"), _shared_embedder)
    (built.docs / "payroll.md").write_text(CONTACTS, encoding="utf-8")
    built.services.runner.start([built.docs.resolve()], None, "test")
    wait_for_ingest(built)
    built.services.engine.reader.refresh()
    yield built
    built.close()


@pytest.fixture
def limits(site):
    gate = site.app.upload_gate
    saved = gate.limits
    gate._ledger.clear()
    yield gate
    gate.limits = saved
    gate._ledger.clear()


# --- 6. redaction reaches everything the page shows ------------------------------------------------------

def _shown(html: str) -> None:
    for value in RAW:
        assert value not in html, value
    assert "[EMAIL]" in html.replace("&#91;", "[").replace("&#93;", "]")


def test_pii_in_a_cited_passage_is_redacted_in_the_popover_and_the_sources_panel(site) -> None:
    result = client(site, "alice").predict("Who do payroll questions go to?", [], None, api_name="/ask")
    answer, sources = result[0][-1]["content"], result[2]  # (chatbot, question, sources, guards)
    answer = "".join(p.get("text", "") for p in answer) if isinstance(answer, list) else answer
    assert 'class="gw-pop-quote"' in answer and "payroll.md" in sources  # the passage is cited and shown
    _shown(answer)  # the answer and its pop-over (quote and heading)
    _shown(sources)  # the Sources panel
    assert "&#91;IBAN&#93;" in sources and "&#91;PHONE&#93;" in sources


def test_a_user_allowed_to_switch_redaction_off_sees_the_passage_as_written(site) -> None:
    request = SimpleNamespace(username="alice")
    *_, last = respond(site.services, "Who do payroll questions go to?", [], ["pii"], None, request)
    assert EMAIL in last[3] and EMAIL in last[0][-1]["content"]  # the same switch as for the answer itself
    *_, last = respond(site.services, "Who do payroll questions go to?", [], [], None, request)
    assert EMAIL not in last[3] and EMAIL not in last[0][-1]["content"]


def test_redaction_comes_before_the_quote_is_shortened_and_covers_names_headings_and_flags() -> None:
    """The pop-over shows at most QUOTE_CHARS: an IBAN cut in half by that limit would no longer be recognised."""
    guards = Guardrails(GuardrailConfig())
    padding = "x " * ((render.QUOTE_CHARS - 10) // 2)
    passage = padding + f"IBAN {IBAN} is the account."
    cited = Citation(n=1, source=f"{EMAIL}.md", page=None, heading=f"Call {PHONE}", text=passage, score=0.5)
    flag = GuardrailEvent("injection", "passage", "excluded", f"excluded a passage of {EMAIL}.md", f"{EMAIL}.md")
    answer = Answer(question="q", answer="See [1].", refused=False, refusal_reason=None, citations=[cited],
                    retrieved=[], flags=[flag], timings={}, model="m")
    shown = render.redacted(answer, guards.redact)
    page = render.answer(shown) + render.sources(shown)
    assert "3000" not in page and EMAIL not in page and "72 00" not in page
    assert answer.citations[0].text == passage  # the engine's Answer itself is left as it was


# --- 7. uploads: admins only, capped, and a cache that empties ----------------------------------------------

def _cache_files(site) -> set[str]:
    folder = Path(site.app.server_app.uploaded_file_dir)
    return {str(p) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


@pytest.mark.parametrize("path", ["/gradio_api/upload", "/gradio_api/upload/", "//gradio_api//upload",
                                  "/gradio_api/process_recording", "/gradio_api/component_server"])
def test_an_employee_cannot_upload_files(site, path) -> None:
    before = _cache_files(site)
    with http(site, "alice") as alice:
        response = alice.post(path, files={"files": ("notes.md", b"# planted\n" * 1000)})
    assert response.status_code == 403 and "administrators" in response.text
    with http(site, None) as nobody:
        assert nobody.post(path, files={"files": ("notes.md", b"x")}).status_code == 401
    assert _cache_files(site) == before


def test_nobody_makes_the_server_fetch_a_file_through_an_event(site) -> None:
    """The next variation: name the file in an event's JSON instead of uploading it. Gradio fetches a FileData
    whose path is a URL into its cache before the handler (and its admin check) runs."""
    fetched = {"path": "https://127.0.0.1:9/planted.md", "meta": {"_type": "gradio.FileData"}}
    local = {"path": str(site.users_file), "meta": {"_type": "gradio.FileData"}}
    before = _cache_files(site)
    with http(site, "alice") as alice:
        for file, status in ((fetched, 400), (local, 403)):
            response = alice.post("/gradio_api/call/admin_upload", json={"data": [[file], ""]})
            assert response.status_code == status, response.text
        escaped = ('{"data": [[{"path": "https://127.0.0.1:9/x.md", "meta": {"_type": "gradio\\u002eFileData"}}], '
                   '""], "fn_index": 0, "session_hash": "x"}')  # the same, spelled with a JSON escape
        response = alice.post("/gradio_api/queue/join", content=escaped, headers={"Content-Type": "text/plain"})
        assert response.status_code == 400, response.text
        assert alice.post("/gradio_api/call/ask", json={"data": ["How many days of leave?", None, []]}) \
            .status_code == 200  # a question is not held up
    with http(site, "admin") as admin:
        response = admin.post("/gradio_api/call/admin_upload", json={"data": [[fetched], ""]})
        assert response.status_code == 400 and "not fetched" in response.text
    assert _cache_files(site) == before


def test_an_admin_can_upload_files(site, limits) -> None:
    with http(site, "admin") as admin:
        response = admin.post("/gradio_api/upload", files={"files": ("notes.md", b"# notes\n")})
    assert response.status_code == 200, response.text
    [saved] = response.json()
    assert Path(saved).read_bytes() == b"# notes\n"


def test_uploads_beyond_the_caps_are_refused(site, limits) -> None:
    limits.limits = UploadLimits(request_bytes=4_000, user_bytes=6_000, total_bytes=10**9)
    with http(site, "admin") as admin:
        def post(size: int, name: str = "a.md") -> httpx.Response:
            return admin.post("/gradio_api/upload", files={"files": (name, os.urandom(size))})

        assert post(5_000).status_code == 413  # one request
        assert post(2_500, "b.md").status_code == 200
        assert post(2_500, "c.md").status_code == 200
        refused = post(2_500, "d.md")  # the user's allowance for the window is spent
        assert refused.status_code == 429 and "per user" in refused.text

        limits._ledger.clear()
        used = sum(p.stat().st_size for p in Path(site.app.server_app.uploaded_file_dir).rglob("*") if p.is_file())
        limits.limits = UploadLimits(request_bytes=10**9, user_bytes=10**9, total_bytes=used + 1_000)
        limits.forget_usage()
        assert post(2_000, "e.md").status_code == 507  # the whole cache is full

        # a body without a Content-Length is counted as it streams, and cut at the same limit
        limits.limits = UploadLimits(request_bytes=4_000, user_bytes=10**9, total_bytes=10**9)
        boundary = "gwboundary"

        def chunked():
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.md\"\r\n"
                   f"Content-Type: text/markdown\r\n\r\n").encode()
            for _ in range(20):
                yield b"x" * 1_000
            yield f"\r\n--{boundary}--\r\n".encode()

        before = _cache_files(site)
        try:
            response = admin.post("/gradio_api/upload", content=chunked(),
                                  headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            assert response.status_code == 413
        except httpx.TransportError:  # the server may close the connection on the rest of the body
            pass
        assert not any(p.endswith("big.md") for p in _cache_files(site) - before)


def test_the_upload_cache_is_cleaned_by_age(tmp_path: Path) -> None:
    old = tmp_path / ("a" * 64)
    old.mkdir()
    (old / "old.md").write_text("old")
    fresh = tmp_path / ("b" * 64)
    fresh.mkdir()
    (fresh / "fresh.md").write_text("fresh")
    partial = tmp_path / "tmpabc123"
    partial.write_bytes(b"half an upload")
    other = tmp_path / "deep_links"  # not Gradio's upload layout: never touched
    other.mkdir()
    (other / "state.json").write_text("{}")
    now = time.time()
    for path in (old / "old.md", partial):
        os.utime(path, (now - 100, now - 100))

    assert clean_upload_cache(tmp_path, max_age_s=3600, now=now).files == 0  # nothing is old enough yet
    # ctime cannot be set back: look from 50 s in the future, with a 30 s age
    result = clean_upload_cache(tmp_path, max_age_s=30, partial_age_s=30, now=now + 50)
    assert result.files == 3 and not old.exists() and not fresh.exists() and not partial.exists()
    assert (other / "state.json").exists()

    (tmp_path / ("c" * 64)).mkdir()
    (tmp_path / ("c" * 64) / "kept.md").write_text("x")
    assert clean_upload_cache(tmp_path, 0, now=now + 50, keep={str(tmp_path / ("c" * 64) / "kept.md")}).files == 0


def test_the_server_cleans_what_it_received(site, limits) -> None:
    with http(site, "admin") as admin:
        [saved] = admin.post("/gradio_api/upload", files={"files": ("old.md", b"# old\n")}).json()
    folder = site.app.server_app.uploaded_file_dir
    clean_upload_cache(folder, max_age_s=limits.limits.cache_age_s)
    assert Path(saved).exists()
    clean_upload_cache(folder, max_age_s=1, now=time.time() + 5)
    assert not Path(saved).exists() and not Path(saved).parent.exists()


# --- 8. accented names, failed uploads, one log line per refusal ----------------------------------------------

def test_an_accented_file_name_is_accepted_and_ingested(site, tmp_path: Path) -> None:
    name = unicodedata.normalize("NFD", "Politique de congés.md")  # as a Mac sends it
    upload = tmp_path / name
    upload.write_text("# Congés sabbatiques\n\nThe sabbatical leave lasts 90 days after five years of service.\n",
                      encoding="utf-8")
    admin = client(site, "admin")
    admin.predict([handle_file(str(upload))], "rh/équipe", api_name="/admin_upload")
    wait_for_ingest(site)
    saved = site.uploads / "rh" / "équipe" / "Politique de congés.md"  # NFC on disk
    assert saved.is_file()
    cached = [p for p in _cache_files(site) if unicodedata.normalize("NFC", p).endswith("Politique de congés.md")]
    assert cached == []  # Gradio's copy is deleted once the file is saved
    html = client(site, "alice").predict("How long is the sabbatical leave?", [], None, api_name="/ask")[2]
    assert "90 days" in html and "rh/équipe/Politique de congés.md" in html


@pytest.mark.parametrize("name, says", [
    ("report\u202efdp.md", "U+202E"), ("../../users.md", "'/'"), ("a\\b.md", "'/' or '\\'"),
    (".hidden.md", "start with a letter"), ("notes.md.", "end with a dot"), ("bell\x07.md", "U+0007"),
    ("what?.md", "'?' is not allowed"), ("x" * 130 + ".md", "at most 120"),
])
def test_refused_file_names_say_why(name: str, says: str) -> None:
    with pytest.raises(LibraryError) as refused:
        safe_name(name)
    assert says in str(refused.value)


def test_unicode_names_and_folders_are_allowed_in_any_language() -> None:
    for name in ("Politique de congés.md", "Übersicht (2026).pdf", "規則.txt", "ποιότητα_v2.docx"):
        assert safe_name(name) == unicodedata.normalize("NFC", name)
    assert str(safe_subfolder("rh/équipe")) == "rh/équipe"
    for bad in ("rh/../..", "rh//x", "rh/\u202e"):
        with pytest.raises(LibraryError):
            safe_subfolder(bad)


def test_a_failed_upload_can_be_deleted_by_an_admin_and_is_no_longer_reported(site, tmp_path: Path) -> None:
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not really a pdf")
    admin = client(site, "admin")
    admin.predict([handle_file(str(broken))], "", api_name="/admin_upload")
    wait_for_ingest(site)
    stats, problems, _, _, uploads = admin.predict(api_name="/admin_overview")
    assert "broken.pdf" in problems
    assert "broken.pdf" in [c[1] if isinstance(c, (list, tuple)) else c for c in uploads["choices"]]

    with pytest.raises(Exception, match="Only administrators"):
        client(site, "alice").predict("broken.pdf", api_name="/admin_delete_upload")
    for forged, says in (("../users.json", "not a file of the upload folder"),
                         (str(site.users_file), "not a file of the upload folder"),
                         ("expenses.md", "no file")):
        with pytest.raises(Exception, match=says):
            admin.predict(forged, api_name="/admin_delete_upload")
    assert site.users_file.exists() and (site.uploads / "broken.pdf").exists()

    message, status, _, problems, *_ = admin.predict("broken.pdf", api_name="/admin_delete_upload")
    assert "Deleted broken.pdf" in message
    assert not (site.uploads / "broken.pdf").exists()
    assert "broken.pdf" not in problems and "broken.pdf" not in status  # not reported again, even before a run
    site.services.runner.start([site.uploads.resolve()], None, "test")
    wait_for_ingest(site)
    assert "broken.pdf" not in admin.predict(api_name="/admin_overview")[1]


def test_an_indexed_upload_is_not_deleted_behind_the_index(site, tmp_path: Path) -> None:
    good = tmp_path / "canteen.md"
    good.write_text("# Canteen\n\nThe canteen serves lunch from noon to 2pm.\n")
    admin = client(site, "admin")
    admin.predict([handle_file(str(good))], "", api_name="/admin_upload")
    wait_for_ingest(site)
    with pytest.raises(Exception, match="Remove from index"):
        admin.predict("canteen.md", api_name="/admin_delete_upload")
    assert (site.uploads / "canteen.md").exists()


def _refusal_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "app.ui.refused"]


def test_a_refused_action_logs_one_line_without_a_traceback(site, capfd, caplog) -> None:
    capfd.readouterr()
    alice, admin = client(site, "alice"), client(site, "admin")
    with caplog.at_level(logging.INFO):
        with pytest.raises(Exception, match="Only administrators"):  # app/ui/auth.py's refusal
            alice.predict(api_name="/admin_users")
        with pytest.raises(Exception, match="cannot remove yourself"):  # an admin action's AdminError
            admin.predict("admin", api_name="/admin_remove_user")
        with pytest.raises(Exception, match="not in the list of choices"):  # Gradio's own input check
            alice.predict("How many days of leave?", ["injection"], None, api_name="/ask")
        time.sleep(0.3)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    lines = _refusal_lines(caplog)
    assert lines[:2] == ["refused admin_users for alice: Only administrators can do this. (Error)",
                         "refused admin_remove_user for admin: you cannot remove yourself (Error)"]
    assert len(lines) == 3 and lines[2].startswith("refused ask for alice: Value: 'injection'")


def test_a_real_failure_still_logs_its_traceback(site, capfd, caplog, monkeypatch) -> None:
    def broken(ref):
        raise KeyError("a bug, not a refusal")

    monkeypatch.setattr(site.services.registry, "promote", broken)
    capfd.readouterr()
    with caplog.at_level(logging.INFO):
        with pytest.raises(Exception):
            client(site, "admin").predict("acme@v1", api_name="/admin_promote")
        time.sleep(0.3)
    err = capfd.readouterr().err
    assert "Traceback" in err and "a bug, not a refusal" in err
    assert _refusal_lines(caplog) == []


def test_parallel_uploads_share_one_allowance() -> None:
    """Two streams at once (no Content-Length) cannot each spend the whole per-user or total allowance."""
    from app.ui.upload_limits import UploadGate, _Refused

    gate = UploadGate(users=None, limits=UploadLimits(request_bytes=10_000, user_bytes=6_000, total_bytes=10**9))
    first, second = gate.open("admin", None, 0, 0), gate.open("admin", None, 0, 0)
    first.add(4_000)
    with pytest.raises(_Refused) as refused:
        second.add(4_000)
    assert refused.value.status == 429
    gate.close(first), gate.close(second)

    gate = UploadGate(users=None, limits=UploadLimits(request_bytes=10_000, user_bytes=10**9, total_bytes=9_000))
    first, second = gate.open("admin", None, 1_000, 0), gate.open("bob", None, 1_000, 0)
    first.add(4_000)
    with pytest.raises(_Refused) as refused:
        second.add(4_500)  # 1 000 on disk + 4 000 streaming + 4 500 > 9 000
    assert refused.value.status == 507
