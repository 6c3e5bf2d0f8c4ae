"""PDF loader: the text of each page, with its page number."""
from __future__ import annotations

import logging
from pathlib import Path

from pypdf import PdfReader
from pypdf.errors import FileNotDecryptedError, PdfReadError

from ingest.documents import LoadedDocument, Section
from ingest.loaders.errors import LoadError

logging.getLogger("pypdf").setLevel(logging.ERROR)  # malformed files are reported once, by us


def load_pdf(path: Path) -> LoadedDocument:
    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoadError("encrypted PDF: a password is needed to read it")
        pages = reader.pages
        sections = []
        for number, page in enumerate(pages, start=1):
            text = (page.extract_text() or "").strip()
            if text:
                sections.append(Section(text=text, page=number))
    except FileNotDecryptedError:
        raise LoadError("encrypted PDF: a password is needed to read it") from None
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LoadError(f"corrupt or truncated PDF ({type(exc).__name__}: {exc})".splitlines()[0][:200]) from None
    if not sections:
        raise LoadError(f"no extractable text in {len(pages)} page(s) (scanned PDF? OCR is not supported)")
    title = None
    try:
        title = (reader.metadata or {}).get("/Title") or None
    except Exception:  # metadata of a damaged file is optional
        pass
    return LoadedDocument(sections=sections, title=str(title) if title else None)
