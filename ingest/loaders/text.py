"""Plain text, Markdown and CSV loaders, the text decoding they share, and the labelled-row rendering of tables."""
from __future__ import annotations

import csv
import io
import re
import unicodedata
from pathlib import Path

from ingest.documents import LoadedDocument, Section
from ingest.loaders.errors import LoadError

_ALLOWED_CONTROL = set("\t\n\r\f\v")


def read_text(path: Path) -> str:
    """Decode a text file (UTF-8/16 with or without BOM, else Windows-1252); refuse binary content."""
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if b"\x00" in data[:65536]:
        raise LoadError("binary content in a text file (NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    sample = text[:65536]
    controls = sum(1 for ch in sample if unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROL)
    replaced = sample.count("\ufffd")
    if sample and (controls + replaced) / len(sample) > 0.05:
        raise LoadError("binary content in a text file (not decodable as text)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def load_text(path: Path) -> LoadedDocument:
    text = read_text(path)
    return LoadedDocument(sections=[Section(text=text.strip())], title=None)


_ATX_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def load_markdown(path: Path) -> LoadedDocument:
    """Split Markdown at ATX headings (outside code fences); each section keeps its heading path."""
    text = read_text(path)
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    lines: list[str] = []
    heading: str | None = None
    title: str | None = None
    in_fence = False

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            sections.append(Section(text=body, heading=heading))
        lines.clear()

    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _ATX_HEADING.match(line)
        if match:
            flush()
            level, text_of_heading = len(match.group(1)), match.group(2).strip()
            if level == 1 and title is None:
                title = text_of_heading
            stack = [(lvl, t) for lvl, t in stack if lvl < level] + [(level, text_of_heading)]
            heading = " > ".join(t for _, t in stack)
        else:
            lines.append(line)
    flush()
    return LoadedDocument(sections=sections, title=title)


def load_csv(path: Path) -> LoadedDocument:
    """Render each row as 'column: value; ...' so a chunk of rows reads on its own."""
    text = read_text(path)
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = [row for row in csv.reader(io.StringIO(text), dialect) if any(cell.strip() for cell in row)]
    if not rows:
        raise LoadError("no rows in the CSV file")
    return LoadedDocument(sections=[Section(text="\n".join(labelled_rows(rows)), heading=None)], title=None)


def labelled_rows(rows: list[list[str]]) -> list[str]:
    """Table rows as 'column: value; ...' lines, the first row naming the columns (CSV files, spreadsheet sheets).

    `rows` holds only rows with at least one non-blank cell.
    """
    header = [h.strip() for h in rows[0]]
    lines = []
    for row in rows[1:]:
        cells = [c.strip() for c in row]
        pairs = [f"{header[i] if i < len(header) and header[i] else f'column {i + 1}'}: {v}"
                 for i, v in enumerate(cells) if v]
        lines.append("; ".join(pairs))
    if not lines:  # a header-only table still says something
        lines = ["; ".join(h for h in header if h)]
    return lines
