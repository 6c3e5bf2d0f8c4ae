"""How the app's small SQLite databases (conversations, audit log, review queue) are opened: one connection per
call (safe from any of the web server's threads), a busy timeout so concurrent writers wait rather than fail, and
write transactions taken at once (BEGIN IMMEDIATE) so they queue instead of failing half-way."""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BUSY_TIMEOUT_S = 10.0


@contextmanager
def connect(path: Path, foreign_keys: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection in autocommit mode (isolation_level=None): statements commit unless in write()."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys=ON")
        yield conn
    finally:
        conn.close()


@contextmanager
def write(path: Path, foreign_keys: bool = False) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed when the block ends, rolled back when it raises."""
    with connect(path, foreign_keys) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

