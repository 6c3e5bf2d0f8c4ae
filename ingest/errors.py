"""The common base of every error Groundwork reports to a user as one line (the CLI and the UI catch this)."""


class GroundworkError(Exception):
    """An expected failure with a one-line message for the user: bad input, a busy index, a missing model."""
