"""The evaluation's error type: its message is one line for the user, naming the file and the problem."""
from __future__ import annotations


class EvalError(Exception):
    """A bad QA set, output folder or run setting; the message is one line for the user."""
