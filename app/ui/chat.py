"""The chat tab: questions answered as the logged-in user, streamed, with citations, sources and guardrail flags;
the user's conversations in a sidebar (kept server-side), and 👍/👎 with a comment on every answer."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from app.conversations.service import TurnResult
from app.conversations.store import ConversationNotFound
from app.engine import AnswerOptions
from app.guardrails import GUARDS
from app.ui import render
from app.ui.auth import current_user
from app.ui.history import EMPTY_NOTE, NOT_FOUND, restore, sidebar_update
from app.ui.services import AUTOMATIC, UiServices
from ingest.errors import GroundworkError

log = logging.getLogger(__name__)
# What the page says of an unexpected failure: its text may hold paths, addresses or library internals, so it
# goes to the server log (with its traceback) and the user gets this.
INTERNAL_ERROR = "Something went wrong while answering. The administrator can find the details in the server log."

GONE = "This conversation no longer exists (was it deleted in another window?): start a new chat."
COMMENT_CHARS = 2000  # a feedback comment's longest length
CHAT_CONCURRENCY = 16  # questions answered at once (the model itself writes one answer at a time per adapter)
PLACEHOLDER = ("**Ask a question about your company's documents.**<br>Answers cite the passages they come from: "
               "click a [1] to read it.")


@dataclass
class ChatTab:
    chatbot: gr.Chatbot
    question: gr.Textbox
    send: gr.Button
    clear: gr.Button
    sources: gr.HTML
    guards: gr.HTML
    switches: gr.CheckboxGroup
    adapter: gr.Dropdown
    history: gr.State
    sidebar: gr.Radio  # the user's conversations


def switchable_guards(services: UiServices) -> list[str]:
    """Guards this user may switch off: allowed by the admin and switched on in the settings."""
    config = services.sync_guardrails()
    on = services.engine.guardrails.active()
    return [g for g in GUARDS if g in config.user_may_disable and g in on]


def guard_panel(services: UiServices, disabled: frozenset[str] = frozenset()) -> str:
    config = services.sync_guardrails()
    on = services.engine.guardrails.active(disabled)
    return render.guard_summary(sorted(on), switchable_guards(services), [t.name for t in config.blocked_topics],
                                config.max_question_chars)


def respond(services: UiServices, message: str, history: list[dict], switches: list[str] | None,
            adapter: str | None, request: gr.Request, conversation_id: str | None = None,
            turn_ids: list[int | None] | None = None):
    """Stream one answer into the conversation (a generator for Gradio).

    The question goes through Conversations: a follow-up in the open conversation is answered with its history
    (read from the store, not from the page), the turn is stored, and the audit log gets its record. Each yield:
    (chatbot, history, question box, sources, guards, conversation id, turn ids, feedback row). The sidebar is
    refreshed by the event chained after it (so the `ask` API returns what it always did).
    """
    user = current_user(services.users, request)
    history = list(history or [])
    turn_ids = list(turn_ids or [])[:len(history)]
    turn_ids += [None] * (len(history) - len(turn_ids))  # one entry per message: answers carry their turn id
    unchanged = (conversation_id, turn_ids, gr.update())
    question = (message or "").strip()
    if not question:
        yield history, history, gr.update(), gr.update(), gr.update(), *unchanged
        return
    disabled = frozenset(g for g in switchable_guards(services) if g in (switches or []))  # others: ignored
    names = {value for _, value in services.adapter_choices()[0]}
    # AUTOMATIC, or anything else (stale or forged): None, so the routing gate decides (else the engine's default)
    chosen = adapter if adapter in names and adapter != AUTOMATIC else None
    options = AnswerOptions(disabled_guards=disabled, adapter=chosen)

    history += [{"role": "user", "content": render.user_message(question)},
                {"role": "assistant", "content": render.thinking()}]
    turn_ids += [None, None]
    yield (history, history, "", gr.update(), guard_panel(services, disabled), conversation_id, turn_ids,
           gr.update(visible=False))

    result: TurnResult | None = None
    try:
        for item in services.conversations.ask(user, question, options, conversation_id=conversation_id,
                                               channel="web"):
            if isinstance(item, str):
                history[-1] = {"role": "assistant", "content": render.streaming(item)}
                yield history, history, gr.update(), gr.update(), gr.update(), *unchanged
            else:
                result = item
    except Exception as exc:  # the model or the index failed: say so in the conversation, keep the session
        if isinstance(exc, GroundworkError):  # expected (index being rebuilt, no model): one line, no traceback
            log.warning("answering a question for %s failed: %s", user.name, " ".join(str(exc).split()))
        else:  # the question may hold personal data: it is not logged
            log.exception("answering a question for %s failed", user.name)
        shown = (str(exc) or type(exc).__name__) if isinstance(exc, GroundworkError) else INTERNAL_ERROR
        if isinstance(exc, ConversationNotFound):  # deleted meanwhile (another tab): say what to do
            shown = GONE
        history[-1] = {"role": "assistant", "content": render.failure(shown)}
        yield history, history, gr.update(), gr.update(), gr.update(), *unchanged
        return
    assert result is not None
    guards = services.engine.guardrails  # the guard that redacted the answer redacts what is shown beside it
    shown = render.redacted(result.answer, lambda value: guards.redact(value, disabled))
    history[-1] = {"role": "assistant", "content": render.answer(shown)}
    turn_ids[-1] = result.turn_id
    conversation_id = result.conversation_id or conversation_id
    yield history, history, gr.update(), render.sources(shown), gr.update(), conversation_id, turn_ids, gr.update()


def open_conversation(services: UiServices, conversation_id: object, switches: list[str] | None,
                      request: gr.Request):
    """Reopen one of the user's conversations: its turns with their citations, Sources for the last answer.

    The id comes from the browser (and may be forged): the service checks that it is this user's; anything else,
    missing or someone else's, is the same "not found". Returns (chatbot, history, conversation id, turn ids,
    sources, feedback row, pending feedback).
    """
    user = current_user(services.users, request)
    if not isinstance(conversation_id, str) or not conversation_id:
        raise gr.Error(NOT_FOUND)
    try:
        turns = services.conversations.turns(user, conversation_id)
    except ConversationNotFound:
        raise gr.Error(NOT_FOUND) from None
    disabled = frozenset(g for g in switchable_guards(services) if g in (switches or []))
    guards = services.engine.guardrails
    restored = restore(turns, lambda value: guards.redact(value, disabled))
    return (gr.update(value=restored.messages, feedback_value=restored.feedback), restored.messages,
            conversation_id, restored.turn_ids, render.sources(restored.last), gr.update(visible=False), None)


def on_load(services: UiServices, request: gr.Request):
    """Per session: the filters panel, the user's switches, the adapter picker and the conversation sidebar."""
    user = current_user(services.users, request)
    allowed = switchable_guards(services)
    choices = [(render.GUARD_NAMES[g], g) for g in allowed]
    adapters, default = services.adapter_choices()
    return (guard_panel(services),
            gr.update(choices=choices, value=[], visible=bool(allowed)),
            gr.update(choices=adapters, value=default, visible=len(adapters) > 3),  # automatic, base + 2 adapters
            sidebar_update(services.conversations.list(user), None))


def build_chat_tab(services: UiServices) -> ChatTab:
    history = gr.State([])
    conversation = gr.State(None)  # the open conversation's id (server-side; None = a new one on the next question)
    turn_ids = gr.State([])  # per chat message: the stored turn id of an answer, for its thumbs
    pending = gr.State(None)  # (turn id, rating) of the last thumb, which a comment goes with
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=200, elem_id="gw-sidebar"):
            clear = gr.Button("+ New chat", variant="secondary", elem_id="gw-clear")
            sidebar = gr.Radio(label="Your conversations", choices=[], value=None, elem_id="gw-history",
                               interactive=True, info=EMPTY_NOTE)
            delete = gr.Button("Delete this chat", variant="stop", size="sm", elem_id="gw-delete")
        with gr.Column(scale=6, min_width=420):
            chatbot = gr.Chatbot(label="Conversation", show_label=False, height=560, elem_id="gw-chat",
                                 placeholder=PLACEHOLDER, buttons=[], feedback_options=("Like", "Dislike"),
                                 sanitize_html=True, layout="bubble", latex_delimiters=[])
            with gr.Row(equal_height=True):
                question = gr.Textbox(placeholder="Ask about a policy, a procedure, a deadline…", show_label=False,
                                      lines=1, max_lines=6, scale=8, elem_id="gw-question", autofocus=True,
                                      submit_btn=False)
                send = gr.Button("Ask", variant="primary", scale=1, min_width=90, elem_id="gw-send")
            with gr.Row(equal_height=True, visible=False, elem_id="gw-feedback") as feedback_row:
                comment = gr.Textbox(label="Thanks! Anything to add? (optional)", lines=1, max_lines=4, scale=8,
                                     max_length=COMMENT_CHARS, elem_id="gw-feedback-comment",
                                     placeholder="What was wrong, missing or helpful?")
                send_comment = gr.Button("Send comment", scale=2, min_width=120, elem_id="gw-feedback-send")
        with gr.Column(scale=4, min_width=300):
            adapter = gr.Dropdown(label="Model adapter", choices=[], visible=False, elem_id="gw-adapter",
                                  interactive=True, allow_custom_value=True)  # the value is checked in respond()
            gr.HTML('<div class="gw-panel-title">Sources</div>', padding=False)
            sources = gr.HTML(render.sources(None), elem_id="gw-sources", padding=False)
            with gr.Accordion("Filters on this conversation", open=True, elem_id="gw-filters"):
                guards = gr.HTML("", elem_id="gw-guards", padding=False)
                switches = gr.CheckboxGroup(label="Switch off for me", choices=[], value=[], visible=False,
                                            elem_id="gw-switches", interactive=True,
                                            info="Your administrator lets you turn these filters off for your own "
                                                 "questions.")
    tab = ChatTab(chatbot, question, send, clear, sources, guards, switches, adapter, history, sidebar)

    def ask(message, messages, switched, chosen, open_id, ids, request: gr.Request):
        yield from respond(services, message, messages, switched, chosen, request, open_id, ids)

    def refresh_sidebar(open_id, request: gr.Request):
        return sidebar_update(services.conversations.list(current_user(services.users, request)), open_id)

    # The API's outputs stay (chatbot, question, sources, guards): gr.State is not part of it, and the sidebar
    # (the user's earlier questions) is refreshed by a chained event of its own.
    outputs = [chatbot, history, question, sources, guards, conversation, turn_ids, feedback_row]
    inputs = [question, history, switches, adapter, conversation, turn_ids]
    for trigger in (send.click, question.submit):
        trigger(ask, inputs, outputs, api_name="ask" if trigger == send.click else False,
                concurrency_limit=CHAT_CONCURRENCY, concurrency_id="chat").then(
            refresh_sidebar, [conversation], [sidebar], api_name=False)

    def reopen(open_id, switched, request: gr.Request):
        return open_conversation(services, open_id, switched, request)

    # preprocess=False: the id is passed as sent, not checked against the choices Gradio last sent this page, so
    # the ownership check is the service's (the same for the page and for a direct call to the endpoint)
    sidebar.input(reopen, [sidebar, switches], [chatbot, history, conversation, turn_ids, sources, feedback_row,
                                                pending],
                  api_name="open_conversation", preprocess=False, concurrency_limit=CHAT_CONCURRENCY,
                  concurrency_id="chat-history")

    fresh_outputs = [chatbot, history, conversation, turn_ids, sources, sidebar, feedback_row, pending]

    def fresh(user):
        return (gr.update(value=[], feedback_value=[]), [], None, [], render.sources(None),
                sidebar_update(services.conversations.list(user), None), gr.update(visible=False), None)

    def new_conversation(request: gr.Request):
        return fresh(current_user(services.users, request))

    clear.click(new_conversation, None, fresh_outputs, api_name=False)
    chatbot.clear(new_conversation, None, fresh_outputs, api_name=False)

    def delete_conversation(open_id, request: gr.Request):
        user = current_user(services.users, request)
        if not open_id:
            gr.Info("No conversation is open: nothing to delete.")
            return fresh(user)
        try:
            services.conversations.delete(user, open_id)
        except ConversationNotFound:  # already deleted (another tab)
            pass
        gr.Info("Conversation deleted.")
        return fresh(user)

    delete.click(delete_conversation, [conversation], fresh_outputs, api_name=False)

    def thumb(ids, data: gr.LikeData, request: gr.Request):
        """👍/👎 on an answer: stored at once; the comment box opens for an optional comment."""
        user = current_user(services.users, request)
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        turn_id = ids[index] if isinstance(index, int) and 0 <= index < len(ids or []) else None
        if data.liked not in (True, False) or turn_id is None:  # a thumb taken back, or an answer not stored
            return None, gr.update(visible=False), gr.update()
        rating = 1 if data.liked else -1
        try:
            services.conversations.feedback(user, turn_id, rating)
        except GroundworkError as exc:
            raise gr.Error(str(exc)) from None
        thumb_shown, hint = ("👍", "What was helpful?") if rating > 0 else ("👎", "What was wrong or missing?")
        return ((turn_id, rating), gr.update(visible=True),
                gr.update(value="", label=f"Thanks for the {thumb_shown}. Anything to add? (optional)",
                          placeholder=hint))

    chatbot.like(thumb, [turn_ids], [pending, feedback_row, comment], api_name=False)

    def comment_sent(last, text, request: gr.Request):
        user = current_user(services.users, request)
        if not last:
            return gr.update(visible=False), gr.update(), None
        turn_id, rating = last
        try:
            services.conversations.feedback(user, turn_id, rating, (text or "").strip()[:COMMENT_CHARS])
        except GroundworkError as exc:
            raise gr.Error(str(exc)) from None
        gr.Info("Thanks: your feedback was saved.")
        return gr.update(visible=False), gr.update(value=""), None

    for trigger in (send_comment.click, comment.submit):
        trigger(comment_sent, [pending, comment], [feedback_row, comment, pending], api_name=False)

    def switches_changed(switched, request: gr.Request):
        current_user(services.users, request)
        return guard_panel(services, frozenset(g for g in switchable_guards(services) if g in (switched or [])))

    switches.change(switches_changed, [switches], [guards], api_name=False)
    return tab
