"""The document library behind the admin tab: uploads, the folders an index was built from, removal, ACL rules."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from ingest.acl import AclRules
from ingest.files import atomic_write
from ingest.errors import GroundworkError
from ingest.reader import IndexReader
from ingest.store import DB_NAME, IndexLock, read_acl_rules
from ingest.vector_store import open_vector_store_writer

SUPPORTED = (".pdf", ".docx", ".html", ".htm", ".md", ".markdown", ".txt", ".csv")
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()-]{0,120}$")
DEFAULT_ACL = 'default = ["everyone"]\n'


class LibraryError(GroundworkError, ValueError):
    """A bad request from the admin tab; the message is one line for the page."""


def ensure_index(index_dir: Path, embedder_name: str) -> None:
    """Create an empty index if there is none, so the app can start before the first ingestion."""
    if (index_dir / DB_NAME).exists():
        return
    index_dir.mkdir(parents=True, exist_ok=True)
    with IndexLock(index_dir):
        open_vector_store_writer(index_dir, embedder_name).close()


def safe_subfolder(value: str) -> PurePosixPath:
    """A relative folder inside the upload folder, e.g. "hr/confidential" (ACL globs match it)."""
    value = (value or "").strip().strip("/")
    if not value:
        return PurePosixPath()
    parts = PurePosixPath(value).parts
    for part in parts:
        if not _PART.match(part) or part in (".", ".."):
            raise LibraryError(f"invalid folder name {part!r}: use letters, digits, spaces, '.', '_', '-'")
    return PurePosixPath(*parts)


def save_uploads(files: list[str], docs_dir: Path, subfolder: str = "") -> list[str]:
    """Copy uploaded files into docs_dir/subfolder; return their paths relative to docs_dir."""
    target = docs_dir / safe_subfolder(subfolder)
    saved = []
    for item in files or []:
        source = Path(item)
        name = source.name
        if not _PART.match(name) or source.suffix.lower() not in SUPPORTED:
            raise LibraryError(f"{name}: not accepted (supported: {', '.join(SUPPORTED)}; plain file names only)")
    target.mkdir(parents=True, exist_ok=True)
    for item in files or []:
        source = Path(item)
        fd, temporary = tempfile.mkstemp(dir=target, prefix=".upload-")
        os.close(fd)
        shutil.copyfile(source, temporary)
        os.replace(temporary, target / source.name)  # a re-upload replaces the file; ingestion re-embeds it
        saved.append(str((target / source.name).relative_to(docs_dir)))
    return saved


def known_roots(reader: IndexReader) -> list[Path]:
    """The folders the index's documents were ingested from (that still exist)."""
    roots = sorted({doc.root for doc in reader.documents()})
    return [Path(r) for r in roots if Path(r).is_dir()]


def remove_document(index_dir: Path, embedder_name: str, path: str, docs_dir: Path) -> str:
    """Remove a document from the index (one new generation). A file in the upload folder is deleted too;
    a file elsewhere is left on disk (and comes back if its folder is ingested again). Returns a message."""
    with IndexLock(index_dir):
        writer = open_vector_store_writer(index_dir, embedder_name)
        try:
            documents = writer.documents()
            if path not in documents:
                raise LibraryError(f"no document {path!r} in the index")
            writer.publish([], [path], {})
        finally:
            writer.close()
    source = documents[path].source
    file = Path(path)
    uploads = docs_dir.resolve()
    if file.is_file() and uploads in file.resolve().parents:
        file.unlink()
        return f"Removed {source} from the index and from the upload folder."
    if file.exists():
        return (f"Removed {source} from the index. Its file is still at {path}: delete it there, or it comes back "
                f"the next time its folder is ingested.")
    return f"Removed {source} from the index."


def acl_text(index_dir: Path) -> str:
    """The ACL rules stored with the index (what the next ingestion applies)."""
    return read_acl_rules(index_dir) or DEFAULT_ACL


def write_acl(path: Path, text: str) -> AclRules:
    """Validate ACL rules (TOML) and save them atomically; AclError if they are malformed."""
    rules = AclRules.parse(text, origin="ACL rules")
    atomic_write(path, text)
    return rules
