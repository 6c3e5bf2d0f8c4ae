"""Per-format document loaders. Each turns a file into a LoadedDocument or raises LoadError."""
from __future__ import annotations

import importlib
from pathlib import Path

from ingest.documents import LoadedDocument
from ingest.loaders.errors import LoadError

# extension -> "module:function"; parsers are imported on first use so an unchanged re-run stays fast.
LOADERS: dict[str, str] = {
    ".pdf": "pdf:load_pdf",
    ".docx": "docx:load_docx",
    ".html": "html:load_html",
    ".htm": "html:load_html",
    ".md": "text:load_markdown",
    ".markdown": "text:load_markdown",
    ".txt": "text:load_text",
    ".text": "text:load_text",
    ".csv": "text:load_csv",
}

SUPPORTED_EXTENSIONS = frozenset(LOADERS)


def load_document(path: Path) -> LoadedDocument:
    """Load any supported file; raise LoadError with a one-line reason on failure."""
    target = LOADERS.get(path.suffix.lower())
    if target is None:
        raise LoadError(f"unsupported file type '{path.suffix or '(none)'}'")
    module, function = target.split(":")
    loader = getattr(importlib.import_module(f"ingest.loaders.{module}"), function)
    try:
        document = loader(path)
    except LoadError:
        raise
    except PermissionError:
        raise LoadError("cannot read: permission denied") from None
    except Exception as exc:  # a parser's own bug or an odd file must not stop the run
        raise LoadError(f"could not parse: {type(exc).__name__}: {exc}".splitlines()[0][:200]) from exc
    document.sections = [s for s in document.sections if s.text.strip()]
    if not document.sections:
        raise LoadError("no text found in the file")
    return document


__all__ = ["LOADERS", "SUPPORTED_EXTENSIONS", "LoadError", "load_document"]
