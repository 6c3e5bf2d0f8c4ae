"""Per-format document loaders. Each turns a file into a LoadedDocument or raises LoadError."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ingest.documents import LoadedDocument
from ingest.loaders.errors import LoadError
from ingest.loaders.docx import load_docx
from ingest.loaders.html import load_html
from ingest.loaders.pdf import load_pdf
from ingest.loaders.text import load_csv, load_markdown, load_text

Loader = Callable[[Path], LoadedDocument]

LOADERS: dict[str, Loader] = {
    ".pdf": load_pdf,
    ".docx": load_docx,
    ".html": load_html,
    ".htm": load_html,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".txt": load_text,
    ".text": load_text,
    ".csv": load_csv,
}

SUPPORTED_EXTENSIONS = frozenset(LOADERS)


def load_document(path: Path) -> LoadedDocument:
    """Load any supported file; raise LoadError with a one-line reason on failure."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise LoadError(f"unsupported file type '{path.suffix or '(none)'}'")
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
