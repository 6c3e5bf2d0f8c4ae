"""PPTX loader: one section per slide, headed by its title, with its text boxes, tables and speaker notes."""
from __future__ import annotations

from pathlib import Path

import pptx
from pptx.enum.shapes import MSO_SHAPE_TYPE
from pptx.exc import PackageNotFoundError

from ingest.documents import LoadedDocument, Section
from ingest.loaders.office import open_package


def _shape_texts(shapes, skip_id: int | None) -> list[str]:
    """Text of each shape in reading order (top to bottom, then left to right), groups opened."""
    texts: list[str] = []
    ordered = sorted(shapes, key=lambda s: ((s.top or 0), (s.left or 0)))
    for shape in ordered:
        if shape.shape_id == skip_id:  # the title, already the heading
            continue
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            texts.extend(_shape_texts(shape.shapes, skip_id))
        elif getattr(shape, "has_table", False) and shape.has_table:
            rows = [" | ".join(" ".join(cell.text.split()) for cell in row.cells) for row in shape.table.rows]
            texts.append("\n".join(r for r in rows if r.strip(" |")))
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            texts.append(shape.text_frame.text.strip())
    return [t for t in texts if t]


def load_pptx(path: Path) -> LoadedDocument:
    """Slide number in Section.page; macros in .pptm files are never loaded or run (python-pptx reads XML only)."""
    presentation = open_package(path, ".pptx", pptx.Presentation, (PackageNotFoundError,))
    sections: list[Section] = []
    for number, slide in enumerate(presentation.slides, start=1):
        title_shape = slide.shapes.title
        title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None else ""
        parts = _shape_texts(slide.shapes, title_shape.shape_id if title_shape is not None else None)
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame
            if notes is not None and notes.text.strip():
                parts.append(f"Speaker notes: {notes.text.strip()}")
        body = "\n\n".join(parts)
        if body or title:
            sections.append(Section(text=body or title, heading=title or f"Slide {number}", page=number))
    title = presentation.core_properties.title or None
    return LoadedDocument(sections=sections, title=title)
