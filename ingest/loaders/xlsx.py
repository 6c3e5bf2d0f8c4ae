"""XLSX loader: each sheet a section headed by its name, its rows as 'column: value; ...' lines (like CSV)."""
from __future__ import annotations

import datetime as dt
import zipfile
from functools import partial
from pathlib import Path

import openpyxl
from openpyxl.utils.exceptions import InvalidFileException

from ingest.documents import LoadedDocument, Section
from ingest.loaders.errors import LoadError
from ingest.loaders.office import open_package
from ingest.loaders.text import labelled_rows

# Cells read (filled or empty) per workbook. A sheet is streamed, but a small zip can expand to billions of cells:
# past this the file is refused rather than parsed for hours. 2 million cells is 200,000 rows of 10 columns.
MAX_CELLS = 2_000_000


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time(0):
        return value.date().isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return " ".join(str(value).split())


def load_xlsx(path: Path, max_cells: int = MAX_CELLS) -> LoadedDocument:
    """Read cached cell values (formulas are not evaluated, macros in .xlsm files are never loaded or run)."""
    workbook = open_package(path, ".xlsx", partial(openpyxl.load_workbook, read_only=True, data_only=True,
                                                   keep_vba=False, keep_links=False), (InvalidFileException,))
    sections: list[Section] = []
    cells = 0
    try:
        for sheet in workbook.worksheets:
            sheet.reset_dimensions()  # the stored size is the file's claim: read only the cells really there
            rows: list[list[str]] = []
            for values in sheet.iter_rows(values_only=True):
                cells += len(values)
                if cells > max_cells:
                    raise LoadError(f"spreadsheet too large: over {max_cells:,} cells; split it into smaller files")
                row = [_cell_text(v) for v in values]
                if any(row):
                    rows.append(row)
            if rows:
                sections.append(Section(text="\n".join(labelled_rows(rows)), heading=sheet.title))
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise LoadError(f"corrupt or truncated .xlsx file ({type(exc).__name__})") from None
    finally:
        workbook.close()
    title = workbook.properties.title if workbook.properties is not None else None
    return LoadedDocument(sections=sections, title=title or None)
