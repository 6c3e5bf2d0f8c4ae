"""HTML loader: the main content's text split at headings; scripts, styles and navigation dropped."""
from __future__ import annotations

import re
from pathlib import Path

from bs4 import BeautifulSoup, Comment, NavigableString, Tag

from ingest.documents import LoadedDocument, Section
from ingest.loaders.text import read_text

_DROP_TAGS = ["script", "style", "noscript", "template", "nav", "aside", "form",
              "iframe", "svg", "button", "select", "head"]
# Sphinx and common site chrome that is not marked up semantically.
_DROP_SELECTORS = ['[role="navigation"]', '[role="banner"]', '[role="contentinfo"]', ".sphinxsidebar",
                   ".related", ".headerlink", ".breadcrumb", ".breadcrumbs", ".skip-link", "[hidden]"]
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_PARAGRAPH_BREAK = {"p", "div", "section", "article", "main", "pre", "table", "ul", "ol", "dl",
                    "blockquote", "figure", "hr", "details"}
_LINE_BREAK = {"li", "tr", "dt", "dd", "br", "caption", "summary", "figcaption"}
_CELL = {"td", "th"}


def _main_content(soup: BeautifulSoup) -> Tag:
    for finder in (lambda: soup.find("main"), lambda: soup.find(attrs={"role": "main"}),
                   lambda: soup.find("article"), lambda: soup.body):
        found = finder()
        if isinstance(found, Tag):
            return found
    return soup


class _SectionWriter:
    """Walks the DOM in reading order, starting a new section at every heading."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.parts: list[str] = []
        self.stack: list[tuple[int, str]] = []
        self.anchor: str | None = None

    def flush(self) -> None:
        text = "".join(self.parts)
        text = re.sub(r"[ \t]+\n", "\n", text)
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
        if text:
            heading = " > ".join(t for _, t in self.stack) or None
            self.sections.append(Section(text=text, heading=heading, anchor=self.anchor))
        self.parts = []

    def walk(self, node: Tag, in_pre: bool = False) -> None:
        for child in node.children:
            if isinstance(child, Comment):
                continue
            if isinstance(child, NavigableString):
                text = str(child)
                self.parts.append(text if in_pre else re.sub(r"\s+", " ", text))
                continue
            if not isinstance(child, Tag):
                continue
            name = child.name
            if name in _HEADINGS:
                self.flush()
                level = _HEADINGS[name]
                title = " ".join(child.get_text(" ").split())
                self.stack = [(lvl, t) for lvl, t in self.stack if lvl < level] + [(level, title)]
                parent = child.parent if isinstance(child.parent, Tag) else None
                self.anchor = child.get("id") or (parent.get("id") if parent is not None else None) or self.anchor
                continue
            if name in _PARAGRAPH_BREAK:
                self.parts.append("\n\n")
            elif name in _LINE_BREAK:
                self.parts.append("\n")
            elif name in _CELL:
                self.parts.append(" | ")
            self.walk(child, in_pre or name == "pre")
            if name in _PARAGRAPH_BREAK:
                self.parts.append("\n\n")


def load_html(path: Path) -> LoadedDocument:
    soup = BeautifulSoup(read_text(path), "lxml")
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text(" ").split()) if title_tag else None
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(["header", "footer"]):  # page chrome, unless part of the article itself
        if tag.find_parent(["main", "article"]) is None:
            tag.decompose()
    for selector in _DROP_SELECTORS:
        for tag in soup.select(selector):
            tag.decompose()
    writer = _SectionWriter()
    writer.walk(_main_content(soup))
    writer.flush()
    return LoadedDocument(sections=writer.sections, title=title or None)
