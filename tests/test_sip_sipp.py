"""sipp (a SIP implementation we did not write) calls our UA and answers our calls.

`sipp -sn uac` places calls to our UAS over UDP and TCP; our UAC places
calls to `sipp -sn uas`. Every call must succeed: sipp's exit status is 0
only when no call failed, and its summary is checked too.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from judges import require

from sipmesh.sip.transport import Peer
from sipmesh.sip.ua import Incoming, UserAgent

SDP = (b"v=0\r\no=sipmesh 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def sipp() -> str:
    return require("sipp", "sip-tester")


async def answering_ua() -> UserAgent:
    ua = UserAgent("127.0.0.1", user="uas")

    def on_invite(inc: Incoming) -> None:
        inc.respond(180)
        inc.respond(200, body=SDP, content_type="application/sdp")

    def on_bye(inc: Incoming) -> None:
        inc.respond(200)

    ua.on("INVITE", on_invite)
    ua.on("BYE", on_bye)
    ua.on("ACK", lambda inc: None)
    await ua.listen(udp=0, tcp=0)
    return ua


async def run_sipp(*args: str, timeout: float = 120) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sipp(), *args, "-nostdin", "-timeout", f"{int(timeout)}s", "-timeout_error",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout + 30)
    return proc.returncode or 0, out.decode(errors="replace")


def counters(out: str) -> dict[str, int]:
    """Successful and failed call totals from sipp's final screen."""
    found = {}
    for name in ("Successful call", "Failed call"):
        m = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", out)
        if m:
            found[name] = int(m[-1])
    return found


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
async def test_sipp_uac_places_200_calls_to_our_uas(transport: str) -> None:
    ua = await answering_ua()
    try:
        port = ua.transport.ports["udp"]
        code, out = await run_sipp(
            "-sn", "uac", "-t", transport, "-i", "127.0.0.1", "-p", "0", "-m", "200",
            "-r", "50", "-l", "50", f"127.0.0.1:{port}")
    finally:
        await ua.close()
    totals = counters(out)
    assert code == 0, out[-3000:]
    assert totals.get("Successful call") == 200, out[-3000:]
    assert totals.get("Failed call") == 0
    assert ua.calls_answered == 200


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
async def test_our_uac_places_200_calls_to_sipp_uas(transport: str, unused_port: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        sipp(), "-sn", "uas", "-t", transport, "-i", "127.0.0.1", "-p", str(unused_port),
        "-m", "200", "-nostdin", "-timeout", "120s",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    ua = UserAgent("127.0.0.1", user="uac")
    await ua.listen(udp=0, tcp=0 if transport == "t1" else None)
    name = "udp" if transport == "u1" else "tcp"
    dest = Peer(name, "127.0.0.1", unused_port)
    try:
        await wait_listening(unused_port, name)
        results = []
        for batch in range(20):
            calls = [place_call(ua, dest, n) for n in range(batch * 10, batch * 10 + 10)]
            results += await asyncio.gather(*calls)
        assert results == [(200, 200)] * 200
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await ua.close()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert counters(text).get("Successful call") == 200


async def place_call(ua: UserAgent, dest: Peer, n: int) -> tuple[int, int]:
    resp, dialog = await ua.invite(f"sip:service@127.0.0.1:{dest.port}", dest, sdp=SDP)
    if dialog is None:
        return resp.status, 0
    bye = await ua.bye(dialog, dest)
    return resp.status, bye.status


async def wait_listening(port: int, transport: str) -> None:
    """Wait until sipp accepts TCP connections (it prints nothing useful on a pipe).

    Over UDP nothing is needed: an INVITE sent before sipp is bound is
    retransmitted by Timer A, as on a real network.
    """
    if transport != "tcp":
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while loop.time() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)  # poll interval while sipp starts, not a race
    pytest.fail(f"sipp did not accept TCP connections on port {port}")


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
