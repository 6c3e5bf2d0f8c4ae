"""The admin tab's "Routes": the routing gate's file (routes.json) edited as JSON, saved only when valid, and a
"Test" box that says which route and adapter would answer a question for a user, and why.

Every handler checks the role on the server first (require_admin), like the rest of the admin tab: an employee
calling these endpoints directly gets an error and nothing changes. The test asks the chat's own Router, so it
answers exactly as the chat decides.
"""
from __future__ import annotations

import json

import gradio as gr

from app.production.routes import Router, RoutesError, parse
from app.ui.auth import require_admin
from app.ui.services import UiServices
from app.users import UserError

HELP = ("Routes are tried in order; the first whose groups (empty: anyone) and intent (optional) match the question "
        "answers, with its adapter: `base` (no adapter), `NAME` (its promoted version) or `NAME@vN`. When none "
        "matches, the default route answers (the promoted adapter). An intent is a few example questions; a "
        "question has the intent of its nearest example unless their similarity is below the intent's threshold. "
        "Saving checks every adapter and intent, and refuses an edit of an older version than the file's.")


def router(services: UiServices) -> Router:
    """The chat's router (same file, registry and embedder), or one beside the users file."""
    chat = getattr(services.conversations, "router", None)
    return chat or Router.beside(services.users.path, services.registry, services.engine.embedder)


def routes_text(services: UiServices) -> str:
    return json.dumps(router(services).file.load().to_dict(), indent=2, ensure_ascii=False)


def load(services: UiServices, request: gr.Request) -> tuple[str, str]:
    """(the file as JSON, a note)."""
    require_admin(services.users, request)
    try:
        return routes_text(services), ""
    except RoutesError as exc:
        return router(services).file.path.read_text(encoding="utf-8"), f"**The routes file is broken:** {exc}"


def save(services: UiServices, text: str, request: gr.Request) -> tuple[str, str]:
    """Validate and save the edited JSON as the next version; (the saved file as JSON, a note)."""
    require_admin(services.users, request)
    try:
        try:
            config = parse(json.loads(text or "{}"))
        except ValueError as exc:
            raise RoutesError(f"not valid JSON ({exc})") from None
        saved = router(services).file.save(config, services.registry)
    except RoutesError as exc:
        raise gr.Error(f"Not saved: {exc}") from None
    return (json.dumps(saved.to_dict(), indent=2, ensure_ascii=False),
            f"Saved version {saved.version}: it applies from the next question on.")


def test(services: UiServices, question: str, user_name: str, request: gr.Request) -> str:
    """Which route and adapter would answer `question` for the user named, and why (nothing is answered)."""
    require_admin(services.users, request)
    if not (question or "").strip() or not (user_name or "").strip():
        raise gr.Error("Give a question and the user who would ask it.")
    try:
        user = services.users.get(user_name.strip())
    except UserError as exc:
        raise gr.Error(str(exc)) from None
    choice = router(services).choose(user, question.strip())
    _, label = services.registry.resolve(choice.adapter, verify=False)
    lines = [f"**Route:** {choice.route}",
             f"**Adapter:** {label or 'base model (no adapter)'}"
             + (" (the promoted adapter)" if choice.adapter is None and label else "")]
    if choice.arm:
        lines.append(f"**Canary:** {choice.arm} arm")
    match = choice.match
    if match is not None and match.nearest is not None:
        lines.append(f"**Intent:** {match.intent or 'none'} (nearest {match.nearest}, similarity "
                     f"{match.similarity:.3f}, threshold {match.threshold:.2f})")
    lines.append(f"**Why:** {choice.reason}")
    return "  \n".join(lines)


def build_routes_tab(services: UiServices, tab: gr.Tab) -> None:
    """The tab's content; filled when the admin opens it (tab.select) and by its Reload button."""
    gr.Markdown(HELP)
    editor = gr.Code(language="json", label="routes.json", lines=18, interactive=True, elem_id="gw-routes")
    with gr.Row(equal_height=True):
        save_button = gr.Button("Save routes", variant="primary", scale=1, elem_id="gw-routes-save")
        reload_button = gr.Button("Reload", scale=1, elem_id="gw-routes-reload")
    note = gr.Markdown("", elem_id="gw-routes-note")
    gr.Markdown("**Test:** which route and adapter would answer this question for this user, and why.")
    with gr.Row(equal_height=True):
        question = gr.Textbox(label="Question", scale=4, elem_id="gw-route-question")
        user = gr.Textbox(label="User", scale=1, elem_id="gw-route-user")
        test_button = gr.Button("Test", scale=1, elem_id="gw-route-test")
    verdict = gr.Markdown("", elem_id="gw-route-verdict")

    def on_load(request: gr.Request):  # Gradio passes the request to parameters annotated gr.Request
        return load(services, request)

    def on_save(text: str, request: gr.Request):
        return save(services, text, request)

    def on_test(question_text: str, user_name: str, request: gr.Request):
        return test(services, question_text, user_name, request)

    kwargs = {"concurrency_limit": 4, "concurrency_id": "admin-routes"}
    tab.select(on_load, None, [editor, note], api_name=False, **kwargs)
    reload_button.click(on_load, None, [editor, note], api_name="admin_routes", **kwargs)
    save_button.click(on_save, [editor], [editor, note], api_name="admin_save_routes", **kwargs)
    test_button.click(on_test, [question, user], [verdict], api_name="admin_test_route", **kwargs)
