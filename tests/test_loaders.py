"""Every loader on real files, and the bad files that must fail with a one-line reason."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_docx, make_pdf
from ingest.loaders import LoadError, load_document


def test_pdf_keeps_text_per_page_with_page_numbers(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "policy.pdf", ["Travel policy\nEconomy class for flights under six hours.",
                                             "Page two\nHotels up to 180 EUR per night in Paris."])
    document = load_document(pdf)
    assert [s.page for s in document.sections] == [1, 2]
    assert "Economy class" in document.sections[0].text
    assert "180 EUR" in document.sections[1].text


def test_pdf_sections_follow_its_headings_across_pages(tmp_path: Path) -> None:
    # Headings are set larger than the body text, as word processors print them; a section that runs onto the next
    # page keeps its heading, so every chunk of the PDF says which section it comes from.
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    path = tmp_path / "expenses.pdf"
    c = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    pages = [[("Helvetica-Bold", 20, "Expense Policy"), ("Helvetica", 11, "Effective 1 January 2026."),
              ("Helvetica-Bold", 14, "3. How do I submit an expense claim?"),
              ("Helvetica", 11, "All expenses are claimed in Spendly. Create one report per trip.")],
             [("Helvetica", 11, "Claims must be submitted within 30 days of the expense."),
              ("Helvetica-Bold", 14, "4. When do I need a receipt?"),
              ("Helvetica", 11, "A receipt is required for every expense of EUR 25 or more.")]]
    for page in pages:
        y = 800
        for font, size, line in page:
            c.setFont(font, size)
            c.drawString(50, y, line)
            y -= 24
        c.showPage()
    c.save()
    sections = load_document(path).sections
    assert [(s.page, s.heading) for s in sections] == [
        (1, "Expense Policy"),
        (1, "Expense Policy > How do I submit an expense claim?"),
        (2, "Expense Policy > How do I submit an expense claim?"),
        (2, "Expense Policy > When do I need a receipt?")]
    assert sections[2].text == "Claims must be submitted within 30 days of the expense."
    assert not any("When do I need a receipt?" in s.text for s in sections), "a heading is not body text"


def test_a_pdfs_running_header_and_page_numbers_are_not_part_of_its_text(tmp_path: Path) -> None:
    # Every page repeats the header and numbers itself; a sentence runs from page 1 onto page 2. Left in, the
    # header lands in the middle of that sentence's section and becomes a quotable "answer" of its own.
    header = "Acme Robotics - Expense Policy - Internal - all employees"
    pdf = make_pdf(tmp_path / "policy.pdf", [
        f"{header}\nExpense Policy\nAll expenses are claimed in Spendly.\nClaims must be submitted\nPage 1 of 3",
        f"{header}\nwithin 30 days of the expense.\nA receipt is required above EUR 25.\nPage 2 of 3",
        f"{header}\nMisuse of expenses is fraud.\nPage 3 of 3"])
    text = "\n".join(s.text for s in load_document(pdf).sections)
    assert header not in text and "Page" not in text
    assert "Claims must be submitted" in text and "within 30 days of the expense." in text
    assert "Expense Policy" in text and "Misuse of expenses is fraud." in text, "body lines near the edges stay"
    # one page: nothing repeats, so only a bare page number is dropped
    single = make_pdf(tmp_path / "memo.pdf", [f"{header}\nThe office is closed on Friday.\n1"])
    assert load_document(single).sections[0].text.splitlines() == [header, "The office is closed on Friday."]


def test_encrypted_pdf_is_reported_not_read(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "secret.pdf", ["Board minutes"], password="s3cret")
    with pytest.raises(LoadError, match="encrypted PDF"):
        load_document(pdf)


def test_truncated_and_garbage_pdfs_are_reported(tmp_path: Path) -> None:
    good = make_pdf(tmp_path / "good.pdf", ["Some text that is long enough to matter"]).read_bytes()
    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes(good[: len(good) // 3])
    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 20)
    for path in (truncated, garbage):
        with pytest.raises(LoadError) as info:
            load_document(path)
        assert "\n" not in str(info.value) and str(info.value)


def test_docx_headings_paragraphs_and_tables(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "expenses.docx", "Expense policy",
                     [("Per diem", ["Meals are reimbursed at a daily rate."]),
                      ("Receipts", ["Keep every receipt for 90 days."])],
                     table=[["City", "Rate"], ["Lyon", "45 EUR"], ["Austin", "60 USD"]])
    document = load_document(path)
    assert document.title == "Expense policy"
    headings = [s.heading for s in document.sections]
    assert headings == ["Expense policy > Per diem", "Expense policy > Receipts"]
    assert "Lyon | 45 EUR" in document.sections[0].text
    assert "Keep every receipt" in document.sections[1].text


def test_html_main_text_title_and_headings_without_scripts_or_navigation(tmp_path: Path) -> None:
    page = tmp_path / "vpn.html"
    page.write_text("""<html><head><title>VPN guide</title><style>body{color:red}</style></head><body>
      <nav><a href="/">Home</a> <a href="/it">IT menu link</a></nav>
      <header>Acme intranet banner</header>
      <main><h1 id="vpn">VPN guide</h1><p>Install the client from the portal.</p>
        <h2 id="mfa">Two-factor login</h2><p>Approve the push on your phone.</p>
        <table><tr><th>OS</th><th>Client</th></tr><tr><td>macOS</td><td>AcmeVPN 4</td></tr></table>
        <script>alert('tracking code')</script></main>
      <footer>Copyright footer text</footer></body></html>""", encoding="utf-8")
    document = load_document(page)
    text = document.full_text()
    assert document.title == "VPN guide"
    assert "Install the client" in text and "Approve the push" in text and "macOS | AcmeVPN 4" in text
    for noise in ("IT menu link", "banner", "tracking code", "color:red", "Copyright footer"):
        assert noise not in text
    assert [s.heading for s in document.sections] == ["VPN guide", "VPN guide > Two-factor login"]
    assert [s.anchor for s in document.sections] == ["vpn", "mfa"]


def test_markdown_sections_follow_headings_but_not_inside_code_fences(tmp_path: Path) -> None:
    path = tmp_path / "onboarding.md"
    path.write_text("# Onboarding\n\nWelcome.\n\n## First day\n\nBadge at reception.\n\n```\n# not a heading\n```\n\n"
                    "### Laptop\n\nIT hands it over.\n\n## First week\n\nMeet your buddy.\n", encoding="utf-8")
    document = load_document(path)
    assert document.title == "Onboarding"
    assert [s.heading for s in document.sections] == [
        "Onboarding", "Onboarding > First day", "Onboarding > First day > Laptop", "Onboarding > First week"]
    assert "# not a heading" in document.sections[1].text


def test_plain_text_in_utf8_and_windows_1252(tmp_path: Path) -> None:
    utf8 = tmp_path / "a.txt"
    utf8.write_text("Café opening hours: 8–17.", encoding="utf-8")
    legacy = tmp_path / "b.txt"
    legacy.write_bytes("Résumé of the policy".encode("cp1252"))
    assert load_document(utf8).full_text() == "Café opening hours: 8–17."
    assert load_document(legacy).full_text() == "Résumé of the policy"


def test_csv_rows_read_as_labelled_values(tmp_path: Path) -> None:
    path = tmp_path / "offices.csv"
    path.write_text("office,city,phone\nHQ,Lyon,+33 4 00 00 00\nUS,Austin,+1 512 000 0000\n", encoding="utf-8")
    text = load_document(path).full_text()
    assert text.splitlines() == ["office: HQ; city: Lyon; phone: +33 4 00 00 00",
                                 "office: US; city: Austin; phone: +1 512 000 0000"]


@pytest.mark.parametrize("name, content, reason", [
    ("zero.txt", b"", "no text"),
    ("blob.txt", bytes(range(256)) * 64, "binary content"),
    ("fake.docx", b"this is not a zip file", "not a .docx file"),
    ("blank.md", b"   \n\n  \n", "no text"),
])
def test_bad_files_fail_with_one_line_reason(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LoadError, match=reason) as info:
        load_document(path)
    assert "\n" not in str(info.value)
