"""The chat tab: questions answered as the logged-in user, streamed, with citations, sources and guardrail flags."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from app.engine import Answer, AnswerOptions
from app.guardrails import GUARDS
from app.ui import render
from app.ui.auth import current_user
from app.ui.services import UiServices
from ingest.errors import GroundworkError

log = logging.getLogger(__name__)
# What the page says of an unexpected failure: its text may hold paths, addresses or library internals, so it
# goes to the server log (with its traceback) and the user gets this.
INTERNAL_ERROR = "Something went wrong while answering. The administrator can find the details in the server log."

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
            adapter: str | None, request: gr.Request):
    """Stream one answer into the conversation (a generator for Gradio)."""
    user = current_user(services.users, request)
    history = list(history or [])
    question = (message or "").strip()
    if not question:
        yield history, history, gr.update(), gr.update(), gr.update()
        return
    disabled = frozenset(g for g in switchable_guards(services) if g in (switches or []))  # others: ignored
    names = {value for _, value in services.adapter_choices()[0]}
    chosen = adapter if adapter in names else None  # anything else (stale or forged): the engine's default
    options = AnswerOptions(disabled_guards=disabled, adapter=chosen)

    history += [{"role": "user", "content": render.user_message(question)},
                {"role": "assistant", "content": render.thinking()}]
    yield history, history, "", gr.update(), guard_panel(services, disabled)

    final: Answer | None = None
    try:
        for item in services.engine.stream(question, user, options):
            if isinstance(item, str):
                history[-1] = {"role": "assistant", "content": render.streaming(item)}
                yield history, history, gr.update(), gr.update(), gr.update()
            else:
                final = item
    except Exception as exc:  # the model or the index failed: say so in the conversation, keep the session
        if isinstance(exc, GroundworkError):  # expected (index being rebuilt, no model): one line, no traceback
            log.warning("answering a question for %s failed: %s", user.name, " ".join(str(exc).split()))
        else:  # the question may hold personal data: it is not logged
            log.exception("answering a question for %s failed", user.name)
        shown = (str(exc) or type(exc).__name__) if isinstance(exc, GroundworkError) else INTERNAL_ERROR
        history[-1] = {"role": "assistant", "content": render.failure(shown)}
        yield history, history, gr.update(), gr.update(), gr.update()
        return
    assert final is not None
    guards = services.engine.guardrails  # the guard that redacted the answer redacts what is shown beside it
    shown = render.redacted(final, lambda value: guards.redact(value, disabled))
    history[-1] = {"role": "assistant", "content": render.answer(shown)}
    yield history, history, gr.update(), render.sources(shown), gr.update()


def on_load(services: UiServices, request: gr.Request):
    """Per session: the filters panel, the user's switches and the adapter picker."""
    current_user(services.users, request)
    allowed = switchable_guards(services)
    choices = [(render.GUARD_NAMES[g], g) for g in allowed]
    adapters, default = services.adapter_choices()
    return (guard_panel(services),
            gr.update(choices=choices, value=[], visible=bool(allowed)),
            gr.update(choices=adapters, value=default, visible=len(adapters) > 2))


def build_chat_tab(services: UiServices) -> ChatTab:
    history = gr.State([])
    with gr.Row(equal_height=False):
        with gr.Column(scale=7, min_width=420):
            chatbot = gr.Chatbot(label="Conversation", show_label=False, height=560, elem_id="gw-chat",
                                 placeholder=PLACEHOLDER, buttons=[], feedback_options=None,
                                 sanitize_html=True, layout="bubble", latex_delimiters=[])
            with gr.Row(equal_height=True):
                question = gr.Textbox(placeholder="Ask about a policy, a procedure, a deadline…", show_label=False,
                                      lines=1, max_lines=6, scale=8, elem_id="gw-question", autofocus=True,
                                      submit_btn=False)
                send = gr.Button("Ask", variant="primary", scale=1, min_width=90, elem_id="gw-send")
                clear = gr.Button("New chat", variant="secondary", scale=1, min_width=120, elem_id="gw-clear")
        with gr.Column(scale=5, min_width=320):
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
    tab = ChatTab(chatbot, question, send, clear, sources, guards, switches, adapter, history)

    def ask(message, conversation, switched, chosen, request: gr.Request):
        yield from respond(services, message, conversation, switched, chosen, request)

    outputs = [chatbot, history, question, sources, guards]
    inputs = [question, history, switches, adapter]
    for trigger in (send.click, question.submit):
        trigger(ask, inputs, outputs, api_name="ask" if trigger == send.click else False,
                concurrency_limit=CHAT_CONCURRENCY, concurrency_id="chat")

    def new_conversation(request: gr.Request):
        current_user(services.users, request)
        return [], [], render.sources(None)

    clear.click(new_conversation, None, [chatbot, history, sources], api_name=False)
    chatbot.clear(new_conversation, None, [chatbot, history, sources], api_name=False)

    def switches_changed(switched, request: gr.Request):
        current_user(services.users, request)
        return guard_panel(services, frozenset(g for g in switchable_guards(services) if g in (switched or [])))

    switches.change(switches_changed, [switches], [guards], api_name=False)
    return tab
