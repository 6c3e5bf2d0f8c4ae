"""Optical character recognition with Tesseract (through pytesseract), for scanned PDF pages and images.

Tesseract runs as a subprocess per page; a file's pages share one time budget so a huge scan cannot stall a run.
"""
from __future__ import annotations

import contextlib
import os
import re
import time

import pytesseract
from PIL import Image

from ingest.defaults import OCR_TIMEOUT_S
from ingest.loaders.errors import LoadError

OCR_LANGUAGE = "eng"  # Debian's tesseract-ocr-eng
_MIN_SIDE_PX = 32  # smaller images (icons, rules, bullets) hold no readable text: not worth a Tesseract run
_INSTALL_HINT = "apt-get install tesseract-ocr tesseract-ocr-eng"
_WORD = re.compile(r"[^\W\d_]{3,}")  # a run of three or more letters


@contextlib.contextmanager
def _one_thread():
    """Run Tesseract with one OpenMP thread (unless the user set OMP_THREAD_LIMIT).

    Its OpenMP threads spin while they wait: on a busy machine (the embedder, other work) a page took 26.6 s with
    its default threads and 4.1 s with one (benchmarks/ocr_pages.py, 2 cores). pytesseract passes os.environ to the
    subprocess, so the limit is set only around the call: OpenMP in this process (torch) read its settings at load.
    """
    if "OMP_THREAD_LIMIT" in os.environ:
        yield
        return
    os.environ["OMP_THREAD_LIMIT"] = "1"
    try:
        yield
    finally:
        os.environ.pop("OMP_THREAD_LIMIT", None)


_CONTINUED = re.compile(r"(?<=[^.!?:;\n])[ \t]*\n(?:[ \t]*\n)*[ \t]*(?=[a-z(])")  # a break, then lower case
_HYPHENATED = re.compile(r"(?<=[a-z])-[ \t]*\n[ \t]*(?=[a-z])")


def reflow(text: str) -> str:
    """Join the lines Tesseract broke inside a sentence: a line that does not end a sentence, followed (even
    across a blank line) by one that starts in lower case, continues it ("exam-" + "ple" is "example").

    A scan keeps its printed line breaks, and a line break ends a sentence for answer selection
    (ingest/answer_spans.py), so without this an answer would quote half a sentence. Lines that start with a
    capital or a list marker (headings, list items, table rows) keep their breaks.
    """
    return _CONTINUED.sub(" ", _HYPHENATED.sub("", text))


class PageReader:
    """Reads the text of page images for one file, within that file's OCR time budget."""

    def __init__(self, timeout_s: float = OCR_TIMEOUT_S, pages: int | None = None) -> None:
        self.timeout_s = timeout_s
        self.pages = pages  # how many pages the file has, for the timeout message
        self._deadline = time.monotonic() + timeout_s

    def read(self, image: Image.Image, page: int) -> str:
        """The text Tesseract finds in `image` (page `page` of the file); LoadError with one line on failure."""
        if min(image.size) < _MIN_SIDE_PX:
            return ""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out(page)
        if image.mode not in ("1", "L", "RGB"):
            image = image.convert("RGB")
        try:
            with _one_thread():
                text = pytesseract.image_to_string(image, lang=OCR_LANGUAGE, timeout=remaining)
        except pytesseract.TesseractNotFoundError:
            raise LoadError(f"OCR needs Tesseract, which is not installed ({_INSTALL_HINT})") from None
        except pytesseract.TesseractError as exc:
            message = str(exc.message or exc).strip().splitlines()
            if any("language" in line.lower() for line in message):
                raise LoadError(f"OCR failed: Tesseract has no '{OCR_LANGUAGE}' language data ({_INSTALL_HINT})"
                                ) from None
            raise LoadError(f"OCR failed on page {page}: {(message or ['Tesseract error'])[-1][:150]}") from None
        except RuntimeError as exc:  # pytesseract's way of saying the timeout expired
            if "timeout" in str(exc).lower():
                raise self._timed_out(page) from None
            raise
        text = reflow(text.strip())
        # A photo, diagram or logo comes back as a few stray marks: that is no text to index.
        return text if len(_WORD.findall(text)) >= 2 else ""

    def _timed_out(self, page: int) -> LoadError:
        of = f" of {self.pages}" if self.pages else ""
        return LoadError(f"OCR timed out after {self.timeout_s:g} s (at page {page}{of}); split the file or raise "
                         "--ocr-timeout")
