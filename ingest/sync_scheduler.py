"""The server's sync scheduler: one daemon thread that re-ingests registered folders when they are due.

It wakes every few seconds (or at once when asked: "Run now"), runs the due folders one at a time through
ingest.sync.sync_folder, and never runs two at once (a lock around each tick, also for direct tick() calls).
A busy index (an admin's ingestion, a `groundwork ingest` in a shell) is skipped and retried soon; an error is
recorded as the folder's result and logged, and never stops the thread.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from ingest.embedding import Embedder
from ingest.sync import SyncOutcome, SyncRegistry, due_folders, sync_folder

log = logging.getLogger(__name__)

WAKE_S = 5.0  # how often the thread looks for due folders


class SyncScheduler:
    """Runs the folders registered with `index_dir` on their schedule, in a background thread once started."""

    def __init__(self, index_dir: Path, embedder_factory: Callable[[], Embedder],
                 on_published: Callable[[], None] | None = None, wake_s: float = WAKE_S) -> None:
        self.registry = SyncRegistry(index_dir)
        self.embedder_factory = embedder_factory  # called once, at the first run (the model loads then)
        self.on_published = on_published  # e.g. the engine's reader.refresh: answers switch at once
        self.wake_s = wake_s
        self._embedder: Embedder | None = None
        self._tick_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: str | None = None  # the folder being synced now

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="groundwork-sync")
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the run in progress, if any (a run is never cut short: the index stays consistent)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_now(self, path: Path | str) -> None:
        """Make a folder due now and wake the thread (SyncError if it is not registered)."""
        self.registry.mark_due(path)
        self._wake.set()

    def tick(self, now: float | None = None) -> list[SyncOutcome]:
        """Run every folder due at `now` (default: now), one at a time; returns what each attempt did."""
        outcomes = []
        with self._tick_lock:
            for folder in due_folders(self.registry, now):
                if self._stop.is_set():
                    break
                self.current = folder.path
                try:
                    outcome = sync_folder(self.registry, folder, self._get_embedder())
                except Exception as exc:  # the registry or the embedder failed: log, keep the thread alive
                    log.warning("sync of %s failed: %s", folder.path, exc)
                    continue
                finally:
                    self.current = None
                outcomes.append(outcome)
                if not outcome.ok:
                    log.warning("sync of %s: %s", folder.path, outcome.message)
                if outcome.changed and self.on_published is not None:
                    try:
                        self.on_published()
                    except Exception as exc:
                        log.warning("after syncing %s: %s", folder.path, exc)
        return outcomes

    def _get_embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self.embedder_factory()
        return self._embedder

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick(time.time())
            except Exception as exc:  # e.g. a damaged sync.json: say so, try again at the next wake
                log.warning("folder sync: %s", exc)
            self._wake.wait(self.wake_s)
            self._wake.clear()
