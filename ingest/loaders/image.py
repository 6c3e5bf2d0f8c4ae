"""Image loader (PNG, JPEG, TIFF): the text Tesseract reads in it; each frame of a multi-page TIFF is a page."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageSequence, UnidentifiedImageError

from ingest.defaults import OCR_TIMEOUT_S
from ingest.documents import LoadedDocument, Section
from ingest.loaders.errors import LoadError
from ingest.loaders.ocr import PageReader


def load_image(path: Path, ocr_timeout_s: float = OCR_TIMEOUT_S) -> LoadedDocument:
    try:
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            ocr = PageReader(ocr_timeout_s, pages=frames)
            sections, ocr_pages = [], []
            for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
                frame.load()
                text = ocr.read(frame, number)
                if text:
                    ocr_pages.append(number)
                    sections.append(Section(text=text, page=number if frames > 1 else None))
    except UnidentifiedImageError:
        raise LoadError("not a readable image (unknown format or corrupt)") from None
    except Image.DecompressionBombError:
        raise LoadError("image too large to OCR (over Pillow's decompression-bomb pixel limit)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's ways of saying truncated or corrupt
        raise LoadError(f"corrupt or truncated image ({type(exc).__name__}: {exc})".splitlines()[0][:200]) from None
    if not sections:
        raise LoadError(f"no text found by OCR in the image ({frames} page(s))")
    return LoadedDocument(sections=sections, title=None, ocr_pages=ocr_pages)
