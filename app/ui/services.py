"""What the web UI works with, shared by every session of one server process."""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from app.conversations.service import Conversations
from app.engine import Engine
from app.guardrails import GuardrailConfig, Guardrails
from app.ui.ingest_job import IngestRunner
from app.ui.settings import GuardrailsFile
from app.users import UserStore
from finetune.adapters import AdapterRegistry, AdapterVersion
from ingest.embedding import Embedder
from ingest.sync_scheduler import SyncScheduler

BASE_MODEL = "none"  # the adapter choice that means "the base model, no adapter"
AUTOMATIC = "(routes)"  # the choice that leaves it to the routing gate (app.production.routes); never an adapter name


@dataclass
class UiServices:
    """One engine (one model per adapter, loaded once), the files the admin tab manages, and the users'
    conversations (the web UI and the API ask through `conversations`, never the engine directly)."""

    engine: Engine
    users: UserStore
    guardrails: GuardrailsFile
    registry: AdapterRegistry
    index_dir: Path
    docs_dir: Path  # uploads are saved here (and ingested from here)
    acl_path: Path  # where ACL rules edited in the admin tab are saved before they are applied
    embedder_factory: Callable[[], Embedder]  # the ingestion's own embedder
    conversations: Conversations  # questions asked in conversations: history, feedback, the audit log
    runner: IngestRunner = field(init=False)
    sync: SyncScheduler = field(init=False)  # folders synced into the index (started by `groundwork serve`)
    _applied: GuardrailConfig | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        # One ingestion embedder for the admin's runs and the synced folders (both hold the index lock, so they
        # never embed at once; Embedder.encode is locked anyway): the model loads once, at the first of them.
        ingestion_embedder = functools.cache(self.embedder_factory)
        self.runner = IngestRunner(self.index_dir, ingestion_embedder,
                                   on_finished=lambda _: self.engine.reader.refresh())  # switch right away
        self.sync = SyncScheduler(self.index_dir, ingestion_embedder, on_published=self.engine.reader.refresh)
        self.sync_guardrails()

    def sync_guardrails(self) -> GuardrailConfig:
        """The guardrail settings now; the engine gets new Guardrails when the file changed (admin tab or CLI)."""
        config = self.guardrails.load()
        with self._lock:
            if config is not self._applied:
                self.engine.guardrails = Guardrails(config)  # Guardrails is immutable: swapping it is atomic
                self._applied = config
        return config

    def promoted_adapters(self) -> list[AdapterVersion]:
        try:
            return self.registry.promoted()
        except Exception:  # a damaged registry must not take the chat down; the admin tab shows the error
            return []

    def adapter_choices(self) -> tuple[list[tuple[str, str]], str | None]:
        """(label, value) choices for the chat's adapter picker and the default value.

        Values are AUTOMATIC (the default: the admin's routes decide, else the promoted adapter), adapter names
        (they follow promotions and rollbacks) or BASE_MODEL.
        """
        promoted = self.promoted_adapters()
        choices = [(f"{v.name} ({v.version})", v.name) for v in promoted] + [("Base model (no adapter)", BASE_MODEL)]
        return [("Automatic (the admin's routes)", AUTOMATIC), *choices], AUTOMATIC
