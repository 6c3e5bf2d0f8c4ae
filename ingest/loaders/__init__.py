"""Per-format document loaders. Each turns a file into a LoadedDocument or raises LoadError."""
from __future__ import annotations

import importlib
from pathlib import Path

from ingest.defaults import OCR_TIMEOUT_S
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
    ".xlsx": "xlsx:load_xlsx",
    ".xlsm": "xlsx:load_xlsx",  # macro-enabled: the cells are read, the macros are never loaded or run
    ".pptx": "pptx:load_pptx",
    ".pptm": "pptx:load_pptx",  # macro-enabled: the slides are read, the macros are never loaded or run
    ".png": "image:load_image",
    ".jpg": "image:load_image",
    ".jpeg": "image:load_image",
    ".tif": "image:load_image",
    ".tiff": "image:load_image",
}

SUPPORTED_EXTENSIONS = frozenset(LOADERS)

# Loaders that may OCR take the per-file OCR time budget.
_OCR_LOADERS = frozenset({"pdf:load_pdf", "image:load_image"})

# Formats users bring that no maintained Python library reads well: the reason says what to do instead.
LEGACY_FORMATS: dict[str, str] = {
    ".doc": "legacy binary Word format (.doc): save it as .docx",
    ".xls": "legacy binary Excel format (.xls): save it as .xlsx",
    ".ppt": "legacy binary PowerPoint format (.ppt): save it as .pptx",
}


def unsupported_reason(suffix: str) -> str:
    """Why a file with this extension is not indexed, in one line."""
    return LEGACY_FORMATS.get(suffix.lower()) or f"unsupported file type '{suffix or '(none)'}'"


def load_document(path: Path, ocr_timeout_s: float = OCR_TIMEOUT_S) -> LoadedDocument:
    """Load any supported file; raise LoadError with a one-line reason on failure.

    Scanned PDF pages and images are OCR'd; all of one file's OCR must finish within `ocr_timeout_s`.
    """
    target = LOADERS.get(path.suffix.lower())
    if target is None:
        raise LoadError(unsupported_reason(path.suffix))
    module, function = target.split(":")
    loader = getattr(importlib.import_module(f"ingest.loaders.{module}"), function)
    try:
        document = loader(path, ocr_timeout_s=ocr_timeout_s) if target in _OCR_LOADERS else loader(path)
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


__all__ = ["LEGACY_FORMATS", "LOADERS", "SUPPORTED_EXTENSIONS", "LoadError", "load_document", "unsupported_reason"]
