"""DOCX loader: paragraphs and tables in document order, split at Heading styles."""
from __future__ import annotations

from pathlib import Path

import docx
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table
from docx.text.paragraph import Paragraph

from ingest.documents import LoadedDocument, Section
from ingest.loaders.office import open_package


def _heading_level(paragraph: Paragraph) -> int | None:
    name = (paragraph.style.name if paragraph.style is not None else "") or ""
    if name == "Title":
        return 0
    if name.startswith("Heading"):
        digits = name.removeprefix("Heading").strip()
        return int(digits) if digits.isdigit() else 1
    return None


def _table_text(table: Table) -> str:
    lines = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:  # merged cells repeat: keep each once
            text = " ".join(cell.text.split())
            if not cells or cells[-1] != text:
                cells.append(text)
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def load_docx(path: Path) -> LoadedDocument:
    document = open_package(path, ".docx", docx.Document, (PackageNotFoundError,))
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    blocks: list[str] = []
    title = document.core_properties.title or None

    def flush() -> None:
        body = "\n\n".join(b for b in blocks if b.strip()).strip()
        if body:
            sections.append(Section(text=body, heading=" > ".join(t for _, t in stack) or None))
        blocks.clear()

    for element in document.element.body.iterchildren():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = Paragraph(element, document)
            level = _heading_level(paragraph)
            text = paragraph.text.strip()
            if level is not None and text:
                flush()
                if level == 0 or (title is None and level == 1):
                    title = title or text
                stack = [(lvl, t) for lvl, t in stack if lvl < level] + [(level, text)]
            else:
                blocks.append(text)
        elif tag == "tbl":
            blocks.append(_table_text(Table(element, document)))
    flush()
    return LoadedDocument(sections=sections, title=title)
