"""The admin tab's Sync on a running server (gradio_client, as a script or an attacker would call it): employees are
refused on every endpoint, an admin adds a folder and runs it, the chat answers from it at once, the admin's
"Re-run ingestion" never applies the index's rules to a synced folder, and "Stop syncing" keeps or purges. In a real
browser (headless Chromium; skipped locally without it, failing in CI) the admin adds and runs a folder from the tab
(screenshot: artifacts/screenshots/sync.png)."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_docs
from gradio_client import Client
from ui_support import PASSWORDS, build_site, login, save_screenshot

from ingest.sync import SyncRegistry


def client(site, user: str) -> Client:
    return Client(site.url, auth=(user, PASSWORDS[user]), verbose=False, analytics_enabled=False,
                  download_files=False)


def answer_text(result) -> str:
    content = result[0][-1]["content"]
    if isinstance(content, list):
        content = "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return content


@pytest.fixture(scope="module")
def site(tmp_path_factory, _shared_embedder):
    built = build_site(tmp_path_factory.mktemp("ui-sync"), _shared_embedder, embedder_factory=lambda: _shared_embedder)
    yield built
    built.close()


PATIENCE_MS = 300_000  # the outer bound of a wait on a loaded machine


def test_admin_adds_and_runs_a_folder_in_the_browser(browser, site, tmp_path: Path) -> None:
    folder = write_docs(tmp_path / "handbook", {"canteen.md": "# Canteen\n\nThe canteen opens at 11:30.\n",
                                                "badges.md": "# Badges\n\nLost badges are replaced at desk 3.\n"})
    page = browser.new_context(viewport={"width": 1360, "height": 1000}).new_page()
    login(page, site.url, "admin")
    page.get_by_role("tab", name="Admin").click()
    page.get_by_role("tab", name="Sync").click()
    page.locator("#gw-sync-path textarea, #gw-sync-path input").first.fill(str(folder))
    page.locator("#gw-sync-every textarea, #gw-sync-every input").first.fill("1h")
    page.locator("#gw-sync-add").click()
    page.locator("#gw-sync-note").get_by_text(f"Added {folder.resolve()}").wait_for(timeout=PATIENCE_MS)
    choice = page.locator("#gw-sync-choice input").first
    choice.fill(str(folder.resolve()))
    choice.press("Enter")
    page.locator("#gw-sync-run").click()
    page.locator("#gw-sync-note").get_by_text("done: 2 added").wait_for(timeout=PATIENCE_MS)
    text = page.locator("#gw-sync").inner_text()
    assert str(folder.resolve()) in text and "ok: 2 added" in text and "1h" in text
    save_screenshot(page, "sync.png", full_page=True)
    page.context.close()
    SyncRegistry(site.index).remove(folder)


def test_employees_are_refused_on_every_sync_endpoint(site, tmp_path: Path) -> None:
    folder = write_docs(tmp_path / "planted", {"note.md": "# Note\n\nThe CEO's password is hunter2.\n"})
    before = SyncRegistry(site.index).folders()
    alice = client(site, "alice")
    for api_name, args in (("/admin_sync", ()), ("/admin_sync_add", (str(folder), "", "15m")),
                           ("/admin_sync_run", (str(folder),)), ("/admin_sync_remove", (str(folder), True))):
        with pytest.raises(Exception, match="Only administrators"):
            alice.predict(*args, api_name=api_name)
    assert SyncRegistry(site.index).folders() == before and str(folder.resolve()) not in {f.path for f in before}


def test_admin_adds_runs_and_removes_a_synced_folder_and_the_chat_answers_from_it(site, tmp_path: Path) -> None:
    folder = write_docs(tmp_path / "facilities", {
        "parking.md": "# Parking\n\nParking in lot B costs 4 EUR per day.\n",
        "secret/move.md": "# Office move\n\nThe office moves to Harbour Street in March.\n"})
    acl = tmp_path / "facilities.toml"
    acl.write_text('default = ["everyone"]\n[[rules]]\nglob = "secret/*"\ngroups = ["hr"]\n')
    admin = client(site, "admin")
    for args, says in (((str(folder.name), "", "15m"), "full path"), ((str(tmp_path / "nope"), "", "15m"),
                        "no such folder"), ((str(folder), "", "5s"), "too short"),
                       ((str(folder), str(tmp_path / "none.toml"), "15m"), "cannot read the ACL file")):
        with pytest.raises(Exception, match=says):
            admin.predict(*args, api_name="/admin_sync_add")

    table, _, note = admin.predict("", api_name="/admin_sync_run")  # nothing chosen: said in the note, table kept
    assert "Choose a folder" in note and table["data"] in ([], [["", "", "", "", "", ""]])
    table, chosen, note = admin.predict(str(folder), str(acl), "2h", api_name="/admin_sync_add")
    assert chosen["value"] == str(folder.resolve())  # the new folder is chosen: Run now acts on it
    assert f"Added {folder.resolve()}" in note and table["data"][0][:3] == [str(folder.resolve()), str(acl.resolve()),
                                                                          "2h"]
    table, _, note = admin.predict(str(folder), api_name="/admin_sync_run")
    assert "done: 2 added" in note and table["data"][0][4].startswith("ok: 2 added")

    alice = client(site, "alice")
    assert "4 EUR" in answer_text(alice.predict("How much does parking in lot B cost?", [], None, api_name="/ask"))
    assert "Harbour" not in answer_text(alice.predict("Where does the office move to?", [], None, api_name="/ask"))
    hannah = client(site, "hannah")
    assert "Harbour" in answer_text(hannah.predict("Where does the office move to?", [], None, api_name="/ask"))

    # the admin's "Re-run ingestion" applies the index's rules (no rule for secret/*): never to the synced folder
    admin.predict("", api_name="/admin_ingest")
    groups = {d.path: d.groups for d in site.services.engine.reader.documents()}
    assert groups[str(folder.resolve() / "secret/move.md")] == ("hr",)
    with pytest.raises(Exception, match="synced folder"):
        admin.predict(str(folder), api_name="/admin_ingest")

    _, _, note = admin.predict(str(folder), False, api_name="/admin_sync_remove")
    assert "Its documents stay in the index" in note and SyncRegistry(site.index).folders() == []
    assert "4 EUR" in answer_text(alice.predict("How much does parking in lot B cost?", [], None, api_name="/ask"))
    admin.predict(str(folder), "", "1d", api_name="/admin_sync_add")
    _, _, note = admin.predict(str(folder), True, api_name="/admin_sync_remove")
    assert "removed its 2 document(s)" in note
    assert not any(d.root == str(folder.resolve()) for d in site.services.engine.reader.documents())


def test_admin_ingestion_and_folder_sync_share_one_embedder(site) -> None:
    """The server loads the ingestion model once, whichever of the two runs first."""
    import dataclasses

    made = []
    services = dataclasses.replace(site.services, embedder_factory=lambda: made.append(object()) or made[-1])
    assert services.runner.embedder_factory() is services.sync.embedder_factory()
    assert len(made) == 1
