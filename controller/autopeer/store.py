"""What the trunk was configured from, kept across restarts (SQLite).

RFC 10006 §8 leaves processing to the edge element; ours must never lose a
working trunk: only a document that validated is stored, the one in force
("active") is replaced only in the same transaction that records its
successor, and a set that arrives early (``revision/not-before`` in the
future, §7.2) waits as the "candidate" until its time. The ETag of each
URL is kept for conditional GETs (RFC 10006 §5, RFC 9110 §13.1.2), and a
history records every change, refusal and failure in sentences.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from sipmesh import statedb

HISTORY_KEEP = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS capset (
    id INTEGER PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('active', 'candidate', 'old')),
    url TEXT NOT NULL,
    etag TEXT,
    body BLOB NOT NULL,
    trunk TEXT NOT NULL,
    not_before REAL NOT NULL,
    fetched_at REAL NOT NULL,
    applied_at REAL
);
CREATE INDEX IF NOT EXISTS capset_state ON capset(state);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    lines TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
    realm TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    password TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class StoredCapset:
    """A validated capability set and the trunk configuration derived from it."""

    id: int
    state: str
    url: str
    etag: str | None
    body: bytes
    trunk: dict
    not_before: float
    fetched_at: float
    applied_at: float | None


@dataclass(frozen=True)
class HistoryEntry:
    """One event: ``applied``, ``candidate``, ``rejected``, ``error``, ``discovered``..."""

    at: float
    event: str
    lines: list[str]


class TrunkStore:
    """The Auto Peer state in one SQLite file (created 0600: it holds credentials)."""

    def __init__(self, path: str | Path) -> None:
        self._db = statedb.open_private(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return statedb.transaction(self._db)

    def _one(self, state: str) -> StoredCapset | None:
        row = self._db.execute(
            "SELECT id, state, url, etag, body, trunk, not_before, fetched_at, applied_at "
            "FROM capset WHERE state = ? ORDER BY id DESC LIMIT 1", (state,)).fetchone()
        if row is None:
            return None
        return StoredCapset(row[0], row[1], row[2], row[3], bytes(row[4]), json.loads(row[5]),
                            row[6], row[7], row[8])

    def active(self) -> StoredCapset | None:
        """The capability set the trunk is configured from now."""
        return self._one("active")

    def candidate(self) -> StoredCapset | None:
        """A valid set waiting for its not-before time or for ``sipmesh trunk apply``."""
        return self._one("candidate")

    def save(self, url: str, etag: str | None, body: bytes, trunk: dict, not_before: float,
             *, activate: bool, now: float | None = None, lines: list[str] = ()) -> StoredCapset:
        """Record a validated set as active (the old one becomes history) or as
        the candidate (replacing an earlier candidate), with its history line."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute("DELETE FROM capset WHERE state = 'candidate'")
            if activate:
                db.execute("UPDATE capset SET state = 'old' WHERE state = 'active'")
            db.execute(
                "INSERT INTO capset (state, url, etag, body, trunk, not_before, fetched_at, "
                "applied_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ("active" if activate else "candidate", url, etag, body, json.dumps(trunk),
                 not_before, now, now if activate else None))
            self._set_etag(db, url, etag)
            self._note(db, "applied" if activate else "candidate", list(lines), now)
            self._trim(db)
        stored = self.active() if activate else self.candidate()
        assert stored is not None
        return stored

    def activate_candidate(self, *, now: float | None = None,
                           lines: list[str] = ()) -> StoredCapset | None:
        """Make the candidate the active set; None when there is no candidate."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute("SELECT id FROM capset WHERE state = 'candidate'").fetchone()
            if row is None:
                return None
            db.execute("UPDATE capset SET state = 'old' WHERE state = 'active'")
            db.execute("UPDATE capset SET state = 'active', applied_at = ? WHERE id = ?",
                       (now, row[0]))
            self._note(db, "applied", list(lines), now)
        return self.active()

    def etag(self, url: str) -> str | None:
        """The entity tag of the last valid document fetched from url."""
        return self.get_meta(f"etag {url}")

    def forget_etag(self, url: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM meta WHERE key = ?", (f"etag {url}",))

    @staticmethod
    def _set_etag(db: sqlite3.Connection, url: str, etag: str | None) -> None:
        if etag:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"etag {url}", etag))
        else:
            db.execute("DELETE FROM meta WHERE key = ?", (f"etag {url}",))

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str | None) -> None:
        with self._tx() as db:
            if value is None:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def note(self, event: str, lines: list[str], *, now: float | None = None) -> None:
        """Add a history entry (refusals, failures, discoveries)."""
        with self._tx() as db:
            self._note(db, event, lines, time.time() if now is None else now)
            self._trim(db)

    @staticmethod
    def _note(db: sqlite3.Connection, event: str, lines: list[str], now: float) -> None:
        db.execute("INSERT INTO history (at, event, lines) VALUES (?, ?, ?)",
                   (now, event, json.dumps(lines)))

    @staticmethod
    def _trim(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM history WHERE id <= (SELECT MAX(id) FROM history) - ?",
                   (HISTORY_KEEP,))
        db.execute("DELETE FROM capset WHERE state = 'old' AND id NOT IN "
                   "(SELECT id FROM capset WHERE state = 'old' ORDER BY id DESC LIMIT 20)")

    def history(self, limit: int = 50) -> list[HistoryEntry]:
        """The latest entries, oldest first."""
        rows = self._db.execute(
            "SELECT at, event, lines FROM history ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [HistoryEntry(at, event, json.loads(lines)) for at, event, lines in reversed(rows)]

    def set_credentials(self, realm: str, username: str, password: str) -> None:
        """Local digest credentials for a realm whose password the provider sent hashed."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO credentials VALUES (?, ?, ?)",
                       (realm, username, password))
            self._note(db, "credentials", [f"local credentials set for realm {realm}"],
                       time.time())

    def credentials(self) -> dict[str, tuple[str, str]]:
        """realm -> (username, password) set locally."""
        rows = self._db.execute("SELECT realm, username, password FROM credentials").fetchall()
        return {r: (u, p) for r, u, p in rows}
