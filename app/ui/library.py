"""The document library behind the admin tab: uploads, the folders an index was built from, removal, ACL rules."""
from __future__ import annotations

import os
import shutil
import tempfile
import unicodedata
from pathlib import Path, PurePosixPath

from ingest.acl import AclRules
from ingest.files import atomic_write
from ingest.loaders import LOADERS
from ingest.errors import GroundworkError
from ingest.reader import IndexReader
from ingest.scan import display
from ingest.store import DB_NAME, IndexLock, read_acl_rules
from ingest.vector_store import open_vector_store_writer

SUPPORTED = tuple(LOADERS)  # what an admin may upload: every format ingestion reads
NAME_CHARS = 120  # longest file or folder name (characters; and at most 240 bytes in UTF-8)
_NAME_PUNCTUATION = " ._()-"
NAME_RULE = "letters (any language), digits, spaces and . _ ( ) -"
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


def safe_name(value: str, what: str = "file name") -> str:
    """One file or folder name as it will be saved: NFC-normalised (a Mac sends "é" as "e" + accent), made of
    letters of any language, digits, spaces and . _ ( ) -, starting with a letter or digit. Anything else is
    refused with a LibraryError that says which character or rule refused it: path separators and "..",
    control and invisible characters (e.g. U+202E, which makes "report<U+202E>fdp.md" read "reportdm.pdf"),
    other punctuation, a trailing dot or space, an over-long name."""
    name = unicodedata.normalize("NFC", value or "")
    shown = repr(name)
    if not name.strip():
        raise LibraryError(f"empty {what}")
    if name in (".", ".."):
        raise LibraryError(f"{shown} is not a {what}: a path cannot go up or stay in place")
    for ch in name:
        if ch in "/\\":
            raise LibraryError(f"{shown}: a {what} cannot contain '/' or '\\' (give the folder separately)")
        category = unicodedata.category(ch)
        if category[0] in "CZ" and ch != " ":  # control, format (bidi overrides), separators other than space
            raise LibraryError(f"{shown}: a {what} cannot contain the invisible or control character "
                               f"U+{ord(ch):04X} ({unicodedata.name(ch, 'unnamed')})")
        if category[0] not in "LMN" and ch not in _NAME_PUNCTUATION:
            raise LibraryError(f"{shown}: {ch!r} is not allowed in a {what}; use {NAME_RULE}")
    if unicodedata.category(name[0])[0] not in "LN":
        raise LibraryError(f"{shown}: a {what} must start with a letter or a digit")
    if name[-1] in ". ":
        raise LibraryError(f"{shown}: a {what} cannot end with a dot or a space")
    if len(name) > NAME_CHARS or len(name.encode("utf-8")) > 2 * NAME_CHARS:
        raise LibraryError(f"{shown[:40]}…: a {what} has at most {NAME_CHARS} characters")
    return name


def safe_subfolder(value: str) -> PurePosixPath:
    """A relative folder inside the upload folder, e.g. "hr/confidential" (ACL globs match it)."""
    value = (value or "").strip().strip("/")
    if not value:
        return PurePosixPath()
    if "\\" in value:
        raise LibraryError(f"invalid folder name {value!r}: separate folders with '/'")
    parts = []
    for part in value.split("/"):
        if part in ("", ".", ".."):
            raise LibraryError(f"invalid folder name {part!r}: a folder cannot be empty, go up or stay in place")
        try:
            parts.append(safe_name(part, "folder name"))
        except LibraryError as exc:
            raise LibraryError(f"invalid folder name: {exc}") from None
    return PurePosixPath(*parts)


def upload_name(path: str | Path) -> str:
    """The name an uploaded file is saved under (safe_name), if its type is supported; else LibraryError."""
    name = safe_name(Path(path).name)
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED:
        raise LibraryError(f"{name!r}: {'a ' + suffix if suffix else 'a file without an extension'} is not a "
                           f"supported document (supported: {', '.join(SUPPORTED)})")
    return name


def save_uploads(files: list[str], docs_dir: Path, subfolder: str = "") -> list[str]:
    """Copy uploaded files into docs_dir/subfolder; return their paths relative to docs_dir.

    Every name is checked before anything is written (upload_name); a refused name refuses the whole upload."""
    target = docs_dir / safe_subfolder(subfolder)
    names = []
    for item in files or []:
        name = upload_name(item)
        if not Path(item).is_file():
            raise LibraryError(f"{name!r}: the uploaded copy is no longer on the server (uploads are kept for a "
                               f"limited time); upload it again")
        if (target / name).is_dir():
            raise LibraryError(f"{name!r}: a folder of that name is in the upload folder")
        names.append(name)
    target.mkdir(parents=True, exist_ok=True)
    saved = []
    for item, name in zip(files or [], names):
        fd, temporary = tempfile.mkstemp(dir=target, prefix=".upload-")
        os.close(fd)
        try:
            shutil.copyfile(item, temporary)
            os.replace(temporary, target / name)  # a re-upload replaces the file; ingestion re-embeds it
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        saved.append(str((target / name).relative_to(docs_dir)))
    return saved


def unindexed_uploads(docs_dir: Path, indexed: set[str] | frozenset[str]) -> list[str]:
    """Files in the upload folder that are not in the index (their ingestion failed or skipped them, or an
    interrupted upload left them), as paths relative to the folder; `indexed` holds the index's document keys."""
    root = Path(docs_dir).resolve()
    found = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(directory) / name
            if display(path) not in indexed:
                found.append(display(path.relative_to(root)))
    return found


def delete_upload(docs_dir: Path, relative: str, indexed: set[str] | frozenset[str]) -> str:
    """Delete one file of the upload folder that is not in the index (see unindexed_uploads). A document in the
    index is removed with remove_document instead. Returns a message; LibraryError if the path is refused."""
    root = Path(docs_dir).resolve()
    parts = PurePosixPath(relative or "").parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in (".", "..") for p in parts) \
            or "\\" in relative or "\x00" in relative:
        raise LibraryError(f"{relative!r} is not a file of the upload folder")
    path = root.joinpath(*parts)
    if path.parent.resolve() != root and root not in path.parent.resolve().parents:
        raise LibraryError(f"{relative!r} is not a file of the upload folder")  # through a symlinked folder
    if not path.is_symlink() and not path.is_file():
        raise LibraryError(f"no file {relative!r} in the upload folder")
    if display(path) in indexed:
        raise LibraryError(f"{relative!r} is in the index: remove it with \"Remove from index\"")
    path.unlink()  # a symlink itself, never its target
    folder = path.parent
    while folder != root:  # folders the deletion left empty
        try:
            folder.rmdir()
        except OSError:
            break
        folder = folder.parent
    return f"Deleted {relative} from the upload folder."


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
