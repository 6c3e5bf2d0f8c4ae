"""Hostile spreadsheets and slide decks: a few kilobytes that expand to gigabytes must cost one line and a moment,
never the memory or the hours of the ingest run (XML entity bombs, sparse sheets padded to every column)."""
from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path

import docx
import openpyxl
import pptx
import pytest

from ingest.loaders import LoadError, load_document

# "Billion laughs": entity i expands to 10^9 bytes.
ENTITY_BOMB = ('<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
               + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8)) + "]>")


def _rewrite(source: Path, target: Path, part: str, edit) -> Path:
    """Copy the Office package `source` to `target` with `part`'s XML text passed through `edit`."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, edit(data.decode()).encode() if item.filename == part else data)
    return target


def _with_bomb(xml: str, marker: str) -> str:
    xml = re.sub(r"^(<\?xml[^>]*\?>)?", lambda m: (m.group(1) or "") + ENTITY_BOMB, xml, count=1)
    return xml.replace(marker, "&i;", 1)


def _xlsx(path: Path) -> Path:
    workbook = openpyxl.Workbook()
    workbook.active.append(["name", "note"])
    workbook.active.append(["Ana", "MARKER"])
    workbook.save(path)
    return path


def _pptx(path: Path) -> Path:
    deck = pptx.Presentation()
    deck.slides.add_slide(deck.slide_layouts[1]).shapes.title.text = "MARKER"
    deck.save(str(path))
    return path


def _docx(path: Path) -> Path:
    document = docx.Document()
    document.add_paragraph("MARKER")
    document.save(str(path))
    return path


@pytest.mark.parametrize("make, part", [
    (_xlsx, "xl/worksheets/sheet1.xml"), (_pptx, "ppt/slides/slide1.xml"), (_docx, "word/document.xml")])
def test_xml_entity_bomb_is_refused_in_one_line(tmp_path: Path, make, part: str) -> None:
    plain = make(tmp_path / f"plain{make.__name__}")
    bomb = _rewrite(plain, tmp_path / f"bomb.{make.__name__[1:]}", part, lambda xml: _with_bomb(xml, "MARKER"))
    assert zipfile.ZipFile(bomb).read(part).count(b"<!ENTITY") == 9
    started = time.perf_counter()
    with pytest.raises(LoadError) as info:
        load_document(bomb)
    assert time.perf_counter() - started < 5
    assert "\n" not in str(info.value) and "amplification" in str(info.value)


def test_sheet_padded_to_every_column_is_refused_before_it_costs_memory(tmp_path: Path) -> None:
    # Each row holds one empty cell in the last column (XFD = 16,384): 2,000 rows of a few bytes each would be read
    # as 33 million cells.
    rows = "".join(f'<row r="{n}"><c r="XFD{n}"/></row>' for n in range(1, 2001))
    sparse = _rewrite(_xlsx(tmp_path / "plain.xlsx"), tmp_path / "sparse.xlsx", "xl/worksheets/sheet1.xml",
                      lambda xml: re.sub(r"<sheetData>.*</sheetData>", f"<sheetData>{rows}</sheetData>", xml,
                                         flags=re.S))
    assert sparse.stat().st_size < 50_000
    started = time.perf_counter()
    with pytest.raises(LoadError, match="spreadsheet too large: over 2,000,000 cells"):
        load_document(sparse)
    assert time.perf_counter() - started < 10
