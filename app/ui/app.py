"""The Gradio app: login, the chat tab for everyone, the admin tab for admins; and `groundwork serve`."""
from __future__ import annotations

import html
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr
import numpy as np

from app.api import mount as api_mount
from app.config import Settings
from app.conversations.service import Conversations
from app.engine import Engine, EngineConfig
from app.generator import GenerationOptions
from app.production.metrics import Metrics, metrics_route
from app.ui import upload_limits
from app.ui.admin import build_admin_tab
from app.ui.auth import current_user, make_auth
from app.ui.chat import build_chat_tab, on_load
from app.ui.library import ensure_index
from app.ui.login_guard import LoginGuard, LoginPolicy
from app.ui.services import UiServices
from app.ui.settings import GuardrailsFile
from app.ui.theme import CSS, HEADER, theme
from app.users import UserStore, dummy_hash
from finetune.adapters import AdapterRegistry
from finetune.models import DEFAULT_MODEL
from ingest.acl import EVERYONE
from ingest.embedding import DEFAULT_EMBEDDER, Embedder
from ingest.reader import IndexReader

log = logging.getLogger(__name__)

QUEUE_SIZE = 64  # events waiting at most; more get "queue full" instead of an ever-longer wait
MAX_THREADS = 40  # Gradio's worker threads (handlers run in them; generation itself is serialized per model)
LOGIN_MESSAGE = (  # the login page does not load the app's CSS: inline styles only
    '<div style="display:flex;align-items:center;gap:12px;text-align:left">'
    '<div style="flex:none;width:40px;height:40px;border-radius:10px;background:#0f766e;color:#fff;'
    'font-weight:700;font-size:20px;display:flex;align-items:center;justify-content:center">G</div>'
    '<div><div style="font-size:18px;font-weight:700">Groundwork</div><div style="font-size:14px;color:#475569">'
    'Sign in with your company account. Answers only use the documents your groups may read.</div></div></div>')


LOGOUT_BUTTON = (  # a POST (app/ui/login_guard.py): a link to /logout on another page logs nobody out
    '<form method="post" action="logout" style="display:inline;margin:0 0 0 10px">'
    '<button type="submit" id="gw-logout" style="background:none;border:0;padding:0;color:inherit;'
    'text-decoration:underline;cursor:pointer;font:inherit">Log out</button></form>')


class LockedEmbedder(Embedder):
    """The chat's embedder: one encode at a time, and the vectors of the last questions remembered.

    Hugging Face fast tokenizers are not safe to call from several threads at once ("Already borrowed"); a query
    embedding takes milliseconds, so serializing it costs nothing. Ingestion uses its own instance.
    A question is embedded twice per answer when the routing gate classifies its intent (app.production.routes)
    and retrieval then searches it: the second call gets the first's vector (a copy) instead of ~10-20 ms of CPU.
    """

    RECENT = 64  # single texts remembered (a few answers in flight at once each embed one question)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._encode_lock = threading.Lock()
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()

    def encode(self, texts):
        texts = list(texts)
        with self._encode_lock:
            if len(texts) != 1:
                return super().encode(texts)
            remembered = self._recent.get(texts[0])
            if remembered is None:
                remembered = self._recent[texts[0]] = super().encode(texts)
                if len(self._recent) > self.RECENT:
                    self._recent.popitem(last=False)
            self._recent.move_to_end(texts[0])
            return remembered.copy()


def make_services(engine: Engine, users_file: Path, guardrails_file: Path, adapters_dir: Path, docs_dir: Path,
                  acl_path: Path, embedder_factory: Callable[[], Embedder] | None = None) -> UiServices:
    """Services for build_app around an existing engine (tests inject one with a scripted generator).

    Conversations and the audit log live in SQLite files beside the users file (Conversations.beside)."""
    return UiServices(engine=engine, users=UserStore(users_file), guardrails=GuardrailsFile(guardrails_file),
                      registry=AdapterRegistry(adapters_dir), index_dir=engine.config.index_dir, docs_dir=docs_dir,
                      acl_path=acl_path,
                      embedder_factory=embedder_factory or (lambda: Embedder(engine.reader.embedder)),
                      conversations=Conversations.beside(engine, users_file, metrics=Metrics()))


def who(services: UiServices, request: gr.Request) -> str:
    user = current_user(services.users, request)
    groups = ", ".join(user.groups)
    return HEADER.format(who=f'Signed in as <b id="gw-username">{html.escape(user.name)}</b>'
                             f'<span class="gw-role" id="gw-role">{html.escape(user.role)}</span><br>'
                             f'Groups: {html.escape(groups)}{LOGOUT_BUTTON}')


def build_app(services: UiServices) -> gr.Blocks:
    """The Blocks for one server process; launch with launch_app()."""
    with gr.Blocks(title="Groundwork", analytics_enabled=False, fill_width=False) as app:
        header = gr.HTML(HEADER.format(who=""), padding=False)
        with gr.Tabs(elem_id="gw-tabs"):
            with gr.Tab("Chat", id="chat", elem_id="gw-tab-chat"):
                chat = build_chat_tab(services)
            with gr.Tab("Admin", id="admin", visible=False, elem_id="gw-tab-admin") as admin_tab:
                admin = build_admin_tab(services)

        def page_load(request: gr.Request):
            user = current_user(services.users, request)
            return (who(services, request), *on_load(services, request), gr.update(visible=user.is_admin))

        app.load(page_load, None, [header, chat.guards, chat.switches, chat.adapter, chat.sidebar, admin_tab],
                 api_name=False).then(admin.load, None, admin.load_outputs, api_name=False)
    app.queue(default_concurrency_limit=4, max_size=QUEUE_SIZE)
    return app


def launch_app(app: gr.Blocks, services: UiServices, host: str = "127.0.0.1", port: int = 7860,
               block: bool = True, quiet: bool = False, login: LoginPolicy | None = None) -> str:
    """Start the server; return its URL (with block=False the server runs in a background thread).

    Sign-in, sessions and security headers are app/ui/login_guard.py's (`login` tunes them; tests shorten times).
    """
    guard = LoginGuard(services.users, login, message=LOGIN_MESSAGE)
    uploads = upload_limits.UploadGate(services.users, upload_limits.UploadLimits())  # guarded from the first request
    dummy_hash()  # computed now, not during the first sign-in of an unknown name
    app.launch(server_name=host, server_port=port, auth=make_auth(services.users), auth_message=LOGIN_MESSAGE,
               app_kwargs={"middleware": [guard.middleware(), upload_limits.middleware(uploads)],
                           "routes": [api_mount(services),  # the OpenAI-compatible API at /v1 (app/api/)
                                      *([metrics_route(services.conversations.metrics)]  # GET /metrics
                                        if services.conversations.metrics is not None else [])]},
               theme=theme(), css=CSS, share=False, show_error=False, prevent_thread_lock=True, quiet=quiet,
               max_threads=MAX_THREADS, max_file_size="50mb", ssr_mode=False, footer_links=[], pwa=False,
               mcp_server=False, enable_monitoring=False)
    guard.install(app.server_app)
    app.login_guard = guard
    app.upload_gate = upload_limits.install(app, services, gate=uploads)  # uploads: admins only, capped; cache cleaned
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{app.server_port}/"
    if block:
        _serve_until_interrupted(app)
    return url


def _serve_until_interrupted(app) -> None:
    try:
        app.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        app.close()


_PATHS = Settings()  # the defaults; `groundwork serve` passes Settings.from_env()'s paths


@dataclass(frozen=True)
class ServeOptions:
    """What `groundwork serve` serves."""

    host: str = "127.0.0.1"
    port: int = 7860
    index_dir: Path = _PATHS.index_dir
    users_file: Path = _PATHS.users_file
    guardrails_file: Path = _PATHS.guardrails_file
    adapters_dir: Path = _PATHS.adapters_dir
    docs_dir: Path = _PATHS.documents_dir  # uploads from the admin tab
    acl_file: Path = _PATHS.acl_file  # ACL rules saved from the admin tab
    model: str = DEFAULT_MODEL
    quantize: bool = True
    decoding: str = "quote"  # how answers are written (app.engine.DECODINGS)
    selection_threshold: float | None = None  # quote: refuse below this P(right); None = the fitted weights' own
    torch_threads: int = 1  # per generation; 1 leaves the other core to a second user or an ingestion
    llm_url: str | None = None  # an OpenAI-compatible server runs the model (EngineConfig.llm_url); None = in-process
    warm_up: bool = True  # load the model before the first question


def serve(options: ServeOptions, on_ready: Callable[[str], None] | None = None) -> None:
    """Build the engine, start the server and block until Ctrl-C."""
    import torch

    torch.set_num_threads(max(1, options.torch_threads))
    ensure_index(options.index_dir, DEFAULT_EMBEDDER)
    guardrails = GuardrailsFile(options.guardrails_file)
    reader = IndexReader(options.index_dir)
    embedder_name = reader.embedder
    reader.close()
    engine = Engine(EngineConfig(index_dir=options.index_dir, model=options.model, quantize=options.quantize,
                                 adapters_dir=options.adapters_dir, guardrails=guardrails.load(),
                                 decoding=options.decoding, selection_threshold=options.selection_threshold,
                                 llm_url=options.llm_url),
                    embedder=LockedEmbedder(embedder_name))
    services = make_services(engine, options.users_file, options.guardrails_file, options.adapters_dir,
                             options.docs_dir, options.acl_file)
    app = build_app(services)
    url = launch_app(app, services, options.host, options.port, block=False, quiet=True)
    if options.warm_up:  # the page is already served; the first question should not wait for the model
        _warm_up(engine)
    if on_ready is not None:
        on_ready(url)
    services.sync.start()  # folders registered with `groundwork sync add` (or the Sync tab), on their schedule
    try:
        _serve_until_interrupted(app)
    finally:
        services.sync.stop()


def _warm_up(engine: Engine) -> None:
    """Load the embedder, the keyword index and the model (with the default adapter), and run one short
    generation, so that the first question does not wait for any of them."""
    try:
        engine.retriever.retrieve("warm up", {EVERYONE})  # loads the embedder, builds the keyword index
        generator, _ = engine.generator_for(engine.config.adapter)
        for _ in generator.stream([{"role": "user", "content": "Hello"}], GenerationOptions(max_new_tokens=2)):
            pass
    except Exception as exc:  # reported again, to the user, on the first question that needs the model
        log.warning("warm-up failed: %s", exc)
