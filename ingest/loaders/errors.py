from ingest.errors import GroundworkError


class LoadError(GroundworkError):
    """A file could not be turned into text; the message is a one-line reason for the summary."""
