"""The data that flows through ingestion: loaded sections, then chunks."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Section:
    """A run of text under one heading or on one page of a source document."""

    text: str
    heading: str | None = None  # heading path, e.g. "Leave policy > Annual leave"
    page: int | None = None  # 1-based page number: PDF page, slide, or frame of a multi-page image
    anchor: str | None = None  # HTML id of the heading or its section, for links


@dataclass
class LoadedDocument:
    """A document's extracted text, split into sections in reading order."""

    sections: list[Section]
    title: str | None = None
    ocr_pages: list[int] = field(default_factory=list)  # pages whose text came from OCR (no text layer)

    def full_text(self) -> str:
        return SECTION_SEPARATOR.join(s.text for s in self.sections)


# Sections are joined with this in the document's full text; chunk offsets index that text.
SECTION_SEPARATOR = "\n\n"


@dataclass
class Chunk:
    """A piece of a document small enough for the embedder's window."""

    text: str
    ordinal: int  # position of the chunk within its document
    start: int  # character offsets into LoadedDocument.full_text()
    end: int
    heading: str | None = None
    page: int | None = None
    anchor: str | None = None
    title: str | None = None

    def embedding_text(self) -> str:
        """What the embedder sees: the chunk prefixed by where it sits in the document."""
        parts = [self.heading] if self.heading else []
        if self.title and not (self.heading or "").startswith(self.title):
            parts.insert(0, self.title)
        context = " > ".join(parts)
        return f"{context}\n{self.text}" if context else self.text


@dataclass
class FileProblem:
    """A file that was skipped or failed, with a one-line reason."""

    path: str
    reason: str


def page_ranges(pages: list[int]) -> str:
    """[1, 2, 3, 5] -> 'pages 1-3, 5'; [4] -> 'page 4'."""
    runs: list[list[int]] = []
    for page in sorted(set(pages)):
        if runs and page == runs[-1][1] + 1:
            runs[-1][1] = page
        else:
            runs.append([page, page])
    text = ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)
    return f"page{'s' if len(pages) > 1 else ''} {text}"


def ocr_notes(ocr: dict[str, list[int]]) -> list[str]:
    """One 'file.pdf pages 1-3' line per file whose text came (partly) from OCR, for the CLI and the admin tab."""
    return [f"{path} {page_ranges(pages)}" for path, pages in sorted(ocr.items())]


@dataclass
class IngestSummary:
    """What one ingest run did."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    failed: list[FileProblem] = field(default_factory=list)
    skipped: list[FileProblem] = field(default_factory=list)
    acl_changed: int = 0
    acl_tightened: list[FileProblem] = field(default_factory=list)  # stricter groups: same content under another path
    ocr: dict[str, list[int]] = field(default_factory=dict)  # file -> pages whose text came from OCR
    chunks_added: int = 0
    chunks_removed: int = 0
    documents_total: int = 0
    chunks_total: int = 0
    seconds: float = 0.0

    def one_line(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {self.unchanged} unchanged, "
            f"{len(self.removed)} removed, {len(self.failed)} failed, {len(self.skipped)} skipped; "
            f"+{self.chunks_added}/-{self.chunks_removed} chunks "
            f"({self.documents_total} documents, {self.chunks_total} chunks in the index) "
            f"in {self.seconds:.1f}s"
        )
