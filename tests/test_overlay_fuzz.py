"""Hostile input to a live RELOAD peer (RFC 6940 §6.1, §6.3).

An attacker with a valid overlay certificate opens a link to one peer of a
small ring and sends 12,000 messages: random bytes, valid messages with
bytes flipped, truncated or extended, header fields rewritten (TTL, lengths,
destination and via lists, options, overlay, version), and bodies mutated
then signed again, so that the request handlers' decoders see them too.
Every 200 messages a valid Ping from another ring peer must be answered, and
at the end the ring still stores and fetches. Any exception escaping into
the event loop is a failure. Now and then the framing itself is broken
(unknown frame type), which must close only that link; the attacker then
connects again.
"""

from __future__ import annotations

import asyncio
import random
import struct

from overlay_ring import KIND_SINGLE, Ring, random_node_id

from sipmesh.overlay import link as links
from sipmesh.overlay.ids import resource_id
from sipmesh.overlay.security import Identity, sign_message
from sipmesh.proto import reload as rl
from sipmesh.proto import reload_storage as rs
from sipmesh.proto import reload_topology as rt

TOTAL = 12_000


def corpus(attacker: Identity, overlay: int, target: bytes, seq: int) -> list[tuple[int, bytes]]:
    """Valid request bodies of every method, as (code, body)."""
    rid = resource_id(attacker.user_name)
    cand = rt.IceCandidate(
        rt.IpAddressPort(rt.ADDR_IPV4, b"\x7f\x00\x00\x01", 9),
        rt.LINK_TLS_TCP_FH_NO_ICE,
        b"1",
        1,
        rt.CAND_HOST,
    )
    sd = rs.StoredData(1_700_000_000_000, 60, rs.DataValue(True, b"fuzz"), None)
    from sipmesh.overlay.security import sign_stored_data

    sign_stored_data(sd, rid, KIND_SINGLE, attacker)
    return [
        (rl.PING_REQ, rl.PingReq(b"x" * 8).encode()),
        (rl.ATTACH_REQ, rt.AttachReqAns(b"u", b"p", b"active", [cand], True).encode()),
        (rl.STORE_REQ, rs.StoreReq(rid, 0, [rs.StoreKindData(KIND_SINGLE, 0, [sd])]).encode()),
        (
            rl.FETCH_REQ,
            rs.FetchReq(rid, [rs.StoredDataSpecifier(KIND_SINGLE, 0, rs.MODEL_SINGLE)]).encode(),
        ),
        (
            rl.STAT_REQ,
            rs.StatReq(rid, [rs.StoredDataSpecifier(KIND_SINGLE, 0, rs.MODEL_SINGLE)]).encode(),
        ),
        (rl.FIND_REQ, rs.FindReq(rid, [KIND_SINGLE]).encode()),
        (rl.JOIN_REQ, rt.JoinReq(attacker.node_id, b"").encode()),
        (rl.LEAVE_REQ, rt.LeaveReq(attacker.node_id, rt.ChordLeaveData(1).encode()).encode()),
        (
            rl.UPDATE_REQ,
            rt.ChordUpdate(5, rt.CHORD_NEIGHBORS, [random_node_id()], [random_node_id()]).encode(),
        ),
        (rl.ROUTE_QUERY_REQ, rt.RouteQueryReq(True, rl.Destination.resource(rid)).encode()),
        (rl.PROBE_REQ, rt.ProbeReq([1, 2, 3]).encode()),
        (rl.APP_ATTACH_REQ, rt.AppAttach(b"u", b"p", 5060, b"active", [cand]).encode()),
        (rl.CONFIG_UPDATE_REQ, rt.ConfigUpdateReq(rt.CONFIG_KIND, [b"k"]).encode()),
    ]


def build(attacker, overlay, dests, code, body, tid, **hdr) -> bytes:
    h = rl.ForwardingHeader(overlay, tid, destinations=dests, configuration_sequence=1, **hdr)
    m = rl.Message(h, rl.MessageContents(code, body), None)
    return sign_message(m, attacker).encode()


def mutate(rnd: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    op = rnd.randrange(6)
    if op == 0:
        for _ in range(rnd.randint(1, 8)):
            b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
    elif op == 1:
        b = b[: rnd.randrange(len(b))]
    elif op == 2:
        b += bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 40)))
    elif op == 3:
        # A header field rewritten: ttl, length, via/dest/option lengths.
        at = rnd.choice([13, 16, 17, 18, 19, 32, 33, 34, 35, 36, 37, 38])
        if at < len(b):
            b[at] = rnd.randrange(256)
    elif op == 4:
        i = rnd.randrange(len(b))
        b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))
    else:
        i = rnd.randrange(len(b))
        del b[i : i + rnd.randint(1, 16)]
    return bytes(b)


async def test_peer_survives_hostile_messages(tmp_path):
    ring = Ring(tmp_path)
    loop = asyncio.get_running_loop()
    escaped: list = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda lp, ctx: escaped.append(ctx))
    try:
        await ring.start(4)
        await ring.wait_for(ring.ring_correct, 30)
        victim, friend = ring.peers[1], ring.peers[3]
        attacker = Identity.generate(ring.ca, "mallory", random_node_id())
        overlay = ring.settings.hash
        rnd = random.Random(20261122)
        answers = []

        async def connect():
            ln = await links.connect(
                *victim.address,
                on_message=lambda lk, m: answers.append(m),
                on_closed=lambda lk, e: None,
            )
            # A valid signed Ping binds the link to the attacker's Node-ID (§4.2.1).
            ln.send(
                build(
                    attacker,
                    overlay,
                    [rl.Destination.node(victim.node_id)],
                    rl.PING_REQ,
                    rl.PingReq().encode(),
                    rnd.getrandbits(64),
                )
            )
            return ln

        ln = await connect()
        seeds = corpus(attacker, overlay, victim.node_id, 0)
        dest_choices = [
            [rl.Destination.node(victim.node_id)],
            [rl.Destination.resource(resource_id("mallory"))],
            [rl.Destination.node(random_node_id())],
            [rl.Destination.node(victim.node_id), rl.Destination.node(friend.node_id)],
            [rl.Destination.node(b"\xff" * 16)],
            [rl.Destination.opaque(b"\x01\x02")],
        ]
        sent = reconnects = 0
        while sent < TOTAL:
            kind = rnd.random()
            tid = rnd.getrandbits(64)
            code, body = rnd.choice(seeds)
            dests = rnd.choice(dest_choices)
            if kind < 0.1:
                data = bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 300)))
            elif kind < 0.55:
                data = mutate(rnd, build(attacker, overlay, dests, code, body, tid))
            elif kind < 0.85:
                data = build(
                    attacker,
                    overlay,
                    dests,
                    code,
                    mutate(rnd, body) if body else body,
                    tid,
                    ttl=rnd.choice([0, 1, 2, 100, 255]),
                )
            elif kind < 0.95:
                via = [rl.Destination.node(random_node_id()) for _ in range(rnd.randint(0, 4))]
                opts = [
                    rl.ForwardingOption(
                        rnd.randint(1, 255), rnd.randrange(8), bytes(rnd.randint(0, 6))
                    )
                ]
                data = build(
                    attacker,
                    overlay,
                    dests,
                    code,
                    body,
                    tid,
                    via=via,
                    options=opts if rnd.random() < 0.5 else [],
                )
            else:
                data = build(
                    attacker,
                    rnd.getrandbits(32),
                    dests,
                    code,
                    body,
                    tid,
                    version=rnd.randrange(256),
                )
            if ln.closed:
                ln = await connect()
                reconnects += 1
            if rnd.random() < 0.001:
                # Break the framing itself: only this link may go.
                ln._transport.write(b"\x42" + struct.pack(">I", 1))
                await ln.wait_closed()
                continue
            try:
                ln.send(data)
            except links.LinkError:
                continue
            sent += 1
            if sent % 200 == 0:
                r = await asyncio.wait_for(friend.ping(victim.node_id), 10)
                assert r.responder == victim.node_id
        # The attacker holds a valid certificate, so its well-formed Updates
        # may have made it a neighbour; once it is gone the ring repairs.
        ln.abort()
        await ring.wait_for(ring.ring_correct, 30)
        a = ring.peers[0]
        await a.store_value(a.identity.user_name, KIND_SINGLE, [rs.DataValue(True, b"ok")])
        for p in ring.peers:
            ans, _ = await p.fetch(
                a.identity.user_name, [rs.StoredDataSpecifier(KIND_SINGLE, 0, rs.MODEL_SINGLE)]
            )
            assert ans.kind_responses[0].values[0].value.value == b"ok"
        assert not victim.stopped
        assert sent >= 10_000
        assert answers, "the victim answered nothing at all"
        assert escaped == [], escaped[:3]
    finally:
        loop.set_exception_handler(previous)
        await ring.stop()
