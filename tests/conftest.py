"""Shared fixtures: the real embedder (loaded once), and builders for real documents of every format."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

from ingest.embedding import Embedder
from llm_server import vllm_server  # noqa: F401  (the session's real vLLM server: tests/llm_server.py)


class CountingEmbedder(Embedder):
    """The real embedder, counting how many texts it was asked to embed."""

    def __init__(self) -> None:
        super().__init__()
        self.texts_embedded = 0

    def encode(self, texts):
        self.texts_embedded += len(texts)
        return super().encode(texts)


@pytest.fixture(scope="session")
def _shared_embedder() -> CountingEmbedder:
    embedder = CountingEmbedder()
    embedder.model  # load once per session
    return embedder


@pytest.fixture
def embedder(_shared_embedder: CountingEmbedder) -> CountingEmbedder:
    _shared_embedder.texts_embedded = 0
    return _shared_embedder


# --- the HR/expenses corpus: three policies, one of them readable by the hr group only -------------------

HR_DOCS = {
    "expenses.md": "# Expense policy\n\n## Deadline\n\nExpense claims must be submitted within 30 days of the "
                   "purchase.\n\n## Meals\n\nThe meal allowance in Austin is 60 USD per day.\n",
    "leave.md": "# Leave\n\nEmployees get 27 days of annual leave per year.\n",
    "hr/bands.md": "# Salary bands\n\nThe salary band E4 pays 78,000 EUR per year.\n",
}
HR_ACL = 'default = ["everyone"]\n[[rules]]\nglob = "hr/*"\ngroups = ["hr"]\n'


def write_docs(folder: Path, docs: dict[str, str]) -> Path:
    """Write each `relative path: text` of `docs` under `folder` (subfolders included); return `folder`."""
    for relative, content in docs.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(content, encoding="utf-8")
    return folder


def build_corpus(root: Path, embedder, docs: dict[str, str] = HR_DOCS, acl: str = HR_ACL,
                 index: Path | None = None, vector_store: str | None = None) -> Path:
    """`docs` written to root/docs, `acl` to root/acl.toml, both ingested into `index` (root/index by default), in
    `vector_store` (a --vector-store URL, e.g. the `vector_store` fixture's; None: FAISS).

    Returns the index folder. Pass `{**HR_DOCS, ...}` to add or replace documents of the shared corpus."""
    from ingest.pipeline import IngestOptions, ingest

    index = index or root / "index"
    write_docs(root / "docs", docs)
    (root / "acl.toml").write_text(acl, encoding="utf-8")
    ingest([root / "docs"], IngestOptions(index_dir=index, acl_file=root / "acl.toml", show_progress=False,
                                          vector_store=vector_store), embedder)
    return index


VECTOR_STORES = ("faiss", "milvus")  # the two implementations of ingest/vector_store.py's seam


def store_url(kind: str, folder: Path) -> str:
    """The --vector-store URL of `kind` with its files under `folder` (Milvus Lite: one file per test)."""
    return "faiss" if kind == "faiss" else f"milvus://{folder}/milvus.db"


@pytest.fixture(params=VECTOR_STORES)
def vector_store(request, tmp_path: Path) -> str:
    """A test taking this runs twice: on FAISS and on Milvus Lite (a fresh Milvus Lite file under tmp_path)."""
    return store_url(request.param, tmp_path)


def make_pdf(path: Path, pages: list[str], password: str | None = None) -> Path:
    """A real PDF with one text page per entry (reportlab), optionally encrypted (pypdf)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    for text in pages:
        y = 800
        for line in text.split("\n"):
            c.drawString(50, y, line)
            y -= 16
        c.showPage()
    c.save()
    if password:
        from pypdf import PdfReader, PdfWriter

        writer = PdfWriter(clone_from=PdfReader(path))
        writer.encrypt(user_password=password, owner_password=password, algorithm="AES-256")
        with open(path, "wb") as handle:
            writer.write(handle)
    return path


def make_docx(path: Path, title: str, sections: list[tuple[str, list[str]]], table: list[list[str]] | None = None) -> Path:
    """A real DOCX with Heading styles, paragraphs and optionally a table after the first section."""
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    for i, (heading, paragraphs) in enumerate(sections):
        document.add_heading(heading, level=2)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
        if table and i == 0:
            grid = document.add_table(rows=len(table), cols=len(table[0]))
            for r, row in enumerate(table):
                for col, value in enumerate(row):
                    grid.cell(r, col).text = value
    document.save(str(path))
    return path


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    """Converted models go to a per-session folder, never into the working tree."""
    cache = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get("GROUNDWORK_CACHE")
    os.environ["GROUNDWORK_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("GROUNDWORK_CACHE", None)
    else:
        os.environ["GROUNDWORK_CACHE"] = previous


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium through Playwright (tests/ui_support.py), one per test module."""
    from ui_support import CHROMIUM, CHROMIUM_ARGS, chromium_or_fail

    sync_playwright = chromium_or_fail()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
