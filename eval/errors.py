"""The evaluation's error type: its message is one line for the user, naming the file and the problem."""
from __future__ import annotations

from ingest.errors import GroundworkError


class EvalError(GroundworkError):
    """A bad QA set, output folder or run setting; the message is one line for the user."""
