"""The peer's data store (RFC 6940 §7.4): models, checks, policies, persistence."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipmesh.overlay import ids, security, storage
from sipmesh.overlay.access import node_multiple_resource
from sipmesh.overlay.kinds import (
    NODE_MATCH,
    NODE_MULTIPLE,
    USER_MATCH,
    USER_NODE_MATCH,
    KindDef,
    models,
)
from sipmesh.overlay.security import (
    Identity,
    Verifier,
    make_ca,
    sign_stored_data,
    verify_stored_data,
)
from sipmesh.overlay.storage import SCHEMA_VERSION, StorageError, Store, StoreDatabase
from sipmesh.proto import reload as rl
from sipmesh.proto.reload_storage import (
    ARRAY_LAST,
    MODEL_ARRAY,
    MODEL_DICTIONARY,
    MODEL_SINGLE,
    ArrayEntry,
    DataValue,
    DictionaryEntry,
    FetchReq,
    FindReq,
    StatReq,
    StoredData,
    StoredDataSpecifier,
    StoreKindData,
    StoreReq,
    decode_fetch_ans,
    decode_store_ans,
    unknown_kinds_info,
)

NOW = int(time.time() * 1000)
SINGLE, ARRAY, DICT, NODE, UNM, MULTI = 1, 2, 3, 4, 5, 6
KINDS = {
    k.kind_id: k
    for k in (
        KindDef(SINGLE, "single", MODEL_SINGLE, USER_MATCH, 1, 100),
        KindDef(ARRAY, "array", MODEL_ARRAY, USER_MATCH, 8, 100),
        KindDef(DICT, "dict", MODEL_DICTIONARY, USER_MATCH, 8, 100),
        KindDef(NODE, "node", MODEL_SINGLE, NODE_MATCH, 1, 100),
        KindDef(UNM, "unm", MODEL_DICTIONARY, USER_NODE_MATCH, 4, 100),
        KindDef(MULTI, "multi", MODEL_SINGLE, NODE_MULTIPLE, 1, 100, max_node_multiple=3),
    )
}


@pytest.fixture(scope="module")
def ca():
    return make_ca("test.overlay")


@pytest.fixture(scope="module")
def alice(ca):
    return Identity.generate(ca, "alice@example.com", os.urandom(16))


@pytest.fixture(scope="module")
def bob(ca):
    return Identity.generate(ca, "bob@example.com", os.urandom(16))


@pytest.fixture
def store(ca):
    s = Store(":memory:", KINDS, ca)
    yield s
    s.close()


def rid_of(ident: Identity) -> bytes:
    return ids.resource_id(ident.user_name)


def signed(ident, rid, kind, value, t=NOW, lifetime=3600) -> StoredData:
    """A StoredData signed as §7.1 says (array index zeroed, §7.4.2.2)."""
    if isinstance(value, ArrayEntry):
        sd = sign_stored_data(
            StoredData(t, lifetime, ArrayEntry(0, value.value), None), rid, kind, ident
        )
        sd.value = value
        return sd
    return sign_stored_data(StoredData(t, lifetime, value, None), rid, kind, ident)


def put(store, ident, rid, kind, values, gen=0, now=NOW, replica=0):
    req = StoreReq(rid, replica, [StoreKindData(kind, gen, values)])
    return store.store(req, [rl.GenericCertificate(0, ident.cert_der)], now_ms=now)


def fetch(store, rid, kind, items=(), gen=0, now=NOW):
    spec = StoredDataSpecifier(kind, gen, KINDS[kind].model, items)
    (resp,) = store.fetch(FetchReq(rid, [spec]), now_ms=now).kind_responses
    return resp


def err(excinfo) -> int:
    return excinfo.value.code


def test_single_value_store_fetch_and_overwrite(store, ca, alice):
    rid = rid_of(alice)
    ans = put(store, alice, rid, SINGLE, [signed(alice, rid, SINGLE, DataValue(True, b"v1"))])
    assert [(r.kind, r.generation_counter, r.replicas) for r in ans.kind_responses] == [
        (SINGLE, 1, [])
    ]
    assert decode_store_ans(ans.encode()) == ans
    resp = fetch(store, rid, SINGLE)
    assert resp.generation == 1 and resp.values[0].value == DataValue(True, b"v1")
    newer = signed(alice, rid, SINGLE, DataValue(True, b"v2"), t=NOW + 1)
    assert put(store, alice, rid, SINGLE, [newer]).kind_responses[0].generation_counter == 2
    got = fetch(store, rid, SINGLE).values[0]
    assert got.value == DataValue(True, b"v2") and got.signature == newer.signature
    # The answer decodes with the kinds' models and its signature still verifies.
    ans = store.fetch(FetchReq(rid, [StoredDataSpecifier(SINGLE, 0, MODEL_SINGLE)]), now_ms=NOW)
    again = decode_fetch_ans(ans.encode(), models(KINDS)).kind_responses[0].values[0]
    assert verify_stored_data(again, rid, SINGLE, [alice.certificate], ca)


def test_older_storage_time_is_data_too_old(store, alice):
    rid = rid_of(alice)
    put(store, alice, rid, SINGLE, [signed(alice, rid, SINGLE, DataValue(True, b"new"), t=NOW)])
    old = signed(alice, rid, SINGLE, DataValue(True, b"old"), t=NOW - 1)
    with pytest.raises(StorageError) as e:
        put(store, alice, rid, SINGLE, [old])
    assert err(e) == rl.ERROR_DATA_TOO_OLD
    same_time = signed(alice, rid, SINGLE, DataValue(True, b"other"), t=NOW)
    with pytest.raises(StorageError) as e:
        put(store, alice, rid, SINGLE, [same_time])
    assert err(e) == rl.ERROR_DATA_TOO_OLD
    assert fetch(store, rid, SINGLE).values[0].value.value == b"new"


def test_identical_resend_changes_nothing(store, alice):
    rid = rid_of(alice)
    sd = signed(alice, rid, SINGLE, DataValue(True, b"x"))
    put(store, alice, rid, SINGLE, [sd])
    assert put(store, alice, rid, SINGLE, [sd]).kind_responses[0].generation_counter == 1


def test_array_indices_append_and_ranges(store, alice):
    rid = rid_of(alice)
    values = [
        signed(alice, rid, ARRAY, ArrayEntry(0, DataValue(True, b"a"))),
        signed(alice, rid, ARRAY, ArrayEntry(1, DataValue(True, b"b"))),
        signed(alice, rid, ARRAY, ArrayEntry(ARRAY_LAST, DataValue(True, b"c"))),
    ]
    put(store, alice, rid, ARRAY, values)
    put(store, alice, rid, ARRAY, [signed(alice, rid, ARRAY, ArrayEntry(4, DataValue(True, b"e")))])
    got = fetch(store, rid, ARRAY, [(0, ARRAY_LAST)]).values
    assert [(v.value.index, v.value.value.exists, v.value.value.value) for v in got] == [
        (0, True, b"a"),
        (1, True, b"b"),
        (2, True, b"c"),
        (3, False, b""),
        (4, True, b"e"),
    ]
    gap = got[3]
    assert gap.signature.identity.type == rl.ID_NONE
    assert (gap.signature.hash_alg, gap.signature.sig_alg, gap.signature.value) == (0, 0, b"")
    sub = fetch(store, rid, ARRAY, [(1, 1), (4, 9)]).values
    assert [v.value.index for v in sub] == [1, 4]
    # The appended value verifies at the index it was given (index zeroed for signing).
    put(
        store,
        alice,
        rid,
        ARRAY,
        [signed(alice, rid, ARRAY, ArrayEntry(ARRAY_LAST, DataValue(True, b"f")))],
    )
    assert fetch(store, rid, ARRAY, [(5, 5)]).values[0].value.value.value == b"f"


def test_dictionary_keys_and_wildcard(store, alice):
    rid = rid_of(alice)
    put(
        store,
        alice,
        rid,
        DICT,
        [
            signed(alice, rid, DICT, DictionaryEntry(b"k1", DataValue(True, b"1"))),
            signed(alice, rid, DICT, DictionaryEntry(b"k2", DataValue(True, b"2"))),
        ],
    )
    everything = fetch(store, rid, DICT).values
    assert {v.value.key: v.value.value.value for v in everything} == {b"k1": b"1", b"k2": b"2"}
    some = fetch(store, rid, DICT, [b"k2", b"nope"]).values
    assert [(v.value.key, v.value.value.exists) for v in some] == [(b"k2", True), (b"nope", False)]


def test_generation_counter(store, alice):
    rid = rid_of(alice)
    put(store, alice, rid, SINGLE, [signed(alice, rid, SINGLE, DataValue(True, b"1"))])
    with pytest.raises(StorageError) as e:
        put(
            store,
            alice,
            rid,
            SINGLE,
            [signed(alice, rid, SINGLE, DataValue(True, b"2"), t=NOW + 1)],
            gen=7,
        )
    assert err(e) == rl.ERROR_GENERATION_COUNTER_TOO_LOW
    info = decode_store_ans(e.value.info)
    assert [(r.kind, r.generation_counter, r.replicas) for r in info.kind_responses] == [
        (SINGLE, 1, [])
    ]
    ans = put(
        store,
        alice,
        rid,
        SINGLE,
        [signed(alice, rid, SINGLE, DataValue(True, b"2"), t=NOW + 1)],
        gen=1,
    )
    assert ans.kind_responses[0].generation_counter == 2
    # Fetch with the current generation returns no values (§7.4.2.1).
    assert fetch(store, rid, SINGLE, gen=2).values == []
    assert len(fetch(store, rid, SINGLE, gen=1).values) == 1


def _policy_cases(alice, bob):
    a_rid, b_rid = rid_of(alice), rid_of(bob)
    node_rid = ids.resource_id(alice.node_id)
    multi_rid = node_multiple_resource(alice.node_id, 3)
    return [
        (SINGLE, a_rid, DataValue(True, b"x"), b_rid),
        (NODE, node_rid, DataValue(True, b"x"), a_rid),
        (UNM, a_rid, DictionaryEntry(alice.node_id, DataValue(True, b"x")), b_rid),
        (MULTI, multi_rid, DataValue(True, b"x"), node_multiple_resource(alice.node_id, 4)),
    ]


@pytest.mark.parametrize(
    "case", range(4), ids=["USER-MATCH", "NODE-MATCH", "USER-NODE-MATCH", "NODE-MULTIPLE"]
)
def test_policies_accept_and_forbid(store, alice, bob, case):
    kind, ok_rid, value, bad_rid = _policy_cases(alice, bob)[case]
    put(store, alice, ok_rid, kind, [signed(alice, ok_rid, kind, value)])
    assert fetch(store, ok_rid, kind, [value.key] if kind == UNM else ()).values[0].value == value
    with pytest.raises(StorageError) as e:
        put(store, alice, bad_rid, kind, [signed(alice, bad_rid, kind, value)])
    assert err(e) == rl.ERROR_FORBIDDEN
    # Someone else's signature at the owner's resource is refused too.
    other = DictionaryEntry(bob.node_id, value.value) if kind == UNM else value
    with pytest.raises(StorageError) as e:
        put(store, bob, ok_rid, kind, [signed(bob, ok_rid, kind, other, t=NOW + 1)])
    assert err(e) == rl.ERROR_FORBIDDEN


def test_user_node_match_key_must_be_signers_node_id(store, alice, bob):
    rid = rid_of(alice)
    wrong = signed(alice, rid, UNM, DictionaryEntry(bob.node_id, DataValue(True, b"x")))
    with pytest.raises(StorageError) as e:
        put(store, alice, rid, UNM, [wrong])
    assert err(e) == rl.ERROR_FORBIDDEN


def test_bad_signatures_are_forbidden(store, ca, alice):
    rid = rid_of(alice)
    forged = signed(alice, rid, SINGLE, DataValue(True, b"x"))
    forged.value = DataValue(True, b"y")
    foreign_ca = make_ca("test.overlay")
    mallory = Identity.generate(foreign_ca, alice.user_name, alice.node_id)
    expired = Identity.generate(ca, alice.user_name, alice.node_id, days=-2)
    cases = [
        (alice, forged),
        (mallory, signed(mallory, rid, SINGLE, DataValue(True, b"x"))),
        (expired, signed(expired, rid, SINGLE, DataValue(True, b"x"))),
    ]
    for ident, sd in cases:
        with pytest.raises(StorageError) as e:
            put(store, ident, rid, SINGLE, [sd])
        assert err(e) == rl.ERROR_FORBIDDEN
    # No certificate carried for the signer.
    req = StoreReq(
        rid, 0, [StoreKindData(SINGLE, 0, [signed(alice, rid, SINGLE, DataValue(True, b"x"))])]
    )
    with pytest.raises(StorageError) as e:
        store.store(req, [], now_ms=NOW)
    assert err(e) == rl.ERROR_FORBIDDEN
    assert store.stats()["values"] == 0


def test_unknown_kind(store, alice):
    rid = rid_of(alice)
    req = StoreReq(rid, 0, [StoreKindData(99, 0, []), StoreKindData(98, 0, [])])
    with pytest.raises(StorageError) as e:
        store.store(req, [], now_ms=NOW)
    assert err(e) == rl.ERROR_UNKNOWN_KIND
    assert e.value.info == unknown_kinds_info([99, 98])
    with pytest.raises(StorageError) as e:
        store.fetch(FetchReq(rid, [StoredDataSpecifier(97, 0, MODEL_SINGLE)]), now_ms=NOW)
    assert e.value.info == unknown_kinds_info([97])


def test_limits_are_data_too_large(store, alice):
    rid = rid_of(alice)
    big = signed(alice, rid, DICT, DictionaryEntry(b"k", DataValue(True, b"x" * 101)))
    with pytest.raises(StorageError) as e:
        put(store, alice, rid, DICT, [big])
    assert err(e) == rl.ERROR_DATA_TOO_LARGE
    nine = [
        signed(alice, rid, DICT, DictionaryEntry(b"%d" % i, DataValue(True, b"v")))
        for i in range(9)
    ]
    with pytest.raises(StorageError) as e:
        put(store, alice, rid, DICT, nine)
    assert err(e) == rl.ERROR_DATA_TOO_LARGE
    put(store, alice, rid, DICT, nine[:8])
    far = signed(alice, rid, ARRAY, ArrayEntry(8, DataValue(True, b"v")))
    with pytest.raises(StorageError) as e:
        put(store, alice, rid, ARRAY, [far])
    assert err(e) == rl.ERROR_DATA_TOO_LARGE


def test_lifetime_expiry(store, alice):
    rid = rid_of(alice)
    put(store, alice, rid, SINGLE, [signed(alice, rid, SINGLE, DataValue(True, b"x"), lifetime=10)])
    live = fetch(store, rid, SINGLE, now=NOW + 9_999).values[0]
    assert live.value.exists and live.lifetime == 0
    assert fetch(store, rid, SINGLE, now=NOW + 4_000).values[0].lifetime == 6
    gone = fetch(store, rid, SINGLE, now=NOW + 10_000).values[0]
    assert not gone.value.exists and gone.signature.identity.type == rl.ID_NONE
    assert store.expire(NOW + 9_999) == 0
    assert store.expire(NOW + 10_000) == 1
    assert store.stats() == {"resources": 0, "values": 0, "bytes": 0}


def test_tombstone_delete(store, alice):
    rid = rid_of(alice)
    put(
        store,
        alice,
        rid,
        DICT,
        [signed(alice, rid, DICT, DictionaryEntry(b"k", DataValue(True, b"v")), lifetime=60)],
    )
    tomb = signed(
        alice, rid, DICT, DictionaryEntry(b"k", DataValue(False)), t=NOW + 1, lifetime=120
    )
    put(store, alice, rid, DICT, [tomb])
    (v,) = fetch(store, rid, DICT).values
    assert v.value == DictionaryEntry(b"k", DataValue(False)) and v.signature == tomb.signature
    # The tombstone stops a replay of the deleted value.
    with pytest.raises(StorageError) as e:
        put(
            store,
            alice,
            rid,
            DICT,
            [signed(alice, rid, DICT, DictionaryEntry(b"k", DataValue(True, b"v")))],
        )
    assert err(e) == rl.ERROR_DATA_TOO_OLD
    assert store.expire(NOW + 120_000) == 1


def test_stat_fields(store, alice):
    import hashlib

    rid = rid_of(alice)
    sd = signed(alice, rid, DICT, DictionaryEntry(b"k", DataValue(True, b"hello")), lifetime=50)
    put(store, alice, rid, DICT, [sd])
    ans = store.stat(StatReq(rid, [StoredDataSpecifier(DICT, 0, MODEL_DICTIONARY)]), now_ms=NOW)
    (resp,) = ans.kind_responses
    (meta,) = resp.values
    assert resp.generation == 1
    assert (meta.value_length, meta.storage_time, meta.lifetime) == (
        12 + len(meta.metadata.encode()),
        NOW,
        50,
    )
    md = meta.metadata.value
    assert meta.metadata.key == b"k"
    assert (md.exists, md.value_length, md.hash_algorithm) == (True, 5, 4)
    assert md.hash_value == hashlib.sha256(b"\x00\x00\x00\x05hello").digest()


def test_find_closest_in_interval(store, ca):
    users = [Identity.generate(ca, f"u{i}@example.com", os.urandom(16)) for i in range(4)]
    rids = []
    for u in users:
        rid = rid_of(u)
        put(store, u, rid, SINGLE, [signed(u, rid, SINGLE, DataValue(True, b"x"))])
        rids.append(ids.to_int(rid))
    target = rids[0]
    low, high = ids.to_bytes(target - 1), ids.to_bytes(target - 2)  # the whole ring but one
    ans = store.find(FindReq(ids.to_bytes(target), [SINGLE, ARRAY, 77]), low, high, now_ms=NOW)
    got = {r.kind: r.closest for r in ans.results}
    assert got == {SINGLE: ids.to_bytes(target), ARRAY: bytes(16), 77: bytes(16)}
    after = store.find(FindReq(ids.to_bytes(target + 1), [SINGLE]), low, high, now_ms=NOW)
    expect = min(rids[1:], key=lambda r: ids.distance(target + 1, r))
    assert after.results[0].closest == ids.to_bytes(expect)
    # Only what lies in the responsibility interval counts; elsewhere: Not_Found.
    only = store.find(
        FindReq(ids.to_bytes(target), [SINGLE]),
        ids.to_bytes(target - 1),
        ids.to_bytes(target),
        now_ms=NOW,
    )
    assert only.results[0].closest == ids.to_bytes(target)
    with pytest.raises(StorageError) as e:
        store.find(
            FindReq(ids.to_bytes(target + 1), [SINGLE]),
            ids.to_bytes(target - 1),
            ids.to_bytes(target),
            now_ms=NOW,
        )
    assert err(e) == rl.ERROR_NOT_FOUND


def _fill(store, alice):
    rid = rid_of(alice)
    req = StoreReq(
        rid,
        0,
        [
            StoreKindData(SINGLE, 0, [signed(alice, rid, SINGLE, DataValue(True, b"s"))]),
            StoreKindData(
                ARRAY,
                0,
                [
                    signed(alice, rid, ARRAY, ArrayEntry(ARRAY_LAST, DataValue(True, b"a"))),
                    signed(alice, rid, ARRAY, ArrayEntry(2, DataValue(True, b"c"))),
                ],
            ),
            StoreKindData(
                DICT,
                0,
                [signed(alice, rid, DICT, DictionaryEntry(b"k", DataValue(False)), lifetime=100)],
            ),
        ],
    )
    store.store(req, [rl.GenericCertificate(0, alice.cert_der)], now_ms=NOW)
    put(store, alice, rid, SINGLE, [signed(alice, rid, SINGLE, DataValue(True, b"t"), t=NOW + 1)])
    return rid


def _everything(store, rid, now):
    specs = [
        StoredDataSpecifier(SINGLE, 0, MODEL_SINGLE),
        StoredDataSpecifier(ARRAY, 0, MODEL_ARRAY, [(0, ARRAY_LAST)]),
        StoredDataSpecifier(DICT, 0, MODEL_DICTIONARY),
    ]
    return store.fetch(FetchReq(rid, specs), now_ms=now)


def test_export_round_trip_keeps_signatures_and_generations(store, ca, alice, bob):
    rid = _fill(store, alice)
    put(store, bob, rid_of(bob), SINGLE, [signed(bob, rid_of(bob), SINGLE, DataValue(True, b"b"))])
    assert sorted(store.resource_ids()) == sorted([rid, rid_of(bob)])
    assert store.resource_ids(ids.to_bytes(ids.to_int(rid) - 1), rid) == [rid]
    req, certs = store.export(rid, replica_number=1, now_ms=NOW + 30_000)
    assert certs == [rl.GenericCertificate(0, alice.cert_der)]
    other = Store(":memory:", KINDS, ca)
    try:
        ans = other.store(req, certs, now_ms=NOW + 30_000)
        assert {r.kind: r.generation_counter for r in ans.kind_responses} == {
            SINGLE: 2,
            ARRAY: 1,
            DICT: 1,
        }
        mine = _everything(store, rid, NOW + 30_000)
        theirs = _everything(other, rid, NOW + 30_000)
        assert theirs == mine
        assert theirs.kind_responses[2].values[0].lifetime == 70
    finally:
        other.close()
    store.drop(rid)
    assert store.resource_ids() == [rid_of(bob)]


def test_replica_keeps_generation_and_rejects_zero(store, alice):
    rid = rid_of(alice)
    sd = signed(alice, rid, SINGLE, DataValue(True, b"x"))
    ans = put(store, alice, rid, SINGLE, [sd], gen=41, replica=1)
    assert ans.kind_responses[0].generation_counter == 41
    assert fetch(store, rid, SINGLE).generation == 41
    with pytest.raises(StorageError) as e:
        put(store, alice, rid, SINGLE, [sd], gen=0, replica=2)
    assert err(e) == rl.ERROR_INVALID_MESSAGE


def test_restart_keeps_everything(tmp_path, ca, alice):
    path = str(tmp_path / "peer.db")
    s = Store(path, KINDS, ca)
    rid = _fill(s, alice)
    before = _everything(s, rid, NOW)
    with pytest.raises(sqlite3.OperationalError):
        Store(path, KINDS, ca)  # a live peer's database is not shared
    s.close()
    s = Store(path, KINDS, ca)
    try:
        assert _everything(s, rid, NOW) == before
        assert before.kind_responses[0].generation == 2
        req, certs = s.export(rid, now_ms=NOW)
        assert certs == [rl.GenericCertificate(0, alice.cert_der)]
    finally:
        s.close()


def _cert(ident) -> rl.GenericCertificate:
    return rl.GenericCertificate(0, ident.cert_der)


def test_shared_database_isolates_namespaces(ca, alice, bob):
    db = StoreDatabase(":memory:")
    a = Store(db, KINDS, ca, namespace=b"a")
    b = Store(db, KINDS, ca, namespace=b"b")
    try:
        rid = _fill(a, alice)
        whole = (ids.to_bytes(ids.to_int(rid) - 1), ids.to_bytes(ids.to_int(rid) - 2))
        empty = _everything(b, rid, NOW)
        assert [r.generation for r in empty.kind_responses] == [0, 0, 0]
        assert not empty.kind_responses[0].values[0].value.exists
        assert b.resource_ids() == [] and b.stats()["values"] == 0
        assert b.find(FindReq(rid, [SINGLE]), *whole, now_ms=NOW).results[0].closest == bytes(16)
        assert b.export(rid, now_ms=NOW) == (StoreReq(rid, 1, []), [])
        assert b.certificates([alice.signer_identity().hash]) == []
        # The same Resource-ID in the other namespace has its own values and counters.
        put(b, alice, rid, SINGLE, [signed(alice, rid, SINGLE, DataValue(True, b"b"), t=NOW - 9)])
        assert fetch(b, rid, SINGLE).generation == 1
        assert fetch(a, rid, SINGLE).generation == 2
        assert fetch(a, rid, SINGLE).values[0].value == DataValue(True, b"t")
        assert a.stats() == {"resources": 1, "values": 4, "bytes": 3}
        # Expiry, drop and certificate collection in one namespace leave the other alone.
        put(b, bob, rid_of(bob), SINGLE, [signed(bob, rid_of(bob), SINGLE, DataValue(True, b"y"))])
        assert a.expire(now_ms=NOW + 3_600_000) == 4
        assert a.resource_ids() == [] and b.stats()["values"] == 2
        assert b.certificates([alice.signer_identity().hash]) == [_cert(alice)]
        b.drop(rid)
        assert fetch(b, rid, SINGLE).generation == 0
        assert b.resource_ids() == [rid_of(bob)]
        assert b.certificates([alice.signer_identity().hash]) == []
        # One open Store per namespace; closing a shared Store keeps the database.
        with pytest.raises(ValueError):
            Store(db, KINDS, ca, namespace=b"a")
        a.close()
        a = Store(db, KINDS, ca, namespace=b"a")
        assert a.resource_ids() == [] and b.stats()["values"] == 1
    finally:
        a.close()
        b.close()
        db.close()


def test_restart_with_namespace(tmp_path, ca, alice):
    path = str(tmp_path / "peers.db")
    db = StoreDatabase(path)
    s = Store(db, KINDS, ca, namespace=b"peer-1")
    rid = _fill(s, alice)
    before = _everything(s, rid, NOW)
    with pytest.raises(sqlite3.OperationalError):
        StoreDatabase(path)
    s.close()
    db.close()
    db = StoreDatabase(path)
    try:
        s = Store(db, KINDS, ca, namespace=b"peer-1")
        other = Store(db, KINDS, ca, namespace=b"peer-2")
        assert _everything(s, rid, NOW) == before
        assert s.export(rid, now_ms=NOW)[1] == [_cert(alice)]
        assert other.resource_ids() == []
        assert [r.generation for r in _everything(other, rid, NOW).kind_responses] == [0, 0, 0]
    finally:
        db.close()


def test_old_schema_is_refused(tmp_path, ca):
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    conn.close()
    with pytest.raises(ValueError, match=f"schema {SCHEMA_VERSION - 1} is not"):
        Store(path, KINDS, ca)
    with pytest.raises(ValueError, match="schema"):
        StoreDatabase(path)


def test_verifier_checks_each_certificate_once(ca, alice, bob, monkeypatch):
    checked = []
    real = security.check_certificate

    def counting(cert, trusted):
        checked.append(cert)
        return real(cert, trusted)

    def old_path(*args, **kwargs):
        raise AssertionError("verify_stored_data used despite a Verifier")

    monkeypatch.setattr(security, "check_certificate", counting)
    monkeypatch.setattr(storage, "verify_stored_data", old_path)
    verifier = Verifier(ca)
    db = StoreDatabase(":memory:")
    stores = [Store(db, KINDS, ca, namespace=bytes([n]), verifier=verifier) for n in range(3)]
    try:
        rid = rid_of(alice)
        for s in stores:
            put(s, alice, rid, SINGLE, [signed(alice, rid, SINGLE, DataValue(True, b"v"))])
            # The array's zero-index form (§7.4.2.2) still verifies at the index it gets.
            put(
                s,
                alice,
                rid,
                ARRAY,
                [
                    signed(alice, rid, ARRAY, ArrayEntry(ARRAY_LAST, DataValue(True, b"a"))),
                    signed(alice, rid, ARRAY, ArrayEntry(ARRAY_LAST, DataValue(True, b"b"))),
                ],
            )
            assert [v.value.index for v in fetch(s, rid, ARRAY, [(0, 9)]).values] == [0, 1]
        assert len(checked) == 1
        forged = signed(alice, rid, SINGLE, DataValue(True, b"v"), t=NOW + 1)
        forged.value = DataValue(True, b"w")
        with pytest.raises(StorageError) as e:
            put(stores[0], alice, rid, SINGLE, [forged])
        assert err(e) == rl.ERROR_FORBIDDEN
        sd = signed(bob, rid, SINGLE, DataValue(True, b"x"), t=NOW + 1)
        with pytest.raises(StorageError) as e:
            put(stores[0], bob, rid, SINGLE, [sd])  # USER_MATCH: not bob's Resource-ID
        assert err(e) == rl.ERROR_FORBIDDEN
        assert len(checked) == 2
    finally:
        db.close()


def test_certificates_for_a_fetch_answer(store, alice, bob):
    rid = rid_of(alice)
    put(store, alice, rid, SINGLE, [signed(alice, rid, SINGLE, DataValue(True, b"a"))])
    put(store, bob, rid_of(bob), SINGLE, [signed(bob, rid_of(bob), SINGLE, DataValue(True, b"b"))])
    ha, hb = alice.signer_identity().hash, bob.signer_identity().hash
    assert store.certificates([hb, bytes(32), ha, hb]) == [_cert(bob), _cert(alice)]
    fetched = fetch(store, rid, SINGLE).values[0]
    assert store.certificates({fetched.signature.identity.hash}) == [_cert(alice)]
    store.drop(rid_of(bob))
    assert store.certificates([ha, hb]) == [_cert(alice)]
    assert store.certificates([]) == []


def test_request_is_atomic(store, alice):
    rid = rid_of(alice)
    put(
        store,
        alice,
        rid,
        DICT,
        [signed(alice, rid, DICT, DictionaryEntry(b"k", DataValue(True, b"v")), t=NOW + 5)],
    )
    req = StoreReq(
        rid,
        0,
        [
            StoreKindData(SINGLE, 0, [signed(alice, rid, SINGLE, DataValue(True, b"s"))]),
            StoreKindData(
                DICT,
                0,
                [
                    signed(alice, rid, DICT, DictionaryEntry(b"j", DataValue(True, b"new"))),
                    signed(alice, rid, DICT, DictionaryEntry(b"k", DataValue(True, b"stale"))),
                ],
            ),
        ],
    )
    with pytest.raises(StorageError) as e:
        store.store(req, [rl.GenericCertificate(0, alice.cert_der)], now_ms=NOW)
    assert err(e) == rl.ERROR_DATA_TOO_OLD
    assert not fetch(store, rid, SINGLE).values[0].value.exists
    assert fetch(store, rid, SINGLE).generation == 0
    assert [v.value.key for v in fetch(store, rid, DICT).values] == [b"k"]
    assert fetch(store, rid, DICT).generation == 1


def test_kind_definitions_are_checked():
    with pytest.raises(ValueError):
        KindDef(9, "x", MODEL_ARRAY, USER_NODE_MATCH, 1, 1)
    with pytest.raises(ValueError):
        KindDef(9, "x", MODEL_SINGLE, NODE_MULTIPLE, 1, 1)
    with pytest.raises(ValueError):
        KindDef(9, "x", "list", USER_MATCH, 1, 1)
    assert models(KINDS)[UNM] == MODEL_DICTIONARY


_ops = st.lists(
    st.tuples(st.sampled_from([b"a", b"b", b"c"]), st.booleans(), st.binary(max_size=4)),
    max_size=8,
)


@settings(max_examples=25, deadline=None)
@given(ops=_ops)
def test_dictionary_matches_a_dict_model(ca, alice, ops):
    store = Store(":memory:", KINDS, ca)
    try:
        rid = rid_of(alice)
        model: dict[bytes, bytes | None] = {}
        for t, (key, exists, value) in enumerate(ops):
            dv = DataValue(exists, value if exists else b"")
            put(
                store,
                alice,
                rid,
                DICT,
                [signed(alice, rid, DICT, DictionaryEntry(key, dv), t=NOW + t)],
            )
            model[key] = dv.value if exists else None
        got = {
            v.value.key: (v.value.value.value if v.value.value.exists else None)
            for v in fetch(store, rid, DICT).values
        }
        assert got == model
        assert fetch(store, rid, DICT).generation == len(ops)
    finally:
        store.close()
