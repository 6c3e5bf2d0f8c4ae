"""The admin tab's "Sync": the folders kept in sync with the index, their last and next runs, and the actions
(add a folder, run one now, stop syncing one and optionally remove its documents).

Every handler checks the role on the server first (require_admin), like the rest of the admin tab: an employee
calling these endpoints directly gets an error and nothing changes. Runs happen in the server's sync scheduler
(app/ui/services.py `sync`, started by `groundwork serve`); "Run now" makes a folder due and waits for its result.
"""
from __future__ import annotations

import html
import time
from pathlib import Path

import gradio as gr

from app.ui.auth import require_admin
from app.ui.services import UiServices
from ingest.errors import GroundworkError
from ingest.store import IndexBusy
from ingest.sync import DEFAULT_EVERY, SyncFolder, format_time, purge_folder

COLUMNS = ["Folder", "ACL file", "Every", "Last run", "Result", "Next run"]
COLUMN_WIDTHS = ["24%", "16%", "6%", "12%", "30%", "12%"]
POLL_SECONDS = 1.0
RUN_NOW_WAIT_S = 600.0  # the longest "Run now" shows progress; the run itself goes on and the table shows it later
HELP = ("Folders on the server that are re-ingested on a schedule: new and changed files are embedded, deleted "
        "files leave the index, unchanged files are skipped. Each folder may have its own ACL file (TOML rules "
        "re-read at every run); without one it follows the rules stored with the index. A run that finds the index "
        "busy (another ingestion) is retried 30 seconds later. Also from the command line: `groundwork sync`.")


def rows(folders: list[SyncFolder], current: str | None, now: float) -> list[list[str]]:
    """One table row per folder."""
    table = []
    for folder in folders:
        last = folder.last_run
        result = "" if last is None else ("ok: " if last.ok else "failed: ") + last.message
        if folder.note:
            result = f"{result} ({folder.note})" if result else folder.note
        if folder.path == current:
            upcoming = "running now"
        else:
            upcoming = "due now" if folder.due(now) else format_time(folder.next_run)
        table.append([folder.path, folder.acl or "(the index's rules)", folder.every,
                      format_time(last.started) if last else "never", result, upcoming])
    return table


def values(services: UiServices) -> tuple:
    """(table, folder choices, note) as the tab shows them now."""
    try:
        folders = services.sync.registry.folders()
    except GroundworkError as exc:  # a damaged sync.json: say so, keep the page
        return [], gr.update(choices=[]), f"**The sync registrations cannot be read:** {html.escape(str(exc))}"
    note = "" if folders else "No folders are synced yet."
    if folders and not services.sync.running:
        note = "The scheduler is not running in this process: folders run only with **Run now** (or `groundwork " \
               "sync run`)."
    return (rows(folders, services.sync.current, time.time()),
            gr.update(choices=[f.path for f in folders], value=None), note)


def load(services: UiServices, request: gr.Request) -> tuple:
    require_admin(services.users, request)
    return values(services)


def add(services: UiServices, path: str, acl: str, every: str, request: gr.Request) -> tuple:
    """Register a folder (the path must be a folder on the server, given in full) and make it due at once."""
    require_admin(services.users, request)
    path, acl = (path or "").strip(), (acl or "").strip()
    if not path or not Path(path).expanduser().is_absolute():
        raise gr.Error("Give the folder's full path on the server.")
    if acl and not Path(acl).expanduser().is_absolute():
        raise gr.Error("Give the ACL file's full path on the server (or leave it empty).")
    try:
        folder, existed = services.sync.registry.add(path, acl or None, (every or "").strip() or DEFAULT_EVERY)
    except GroundworkError as exc:
        raise gr.Error(str(exc)) from None
    services.sync.run_now(folder.path)  # wakes the scheduler: the first run starts within seconds
    table, choices, _ = values(services)
    choices["value"] = folder.path  # chosen, so that Run now and Stop syncing act on it
    return table, choices, f"{'Updated' if existed else 'Added'} {folder.path} (every {folder.every}); its first " \
                           f"run starts now."


def _not_done(services: UiServices, message: str) -> tuple:
    """The tab as it is, with `message` in its note: a refusal the admin can fix (no folder chosen, a folder
    removed meanwhile, a busy index) is said there, not by replacing the table and the list with errors."""
    table, _, _ = values(services)
    return table, gr.update(), message


def run_now(services: UiServices, path: str, request: gr.Request):
    """Make the folder due, then show the table until its run is over (the scheduler runs it)."""
    require_admin(services.users, request)
    scheduler = services.sync
    if not (path or "").strip():
        yield _not_done(services, "Choose a folder in the list first.")
        return
    try:
        before = scheduler.registry.get(path)
        scheduler.run_now(before.path)
    except GroundworkError as exc:
        yield _not_done(services, str(exc))
        return
    if not scheduler.running:  # no background thread here (e.g. an embedded app): run it in this handler
        scheduler.tick()
    deadline = time.time() + RUN_NOW_WAIT_S
    after = before
    while True:
        try:
            after = scheduler.registry.get(before.path)
        except GroundworkError:  # removed meanwhile
            break
        if after.last_run != before.last_run or after.note != before.note or time.time() > deadline:
            break
        table, _, _ = values(services)
        yield table, gr.update(), f"Syncing {html.escape(before.path)}…"
        time.sleep(POLL_SECONDS)
    table, _, _ = values(services)
    yield table, gr.update(), _result(after)  # the folder stays chosen


def _result(folder: SyncFolder) -> str:
    if folder.note:
        return f"{folder.path}: {folder.note}"
    last = folder.last_run
    if last is None:
        return f"{folder.path}: not run yet."
    return f"{folder.path}: {'done' if last.ok else 'failed'}: {last.message}"


def remove(services: UiServices, path: str, purge: bool, request: gr.Request) -> tuple:
    """Stop syncing a folder; with `purge`, its documents leave the index too (first, so a busy index changes
    nothing: the admin can try again)."""
    require_admin(services.users, request)
    registry = services.sync.registry
    if not (path or "").strip():
        return _not_done(services, "Choose a folder in the list first.")
    try:
        folder = registry.get(path)
        removed = purge_folder(registry.index_dir, folder.path) if purge else None
        registry.remove(folder.path)
    except IndexBusy as exc:
        return _not_done(services, f"Not removed: {exc}")
    except GroundworkError as exc:
        return _not_done(services, str(exc))
    if removed is not None:
        services.engine.reader.refresh()
        message = f"Stopped syncing {folder.path} and removed its {removed} document(s) from the index."
    else:
        message = (f"Stopped syncing {folder.path}. Its documents stay in the index; tick \"also remove its "
                   f"documents\" to remove them.")
    table, choices, _ = values(services)
    return table, choices, message


def build_sync_tab(services: UiServices, tab: gr.Tab) -> None:
    """The tab's content; filled when the admin opens it (tab.select) and by its Refresh button."""
    gr.Markdown(HELP)
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, max_height=420, column_widths=COLUMN_WIDTHS,
                         elem_id="gw-sync")
    note = gr.Markdown("", elem_id="gw-sync-note")
    with gr.Row(equal_height=True):
        choice = gr.Dropdown(label="Folder", choices=[], scale=4, elem_id="gw-sync-choice",
                             allow_custom_value=True)  # checked on the server
        run_button = gr.Button("Run now", variant="primary", scale=1, elem_id="gw-sync-run")
        purge = gr.Checkbox(label="also remove its documents", value=False, scale=1, elem_id="gw-sync-purge")
        remove_button = gr.Button("Stop syncing", variant="stop", scale=1, elem_id="gw-sync-remove")
        refresh_button = gr.Button("Refresh", scale=1, elem_id="gw-sync-refresh")
    gr.Markdown("#### Add a folder")
    with gr.Row(equal_height=True):
        path = gr.Textbox(label="Folder on the server (full path)", placeholder="/srv/company-docs/policies",
                          scale=4, elem_id="gw-sync-path")
        acl = gr.Textbox(label="ACL file (optional, full path)", placeholder="/srv/company-docs/policies.acl.toml",
                         scale=3, elem_id="gw-sync-acl")
        every = gr.Textbox(label="Every", value=DEFAULT_EVERY, placeholder="15m, 2h, 1d", scale=1,
                           elem_id="gw-sync-every")
        add_button = gr.Button("Add folder", variant="primary", scale=1, elem_id="gw-sync-add")

    outputs = [table, choice, note]

    def on_load(request: gr.Request):  # Gradio passes the request to parameters annotated gr.Request
        return load(services, request)

    def on_add(p: str, a: str, e: str, request: gr.Request):
        return add(services, p, a, e, request)

    def on_run(p: str, request: gr.Request):
        yield from run_now(services, p, request)

    def on_remove(p: str, also_documents: bool, request: gr.Request):
        return remove(services, p, bool(also_documents), request)

    kwargs = {"concurrency_limit": 4, "concurrency_id": "admin-sync"}
    tab.select(on_load, None, outputs, api_name=False, **kwargs)
    refresh_button.click(on_load, None, outputs, api_name="admin_sync", **kwargs)
    add_button.click(on_add, [path, acl, every], outputs, api_name="admin_sync_add", **kwargs)
    run_button.click(on_run, [choice], outputs, api_name="admin_sync_run", **kwargs)
    remove_button.click(on_remove, [choice, purge], outputs, api_name="admin_sync_remove", **kwargs)
