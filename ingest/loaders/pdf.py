"""PDF loader: the text of each page, with its page number, cut into sections at its headings; pages without a
text layer are OCR'd."""
from __future__ import annotations

import logging
import re
from collections import Counter
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
        texts: list[tuple[int, str]] = []
        sizes: Counter = Counter()  # characters per font size: the most common one is the body text's
        lines: list[tuple[str, float]] = []  # each text-layer line with the smallest font size in it
        for number, page in enumerate(pages, start=1):
            text = (_page_text(page, sizes, lines) or "").strip()
            if not text:
                text = _ocr_page(page, number, ocr)
                if text:
                    ocr_pages.append(number)
            if text:
                texts.append((number, text))
        sections = _sections(_without_running_lines(texts), _headings(lines, sizes))
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


_NUMBERED = re.compile(r"^\d{1,2}(?:\.\d{1,2})*\.?\s+(?=\S)")  # "3. ", "4.2 " before a heading's words
HEADING_SCALE = 1.15  # a heading's font is at least this much larger than the body text's
HEADING_WORDS = 20


def _page_text(page, sizes: Counter, lines: list[tuple[str, float]]) -> str:
    """The page's text layer, noting the font size of every piece of text (pypdf's text visitor)."""
    current: list[tuple[str, float]] = []

    def visit(text: str, cm, tm, font, size) -> None:
        scale = abs(float(tm[3])) * abs(float(cm[3])) if tm and cm and tm[3] and cm[3] else 1.0
        effective = round(float(size or 0) * scale, 1)
        for i, part in enumerate(text.split("\n")):
            if i:
                _end_line(current, lines)
            if part.strip():
                current.append((part, effective))
                sizes[effective] += len(part.strip())

    text = page.extract_text(visitor_text=visit)
    _end_line(current, lines)
    return text


def _end_line(current: list[tuple[str, float]], lines: list[tuple[str, float]]) -> None:
    if current:
        lines.append((" ".join("".join(p for p, _ in current).split()), min(size for _, size in current)))
        current.clear()


def _headings(lines: list[tuple[str, float]], sizes: Counter) -> dict[str, float]:
    """Lines set wholly in a font larger than the body text's, short enough to be headings: text -> font size."""
    if not sizes:
        return {}
    body = sizes.most_common(1)[0][0]
    return {text: size for text, size in lines
            if size >= body * HEADING_SCALE and 0 < len(text.split()) <= HEADING_WORDS}


def _sections(pages: list[tuple[int, str]], headings: dict[str, float]) -> list[Section]:
    """Each page's text cut at its heading lines; a section runs on across pages under the last heading, and a
    heading's path holds the larger headings above it ("Expense Policy > How do I submit an expense claim?"), as
    the Markdown, HTML and DOCX loaders give, so the chunks of a PDF say which section they come from."""
    sections: list[Section] = []
    stack: list[tuple[float, str]] = []
    for number, text in pages:
        body: list[str] = []

        def flush() -> None:
            joined = "\n".join(body).strip()
            if joined:
                sections.append(Section(text=joined, heading=" > ".join(t for _, t in stack) or None, page=number))
            body.clear()

        for line in text.splitlines():
            size = headings.get(" ".join(line.split()))
            if size is None:
                body.append(line)
                continue
            flush()
            stack = [(s, t) for s, t in stack if s > size] + [(size, _NUMBERED.sub("", " ".join(line.split())))]
        flush()
    return sections


EDGE_LINES = 3  # running headers and footers sit within this many lines of a page's top or bottom
_PAGE_NUMBER = re.compile(r"^(?:page )?#(?: (?:of|/) #)?$")


def _line_key(line: str) -> str:
    return re.sub(r"\d+", "#", " ".join(line.split())).lower()  # "Page 2" and "Page 3" are the same line


def _without_running_lines(pages: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Each page without its running header and footer: a line near the top or bottom of at least two pages and of
    half of them ("Acme Robotics - Expense Policy - Internal", "Page 2 of 5"), and any bare page number there.
    Left in, they are glued into the sentence a page break cuts, become chunks of their own, and get quoted."""
    split = [text.splitlines() for _, text in pages]
    edges = []  # per page: {line index: key} of its first and last EDGE_LINES non-blank lines
    for lines in split:
        nonblank = [i for i, line in enumerate(lines) if line.strip()]
        edges.append({i: _line_key(lines[i]) for i in nonblank[:EDGE_LINES] + nonblank[-EDGE_LINES:]})
    seen = Counter(key for edge in edges for key in set(edge.values()))
    running = {key for key, count in seen.items() if count >= 2 and count * 2 >= len(pages)}
    out = []
    for (number, _), lines, edge in zip(pages, split, edges):
        kept = [line for i, line in enumerate(lines)
                if i not in edge or not (edge[i] in running or _PAGE_NUMBER.match(edge[i]))]
        if any(line.strip() for line in kept):
            out.append((number, "\n".join(kept)))
    return out


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
