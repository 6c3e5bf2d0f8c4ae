"""What the Office Open XML loaders (DOCX, XLSX, PPTX) share: recognising files they cannot open."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable, TypeVar

from ingest.loaders.errors import LoadError

Package = TypeVar("Package")

# Password-protected Office files are not zip packages but OLE compound files (the encrypted package inside),
# as are the legacy .doc/.xls/.ppt formats when renamed.
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def refuse_ole_container(path: Path, extension: str) -> None:
    """Raise a one-line LoadError when `path` is an OLE container instead of the zip package `extension` names."""
    with open(path, "rb") as handle:
        if handle.read(len(_OLE_MAGIC)) == _OLE_MAGIC:
            raise LoadError(f"password-protected (encrypted) or legacy binary file, not a {extension} package: "
                            f"save it as {extension} without a password")


def open_package(path: Path, extension: str, opener: Callable[[str], Package],
                 errors: tuple[type[Exception], ...] = ()) -> Package:
    """`opener(path)`, with a one-line reason for an encrypted, legacy, truncated or foreign file.

    `errors` are the library's own exceptions for a file that is not its format."""
    refuse_ole_container(path, extension)
    try:
        return opener(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError, *errors) as exc:
        raise LoadError(f"corrupt, truncated or not a {extension} file ({type(exc).__name__})") from None
