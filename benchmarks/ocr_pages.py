"""OCR cost and accuracy per scanned page: dense A4 pages of real prose (the acme sample corpus) rendered to images
at a given resolution, wrapped in an image-only PDF and read back through Groundwork's PDF loader (real Tesseract).

    python benchmarks/ocr_pages.py [--pages 6] [--dpi 150 300] [--threads default 1]

Reports seconds per page and word recall (share of the page's words found in the OCR text). --threads sets
OMP_THREAD_LIMIT for Tesseract ("default": Groundwork's choice, one thread; "all": Tesseract's own, every core).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import matplotlib
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from ingest.loaders import load_document  # noqa: E402

FONT = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
SOURCE = REPO / "examples" / "acme" / "docs"


def page_texts(pages: int, lines_per_page: int = 48, width: int = 90) -> list[str]:
    """`pages` pages of prose from the acme Markdown files, wrapped like a printed page (about 500 words each)."""
    words = " ".join(re.sub(r"[#*|`>-]", " ", p.read_text()) for p in sorted(SOURCE.rglob("*.md"))).split()
    lines = textwrap.wrap(" ".join(words), width)
    return ["\n".join(lines[i * lines_per_page:(i + 1) * lines_per_page]) for i in range(pages)]


def render(text: str, dpi: int) -> Image.Image:
    """An A4 grayscale 'scan' of `text` in 10 pt type at `dpi`."""
    size = (round(8.27 * dpi), round(11.69 * dpi))
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(FONT), round(10 * dpi / 72))
    step, margin = round(13.5 * dpi / 72), round(0.8 * dpi)
    for i, line in enumerate(text.split("\n")):
        draw.text((margin, margin + i * step), line, font=font, fill=0)
    return image


def word_recall(source: str, ocr: str) -> float:
    expected = re.findall(r"\w+", source.lower())
    found = set(re.findall(r"\w+", ocr.lower()))
    return sum(w in found for w in expected) / max(len(expected), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--dpi", type=int, nargs="+", default=[150, 300])
    parser.add_argument("--threads", nargs="+", default=["default", "all"])
    args = parser.parse_args()
    texts = page_texts(args.pages)
    print(f"{args.pages} A4 pages of ~{sum(len(t.split()) for t in texts) // len(texts)} words, 10 pt, "
          f"{os.cpu_count()} CPUs")
    print("| dpi | Tesseract threads | s/page | word recall |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for dpi in args.dpi:
            pdf = Path(folder) / f"scan-{dpi}.pdf"
            images = [render(t, dpi) for t in texts]
            images[0].save(pdf, "PDF", resolution=dpi, save_all=True, append_images=images[1:])
            for threads in args.threads:
                os.environ.pop("OMP_THREAD_LIMIT", None)
                if threads != "default":
                    os.environ["OMP_THREAD_LIMIT"] = str(os.cpu_count()) if threads == "all" else threads
                started = time.perf_counter()
                document = load_document(pdf)
                seconds = (time.perf_counter() - started) / args.pages
                assert document.ocr_pages == list(range(1, args.pages + 1)), document.ocr_pages
                recall = sum(word_recall(t, s.text) for t, s in zip(texts, document.sections)) / args.pages
                print(f"| {dpi} | {threads} | {seconds:.2f} | {recall:.3f} |", flush=True)


if __name__ == "__main__":
    main()
