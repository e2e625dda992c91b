"""The controller's small SQLite state files: opened private, changed in transactions.

The board registry and the Auto Peer store each keep their state in one
SQLite file that may hold secrets (credentials, board keys' enrollment),
so the file is created 0600 before SQLite opens it, runs in WAL mode (a
reader such as `sipmesh boards` in another process never blocks the
controller), and every change is one ``BEGIN IMMEDIATE`` transaction,
rolled back on any exception: a crash or a bad input loses nothing.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def open_private(path: str | Path, schema: str) -> sqlite3.Connection:
    """Open (creating it 0600 and its folder) the SQLite file at path, in WAL
    mode and autocommit, with ``schema`` (idempotent statements) applied."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    db = sqlite3.connect(str(path), isolation_level=None, timeout=5.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
