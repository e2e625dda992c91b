"""RELOAD peers on a Chord ring over real loopback links (RFC 6940 §6, §7, §10).

Rings here use the plain-TCP link mode unless a test says TLS; every
message is still signed and checked.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from overlay_ring import KIND_ARRAY, KIND_DICT, KIND_MULTI, KIND_SINGLE, Ring, random_node_id

from sipmesh.overlay.access import node_multiple_resource
from sipmesh.overlay.ids import resource_id, to_int
from sipmesh.overlay.peer import OverlayError
from sipmesh.overlay.security import Identity, sign_stored_data
from sipmesh.proto import reload as rl
from sipmesh.proto import reload_storage as rs

SINGLE = rs.StoredDataSpecifier(KIND_SINGLE, 0, rs.MODEL_SINGLE)


@pytest.fixture
async def ring(tmp_path):
    r = Ring(tmp_path)
    yield r
    await r.stop()


async def _fetch_single(peer, name):
    ans, _ = await peer.fetch(name, [SINGLE])
    vals = ans.kind_responses[0].values
    return vals[0].value.value if vals and vals[0].value.exists else None


async def test_ring_pointers_match_sorted_node_ids(ring):
    await ring.start(8)
    await ring.wait_for(ring.ring_correct, 30)
    ids = ring.sorted_ids()
    for p in ring.peers:
        i = ids.index(p.own)
        assert p.table.successors[0] == ids[(i + 1) % len(ids)]
        assert p.table.predecessors[0] == ids[(i - 1) % len(ids)]
        low, high = p.table.responsible_range()
        assert (low, high) == (ids[(i - 1) % len(ids)], p.own)


async def test_each_data_model_stored_and_fetched_from_every_peer(ring):
    await ring.start(5)
    await ring.wait_for(ring.ring_correct, 30)
    a, b = ring.peers[0], ring.peers[3]
    # Single value, USER-MATCH: the resource is the signer's user name (§7.3.1).
    ans = await a.store_value(a.identity.user_name, KIND_SINGLE, [rs.DataValue(True, b"alice")])
    kr = ans.kind_responses[0]
    assert kr.generation_counter == 1
    assert len(kr.replicas) == 2
    # Array, NODE-MATCH: resource = H(Node-ID) (§7.3.2); append with index 0xffffffff.
    nrid = resource_id(b.node_id)
    await b.store_value(nrid, KIND_ARRAY, [rs.ArrayEntry(0, rs.DataValue(True, b"zero"))])
    await b.store_value(
        nrid, KIND_ARRAY, [rs.ArrayEntry(rs.ARRAY_LAST, rs.DataValue(True, b"one"))]
    )
    # Dictionary, USER-NODE-MATCH: key = the signer's Node-ID (§7.3.3).
    await b.store_value(
        b.identity.user_name, KIND_DICT, [rs.DictionaryEntry(b.node_id, rs.DataValue(True, b"d"))]
    )
    for p in ring.peers:
        assert await _fetch_single(p, a.identity.user_name) == b"alice"
        ans, _ = await p.fetch(
            nrid, [rs.StoredDataSpecifier(KIND_ARRAY, 0, rs.MODEL_ARRAY, [(0, rs.ARRAY_LAST)])]
        )
        got = [(e.value.index, e.value.value.value) for e in ans.kind_responses[0].values]
        assert got == [(0, b"zero"), (1, b"one")]
        ans, _ = await p.fetch(
            b.identity.user_name, [rs.StoredDataSpecifier(KIND_DICT, 0, rs.MODEL_DICTIONARY)]
        )
        got = [(e.value.key, e.value.value.value) for e in ans.kind_responses[0].values]
        assert got == [(b.node_id, b"d")]
    st = await ring.peers[2].stat(a.identity.user_name, [SINGLE])
    meta = st.kind_responses[0].values[0]
    assert meta.metadata.exists and meta.metadata.value_length == len(b"alice")
    # Overwrite with the right generation, then a stale generation is refused (§7.4.1.1).
    ans = await a.store_value(
        a.identity.user_name, KIND_SINGLE, [rs.DataValue(True, b"v2")], generation=1
    )
    assert ans.kind_responses[0].generation_counter == 2
    with pytest.raises(OverlayError) as e:
        await a.store_value(
            a.identity.user_name, KIND_SINGLE, [rs.DataValue(True, b"v3")], generation=1
        )
    assert e.value.code == rl.ERROR_GENERATION_COUNTER_TOO_LOW
    assert await _fetch_single(ring.peers[4], a.identity.user_name) == b"v2"
    # Find (§7.4.4) at the responsible peer returns the stored Resource-ID.
    rid = resource_id(a.identity.user_name)
    found = await ring.peers[1].find(rid, [KIND_SINGLE])
    assert found.results[0].closest == rid


async def test_node_multiple_policy(ring):
    await ring.start(4)
    await ring.wait_for(ring.ring_correct, 30)
    p = ring.peers[1]
    ok = node_multiple_resource(p.node_id, 3)
    await p.store_value(ok, KIND_MULTI, [rs.DataValue(True, b"m")])
    with pytest.raises(OverlayError) as e:
        await p.store_value(
            node_multiple_resource(p.node_id, 4), KIND_MULTI, [rs.DataValue(True, b"m")]
        )
    assert e.value.code == rl.ERROR_FORBIDDEN


async def _raw_store(peer, rid, kind, stored, extra_certs=()):
    req = rs.StoreReq(rid, 0, [rs.StoreKindData(kind, 0, stored)])
    return await peer.request(
        [rl.Destination.resource(rid)], rl.STORE_REQ, req.encode(), extra_certs=extra_certs
    )


async def test_forged_expired_and_policy_violating_stores_are_refused(ring):
    await ring.start(5)
    await ring.wait_for(ring.ring_correct, 30)
    a, b = ring.peers[0], ring.peers[1]
    rid = resource_id(a.identity.user_name)
    # Policy: b writes a's USER-MATCH resource (§7.3.1) -> Error_Forbidden.
    with pytest.raises(OverlayError) as e:
        await b.store_value(a.identity.user_name, KIND_SINGLE, [rs.DataValue(True, b"x")])
    assert e.value.code == rl.ERROR_FORBIDDEN
    # Forged: a valid signature by a, then the value changed.
    sd = rs.StoredData(1_700_000_000_000, 60, rs.DataValue(True, b"real"), None)
    sign_stored_data(sd, rid, KIND_SINGLE, a.identity)
    sd.value = rs.DataValue(True, b"forged")
    with pytest.raises(OverlayError) as e:
        await _raw_store(b, rid, KIND_SINGLE, [sd], [a._cert])
    assert e.value.code == rl.ERROR_FORBIDDEN
    # Expired certificate of the right user.
    old = Identity.generate(ring.ca, a.identity.user_name, random_node_id(), days=-1)
    sd = rs.StoredData(1_700_000_000_000, 60, rs.DataValue(True, b"old"), None)
    sign_stored_data(sd, rid, KIND_SINGLE, old)
    with pytest.raises(OverlayError) as e:
        await _raw_store(b, rid, KIND_SINGLE, [sd], [rl.GenericCertificate(0, old.cert_der)])
    assert e.value.code == rl.ERROR_FORBIDDEN
    # Certificate from another CA.
    other = Ring(ring.folder / "other")
    stranger = Identity.generate(other.ca, a.identity.user_name, random_node_id())
    sd = rs.StoredData(1_700_000_000_000, 60, rs.DataValue(True, b"stranger"), None)
    sign_stored_data(sd, rid, KIND_SINGLE, stranger)
    with pytest.raises(OverlayError) as e:
        await _raw_store(b, rid, KIND_SINGLE, [sd], [rl.GenericCertificate(0, stranger.cert_der)])
    assert e.value.code == rl.ERROR_FORBIDDEN
    # Too large for the kind (max-size 1024) and an unknown kind.
    with pytest.raises(OverlayError) as e:
        await a.store_value(a.identity.user_name, KIND_SINGLE, [rs.DataValue(True, b"x" * 2000)])
    assert e.value.code == rl.ERROR_DATA_TOO_LARGE
    with pytest.raises(OverlayError) as e:
        await _raw_store(a, rid, 999, [])
    assert e.value.code == rl.ERROR_UNKNOWN_KIND
    # Nothing of the refused stores is visible anywhere.
    for p in ring.peers:
        assert await _fetch_single(p, a.identity.user_name) is None


async def test_forged_message_signature_is_refused(ring):
    await ring.start(3)
    await ring.wait_for(ring.ring_correct, 30)
    a = ring.peers[0]
    target = ring.peers[1]
    tid = 0x1234
    data = bytearray(
        a._encode(
            [rl.Destination.node(target.node_id)], rl.PING_REQ, rl.PingReq(b"pad").encode(), tid
        )
    )
    # Flip a byte of the padding: the signature no longer matches (§6.3.4).
    msg = rl.decode_message(bytes(data))
    msg.contents = rl.MessageContents(rl.PING_REQ, rl.PingReq(b"pae").encode())
    forged = msg.encode()
    fut = asyncio.get_running_loop().create_future()
    from sipmesh.overlay.requests import Pending

    a._pending[tid] = Pending(fut, [rl.Destination.node(target.node_id)], 0, b"", (), None)
    a.links[target.own].send(forged)
    with pytest.raises(OverlayError) as e:
        await asyncio.wait_for(fut, 10)
    assert e.value.code == rl.ERROR_FORBIDDEN


async def test_restarted_peer_keeps_its_data(ring, tmp_path):
    await ring.start(5)
    await ring.wait_for(ring.ring_correct, 30)
    names = [p.identity.user_name for p in ring.peers]
    for p in ring.peers:
        await p.store_value(
            p.identity.user_name, KIND_SINGLE, [rs.DataValue(True, p.identity.user_name.encode())]
        )
    victim = ring.peers[2]
    held = victim.store.resource_ids()
    victim.kill()
    await ring.wait_for(ring.ring_correct, 30)
    for name in names:
        assert await _fetch_single(ring.peers[0], name) == name.encode()
    # Same identity, same database file: it rejoins and still holds its data.
    again = ring.make_peer(ring.identities[2], index=2)
    assert sorted(again.store.resource_ids()) == sorted(held)
    await again.start()
    await again.join([ring.peers[0].address])
    ring.peers[2] = again
    await ring.wait_for(ring.ring_correct, 30)
    for name in names:
        assert await _fetch_single(ring.peers[4], name) == name.encode()
        assert await _fetch_single(again, name) == name.encode()


async def test_graceful_leave_repairs_ring_at_once(ring):
    await ring.start(6)
    await ring.wait_for(ring.ring_correct, 30)
    leaving = ring.peers[3]
    await leaving.stop()
    await ring.wait_for(ring.ring_correct, 30)
    assert all(leaving.own not in p.table.nodes() for p in ring.alive())


async def test_churn_of_twenty_percent_keeps_every_resource(tmp_path):
    """Done-when: killing 20% of a 100-peer ring in waves leaves 100% of
    stored resources fetchable once stabilised (§10.4, §10.7)."""
    ring = Ring(tmp_path)
    try:
        await ring.start(100)
        await ring.wait_for(ring.ring_correct, 60)
        rnd = random.Random(7)
        for p in ring.peers:
            await p.store_value(
                p.identity.user_name,
                KIND_SINGLE,
                [rs.DataValue(True, p.identity.user_name.encode())],
            )
        names = [p.identity.user_name for p in ring.peers]
        for _wave in range(4):
            for v in rnd.sample(ring.alive(), 5):
                v.kill()
            await ring.wait_for(ring.ring_correct, 60)
        assert len(ring.alive()) == 80
        for name in names:
            p = rnd.choice(ring.alive())
            assert await _fetch_single(p, name) == name.encode(), name
    finally:
        await ring.stop()


async def test_tls_ring(tmp_path):
    ring = Ring(tmp_path, tls=True)
    try:
        await ring.start(4)
        await ring.wait_for(ring.ring_correct, 30)
        assert all(ln.secure for p in ring.peers for ln in p.links.values())
        a = ring.peers[0]
        await a.store_value(a.identity.user_name, KIND_SINGLE, [rs.DataValue(True, b"tls")])
        assert await _fetch_single(ring.peers[2], a.identity.user_name) == b"tls"
        assert to_int(ring.peers[1].links[a.own].remote_node_id) == a.own
    finally:
        await ring.stop()


async def test_response_skips_a_failed_hop_of_its_return_path(ring):
    """A response whose next hop has died since the request passed is routed
    straight to its origin (the last destination entry), not dropped."""
    await ring.start(3)
    await ring.wait_for(ring.ring_correct, 30)
    a, b, c = ring.peers
    from sipmesh.overlay.requests import Pending

    tid = 0xC0FFEE
    fut = asyncio.get_running_loop().create_future()
    a._pending[tid] = Pending(fut, [rl.Destination.node(c.node_id)], rl.PING_REQ, b"", (), None)
    dead = random_node_id()
    dests = [rl.Destination.node(dead), rl.Destination.node(a.node_id)]
    data = c._encode(dests, rl.PING_ANS, rl.PingAns(7, 1).encode(), tid)
    hdr, off = rl.decode_header(data)
    b._process(data, hdr, off, b.links[c.own], c.own, None)
    r = await asyncio.wait_for(fut, 10)
    assert r.code == rl.PING_ANS and r.responder == c.node_id
