"""Ingestion started from the admin tab: one run at a time, in a background thread, with progress to poll.

The run writes a new index generation and publishes it atomically at the end; the chat keeps answering from
the last complete generation meanwhile and switches on the first question after the publish.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ingest.documents import IngestSummary
from ingest.embedding import Embedder
from ingest.errors import GroundworkError
from ingest.pipeline import IngestOptions, ingest


@dataclass(frozen=True)
class JobState:
    """A snapshot of the current (or last) ingest run."""

    state: str = "idle"  # "idle" | "running" | "done" | "failed"
    started_by: str = ""
    paths: tuple[str, ...] = ()
    done: int = 0  # files processed
    total: int = 0  # files to process (new or changed); 0 until the scan is finished
    current: str = ""  # the file just processed
    started_at: float = 0.0
    finished_at: float = 0.0
    summary: IngestSummary | None = None
    error: str = ""
    run: int = 0  # increases with every run started

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def elapsed(self) -> float:
        end = self.finished_at if self.finished_at else time.time()
        return max(0.0, end - self.started_at) if self.started_at else 0.0


class IngestBusy(GroundworkError, RuntimeError):
    """A run is already going on."""


@dataclass
class IngestRunner:
    """Starts ingest runs in a background thread; the embedder is its own (never the chat's, so a long batch
    of embeddings never holds up a question)."""

    index_dir: Path
    embedder_factory: Callable[[], Embedder]
    on_finished: Callable[[JobState], None] | None = None
    _state: JobState = field(default_factory=JobState)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _embedder: Embedder | None = None
    _thread: threading.Thread | None = None

    def state(self) -> JobState:
        with self._lock:
            return self._state

    def start(self, paths: list[Path], acl_file: Path | None, started_by: str) -> JobState:
        """Start a run over `paths` (folders or files); IngestBusy if one is running."""
        with self._lock:
            if self._state.running:
                raise IngestBusy(f"an ingestion started by {self._state.started_by} is running")
            self._state = JobState(state="running", started_by=started_by, paths=tuple(str(p) for p in paths),
                                   started_at=time.time(), run=self._state.run + 1)
            started = self._state
        self._thread = threading.Thread(target=self._run, args=(list(paths), acl_file), daemon=True,
                                        name=f"ingest-{started.run}")
        self._thread.start()
        return started

    def wait(self, timeout: float | None = None) -> JobState:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.state()

    def _progress(self, done: int, total: int, current: str) -> None:
        with self._lock:
            self._state = replace(self._state, done=done, total=total, current=current)

    def _run(self, paths: list[Path], acl_file: Path | None) -> None:
        try:
            if self._embedder is None:
                self._embedder = self.embedder_factory()
            summary = ingest(paths, IngestOptions(index_dir=self.index_dir, acl_file=acl_file, show_progress=False),
                             embedder=self._embedder, on_progress=self._progress)
            with self._lock:
                self._state = replace(self._state, state="done", summary=summary, finished_at=time.time(),
                                      done=max(self._state.done, self._state.total))
        except Exception as exc:  # shown to the admin as one line; the index keeps its last complete state
            with self._lock:
                self._state = replace(self._state, state="failed", error=f"{type(exc).__name__}: {exc}"
                                      if not str(exc) else str(exc), finished_at=time.time())
        if self.on_finished is not None:
            try:
                self.on_finished(self.state())
            except Exception:  # a failing hook must not hide the run's result
                pass
