"""OCR of scanned PDF pages and images with the real Tesseract (CI installs it: a missing Tesseract fails here).

The scans are generated: text rendered to an image with no text layer, wrapped in a PDF or a TIFF.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_pdf
from ingest.loaders import LoadError, load_document
from ingest.pipeline import IngestOptions, ingest
from ingest.retrieval import Retriever, RetrievalOptions
from ingest.vector_store import open_vector_store
from scans import make_mixed_pdf, make_scanned_pdf, make_scanned_tiff, scanned_page

BADGE = "Visitors must wear a yellow badge\nat all times in the Lyon warehouse."


def test_scanned_pdf_pages_are_read_by_ocr_with_their_page_numbers(tmp_path: Path) -> None:
    pdf = make_scanned_pdf(tmp_path / "invoice.pdf", ["Scanned invoice 4471\nTotal due: 1,250 EUR",
                                                      "Payment terms\nPayment within 45 days of receipt"])
    document = load_document(pdf)
    assert [s.page for s in document.sections] == [1, 2]
    assert document.ocr_pages == [1, 2]
    assert "invoice 4471" in document.sections[0].text and "1,250 EUR" in document.sections[0].text
    assert "within 45 days" in document.sections[1].text


def test_only_pages_without_a_text_layer_are_ocrd(tmp_path: Path) -> None:
    document = load_document(make_mixed_pdf(tmp_path / "site.pdf", "Site rules\nForklifts need a licence.", BADGE))
    assert document.ocr_pages == [2]
    assert [s.page for s in document.sections] == [1, 2]
    assert "Forklifts need a licence." in document.sections[0].text
    assert "yellow badge" in document.sections[1].text
    text_only = load_document(make_pdf(tmp_path / "text.pdf", ["Only a text layer here"]))
    assert text_only.ocr_pages == []


def test_scanned_page_is_found_by_retrieval_with_its_page_and_the_summary_names_it(tmp_path: Path, embedder) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    make_mixed_pdf(docs / "site-rules.pdf", "Site rules\nForklifts may only be driven by certified staff.", BADGE)
    (docs / "leave.md").write_text("# Leave\n\nEmployees get 27 days of annual leave per year.\n")
    summary = ingest([docs], IngestOptions(index_dir=tmp_path / "index", show_progress=False), embedder)
    assert summary.ocr == {"site-rules.pdf": [2]}
    assert sorted(summary.added) == ["leave.md", "site-rules.pdf"]
    retriever = Retriever(open_vector_store(tmp_path / "index"), embedder)
    passages = retriever.retrieve("What must visitors wear in the warehouse?", {"everyone"},
                                  RetrievalOptions(top_k=1))
    assert passages[0].chunk.source == "site-rules.pdf"
    assert passages[0].chunk.page == 2 and "yellow badge" in passages[0].chunk.text
    from app.ui import admin_view  # the admin tab's index panel shows the last run's OCR'd pages

    assert "<b>OCR:</b> site-rules.pdf page 2" in admin_view.stats(retriever.reader.stats())


def test_images_are_ocrd_and_each_tiff_frame_is_a_page(tmp_path: Path) -> None:
    tiff = make_scanned_tiff(tmp_path / "fax.tiff", ["Fax cover sheet\nFrom the Pune office",
                                                     "Shipping schedule\nThe May shipment leaves on the 14th"])
    document = load_document(tiff)
    assert [s.page for s in document.sections] == [1, 2] and document.ocr_pages == [1, 2]
    assert "Pune office" in document.sections[0].text and "leaves on the 14th" in document.sections[1].text
    for name, kind in (("whiteboard.png", "PNG"), ("photo.jpg", "JPEG")):
        scanned_page("Standup at 9:15 in room Ada").convert("RGB").save(tmp_path / name, kind)
        assert "Standup at 9:15 in room Ada" in load_document(tmp_path / name).full_text()


def test_ocr_timeout_is_a_one_line_reason_and_the_run_goes_on(tmp_path: Path, embedder) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    make_scanned_pdf(docs / "long-scan.pdf", [f"Page {n} of a long scanned contract\nClause {n}" for n in range(4)])
    (docs / "leave.md").write_text("# Leave\n\nEmployees get 27 days of annual leave per year.\n")
    with pytest.raises(LoadError, match=r"OCR timed out after 0.05 s \(at page \d of 4\)") as info:
        load_document(docs / "long-scan.pdf", ocr_timeout_s=0.05)
    assert "\n" not in str(info.value)
    summary = ingest([docs], IngestOptions(index_dir=tmp_path / "index", show_progress=False, ocr_timeout_s=0.05),
                     embedder)
    assert summary.added == ["leave.md"]
    assert [(p.path, "OCR timed out" in p.reason) for p in summary.failed] == [("long-scan.pdf", True)]


def test_missing_tesseract_is_a_one_line_reason_not_a_crash(tmp_path: Path, monkeypatch) -> None:
    scan = make_scanned_pdf(tmp_path / "scan.pdf", ["A scanned page"])
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))  # a machine without the tesseract program
    with pytest.raises(LoadError, match="OCR needs Tesseract, which is not installed") as info:
        load_document(scan)
    assert "\n" not in str(info.value)


def test_bad_images_fail_with_one_line_reasons(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    scanned_page("Truncated scan").save(buffer, "PNG")
    (tmp_path / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "garbage.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    (tmp_path / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))  # 10 gigapixels declared, 100 bytes
    blank = tmp_path / "blank.png"
    Image.new("L", (800, 600), 255).save(blank)
    reasons = {}
    for path in sorted(tmp_path.iterdir()):
        with pytest.raises(LoadError) as info:
            load_document(path)
        reasons[path.name] = str(info.value)
    assert all(reason and "\n" not in reason for reason in reasons.values()), reasons
    assert "too large to OCR" in reasons["bomb.png"]
    assert "no text found by OCR" in reasons["blank.png"]
    assert "truncated" in reasons["truncated.png"]


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb's first step)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(
        b"IEND", b"")


def test_cli_summary_and_index_stats_say_which_pages_were_ocrd(tmp_path: Path) -> None:
    import subprocess
    import sys

    docs = tmp_path / "docs"
    docs.mkdir()
    make_scanned_pdf(docs / "contract.pdf", ["Supply contract\nSigned in Lyon", "Annex A\nPrices in EUR",
                                             "Annex B\nDelivery within 30 days"])
    make_mixed_pdf(docs / "site-rules.pdf", "Site rules\nForklifts need a licence.", BADGE)
    index = str(tmp_path / "index")

    def groundwork(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=Path(__file__).parents[1],
                              capture_output=True, text=True, timeout=600)

    result = groundwork("ingest", str(docs), "--index", index, "-q")
    assert result.returncode == 0, result.stderr
    assert "  OCR: contract.pdf pages 1-3\n  OCR: site-rules.pdf page 2\n" in result.stdout
    stats = groundwork("index", "stats", "--index", index)
    assert "  OCR: contract.pdf pages 1-3" in stats.stdout and "  OCR: site-rules.pdf page 2" in stats.stdout


def test_a_sentence_the_scan_wraps_over_lines_is_one_sentence_to_answer_with(tmp_path: Path) -> None:
    """A scan keeps its printed line breaks; an answer must still quote the whole sentence, not its first line."""
    from ingest.answer_spans import passage_units

    pdf = make_scanned_pdf(tmp_path / "memo.pdf", ["Facilities memo\n\nParking permits for the Lyon office are renewed\n"
                                                  "every January at the reception desk.\nBicycle storage is in the "
                                                  "basement, badge access\nonly, open from six to ten."])
    text = load_document(pdf).sections[0].text
    sentences = [u.text for u in passage_units(text) if u.kind == "sentence"]
    assert "Parking permits for the Lyon office are renewed every January at the reception desk." in sentences
    assert any(s.startswith("Bicycle storage") and s.endswith("from six to ten.") for s in sentences)
    assert "Facilities memo" in text.splitlines()  # a heading line keeps its own line
