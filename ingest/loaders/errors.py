class LoadError(Exception):
    """A file could not be turned into text; the message is a one-line reason for the summary."""
