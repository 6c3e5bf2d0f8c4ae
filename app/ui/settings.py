"""The guardrail settings file: read (and re-read when it changes on disk), validated, written atomically."""
from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

from app.guardrails import GuardrailConfig
from app.guardrails.config import read_guardrails


class GuardrailsFile:
    """GuardrailConfig saved as JSON (GuardrailConfig.to_dict). A missing file means the defaults."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._config = GuardrailConfig()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def load(self) -> GuardrailConfig:
        """The current settings; the file is parsed again only when it changed (one stat per call)."""
        with self._lock:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._config = read_guardrails(self.path) if stamp is not None else GuardrailConfig()
                self._stamp = stamp
            return self._config

    def save(self, config: GuardrailConfig) -> None:
        """Write aside, fsync, rename: readers see the old file or the new one, never half of it."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".guardrails-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(config.to_dict(), handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
            self._stamp = None  # the next load() reads what was written
