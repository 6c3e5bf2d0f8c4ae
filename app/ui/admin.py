"""The admin tab: documents and ingestion, permissions, users, adapters, guardrails, the audit log.

The tab is shown to admins only, but hiding is not the protection: every handler below starts with
require_admin() (each action through as_admin()), which reads the logged-in user's role from the users file on
the server. An employee who calls an admin endpoint directly (gradio_client, curl) gets an error and nothing changes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr

from app.guardrails import GUARDS
from app.ui import admin_actions as actions
from app.ui import admin_view as view
from app.ui import audit_view
from app.ui.admin_actions import AdminError
from app.ui.admin_canary import build_canary_tab
from app.ui.admin_monitoring import build_monitoring_tab
from app.ui.admin_review import build_review_tab
from app.ui.admin_routes import build_routes_tab
from app.ui.admin_sync import build_sync_tab
from app.ui.auth import current_user, require_admin
from app.ui.library import SUPPORTED
from app.ui.render import GUARD_NAMES
from app.ui.services import UiServices
from app.users import ROLES

POLL_SECONDS = 0.5  # how often the progress bar is updated during an ingestion
ADMIN_CONCURRENCY = 4


@dataclass
class AdminTab:
    load_outputs: list
    load: object  # the function that fills the tab for an admin (no-op for others)


def _fail(exc: Exception) -> gr.Error:
    return gr.Error(str(exc))


def as_admin(services: UiServices, request: gr.Request, action, *args):
    """`action(services, admin, *args)` for the logged-in admin (else gr.Error); an AdminError is shown on the page."""
    admin = require_admin(services.users, request)
    try:
        return action(services, admin, *args)
    except AdminError as exc:
        raise _fail(exc) from None


def _start_unless_running(services: UiServices, admin, folder: str):
    if not services.runner.state().running:  # else: show the run that is going on
        actions.start_ingest(services, admin, folder)


def build_admin_tab(services: UiServices) -> AdminTab:
    exports = audit_view.CsvExports()
    def listen(trigger, fn, inputs, outputs, api_name):
        trigger(fn, inputs, outputs, api_name=api_name, concurrency_limit=ADMIN_CONCURRENCY,
                concurrency_id=f"admin-{api_name}")

    def present():
        """Which paths of the last run's problems are still on disk (deleted ones are not reported again)."""
        return view.still_there(actions.problem_roots(services))

    # --- documents ----------------------------------------------------------------------------------------
    with gr.Tab("Documents", id="admin-documents"):
        stats = gr.HTML("", elem_id="gw-admin-stats", padding=False)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                gr.Markdown("#### Add documents")
                files = gr.File(label="Upload documents", file_count="multiple", type="filepath",
                                file_types=list(SUPPORTED), elem_id="gw-upload", height=140)
                subfolder = gr.Textbox(label="Into folder (optional)", placeholder="e.g. hr/confidential",
                                       info="ACL rules match this path, so a restricted folder stays restricted.",
                                       elem_id="gw-upload-folder")
                upload = gr.Button("Upload and index", variant="primary", elem_id="gw-upload-button")
            with gr.Column(scale=1):
                gr.Markdown("#### Re-run ingestion")
                folder = gr.Textbox(label="Also index a folder on the server (optional)",
                                    placeholder="/srv/company-docs/policies", elem_id="gw-folder",
                                    info="Every folder already in the index and the upload folder are always "
                                         "re-checked; only new or changed files are embedded again.")
                ingest = gr.Button("Re-run ingestion", variant="primary", elem_id="gw-ingest")
        status = gr.HTML(view.progress(services.runner.state()), elem_id="gw-ingest-box", padding=False)
        gr.Markdown("#### Files the last run could not index")
        problems = gr.HTML("", padding=False)
        with gr.Row(equal_height=True):
            upload_choice = gr.Dropdown(label="Uploaded file that is not in the index", choices=[], scale=4,
                                        elem_id="gw-delete-upload-choice",
                                        allow_custom_value=True)  # checked on the server
            delete_upload = gr.Button("Delete file", variant="stop", scale=1, elem_id="gw-delete-upload")
        upload_message = gr.Markdown("")
        gr.Markdown("#### Documents in the index")
        documents = gr.Dataframe(headers=view.DOCUMENT_COLUMNS, interactive=False, wrap=True, max_height=360,
                                 elem_id="gw-documents")
        with gr.Row(equal_height=True):
            doc_choice = gr.Dropdown(label="Document", choices=[], scale=4, elem_id="gw-remove-choice",
                                     allow_custom_value=True)  # checked on the server
            remove = gr.Button("Remove from index", variant="stop", scale=1, elem_id="gw-remove")
        doc_message = gr.Markdown("")

    overview_outputs = [stats, problems, documents, doc_choice, upload_choice]

    def overview_values():
        services.engine.reader.refresh()
        reader = services.engine.reader
        docs = reader.documents()
        index_stats = reader.stats()
        return (view.stats(index_stats), view.problems(index_stats, present()), view.documents(docs),
                gr.update(choices=view.document_choices(docs), value=None),
                gr.update(choices=actions.unindexed_uploads(services), value=None))

    def overview(request: gr.Request):
        require_admin(services.users, request)
        return overview_values()

    def watch(job_outputs: int):
        """Yield the progress until the run is over, then the summary and the refreshed overview."""
        skip = [gr.update()] * job_outputs
        while True:
            job = services.runner.state()
            if not job.running:
                break
            yield (view.progress(job), *skip, *[gr.update()] * len(overview_outputs))
            time.sleep(POLL_SECONDS)
        yield (view.progress(services.runner.state(), present()), *skip, *overview_values())

    def run_ingest(extra_folder: str, request: gr.Request):
        as_admin(services, request, _start_unless_running, extra_folder or "")
        yield from watch(0)

    listen(ingest.click, run_ingest, [folder], [status, *overview_outputs], "admin_ingest")

    def run_upload(uploaded: list[str] | None, into: str, request: gr.Request):
        as_admin(services, request, actions.upload, uploaded or [], into or "")
        first = True
        for values in watch(1):
            values = list(values)
            values[1] = None if first else gr.update()  # clear the file picker once
            first = False
            yield tuple(values)

    listen(upload.click, run_upload, [files, subfolder], [status, files, *overview_outputs], "admin_upload")

    def remove_document(path: str, request: gr.Request):
        return (as_admin(services, request, actions.remove_document, path), *overview_values())

    listen(remove.click, remove_document, [doc_choice], [doc_message, *overview_outputs], "admin_remove_document")

    def do_delete_upload(relative: str, request: gr.Request):
        message = as_admin(services, request, actions.delete_upload, relative)
        return (message, view.progress(services.runner.state(), present()), *overview_values())

    listen(delete_upload.click, do_delete_upload, [upload_choice], [upload_message, status, *overview_outputs],
           "admin_delete_upload")

    # --- permissions --------------------------------------------------------------------------------------
    with gr.Tab("Permissions", id="admin-permissions"):
        gr.Markdown("Each document is readable by the groups of the **first** rule whose glob matches its path "
                    "inside its folder (`*` also matches `/`); other documents get `default`. Saving applies the "
                    "rules at once: permissions change without embedding anything again.")
        acl = gr.Code(label="ACL rules (TOML)", language=None, lines=14, elem_id="gw-acl", interactive=True)
        save_acl = gr.Button("Save and apply", variant="primary", elem_id="gw-save-acl")
        acl_status = gr.HTML("", padding=False)

    def load_acl(request: gr.Request):
        require_admin(services.users, request)
        return actions.acl_rules(services)

    def apply_acl(text: str, request: gr.Request):
        as_admin(services, request, actions.save_acl, text or "")
        yield from watch(0)

    listen(save_acl.click, apply_acl, [acl], [acl_status, *overview_outputs], "admin_save_acl")

    # --- users --------------------------------------------------------------------------------------------
    with gr.Tab("Users", id="admin-users"):
        users_table = gr.Dataframe(headers=["User", "Role", "Groups"], interactive=False, elem_id="gw-users")
        with gr.Row():
            user_name = gr.Textbox(label="User name", elem_id="gw-user-name")
            user_password = gr.Textbox(label="Password", type="password", elem_id="gw-user-password",
                                       info="8 characters or more; leave empty to keep an existing user's password")
        with gr.Row():
            user_role = gr.Radio(list(ROLES), value="employee", label="Role", elem_id="gw-user-role")
            user_groups = gr.Textbox(label="Groups (comma-separated; everyone is always included)",
                                     placeholder="hr, finance", elem_id="gw-user-groups")
        save_user = gr.Button("Save user", variant="primary", elem_id="gw-save-user")
        with gr.Row(equal_height=True):
            user_choice = gr.Dropdown(label="User", choices=[], scale=4, elem_id="gw-remove-user-choice",
                                      allow_custom_value=True)
            remove_user = gr.Button("Remove user", variant="stop", scale=1, elem_id="gw-remove-user")
        user_message = gr.Markdown("")

    users_outputs = [users_table, user_choice]

    def users_values():
        users = services.users.list()
        return ([[u.name, u.role, ", ".join(u.groups)] for u in users],
                gr.update(choices=[u.name for u in users], value=None))

    def list_users(request: gr.Request):
        require_admin(services.users, request)
        return users_values()

    def do_save_user(name: str, password: str, role: str, groups: str, request: gr.Request):
        return (as_admin(services, request, actions.save_user, name, password, role, groups), "", *users_values())

    listen(save_user.click, do_save_user, [user_name, user_password, user_role, user_groups],
           [user_message, user_password, *users_outputs], "admin_save_user")

    def do_remove_user(name: str, request: gr.Request):
        return (as_admin(services, request, actions.remove_user, name), *users_values())

    listen(remove_user.click, do_remove_user, [user_choice], [user_message, *users_outputs], "admin_remove_user")

    # --- adapters -----------------------------------------------------------------------------------------
    with gr.Tab("Adapters", id="admin-adapters"):
        adapters_note = gr.Markdown("")
        adapters_table = gr.Dataframe(headers=["Adapter", "Version", "Status", "Created", "Base model",
                                               "Training examples", "Validation loss"], interactive=False,
                                      elem_id="gw-adapters")
        with gr.Row(equal_height=True):
            promote_choice = gr.Dropdown(label="Version", choices=[], scale=3, elem_id="gw-promote-choice",
                                         allow_custom_value=True)
            promote = gr.Button("Promote", variant="primary", scale=1, elem_id="gw-promote")
            rollback_choice = gr.Dropdown(label="Adapter", choices=[], scale=3, elem_id="gw-rollback-choice",
                                          allow_custom_value=True)
            rollback = gr.Button("Roll back", scale=1, elem_id="gw-rollback")
        adapter_message = gr.Markdown("")

    adapter_outputs = [adapters_note, adapters_table, promote_choice, rollback_choice]

    def adapter_values():
        try:
            rows = actions.adapter_rows(services)
        except Exception as exc:  # a damaged registry: say so, keep the page
            return (f"The adapter registry at `{services.registry.root}` cannot be read: {exc}", [],
                    gr.update(choices=[]), gr.update(choices=[]))
        note = ("" if rows else f"No adapters yet in `{services.registry.root}`: answers come from the base model. "
                                "Train one with `groundwork finetune --name NAME --data QA.jsonl`.")
        return (note, rows, gr.update(choices=[f"{r[0]}@{r[1]}" for r in rows], value=None),
                gr.update(choices=sorted({r[0] for r in rows}), value=None))

    def list_adapters(request: gr.Request):
        require_admin(services.users, request)
        return adapter_values()

    def do_promote(ref: str, request: gr.Request):
        return (as_admin(services, request, actions.promote, ref), *adapter_values())

    def do_rollback(name: str, request: gr.Request):
        return (as_admin(services, request, actions.rollback, name), *adapter_values())

    listen(promote.click, do_promote, [promote_choice], [adapter_message, *adapter_outputs], "admin_promote")
    listen(rollback.click, do_rollback, [rollback_choice], [adapter_message, *adapter_outputs], "admin_rollback")
    with gr.Tab("Canary", id="admin-canary") as canary_tab:  # app/ui/admin_canary.py: live A/B, rollbacks
        build_canary_tab(services, canary_tab)

    # --- guardrails ---------------------------------------------------------------------------------------
    with gr.Tab("Guardrails", id="admin-guardrails"):
        with gr.Row():
            pii = gr.Checkbox(label=GUARDS["pii"], elem_id="gw-g-pii")
            injection = gr.Checkbox(label=GUARDS["injection"], elem_id="gw-g-injection")
        max_chars = gr.Number(label="Longest question (characters; 0 = no limit)", precision=0, minimum=0,
                              elem_id="gw-g-max")
        may_disable = gr.CheckboxGroup(choices=[(GUARD_NAMES[g], g) for g in GUARDS],
                                       label="Guards users may switch off for themselves", elem_id="gw-g-may")
        topics = gr.Textbox(label="Blocked topics, one per line: name: keyword, keyword", lines=5,
                            placeholder="layoffs: layoff, redundancy, job cuts", elem_id="gw-g-topics")
        allowlist = gr.Textbox(label="Never redacted (one per line: an email domain such as @acme.example, or a "
                                     "published number)", lines=3, elem_id="gw-g-allow")
        save_guards = gr.Button("Save guardrails", variant="primary", elem_id="gw-save-guards")
        guard_message = gr.Markdown("")

    guard_outputs = [pii, injection, max_chars, may_disable, topics, allowlist]

    def guard_values():
        config = services.sync_guardrails()
        return (config.pii, config.injection, config.max_question_chars, sorted(config.user_may_disable),
                actions.topics_text(config), "\n".join(config.pii_allowlist))

    def load_guards(request: gr.Request):
        require_admin(services.users, request)
        return guard_values()

    def do_save_guards(p, i, m, d, t, a, request: gr.Request):
        as_admin(services, request, actions.save_guardrails, p, i, m, d, t, a)
        return ("Saved: the new settings apply from the next question on.", *guard_values())

    listen(save_guards.click, do_save_guards, guard_outputs, [guard_message, *guard_outputs],
           "admin_save_guardrails")

    with gr.Tab("Review", id="admin-review") as review_tab:
        build_review_tab(services, review_tab)

    with gr.Tab("Routes", id="admin-routes") as routes_tab:  # the routing gate (app/ui/admin_routes.py)
        build_routes_tab(services, routes_tab)

    with gr.Tab("Monitoring", id="admin-monitoring") as monitoring_tab:  # plots and drift (admin_monitoring.py)
        build_monitoring_tab(services, monitoring_tab)

    with gr.Tab("Sync", id="admin-sync") as sync_tab:  # folders re-ingested on a schedule (admin_sync.py)
        build_sync_tab(services, sync_tab)

    # --- audit log ----------------------------------------------------------------------------------------
    with gr.Tab("Audit log", id="admin-audit"):
        gr.Markdown("Every question asked in the web UI, through the API or the CLI: who asked, their groups, "
                    "which documents' passages were retrieved and which were cited, the adapter, refusals, guardrail "
                    "events and latency. Questions are stored after personal-data redaction, passages never. "
                    "Conversations themselves stay private to their users.")
        with gr.Row(equal_height=True):
            audit_user = gr.Textbox(label="User", placeholder="alice", elem_id="gw-audit-user")
            audit_document = gr.Textbox(label="Document (a folder when it ends with /)",
                                        placeholder="policies/travel.md or policies/", elem_id="gw-audit-document")
            audit_since = gr.Textbox(label="Since (YYYY-MM-DD)", placeholder="2026-12-01", elem_id="gw-audit-since")
            audit_until = gr.Textbox(label="Until (YYYY-MM-DD, included)", placeholder="2026-12-31",
                                     elem_id="gw-audit-until")
        with gr.Row(equal_height=True):
            audit_show = gr.Button("Show", variant="primary", scale=1, elem_id="gw-audit-show")
            audit_export = gr.Button("Export CSV", scale=1, elem_id="gw-audit-export")
            audit_file = gr.File(label="CSV export", visible=False, interactive=False, scale=2,
                                 elem_id="gw-audit-file")
        audit_summary = gr.Markdown("", elem_id="gw-audit-summary")
        audit_table = gr.Dataframe(headers=audit_view.COLUMNS, interactive=False, wrap=True, max_height=480,
                                   column_widths=audit_view.COLUMN_WIDTHS, elem_id="gw-audit")

    audit_filters = [audit_user, audit_document, audit_since, audit_until]
    audit_outputs = [audit_summary, audit_table]

    def audit_values(user: str = "", document: str = "", since: str = "", until: str = ""):
        try:
            chosen = audit_view.parse_filter(user, document, since, until)
        except audit_view.AuditFilterError as exc:
            raise _fail(exc) from None
        log = services.conversations.audit
        counts = log.users(user=chosen.user, document=chosen.document, since=chosen.since, until=chosen.until)
        return audit_view.summary(counts, chosen), audit_view.rows(chosen.query(log, limit=audit_view.SHOWN))

    def show_audit(user, document, since, until, request: gr.Request):
        require_admin(services.users, request)
        return audit_values(user, document, since, until)

    listen(audit_show.click, show_audit, audit_filters, audit_outputs, "admin_audit")

    def export_audit(user, document, since, until, request: gr.Request):
        require_admin(services.users, request)
        try:
            chosen = audit_view.parse_filter(user, document, since, until)
        except audit_view.AuditFilterError as exc:
            raise _fail(exc) from None
        log = services.conversations.audit
        path = exports.write(log, chosen.query(log))
        return (gr.update(value=str(path), visible=True), *audit_values(user, document, since, until))

    listen(audit_export.click, export_audit, audit_filters, [audit_file, *audit_outputs], "admin_audit_export")

    # --- reading endpoints (also admin-only) and the tab's first fill -----------------------------------------
    readers = gr.Button(visible=False)  # carries the read-only endpoints, for scripts and tests
    listen(readers.click, overview, None, overview_outputs, "admin_overview")
    listen(readers.click, load_acl, None, [acl], "admin_acl")
    listen(readers.click, list_users, None, users_outputs, "admin_users")
    listen(readers.click, list_adapters, None, adapter_outputs, "admin_adapters")
    listen(readers.click, load_guards, None, guard_outputs, "admin_guardrails")

    outputs = [*overview_outputs, acl, *users_outputs, *adapter_outputs, *guard_outputs, status, *audit_outputs]

    def fill(request: gr.Request):
        """The whole tab for an admin; nothing (and no error) for anyone else."""
        user = current_user(services.users, request)
        if not user.is_admin:
            return tuple(gr.update() for _ in outputs)
        return (*overview_values(), actions.acl_rules(services), *users_values(), *adapter_values(),
                *guard_values(), view.progress(services.runner.state(), present()), *audit_values())

    return AdminTab(load_outputs=outputs, load=fill)
