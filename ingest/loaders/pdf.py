"""PDF loader: the text of each page, with its page number; pages without a text layer are OCR'd."""
from __future__ import annotations

import logging
from pathlib import Path

from pypdf import PdfReader
from pypdf.errors import FileNotDecryptedError, PdfReadError

from ingest.defaults import OCR_TIMEOUT_S
from ingest.documents import LoadedDocument, Section
from ingest.loaders.errors import LoadError
from ingest.loaders.ocr import PageReader

logging.getLogger("pypdf").setLevel(logging.ERROR)  # malformed files are reported once, by us


def load_pdf(path: Path, ocr_timeout_s: float = OCR_TIMEOUT_S) -> LoadedDocument:
    """Each page's text layer; a page without one is a scan, so the images embedded in it are OCR'd.

    pypdf hands us the page's embedded images (a scanned page is exactly that) without rendering the page, which
    would need poppler or another heavy dependency; text drawn as vector outlines is therefore not read.
    """
    ocr_pages: list[int] = []
    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoadError("encrypted PDF: a password is needed to read it")
        pages = reader.pages
        ocr = PageReader(ocr_timeout_s, pages=len(pages))
        sections = []
        for number, page in enumerate(pages, start=1):
            text = (page.extract_text() or "").strip()
            if not text:
                text = _ocr_page(page, number, ocr)
                if text:
                    ocr_pages.append(number)
            if text:
                sections.append(Section(text=text, page=number))
    except FileNotDecryptedError:
        raise LoadError("encrypted PDF: a password is needed to read it") from None
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LoadError(f"corrupt or truncated PDF ({type(exc).__name__}: {exc})".splitlines()[0][:200]) from None
    if not sections:
        raise LoadError(f"no extractable text in {len(pages)} page(s): no text layer and no readable scanned image")
    title = None
    try:
        title = (reader.metadata or {}).get("/Title") or None
    except Exception:  # metadata of a damaged file is optional
        pass
    return LoadedDocument(sections=sections, title=str(title) if title else None, ocr_pages=ocr_pages)


def _ocr_page(page, number: int, ocr: PageReader) -> str:
    """The OCR'd text of the images on a page without a text layer ("" when it has none)."""
    try:
        images = [embedded.image for embedded in page.images]
    except LoadError:
        raise
    except Exception as exc:  # an image codec pypdf/Pillow cannot decode (e.g. JBIG2)
        raise LoadError(f"page {number} is a scanned image that cannot be decoded "
                        f"({type(exc).__name__}: {exc})".splitlines()[0][:200]) from None
    texts = [ocr.read(image, number) for image in images if image is not None]
    return "\n".join(t for t in texts if t)
