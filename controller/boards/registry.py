"""The board registry: every board the controller knows, in one SQLite file.

A board is ``discovered`` when its mDNS service (RFC 6763 §4.1) is first
seen, ``provisioned`` when the controller gave it an identity over serial,
``configured`` once an authenticated heartbeat shows it runs a configuration,
``online`` when that heartbeat also says it reached the overlay (or needs
none), and ``lost`` after missed heartbeats or an mDNS goodbye (RFC 6762
§10.1); a heartbeat brings it back. The legal moves live in ``TRANSITIONS``;
every move and every change worth knowing lands in ``history``.

What mDNS says (address, TXT) is unauthenticated: it is recorded for display
and never moves a board past ``discovered``. Only heartbeats MACed with the
board's key (set at provisioning) do.

Each board's configuration fields are kept with a sequence number; the
signed configuration (COSE_Sign1, RFC 9052 §4.2) made for a sequence number
is stored too, so the same ``seq`` always serves the same bytes and the
``ETag`` of the configuration endpoint stays truthful (RFC 9110 §8.8.3).
Every change is one transaction; the file is created 0600 because it holds
the boards' heartbeat keys and network passwords.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from sipmesh import statedb
from sipmesh.proto import cbor

log = logging.getLogger("sipmesh.boards")

FILE_NAME = "boards.sqlite"
STATES = ("discovered", "provisioned", "configured", "online", "lost")
TRANSITIONS = {
    "discovered": {"provisioned", "lost"},
    "provisioned": {"provisioned", "configured", "online", "lost"},
    "configured": {"provisioned", "online", "lost"},
    "online": {"provisioned", "configured", "lost"},
    "lost": {"discovered", "provisioned", "configured", "online"},
}
CONFIG_FIELDS = ("name", "aor", "intervals", "contacts", "settings", "net")
BOARD_ID = re.compile(r"sm-[0-9a-f]{12}")
DEFAULT_HEARTBEAT = 30
# History is for people reading `sipmesh boards history`; a LAN flooding us
# with refused heartbeats must not grow the file without bound.
HISTORY_KEEP = 20000
# Heartbeat counters are CBOR unsigned integers; SQLite holds signed 64-bit.
_MAX_INT = 2**63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS board (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT '',
    fw TEXT NOT NULL DEFAULT '',
    pub BLOB,
    cert BLOB,
    hb_key BLOB,
    state TEXT NOT NULL CHECK (state IN
        ('discovered', 'provisioned', 'configured', 'online', 'lost')),
    ip TEXT NOT NULL DEFAULT '',
    port INTEGER NOT NULL DEFAULT 0,
    txt TEXT NOT NULL DEFAULT '{}',
    cfg_seq INTEGER NOT NULL DEFAULT 0,
    cfg_served INTEGER NOT NULL DEFAULT 0,
    cfg_confirmed INTEGER NOT NULL DEFAULT 0,
    hb_boot INTEGER,
    hb_n INTEGER,
    hb_detail TEXT NOT NULL DEFAULT '{}',
    last_seen REAL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS config (
    board TEXT PRIMARY KEY REFERENCES board(id),
    seq INTEGER NOT NULL,
    fields BLOB NOT NULL,
    cose BLOB
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    board TEXT NOT NULL,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_board ON history(board, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COLUMNS = ("id, name, kind, fw, pub, cert, hb_key, state, ip, port, txt, cfg_seq, cfg_served, "
            "cfg_confirmed, hb_boot, hb_n, hb_detail, last_seen, created, updated")


class RegistryError(ValueError):
    """A request the registry refuses: unknown board, wrong state, bad value."""


class UnknownBoard(RegistryError):
    """No board with that id."""


class NotProvisioned(RegistryError):
    """The board has no identity from this controller (or no configuration yet)."""


class Replay(RegistryError):
    """A heartbeat whose (boot, n) is not above the last one accepted."""


@dataclass(frozen=True)
class Board:
    """One row of the registry."""

    id: str
    name: str
    kind: str
    fw: str
    pub: bytes | None
    cert: bytes | None
    hb_key: bytes | None
    state: str
    ip: str
    port: int
    txt: dict
    cfg_seq: int
    cfg_served: int
    cfg_confirmed: int
    hb_boot: int | None
    hb_n: int | None
    hb_detail: dict
    last_seen: float | None
    created: float
    updated: float

    @property
    def provisioned(self) -> bool:
        """True once the controller gave this board an identity."""
        return self.pub is not None and self.hb_key is not None

    def to_json(self) -> dict:
        """What ``sipmesh boards --json`` shows (never the heartbeat key)."""
        return {
            "id": self.id, "name": self.name, "kind": self.kind, "fw": self.fw,
            "state": self.state, "ip": self.ip, "port": self.port, "txt": self.txt,
            "pub": self.pub.hex() if self.pub else None, "cert": bool(self.cert),
            "cfg": {"seq": self.cfg_seq, "served": self.cfg_served,
                    "confirmed": self.cfg_confirmed},
            "heartbeat": {"boot": self.hb_boot, "n": self.hb_n, **self.hb_detail},
            "last_seen": self.last_seen, "created": self.created, "updated": self.updated,
        }


@dataclass(frozen=True)
class HistoryEntry:
    """One event of one board: ``discovered``, ``state``, ``config``, ..."""

    board: str
    at: float
    event: str
    detail: str

    def to_json(self) -> dict:
        return {"board": self.board, "at": self.at, "event": self.event, "detail": self.detail}


def _board(row: tuple) -> Board:
    return Board(
        row[0], row[1], row[2], row[3], _blob(row[4]), _blob(row[5]), _blob(row[6]), row[7],
        row[8], row[9], json.loads(row[10]), row[11], row[12], row[13], row[14], row[15],
        json.loads(row[16]), row[17], row[18], row[19])


def _blob(value: object) -> bytes | None:
    return None if value is None else bytes(value)


def check_id(board_id: object) -> str:
    """The board id if it has the ``sm-`` + 12 lower-hex form, else RegistryError."""
    if not isinstance(board_id, str) or not BOARD_ID.fullmatch(board_id):
        raise RegistryError(f"{board_id!r} is not a board id (sm- and 12 lower-case hex digits)")
    return board_id


# (board_id, seq, fields) -> COSE_Sign1 bytes of that configuration.
Issuer = Callable[[str, int, dict], bytes]


class BoardRegistry:
    """The boards and their history in ``path`` (SQLite, WAL, created 0600)."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time,
                 issuer: Issuer | None = None) -> None:
        self.path = Path(path)
        self.clock = clock
        self.issuer = issuer
        self._db = statedb.open_private(self.path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return statedb.transaction(self._db)

    # ------------------------------------------------------------ reading

    def get(self, board_id: str) -> Board | None:
        """The board, or None when unknown."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM board WHERE id = ?",
                               (board_id,)).fetchone()
        return None if row is None else _board(row)

    def _must(self, board_id: str) -> Board:
        board = self.get(board_id)
        if board is None:
            raise UnknownBoard(f"no board {board_id}")
        return board

    def boards(self) -> list[Board]:
        """Every board, by id."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM board ORDER BY id").fetchall()
        return [_board(r) for r in rows]

    def history(self, board_id: str | None = None, limit: int = 200) -> list[HistoryEntry]:
        """The last ``limit`` events (of one board, or all), oldest first."""
        if board_id is None:
            rows = self._db.execute("SELECT board, at, event, detail FROM history "
                                    "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        else:
            rows = self._db.execute("SELECT board, at, event, detail FROM history "
                                    "WHERE board = ? ORDER BY id DESC LIMIT ?",
                                    (board_id, limit)).fetchall()
        return [HistoryEntry(*r) for r in reversed(rows)]

    def config_fields(self, board_id: str) -> dict | None:
        """The configuration fields last given to ``set_config`` (None: none yet)."""
        row = self._db.execute("SELECT fields FROM config WHERE board = ?",
                               (board_id,)).fetchone()
        return None if row is None else cbor.loads(bytes(row[0]))

    # ------------------------------------------------------------ writing helpers

    def _log(self, db: sqlite3.Connection, board_id: str, event: str, detail: str,
             now: float) -> None:
        db.execute("INSERT INTO history (board, at, event, detail) VALUES (?, ?, ?, ?)",
                   (board_id, now, event, detail))
        db.execute("DELETE FROM history WHERE id <= (SELECT MAX(id) FROM history) - ?",
                   (HISTORY_KEEP,))

    def _move(self, db: sqlite3.Connection, board: Board, new: str, why: str,
              now: float) -> None:
        if new == board.state:
            return
        if new not in TRANSITIONS[board.state]:
            raise RegistryError(f"board {board.id} cannot go from {board.state} to {new}")
        db.execute("UPDATE board SET state = ?, updated = ? WHERE id = ?", (new, now, board.id))
        self._log(db, board.id, "state", f"{board.state} -> {new}: {why}", now)
        log.info("boards: %s %s -> %s (%s)", board.id, board.state, new, why)

    # ------------------------------------------------------------ mDNS

    def seen(self, board_id: str, *, ip: str, port: int, txt: dict[str, str]) -> Board:
        """Record an mDNS announcement (RFC 6763 §6 TXT, RFC 6762 §8.4 updates).

        An unknown id becomes ``discovered``; changes of address or TXT are
        recorded. A lost board that was never provisioned is ``discovered``
        again; a provisioned one waits for its next heartbeat.
        """
        check_id(board_id)
        now = self.clock()
        txt_json = json.dumps(txt, sort_keys=True)
        with self._tx() as db:
            board = self.get(board_id)
            if board is None:
                db.execute(
                    "INSERT INTO board (id, name, kind, fw, state, ip, port, txt, created, "
                    "updated) VALUES (?, ?, ?, ?, 'discovered', ?, ?, ?, ?, ?)",
                    (board_id, txt.get("name", ""), txt.get("kind", ""), txt.get("fw", ""),
                     ip, port, txt_json, now, now))
                self._log(db, board_id, "discovered",
                          f"{ip}:{port} kind={txt.get('kind', '')} fw={txt.get('fw', '')}", now)
                log.info("boards: %s discovered at %s:%d", board_id, ip, port)
                return self._must(board_id)
            changes = []
            if (ip, port) != (board.ip, board.port):
                changes.append(f"address {board.ip}:{board.port} -> {ip}:{port}")
            for key in sorted(set(txt) | set(board.txt)):
                old, new = board.txt.get(key), txt.get(key)
                if old != new:
                    changes.append(f"{key}={'' if old is None else old} -> "
                                   f"{'(removed)' if new is None else new}")
            if changes:
                name = board.name if board.provisioned else txt.get("name", board.name)
                db.execute("UPDATE board SET ip = ?, port = ?, txt = ?, name = ?, kind = ?, "
                           "fw = ?, updated = ? WHERE id = ?",
                           (ip, port, txt_json, name, txt.get("kind", board.kind),
                            txt.get("fw", board.fw), now, board_id))
                self._log(db, board_id, "announced", "; ".join(changes), now)
                log.info("boards: %s announced %s", board_id, "; ".join(changes))
            if board.state == "lost" and not board.provisioned:
                self._move(db, board, "discovered", "announced again", now)
        return self._must(board_id)

    def gone(self, board_id: str, why: str = "mDNS goodbye") -> Board | None:
        """The board's service left the LAN (RFC 6762 §10.1): mark it lost."""
        now = self.clock()
        with self._tx() as db:
            board = self.get(board_id)
            if board is None or board.state == "lost":
                return board
            self._move(db, board, "lost", why, now)
        return self._must(board_id)

    # ------------------------------------------------------------ provisioning

    def provision(self, board_id: str, *, pub: bytes, hb_key: bytes, kind: str = "",
                  fw: str = "", name: str = "", cert: bytes = b"") -> Board:
        """Give a board its identity (the serial ``provision`` op): it becomes
        ``provisioned``; heartbeat counters restart with the new key."""
        check_id(board_id)
        if not (isinstance(pub, bytes) and len(pub) == 32):
            raise RegistryError("pub must be a 32-byte Ed25519 public key (RFC 8032 §5.1.5)")
        if not (isinstance(hb_key, bytes) and len(hb_key) == 32):
            raise RegistryError("hb_key must be 32 bytes")
        now = self.clock()
        with self._tx() as db:
            board = self.get(board_id)
            if board is None:
                db.execute("INSERT INTO board (id, state, created, updated) "
                           "VALUES (?, 'discovered', ?, ?)", (board_id, now, now))
                board = self._must(board_id)
            db.execute("UPDATE board SET pub = ?, hb_key = ?, cert = ?, kind = ?, fw = ?, "
                       "name = ?, hb_boot = NULL, hb_n = NULL, updated = ? WHERE id = ?",
                       (pub, hb_key, cert or None, kind or board.kind, fw or board.fw,
                        name or board.name, now, board_id))
            again = " again" if board.provisioned else ""
            self._log(db, board_id, "provisioned",
                      f"identity given{again}: pub {pub.hex()[:16]}..", now)
            self._move(db, board, "provisioned", "identity given over serial", now)
        return self._must(board_id)

    # ------------------------------------------------------------ configuration

    def set_config(self, board_id: str, fields: dict, why: str = "") -> int:
        """Store the board's configuration fields and give them the next
        sequence number (a board accepts only newer ones); returns it."""
        unknown = set(fields) - set(CONFIG_FIELDS)
        if unknown:
            raise RegistryError(f"unknown configuration field(s): {', '.join(sorted(unknown))}")
        try:
            blob = cbor.dumps(fields)
        except (TypeError, ValueError) as e:
            raise RegistryError(f"configuration fields cannot be encoded: {e}") from None
        now = self.clock()
        with self._tx() as db:
            board = self._must(board_id)
            seq = board.cfg_seq + 1
            db.execute("INSERT INTO config (board, seq, fields, cose) VALUES (?, ?, ?, NULL) "
                       "ON CONFLICT (board) DO UPDATE SET seq = excluded.seq, "
                       "fields = excluded.fields, cose = NULL", (board_id, seq, blob))
            name = fields.get("name")
            db.execute("UPDATE board SET cfg_seq = ?, name = ?, updated = ? WHERE id = ?",
                       (seq, name if isinstance(name, str) and name else board.name,
                        now, board_id))
            self._log(db, board_id, "config", f"configuration {seq} set "
                      f"({why or ', '.join(sorted(fields))})", now)
        return seq

    def reissue_all(self, why: str) -> list[str]:
        """Bump every configured board's sequence with unchanged fields (the
        controller's address or overlay changed: boards must pull again)."""
        done = []
        for board_id, in self._db.execute("SELECT board FROM config ORDER BY board").fetchall():
            fields = self.config_fields(board_id)
            if fields is not None:
                self.set_config(board_id, fields, why=f"re-issued: {why}")
                done.append(board_id)
        return done

    def signed_config(self, board_id: str) -> tuple[int, bytes]:
        """(seq, COSE_Sign1 bytes) of the board's current configuration.

        Made by the issuer the first time a sequence number is asked for and
        stored, so every later request for the same ``seq`` gets the same bytes.
        """
        board = self._must(board_id)
        if not board.provisioned:
            raise NotProvisioned(f"board {board_id} is not provisioned")
        row = self._db.execute("SELECT seq, fields, cose FROM config WHERE board = ?",
                               (board_id,)).fetchone()
        if row is None:
            raise NotProvisioned(f"board {board_id} has no configuration")
        seq, fields, cose = row
        if cose is not None:
            return seq, bytes(cose)
        if self.issuer is None:
            raise NotProvisioned(f"configuration {seq} of {board_id} is not signed yet")
        cose = self.issuer(board_id, seq, cbor.loads(bytes(fields)))
        with self._tx() as db:
            db.execute("UPDATE config SET cose = ? WHERE board = ? AND seq = ? AND cose IS NULL",
                       (cose, board_id, seq))
        row = self._db.execute("SELECT seq, cose FROM config WHERE board = ?",
                               (board_id,)).fetchone()
        return row[0], bytes(row[1])

    def served(self, board_id: str, seq: int) -> None:
        """The endpoint sent configuration ``seq`` in full (not a 304)."""
        now = self.clock()
        with self._tx() as db:
            board = self._must(board_id)
            if board.cfg_served != seq:
                db.execute("UPDATE board SET cfg_served = ?, updated = ? WHERE id = ?",
                           (seq, now, board_id))
                self._log(db, board_id, "served", f"configuration {seq} sent", now)

    # ------------------------------------------------------------ heartbeats

    def heartbeat(self, board_id: str, beat: dict) -> Board:
        """Record an authenticated heartbeat (its MAC was checked by the caller).

        ``(boot, n)`` must be above the last accepted pair (Replay otherwise):
        a captured heartbeat replayed later cannot make a dead board look alive.
        """
        boot, n, cfg = beat.get("boot"), beat.get("n"), beat.get("cfg", 0)
        for key, value in (("boot", boot), ("n", n), ("cfg", cfg)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
                raise RegistryError(f"heartbeat {key} must be an unsigned integer")
        ip = beat.get("ip", "")
        overlay = beat.get("overlay", "off")
        if not isinstance(ip, str) or len(ip) > 45 or overlay not in ("ok", "down", "off"):
            raise RegistryError("heartbeat ip or overlay is ill-typed")
        detail = {k: beat[k] for k in ("up", "free", "alloc") if isinstance(beat.get(k), int)
                  and not isinstance(beat.get(k), bool)}
        detail["overlay"] = overlay
        now = self.clock()
        with self._tx() as db:
            board = self._must(board_id)
            if not board.provisioned:
                raise NotProvisioned(f"board {board_id} is not provisioned")
            if board.hb_boot is not None and (boot, n) <= (board.hb_boot, board.hb_n):
                raise Replay(f"heartbeat boot {boot} n {n} is not after "
                             f"boot {board.hb_boot} n {board.hb_n}")
            db.execute("UPDATE board SET hb_boot = ?, hb_n = ?, cfg_confirmed = ?, ip = ?, "
                       "hb_detail = ?, last_seen = ?, updated = ? WHERE id = ?",
                       (boot, n, cfg, ip or board.ip, json.dumps(detail, sort_keys=True), now,
                        now, board_id))
            if board.hb_boot is not None and boot != board.hb_boot:
                self._log(db, board_id, "rebooted", f"boot {board.hb_boot} -> {boot}", now)
            if cfg != board.cfg_confirmed:
                self._log(db, board_id, "confirmed", f"runs configuration {cfg}", now)
            new = "online" if overlay in ("ok", "off") else "configured"
            why = {"ok": "heartbeat, in the overlay", "off": "heartbeat",
                   "down": "heartbeat, overlay down"}[overlay]
            if board.state == "lost":
                why += " (back)"
            self._move(db, board, new, why, now)
        return self._must(board_id)

    def refused(self, board_id: str, why: str) -> None:
        """Record a refused request about a known board (bad MAC, replay)."""
        now = self.clock()
        with self._tx() as db:
            if self.get(board_id) is not None:
                self._log(db, board_id, "refused", why, now)

    def mark_lost(self, lost_after: int = 3, now: float | None = None) -> list[str]:
        """Boards with no heartbeat for ``lost_after`` of their heartbeat
        intervals become ``lost``; returns their ids."""
        now = self.clock() if now is None else now
        lost = []
        rows = self._db.execute(
            "SELECT id, last_seen FROM board WHERE state IN ('provisioned', 'configured', "
            "'online') AND last_seen IS NOT NULL").fetchall()
        for board_id, last_seen in rows:
            fields = self.config_fields(board_id) or {}
            intervals = fields.get("intervals")
            every = DEFAULT_HEARTBEAT
            if isinstance(intervals, dict) and isinstance(intervals.get("heartbeat"), int):
                every = max(1, intervals["heartbeat"])
            if now - last_seen > lost_after * every:
                with self._tx() as db:
                    board = self._must(board_id)
                    if board.state != "lost" and board.last_seen == last_seen:
                        self._move(db, board, "lost", f"no heartbeat for {now - last_seen:.0f} s "
                                   f"({lost_after} x {every} s)", now)
                        lost.append(board_id)
        return lost

    # ------------------------------------------------------------ meta

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                       "DO UPDATE SET value = excluded.value", (key, value))
