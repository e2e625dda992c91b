"""A peer's data store: Store, Fetch, Stat, Find on SQLite (RFC 6940 §7.4).

Sans-I/O with respect to the network: the peer decodes a request body with
:mod:`sipmesh.proto.reload_storage`, calls :class:`Store` and encodes the
answer, or answers a :class:`StorageError` with an ErrorResponse carrying
``code`` and ``info`` (§6.3.3.1). Time comes in as ``now_ms`` (ms since the
epoch, the unit of storage_time) or from the ``clock`` given at creation.

Decisions where the RFC leaves room:

- Lifetime (§7): "the validity period ... starting from the time the peer
  receives the StoreReq", so a value expires at receipt time + lifetime.
  Fetch, Stat and :meth:`Store.export` give the remaining lifetime, which
  is the downward adjustment §7.4.1.1 asks of a peer re-storing a value;
  the signature (§7.1) does not cover the lifetime.
- Generation counters (§7.4.1.1): one per (Resource-ID, Kind), increased by
  one per request that changes that Kind. A replica store (replica_number
  > 0, §10.4) takes the counter it carries: the replica may become the
  responsible peer, and the counters clients hold must stay valid there.
  A replica store with counter 0 is refused (Error_Invalid_Message).
- Storage time (§7, §7.4.1.1): a value whose storage_time is older than the
  one it would replace gets Error_Data_Too_Old. An equal storage_time is
  accepted only for the identical signed value (a replica or hand-off sent
  twice) and changes nothing; otherwise it is Too_Old as well.
- Array signatures (§7.4.2.2): the index is set to zero before signing, so
  an appended (index 0xffffffff) value still verifies at the index it gets.
  A non-append entry signed over its literal index is accepted too.
- Limits (§11.1): ``max_size`` bounds each DataValue's bytes; ``max_count``
  bounds the values (tombstones included) of a Kind at a Resource-ID, and
  for arrays the length (highest index + 1), since gaps are values a Fetch
  must synthesise (§7.2.2). Over either: Error_Data_Too_Large.
- Stat (§7.4.3.2): SHA-256 (TLS HashAlgorithm 4), the hash of the signer
  identities, over the DataValue's value with its 4 length bytes.
  StoredMetaData.value_length is, like StoredData's length field it
  stands for (§7.4.3.2: "the same as the corresponding fields in
  StoredData"), the length of the rest of the StoredMetaData; Wireshark's
  RELOAD dissector reads it that way too.

Sharing (:class:`StoreDatabase`): a deployment runs one peer per process
with its own database file, but tests and the overlay benchmark run a
thousand peers in one process, where a connection each costs its page
cache, its heap wal-index and its file descriptor per peer. So several
Stores may live in one database, each under its own ``namespace``: every
row but the certificates carries an ``ns`` column at the head of its
primary key, and every statement of a Store names its namespace. The
certificate table is shared, keyed by the SHA-256 the signer identities
carry (§6.3.4), since a certificate is public and the same for everyone.

SQLite settings: WAL with synchronous=NORMAL (a commit does not wait for
fsync; a power cut may lose the last commits but never corrupts, and the
replicas of §10.4 hold the data elsewhere); locking_mode=EXCLUSIVE, set
before WAL, so no -shm mapping exists (one file descriptor and no shared
memory less per peer, and a second process cannot open a peer's live
database); 1 KiB pages (values are small, and SQLite allocates its page
cache 20 pages at a time, SQLITE_DEFAULT_PCACHE_INITSZ), a 64 KiB page
cache and few cached statements, because one process hosts many peers.
Measured (CPython 3.11, SQLite 3.40, 1,000 stores of 10 values each):
about 145 KiB RSS and 2 file descriptors per Store with its own file, of
which about 32 KiB is WAL's heap wal-index (a rollback journal would save
that but fsync on every commit). With the 1,000 Stores in one shared
file-backed StoreDatabase: under 1 KiB RSS (about 0.5 KiB of Python
objects) and no file descriptor per Store, on top of one connection's
fixed cost (its page cache, ``cache_kib``, and the wal-index).
"""

from __future__ import annotations

import datetime
import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping

from cryptography.hazmat.primitives import serialization

from sipmesh.overlay import access, ids
from sipmesh.overlay.kinds import KindDef
from sipmesh.overlay.security import CERT_X509, SecurityError, Verifier, verify_stored_data
from sipmesh.proto.reload import (
    ERROR_DATA_TOO_LARGE,
    ERROR_DATA_TOO_OLD,
    ERROR_FORBIDDEN,
    ERROR_GENERATION_COUNTER_TOO_LOW,
    ERROR_INVALID_MESSAGE,
    ERROR_NOT_FOUND,
    ERROR_UNKNOWN_KIND,
    ID_NONE,
    GenericCertificate,
    Signature,
    SignerIdentity,
)
from sipmesh.proto.reload_storage import (
    ARRAY_LAST,
    MODEL_ARRAY,
    MODEL_DICTIONARY,
    MODEL_SINGLE,
    ArrayEntry,
    DataValue,
    DictionaryEntry,
    FetchAns,
    FetchKindResponse,
    FetchReq,
    FindAns,
    FindKindData,
    FindReq,
    MetaData,
    StatAns,
    StatKindResponse,
    StatReq,
    StoreAns,
    StoredData,
    StoredMetaData,
    StoreKindData,
    StoreKindResponse,
    StoreReq,
    unknown_kinds_info,
)

HASH_SHA256 = 4  # TLS HashAlgorithm, used for Stat digests (§7.4.3.2)
SCHEMA_VERSION = 2  # 2: the ns column (shared databases)
CACHE_KIB = 64
PAGE_SIZE = 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generation (
    ns BLOB NOT NULL, resource BLOB NOT NULL, kind INTEGER NOT NULL, counter INTEGER NOT NULL,
    PRIMARY KEY (ns, resource, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS value (
    ns BLOB NOT NULL, resource BLOB NOT NULL, kind INTEGER NOT NULL, slot BLOB NOT NULL,
    storage_time INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
    present INTEGER NOT NULL, data BLOB NOT NULL,
    hash_alg INTEGER NOT NULL, sig_alg INTEGER NOT NULL,
    id_type INTEGER NOT NULL, id_hash_alg INTEGER NOT NULL, cert_hash BLOB NOT NULL,
    sig BLOB NOT NULL,
    PRIMARY KEY (ns, resource, kind, slot)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS value_expiry ON value (ns, expires_ms);
CREATE INDEX IF NOT EXISTS value_cert ON value (cert_hash, ns);
CREATE TABLE IF NOT EXISTS certificate (
    hash BLOB PRIMARY KEY, der BLOB NOT NULL) WITHOUT ROWID;
"""

_COLS = (
    "slot, storage_time, expires_ms, present, data, hash_alg, sig_alg, id_type, "
    "id_hash_alg, cert_hash, sig"
)


class StorageError(Exception):
    """A request the store refuses: ``code`` is the RELOAD error code (§14.9)
    and ``info`` the ErrorResponse's error_info bytes (§6.3.3.1)."""

    def __init__(self, code: int, reason: str, info: bytes = b""):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.info = bytes(info)


def _slot_of_index(i: int) -> bytes:
    # Big-endian so that SQLite's blob order is the index order.
    return i.to_bytes(4, "big")


def _synthetic(value) -> StoredData:
    # §7.4.2.2: a value the node knows nothing of, unsigned.
    return StoredData(0, 0, value, Signature(SignerIdentity(ID_NONE), b"", 0, 0))


def _value_hash(data: bytes) -> bytes:
    return hashlib.sha256(len(data).to_bytes(4, "big") + data).digest()


class StoreDatabase:
    """One SQLite connection (a file, or ":memory:") that Stores live in.

    A Store given a path opens one of its own; several Stores given the same
    StoreDatabase share its connection, page cache and file descriptor, each
    seeing only the rows of its own namespace. The database stays locked
    while it is open: opening the same path twice raises
    sqlite3.OperationalError at once instead of sharing a peer's data, and a
    namespace is held by one open Store at a time (ValueError otherwise).
    ``cache_kib`` is the page cache of the whole connection: give a shared
    database more than one Store's worth. Refuses (ValueError) a database of
    another SCHEMA_VERSION.
    """

    def __init__(self, path: str, *, cache_kib: int = CACHE_KIB):
        self.path = path
        self._namespaces: set[bytes] = set()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            path, isolation_level=None, timeout=0, cached_statements=32
        )
        try:
            self._open(cache_kib)
        except BaseException:
            self._db.close()
            raise

    def _open(self, cache_kib: int) -> None:
        db = self._db
        # page_size before the first table and locking_mode before WAL, or they do nothing.
        db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        db.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA wal_autocheckpoint = 256")
        with _Transaction(db):
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ValueError(f"{self.path}: storage schema {version} is not {SCHEMA_VERSION}")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def connection(self) -> sqlite3.Connection:
        """The shared connection; ValueError once closed."""
        if self._db is None:
            raise ValueError(f"{self.path}: StoreDatabase is closed")
        return self._db

    def _claim(self, namespace: bytes) -> None:
        if namespace in self._namespaces:
            raise ValueError(f"{self.path}: namespace {namespace!r} is already open")
        self._namespaces.add(namespace)

    def _release(self, namespace: bytes) -> None:
        self._namespaces.discard(namespace)

    def close(self) -> None:
        """Close the connection (the Stores inside are unusable afterwards)."""
        if self._db is not None:
            self._db.close()
            self._db = None


class Store:
    """The values stored at one peer (RFC 6940 §7), in one SQLite database.

    ``path_or_db`` is a database path (the Store opens and owns its own
    :class:`StoreDatabase`) or a shared StoreDatabase, in which the Store
    sees only the rows of ``namespace``. ``kinds`` maps kind id -> KindDef
    (the overlay configuration); ``trusted_ca`` is the overlay's CA (a
    security.CA or its certificate). Every method is one SQLite transaction.

    ``verifier`` (a security.Verifier for the same CA, possibly shared by
    many Stores) checks each signer certificate against the CA once and
    then finds it by hash (§6.3.4, §11.3). It checks validity periods
    against the current time, so ``now_ms`` then no longer moves the
    certificate check; without a verifier every value is checked with
    security.verify_stored_data at ``now_ms``.
    """

    def __init__(
        self,
        path_or_db: str | StoreDatabase,
        kinds: Mapping[int, KindDef],
        trusted_ca,
        *,
        namespace: bytes = b"",
        clock: Callable[[], float] = time.time,
        verifier: Verifier | None = None,
    ):
        self._kinds = dict(kinds)
        self._ca = trusted_ca
        self._clock = clock
        self._verifier = verifier
        self._ns = bytes(namespace)
        self._owns = not isinstance(path_or_db, StoreDatabase)
        self._database = StoreDatabase(path_or_db) if self._owns else path_or_db
        try:
            self._db = self._database.connection
            self._database._claim(self._ns)
        except BaseException:
            if self._owns:
                self._database.close()
            raise

    # ------------------------------------------------------------ plumbing

    def _tx(self):
        return _Transaction(self._db)

    def _now(self, now_ms: int | None) -> int:
        return int(self._clock() * 1000) if now_ms is None else int(now_ms)

    def _kind(self, kind_id: int) -> KindDef:
        return self._kinds[kind_id]

    def _generation(self, rid: bytes, kind: int) -> int:
        row = self._db.execute(
            "SELECT counter FROM generation WHERE ns = ? AND resource = ? AND kind = ?",
            (self._ns, rid, kind),
        ).fetchone()
        return row[0] if row else 0

    def _check_unknown(self, kind_ids) -> None:
        unknown = []
        for k in kind_ids:
            if k not in self._kinds and k not in unknown:
                unknown.append(k)
        if unknown:
            raise StorageError(
                ERROR_UNKNOWN_KIND, f"unknown kinds {unknown}", unknown_kinds_info(unknown[:63])
            )

    def _verify(self, sd: StoredData, rid: bytes, kind: KindDef, certificates, when):
        forms = [sd]
        if kind.model == MODEL_ARRAY:
            zero = StoredData(sd.storage_time, sd.lifetime, ArrayEntry(0, sd.value.value),
                              sd.signature)
            forms = [zero] + ([sd] if sd.value.index not in (0, ARRAY_LAST) else [])
        err = None
        for form in forms:
            try:
                if self._verifier is not None:
                    return self._verifier.verify_stored_data(form, rid, kind.kind_id, certificates)
                return verify_stored_data(form, rid, kind.kind_id, certificates, self._ca,
                                          now=when)
            except SecurityError as e:
                err = e
        raise StorageError(ERROR_FORBIDDEN, f"kind {kind.kind_id}: {err.reason}")

    # ------------------------------------------------------------ Store

    def store(
        self,
        req: StoreReq,
        certificates: list[GenericCertificate],
        *,
        now_ms: int | None = None,
    ) -> StoreAns:
        """Apply a StoreReq (§7.4.1.1) atomically and give the StoreAns (§7.4.1.2).

        ``certificates`` are those carried in the message's SecurityBlock.
        The replicas lists are empty: the peer fills them. Raises
        StorageError: Error_Unknown_Kind (info: the unknown_kinds list),
        Error_Forbidden, Error_Data_Too_Old, Error_Generation_Counter_Too_Low
        (info: a StoreAns with the current counters, §7.4.1.2),
        Error_Data_Too_Large, Error_Invalid_Message.
        """
        now = self._now(now_ms)
        rid = bytes(req.resource)
        if len(rid) != ids.ID_LEN:
            raise StorageError(ERROR_INVALID_MESSAGE, "Resource-ID is not 128 bits")
        kind_ids = [kd.kind for kd in req.kind_data]
        self._check_unknown(kind_ids)
        if len(set(kind_ids)) != len(kind_ids):
            raise StorageError(ERROR_INVALID_MESSAGE, "a kind repeated in one StoreReq")
        replica = req.replica_number > 0
        if replica and any(kd.generation_counter == 0 for kd in req.kind_data):
            raise StorageError(ERROR_INVALID_MESSAGE, "replica store with generation 0")
        when = datetime.datetime.fromtimestamp(now / 1000, datetime.UTC)
        checked = []
        for kd in req.kind_data:
            kind = self._kind(kd.kind)
            rows = []
            for sd in kd.values:
                self._check_shape(kind, sd)
                info = self._verify(sd, rid, kind, certificates, when)
                access.check_policy(kind, rid, sd, info)
                rows.append((sd, info.certificate.public_bytes(serialization.Encoding.DER)))
            checked.append((kd, kind, rows))
        with self._tx():
            db = self._db
            db.execute(
                "DELETE FROM value WHERE ns = ? AND resource = ? AND expires_ms <= ?",
                (self._ns, rid, now),
            )
            gens = {k: self._generation(rid, k) for k in kind_ids}
            if not replica and any(
                kd.generation_counter not in (0, gens[kd.kind]) for kd in req.kind_data
            ):
                ans = StoreAns([StoreKindResponse(k, gens[k]) for k in kind_ids])
                raise StorageError(
                    ERROR_GENERATION_COUNTER_TOO_LOW, "generation counter mismatch", ans.encode()
                )
            out = []
            for kd, kind, rows in checked:
                changed = False
                for sd, der in rows:
                    changed |= self._put(rid, kind, sd, der, now)
                self._check_count(rid, kind)
                gen = kd.generation_counter if replica else gens[kd.kind] + (1 if changed else 0)
                if gen != gens[kd.kind] or changed:
                    db.execute(
                        "INSERT OR REPLACE INTO generation VALUES (?, ?, ?, ?)",
                        (self._ns, rid, kd.kind, gen),
                    )
                out.append(StoreKindResponse(kd.kind, gen))
        return StoreAns(out)

    def _check_shape(self, kind: KindDef, sd: StoredData) -> None:
        want = {MODEL_SINGLE: DataValue, MODEL_ARRAY: ArrayEntry,
                MODEL_DICTIONARY: DictionaryEntry}[kind.model]
        if not isinstance(sd.value, want):
            raise StorageError(ERROR_INVALID_MESSAGE, f"kind {kind.kind_id}: not a {kind.model}")
        dv = sd.value if kind.model == MODEL_SINGLE else sd.value.value
        if len(dv.value) > kind.max_size:
            raise StorageError(
                ERROR_DATA_TOO_LARGE,
                f"kind {kind.kind_id}: value of {len(dv.value)} bytes > {kind.max_size}",
            )
        if kind.model == MODEL_ARRAY and sd.value.index != ARRAY_LAST:
            if sd.value.index >= kind.max_count:
                raise StorageError(
                    ERROR_DATA_TOO_LARGE, f"kind {kind.kind_id}: index beyond max_count"
                )

    def _put(self, rid: bytes, kind: KindDef, sd: StoredData, der: bytes, now: int) -> bool:
        """Write one value; False when it is the one already stored (§7.4.1.1)."""
        db = self._db
        k = kind.kind_id
        if kind.model == MODEL_SINGLE:
            slot, dv = b"", sd.value
        elif kind.model == MODEL_DICTIONARY:
            slot, dv = sd.value.key, sd.value.value
        else:
            dv = sd.value.value
            index = sd.value.index
            if index == ARRAY_LAST:
                row = db.execute(
                    "SELECT max(slot) FROM value WHERE ns = ? AND resource = ? AND kind = ?",
                    (self._ns, rid, k),
                ).fetchone()
                index = 0 if row[0] is None else int.from_bytes(row[0], "big") + 1
                if index >= kind.max_count:
                    raise StorageError(ERROR_DATA_TOO_LARGE, f"kind {k}: array is full")
            slot = _slot_of_index(index)
        sig = sd.signature
        old = db.execute(
            "SELECT storage_time, present, data, sig FROM value "
            "WHERE ns = ? AND resource = ? AND kind = ? AND slot = ?",
            (self._ns, rid, k, slot),
        ).fetchone()
        if old is not None:
            if sd.storage_time < old[0]:
                raise StorageError(ERROR_DATA_TOO_OLD, f"kind {k}: storage_time older than stored")
            if sd.storage_time == old[0]:
                if (bool(old[1]), old[2], old[3]) == (dv.exists, dv.value, sig.value):
                    return False
                raise StorageError(ERROR_DATA_TOO_OLD, f"kind {k}: storage_time not newer")
        cert_hash = hashlib.sha256(der).digest()
        db.execute("INSERT OR IGNORE INTO certificate VALUES (?, ?)", (cert_hash, der))
        db.execute(
            f"INSERT OR REPLACE INTO value (ns, resource, kind, {_COLS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._ns, rid, k, slot, sd.storage_time, now + sd.lifetime * 1000, int(dv.exists),
                dv.value, sig.hash_alg, sig.sig_alg, sig.identity.type, sig.identity.hash_alg,
                cert_hash, sig.value,
            ),
        )
        return True

    def _check_count(self, rid: bytes, kind: KindDef) -> None:
        n, top = self._db.execute(
            "SELECT count(*), max(slot) FROM value WHERE ns = ? AND resource = ? AND kind = ?",
            (self._ns, rid, kind.kind_id),
        ).fetchone()
        if kind.model == MODEL_ARRAY and top is not None:
            n = max(n, int.from_bytes(top, "big") + 1)
        if n > kind.max_count:
            raise StorageError(
                ERROR_DATA_TOO_LARGE, f"kind {kind.kind_id}: {n} values > {kind.max_count}"
            )

    # ------------------------------------------------------------ reading

    def _stored(self, kind: KindDef, row, now: int) -> StoredData:
        slot, st, exp, present, data, h, s, it, iha, ch, sig = row
        dv = DataValue(present, data)
        if kind.model == MODEL_ARRAY:
            dv = ArrayEntry(int.from_bytes(slot, "big"), dv)
        elif kind.model == MODEL_DICTIONARY:
            dv = DictionaryEntry(slot, dv)
        return StoredData(st, max(0, (exp - now) // 1000), dv,
                          Signature(SignerIdentity(it, iha, ch), sig, h, s))

    def _rows(self, rid: bytes, kind_id: int, now: int) -> dict[bytes, tuple]:
        cur = self._db.execute(
            f"SELECT {_COLS} FROM value "
            "WHERE ns = ? AND resource = ? AND kind = ? AND expires_ms > ? ORDER BY slot",
            (self._ns, rid, kind_id, now),
        )
        return {r[0]: r for r in cur}

    def _select(self, rid: bytes, kind: KindDef, items, now: int) -> list[StoredData]:
        """The values a StoredDataSpecifier names (§7.4.2.1), gaps synthesised."""
        rows = self._rows(rid, kind.kind_id, now)
        if kind.model == MODEL_SINGLE:
            row = rows.get(b"")
            return [self._stored(kind, row, now) if row else _synthetic(DataValue(False))]
        if kind.model == MODEL_DICTIONARY:
            if not items:
                return [self._stored(kind, r, now) for r in rows.values()]
            out = []
            for key in items:
                row = rows.get(bytes(key))
                out.append(self._stored(kind, row, now) if row
                           else _synthetic(DictionaryEntry(key, DataValue(False))))
            return out
        length = max((int.from_bytes(s, "big") + 1 for s in rows), default=0)
        out, seen = [], set()
        for first, last in items:
            for i in range(first, min(last, length - 1) + 1):
                if i in seen:
                    continue
                seen.add(i)
                row = rows.get(_slot_of_index(i))
                out.append(self._stored(kind, row, now) if row
                           else _synthetic(ArrayEntry(i, DataValue(False))))
        return out

    def _specified(self, req: FetchReq, now: int):
        rid = bytes(req.resource)
        self._check_unknown([s.kind for s in req.specifiers])
        for spec in req.specifiers:
            kind = self._kind(spec.kind)
            if spec.model != kind.model:
                raise StorageError(ERROR_INVALID_MESSAGE, f"kind {spec.kind}: wrong data model")
            gen = self._generation(rid, spec.kind)
            if spec.generation != 0 and spec.generation == gen:
                yield spec.kind, gen, []
            else:
                yield spec.kind, gen, self._select(rid, kind, spec.items, now)

    def fetch(self, req: FetchReq, *, now_ms: int | None = None) -> FetchAns:
        """Answer a FetchReq (§7.4.2): one FetchKindResponse per specifier;
        none of the values when the specifier's generation is the current
        one; expired values are absent (synthesised exists=False where a
        specific value was asked for). Raises StorageError (Unknown_Kind)."""
        now = self._now(now_ms)
        with self._tx():
            return FetchAns([FetchKindResponse(k, g, v) for k, g, v in self._specified(req, now)])

    def stat(self, req: StatReq, *, now_ms: int | None = None) -> StatAns:
        """Answer a StatReq (§7.4.3): the Fetch selection as StoredMetaData."""
        now = self._now(now_ms)
        with self._tx():
            out = []
            for k, g, values in self._specified(req, now):
                out.append(StatKindResponse(k, g, [_meta(sd) for sd in values]))
            return StatAns(out)

    def find(
        self, req: FindReq, low: bytes, high: bytes, *, now_ms: int | None = None
    ) -> FindAns:
        """Answer a FindReq (§7.4.4) for a peer responsible for (low, high].

        For each kind, the Resource-ID with a value of that kind stored here
        in (low, high] that is closest to the requested one going clockwise
        (so that R_n+1 = nearest(1 + R_n) walks the ring, §7.4.4), or 0
        (16 zero bytes) when there is none or the kind is unknown. Raises
        StorageError(Error_Not_Found) when the Resource-ID is not in
        (low, high] (§7.4.4.2).
        """
        now = self._now(now_ms)
        lo, hi = ids.to_int(low), ids.to_int(high)
        try:
            target = ids.to_int(bytes(req.resource))
        except ValueError as e:
            raise StorageError(ERROR_INVALID_MESSAGE, str(e)) from e
        if not ids.in_half_open(target, lo, hi):
            raise StorageError(ERROR_NOT_FOUND, "not responsible for the Resource-ID")
        out = []
        with self._tx():
            for k in req.kinds:
                best = None
                if k in self._kinds:
                    cur = self._db.execute(
                        "SELECT DISTINCT resource FROM value "
                        "WHERE ns = ? AND kind = ? AND present = 1 AND expires_ms > ?",
                        (self._ns, k, now),
                    )
                    for (r,) in cur:
                        n = ids.to_int(r)
                        if ids.in_half_open(n, lo, hi) and (
                            best is None or ids.distance(target, n) < ids.distance(target, best)
                        ):
                            best = n
                out.append(FindKindData(k, ids.to_bytes(best or 0)))
        return FindAns(out)

    # ------------------------------------------------------------ replication

    def resource_ids(self, low: bytes | None = None, high: bytes | None = None) -> list[bytes]:
        """Resource-IDs with stored values, all or those in the ring interval
        (low, high] (§10.7.3: what to hand to a new replica or joining peer)."""
        rows = self._db.execute(
            "SELECT DISTINCT resource FROM value WHERE ns = ? ORDER BY resource", (self._ns,)
        )
        out = [bytes(r) for (r,) in rows]
        if low is None or high is None:
            return out
        lo, hi = ids.to_int(low), ids.to_int(high)
        return [r for r in out if ids.in_half_open(ids.to_int(r), lo, hi)]

    def export(
        self, resource_id: bytes, *, replica_number: int = 1, now_ms: int | None = None
    ) -> tuple[StoreReq, list[GenericCertificate]]:
        """A StoreReq re-storing every live value at ``resource_id`` (tombstones
        included, §7.4.1.3) with its signature, its remaining lifetime
        (§7.4.1.1) and the current generation counters, and the signer
        certificates to carry in the message's SecurityBlock.

        ``replica_number`` defaults to 1 so that the receiver keeps the
        generation counters (replicas §10.4, join hand-off §10.5 step 6);
        values with less than a second to live are left out.
        """
        now = self._now(now_ms)
        rid = bytes(resource_id)
        kind_data, hashes = [], []
        with self._tx():
            kinds = self._db.execute(
                "SELECT DISTINCT kind FROM value WHERE ns = ? AND resource = ? ORDER BY kind",
                (self._ns, rid),
            ).fetchall()
            for (k,) in kinds:
                kind = self._kinds.get(k)
                if kind is None:
                    continue
                values = []
                for row in self._rows(rid, k, now).values():
                    sd = self._stored(kind, row, now)
                    if sd.lifetime < 1:
                        continue
                    values.append(sd)
                    if row[9] not in hashes:
                        hashes.append(row[9])
                if values:
                    kind_data.append(StoreKindData(k, self._generation(rid, k), values))
            certs = self._certificates(hashes)
        return StoreReq(rid, replica_number, kind_data), certs

    def certificates(self, hashes: Iterable[bytes]) -> list[GenericCertificate]:
        """The stored signer certificates with these SHA-256 hashes (unknown
        ones, and those only other namespaces' values refer to, skipped), to
        carry in a FetchAns's SecurityBlock: a fetcher must be able to verify
        every value returned (§6.3.4, §7.4.2.2)."""
        with self._tx():
            return self._certificates(hashes)

    def _certificates(self, hashes: Iterable[bytes]) -> list[GenericCertificate]:
        out, seen = [], set()
        for h in hashes:
            h = bytes(h)
            if h in seen:
                continue
            seen.add(h)
            row = self._db.execute(
                "SELECT der FROM certificate WHERE hash = ? AND EXISTS "
                "(SELECT 1 FROM value WHERE cert_hash = ? AND ns = ?)",
                (h, h, self._ns),
            ).fetchone()
            if row is not None:
                out.append(GenericCertificate(CERT_X509, row[0]))
        return out

    def drop(self, resource_id: bytes) -> None:
        """Forget everything stored at ``resource_id`` (§10.7.3: no longer a replica)."""
        rid = bytes(resource_id)
        with self._tx():
            held = self._cert_hashes("resource = ?", rid)
            self._db.execute("DELETE FROM value WHERE ns = ? AND resource = ?", (self._ns, rid))
            self._db.execute(
                "DELETE FROM generation WHERE ns = ? AND resource = ?", (self._ns, rid)
            )
            self._collect_certificates(held)

    def expire(self, now_ms: int | None = None) -> int:
        """Remove expired values (§7.4.1.3), and the counters and certificates
        nothing refers to any more; returns the number of values removed."""
        now = self._now(now_ms)
        with self._tx():
            held = self._cert_hashes("expires_ms <= ?", now)
            n = self._db.execute(
                "DELETE FROM value WHERE ns = ? AND expires_ms <= ?", (self._ns, now)
            ).rowcount
            if n:
                self._db.execute(
                    "DELETE FROM generation WHERE ns = ? AND NOT EXISTS (SELECT 1 FROM value v "
                    "WHERE v.ns = generation.ns AND v.resource = generation.resource "
                    "AND v.kind = generation.kind)",
                    (self._ns,),
                )
                self._collect_certificates(held)
        return n

    def _cert_hashes(self, where: str, arg) -> list[bytes]:
        rows = self._db.execute(
            f"SELECT DISTINCT cert_hash FROM value WHERE ns = ? AND {where}", (self._ns, arg)
        )
        return [h for (h,) in rows]

    def _collect_certificates(self, hashes: list[bytes]) -> None:
        # Only those the deleted rows named: the table is shared by every namespace.
        for h in hashes:
            self._db.execute(
                "DELETE FROM certificate WHERE hash = ? AND NOT EXISTS "
                "(SELECT 1 FROM value WHERE cert_hash = ?)",
                (h, h),
            )

    def stats(self) -> dict:
        """``resources``, ``values`` and value ``bytes`` held (expired ones
        included until :meth:`expire` runs)."""
        r, v, b = self._db.execute(
            "SELECT count(DISTINCT resource), count(*), coalesce(sum(length(data)), 0) "
            "FROM value WHERE ns = ?",
            (self._ns,),
        ).fetchone()
        return {"resources": r, "values": v, "bytes": b}

    def close(self) -> None:
        """Close the database if this Store opened it, else leave the
        shared StoreDatabase open and free the namespace."""
        if self._owns:
            self._database.close()
        else:
            self._database._release(self._ns)


def _meta(sd: StoredData) -> StoredMetaData:
    v = sd.value
    dv = v if isinstance(v, DataValue) else v.value
    md = MetaData(dv.exists, len(dv.value), HASH_SHA256, _value_hash(dv.value))
    if isinstance(v, ArrayEntry):
        md = ArrayEntry(v.index, md)
    elif isinstance(v, DictionaryEntry):
        md = DictionaryEntry(v.key, md)
    return StoredMetaData(12 + len(md.encode()), sd.storage_time, sd.lifetime, md)


class _Transaction:
    # BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception (§7.4.1.1: atomic).
    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
