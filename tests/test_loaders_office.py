"""XLSX and PPTX on real generated files, and every bad form of them: encrypted, truncated, empty, macro-bearing,
huge; legacy .doc/.xls/.ppt. Each bad file gives one line and the run goes on."""
from __future__ import annotations

import datetime as dt
import re
import time
import zipfile
from pathlib import Path

import openpyxl
import pptx
import pytest
from pptx.util import Inches

from ingest.loaders import LoadError, load_document
from ingest.loaders.xlsx import load_xlsx
from ingest.pipeline import IngestOptions, ingest

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # how a password-protected .xlsx/.pptx/.docx begins


def make_xlsx(path: Path) -> Path:
    workbook = openpyxl.Workbook()
    offices = workbook.active
    offices.title = "Offices"
    offices.append(["office", "city", "opened", "desks"])
    offices.append(["HQ", "Lyon", dt.datetime(2011, 3, 1), 240.0])
    offices.append([None, None, None, None])  # blank rows are dropped
    offices.append(["US", "Austin", dt.datetime(2015, 9, 14), 85])
    budget = workbook.create_sheet("Budget 2026")
    budget.append(["team", "amount"])
    budget.append(["Robotics", 1_200_000])
    workbook.create_sheet("Empty")
    workbook.properties.title = "Facilities"
    workbook.save(path)
    return path


def make_pptx(path: Path) -> Path:
    deck = pptx.Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = "Quarterly results"
    first.placeholders[1].text = "Revenue grew 12% in the third quarter."
    first.notes_slide.notes_text_frame.text = "Thank the Austin team for the robot arm launch."
    second = deck.slides.add_slide(deck.slide_layouts[5])
    second.shapes.title.text = "Headcount"
    table = second.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for r, row in enumerate([["City", "People"], ["Lyon", "120"], ["Pune", "64"]]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    box = second.shapes.add_textbox(Inches(1), Inches(4.5), Inches(4), Inches(1))
    box.text_frame.text = "Hiring freeze until May."
    untitled = deck.slides.add_slide(deck.slide_layouts[6])  # blank layout: no title placeholder
    untitled.shapes.add_textbox(Inches(1), Inches(1), Inches(4), Inches(1)).text_frame.text = "Questions?"
    deck.slides.add_slide(deck.slide_layouts[6])  # an empty slide adds nothing
    deck.save(str(path))
    return path


def _with_macros(source: Path, target: Path, main_type: str, macro_type: str, vba_part: str) -> Path:
    """Copy an Office package, marking it macro-enabled and adding a VBA project part (an auto-run macro)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "[Content_Types].xml":
                text = re.sub(r'(PartName="/(?:xl/workbook\.xml|ppt/presentation\.xml)" ContentType=")[^"]+',
                              rf"\g<1>{macro_type}", data.decode())
                text = text.replace("</Types>", f'<Override PartName="/{vba_part}" '
                                                f'ContentType="application/vnd.ms-office.vbaProject"/></Types>')
                data = text.encode()
            zout.writestr(item, data)
        zout.writestr(vba_part, b"Attribute VB_Name = \"Module1\"\nSub Auto_Open()\nShell \"calc.exe\"\nEnd Sub\n")
    assert main_type in zipfile.ZipFile(source).read("[Content_Types].xml").decode()
    return target


def test_xlsx_each_sheet_a_section_rows_as_labelled_values(tmp_path: Path) -> None:
    document = load_document(make_xlsx(tmp_path / "facilities.xlsx"))
    assert document.title == "Facilities"
    assert [s.heading for s in document.sections] == ["Offices", "Budget 2026"]
    assert document.sections[0].text.splitlines() == [
        "office: HQ; city: Lyon; opened: 2011-03-01; desks: 240",
        "office: US; city: Austin; opened: 2015-09-14; desks: 85"]
    assert document.sections[1].text == "team: Robotics; amount: 1200000"


def test_pptx_slide_titles_text_boxes_tables_and_notes(tmp_path: Path) -> None:
    document = load_document(make_pptx(tmp_path / "q3.pptx"))
    assert [(s.heading, s.page) for s in document.sections] == [
        ("Quarterly results", 1), ("Headcount", 2), ("Slide 3", 3)]
    first, second, third = (s.text for s in document.sections)
    assert "Revenue grew 12%" in first and "Speaker notes: Thank the Austin team" in first
    assert "Quarterly results" not in first  # the title is the heading, not repeated in the text
    assert "City | People\nLyon | 120\nPune | 64" in second and "Hiring freeze until May." in second
    assert third == "Questions?"


def test_macro_enabled_files_are_read_and_their_macros_never_loaded(tmp_path: Path) -> None:
    xlsm = _with_macros(make_xlsx(tmp_path / "plain.xlsx"), tmp_path / "facilities.xlsm",
                        "spreadsheetml.sheet.main+xml", "application/vnd.ms-excel.sheet.macroEnabled.main+xml",
                        "xl/vbaProject.bin")
    pptm = _with_macros(make_pptx(tmp_path / "plain.pptx"), tmp_path / "q3.pptm",
                        "presentationml.presentation.main+xml",
                        "application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml", "ppt/vbaProject.bin")
    for path, expected in ((xlsm, "city: Austin"), (pptm, "Hiring freeze until May.")):
        text = load_document(path).full_text()
        assert expected in text
        assert "calc.exe" not in text and "Auto_Open" not in text


def test_sheet_size_is_capped_and_a_lying_dimension_costs_nothing(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    for n in range(300):
        workbook.active.append([f"item {n}", n, n * 2, n * 3])
    workbook.save(tmp_path / "inventory.xlsx")
    with pytest.raises(LoadError, match="spreadsheet too large: over 1,000 cells") as info:
        load_xlsx(tmp_path / "inventory.xlsx", max_cells=1_000)
    assert "\n" not in str(info.value)
    assert len(load_document(tmp_path / "inventory.xlsx").full_text().splitlines()) == 299
    # A sheet claiming every cell of the grid (17 billion) but holding two: read what is really there, fast.
    small = make_xlsx(tmp_path / "small.xlsx")
    lying = tmp_path / "lying.xlsx"
    with zipfile.ZipFile(small) as zin, zipfile.ZipFile(lying, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = re.sub(rb'<dimension ref="[^"]+"', b'<dimension ref="A1:XFD1048576"', data)
            zout.writestr(item, data)
    started = time.perf_counter()
    assert "city: Lyon" in load_document(lying).full_text()
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("name, content, reason", [
    ("locked.xlsx", OLE_MAGIC + bytes(504), r"password-protected \(encrypted\) or legacy binary file, not a .xlsx"),
    ("locked.pptx", OLE_MAGIC + bytes(504), r"password-protected \(encrypted\) or legacy binary file, not a .pptx"),
    ("locked.docx", OLE_MAGIC + bytes(504), r"password-protected \(encrypted\) or legacy binary file, not a .docx"),
    ("zero.xlsx", b"", "corrupt, truncated or not a .xlsx"),
    ("zero.pptx", b"", "corrupt, truncated or not a .pptx"),
    ("text.xlsx", b"name,city\nAna,Lyon\n", "corrupt, truncated or not a .xlsx"),
    ("old.doc", OLE_MAGIC, r"legacy binary Word format \(.doc\): save it as .docx"),
    ("old.xls", OLE_MAGIC, r"legacy binary Excel format \(.xls\): save it as .xlsx"),
    ("old.ppt", OLE_MAGIC, r"legacy binary PowerPoint format \(.ppt\): save it as .pptx"),
])
def test_bad_office_files_fail_with_one_line_reason(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LoadError, match=reason) as info:
        load_document(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("make", [make_xlsx, make_pptx])
def test_truncated_office_files_fail_with_one_line_reason(tmp_path: Path, make) -> None:
    suffix = ".xlsx" if make is make_xlsx else ".pptx"
    good = make(tmp_path / f"good{suffix}").read_bytes()
    for cut in (len(good) // 3, len(good) - 40):
        path = tmp_path / f"cut-{cut}{suffix}"
        path.write_bytes(good[:cut])
        with pytest.raises(LoadError, match="corrupt") as info:
            load_document(path)
        assert "\n" not in str(info.value)


def test_ingest_reports_each_bad_office_file_in_one_line_and_indexes_the_rest(tmp_path: Path, embedder) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    make_xlsx(docs / "facilities.xlsx")
    make_pptx(docs / "q3.pptx")
    (docs / "locked.xlsx").write_bytes(OLE_MAGIC + bytes(504))
    (docs / "truncated.pptx").write_bytes((docs / "q3.pptx").read_bytes()[:2000])
    (docs / "empty.xlsx").write_bytes(b"")
    (docs / "minutes.doc").write_bytes(OLE_MAGIC + bytes(504))
    (docs / "budget.xls").write_bytes(OLE_MAGIC + bytes(504))
    summary = ingest([docs], IngestOptions(index_dir=tmp_path / "index", show_progress=False), embedder)
    assert sorted(summary.added) == ["facilities.xlsx", "q3.pptx"]
    failed = {p.path: p.reason for p in summary.failed}
    skipped = {p.path: p.reason for p in summary.skipped}
    assert set(failed) == {"locked.xlsx", "truncated.pptx"}
    assert skipped == {"empty.xlsx": "empty file (0 bytes)",
                       "minutes.doc": "legacy binary Word format (.doc): save it as .docx",
                       "budget.xls": "legacy binary Excel format (.xls): save it as .xlsx"}
    assert all(reason and "\n" not in reason for reason in [*failed.values(), *skipped.values()])


def test_admins_may_upload_every_format_ingestion_reads() -> None:
    from app.ui.library import LibraryError, upload_name

    for name in ("budget.xlsx", "q3.pptx", "scan.tiff", "whiteboard.jpg", "macros.xlsm"):
        assert upload_name(f"/tmp/{name}") == name
    with pytest.raises(LibraryError, match="not a supported document"):
        upload_name("/tmp/minutes.doc")
