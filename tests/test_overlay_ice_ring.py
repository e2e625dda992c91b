"""Peers behind a NAT join the ring and attach through ICE (RFC 6940 §6.5.1.3).

Three real peers (tests/netns/overlay_peer.py) in the namespaces of
test_overlay_ice: A and D on the outside, B behind a masquerading NAT. B
joins through A over TCP (outbound through the NAT works). D joins later and
must attach to B, which no TCP connection from outside can reach: B's Attach
answer carries its host and server-reflexive candidates (learnt from a real
STUN server, coturn), the ICE checks cross the NAT, and the ring then runs
over that ICE link: pointers agree, B's stored value is fetched by D, and D
pings B.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

import pytest
from test_overlay_ice import (  # noqa: F401 - nat_hosts is a fixture
    IN_IP,
    OUT_IP,
    STUN_IP,
    Proc,
    _drain,
    nat_hosts,
)

from sipmesh.overlay.security import make_ca

PEER = Path(__file__).resolve().parent / "netns" / "overlay_peer.py"
WAIT = 60


async def _ring(p: Proc) -> dict:
    p.tell("ring")
    return json.loads(await p.line("ring "))


@pytest.mark.root
async def test_peer_behind_nat_attaches_through_ice(nat_hosts, tmp_path: Path) -> None:  # noqa: F811
    ns = nat_hosts
    ca = make_ca("ice.sipmesh.test")
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "ca.json").write_text(json.dumps({
        "key": bytes(ca.signing_key).hex(),
        "cert": ca.certificate.public_bytes(serialization.Encoding.DER).hex(),
        "overlay": "ice.sipmesh.test",
    }))
    procs: list[Proc] = []
    drain = None

    async def start(where: str, *args: str) -> Proc:
        p = Proc(await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns[where], *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE))
        procs.append(p)
        return p

    def peer(host: str, port: int, user: str, *extra: str) -> list[str]:
        return [sys.executable, str(PEER), "--host", host, "--port", str(port),
                "--stun", f"{STUN_IP}:3478", "--ca", str(tmp_path / "ca.json"),
                "--user", user, "--data", str(tmp_path), *extra]

    try:
        turn = await start(
            "out", "turnserver", "-v", "-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls",
            "--no-tcp", f"--listening-ip={STUN_IP}", "--listening-port=3478",
            "--log-file=stdout", "--simple-log", f"--pidfile={tmp_path}/turn.pid",
            f"--userdb={tmp_path}/turndb")
        await turn.line_containing("UDP listener opened on")
        drain = asyncio.create_task(_drain(turn))
        a = await start("out", *peer(OUT_IP, 6084, "a@branch"))
        a_id = (await a.line("ready ")).split()[0]
        b = await start("in", *peer(IN_IP, 6084, "b@branch", "--bootstrap", f"{OUT_IP}:6084"))
        b_id = (await b.line("ready ")).split()[0]
        d = await start("out", *peer(OUT_IP, 6085, "d@branch", "--bootstrap", f"{OUT_IP}:6084"))
        d_id = (await d.line("ready ")).split()[0]
        ids = sorted([a_id, b_id, d_id])
        peers = {a_id: a, b_id: b, d_id: d}

        async def settled() -> dict:
            while True:
                rings = {nid: await _ring(p) for nid, p in peers.items()}
                ok = all(
                    r["successors"][:1] == [ids[(ids.index(nid) + 1) % 3]]
                    and r["predecessors"][:1] == [ids[(ids.index(nid) - 1) % 3]]
                    for nid, r in rings.items()
                )
                if ok and d_id in rings[b_id]["link_kinds"]:
                    return rings
                await asyncio.sleep(0.5)  # poll the peers' state; the deadline is below

        rings = await asyncio.wait_for(settled(), WAIT)
        assert rings[d_id]["link_kinds"][b_id] == "ice"
        assert rings[b_id]["link_kinds"][d_id] == "ice"
        assert rings[b_id]["link_kinds"][a_id] == "tcp"  # B's own outbound bootstrap link

        b.tell("store behind-the-nat")
        assert await b.line() == "stored"
        d.tell("fetch b@branch")
        got = (await d.line("fetched ")).split()
        assert got[0] == "behind-the-nat"
        d.tell(f"ping {b_id}")
        assert await d.line("pong ") == "1"  # one hop: the ICE link itself
    finally:
        if drain is not None:
            drain.cancel()
        for p in procs:
            with contextlib.suppress(Exception):
                await p.kill()
