"""Scanned documents for the OCR tests: text rendered to a page image (no text layer), wrapped in PDF or TIFF."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib
from PIL import Image, ImageDraw, ImageFont

# matplotlib (a dependency) ships DejaVu Sans, so the font is there on any machine the project installs on.
FONT = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
PAGE_PX = (1240, 1754)  # A4 at 150 dpi: a typical office scan
PAGE_PT = (595, 842)  # A4 in PDF points


def scanned_page(text: str, size: tuple[int, int] = PAGE_PX) -> Image.Image:
    """A grayscale 'scan' of `text` (one line per line), black on white, 28 px type (about 10 pt at 150 dpi)."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(FONT), 28)
    for i, line in enumerate(text.split("\n")):
        draw.text((100, 120 + i * 44), line, font=font, fill=0)
    return image


def make_scanned_pdf(path: Path, pages: list[str | Image.Image]) -> Path:
    """A PDF whose pages are images only (str: rendered with scanned_page) - no text layer, like a scanner's."""
    images = [p if isinstance(p, Image.Image) else scanned_page(p) for p in pages]
    images[0].save(path, "PDF", resolution=150, save_all=True, append_images=images[1:])
    return path


def make_mixed_pdf(path: Path, text_page: str, scanned_text: str) -> Path:
    """Page 1 has a text layer (reportlab), page 2 is a scanned image of `scanned_text` without one."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=PAGE_PT, invariant=1)
    y = 800
    for line in text_page.split("\n"):
        c.drawString(50, y, line)
        y -= 16
    c.showPage()
    buffer = io.BytesIO()
    scanned_page(scanned_text).save(buffer, "PNG")
    c.drawImage(ImageReader(io.BytesIO(buffer.getvalue())), 0, 0, *PAGE_PT)
    c.showPage()
    c.save()
    return path


def make_scanned_tiff(path: Path, pages: list[str]) -> Path:
    """A multi-page TIFF, one frame per entry of `pages` (how fax and document scanners file scans)."""
    images = [scanned_page(p) for p in pages]
    images[0].save(path, "TIFF", save_all=True, append_images=images[1:], compression="tiff_deflate")
    return path
