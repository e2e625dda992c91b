"""Two of our UAs on loopback: dialogs, in-dialog requests, CANCEL, errors (RFC 3261 §8-15)."""

from __future__ import annotations

import asyncio

import pytest

from sipmesh.sip.dialog import Dialog
from sipmesh.sip.transport import Peer
from sipmesh.sip.ua import Incoming, UserAgent

TIMEOUT = 10.0
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


@pytest.fixture
async def pair():
    """A caller and a callee; the callee records what it received."""
    callee = UserAgent("127.0.0.1", user="bob")
    seen: list[Incoming] = []
    hold: dict[str, asyncio.Event] = {}

    async def on_invite(inc: Incoming) -> None:
        seen.append(inc)
        if "hold" in hold:  # ring until the test releases the call (or it is cancelled)
            inc.respond(180)
            await hold["hold"].wait()
            return
        inc.respond(200, body=SDP, content_type="application/sdp")

    def record(inc: Incoming) -> None:
        seen.append(inc)
        inc.respond(200)

    callee.on("INVITE", on_invite)
    callee.on("BYE", record)
    callee.on("INFO", record)
    callee.on("ACK", lambda inc: seen.append(inc))
    await callee.listen(udp=0, tcp=0)
    caller = UserAgent("127.0.0.1", user="alice")
    await caller.listen(udp=0, tcp=0)
    yield caller, callee, seen, hold
    await caller.close()
    await callee.close()


def dest(ua: UserAgent, transport: str = "udp") -> Peer:
    return Peer(transport, "127.0.0.1", ua.transport.ports[transport])


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_call_in_dialog_requests_and_bye(pair, transport: str) -> None:
    caller, callee, seen, _ = pair
    to = dest(callee, transport)
    resp, dialog = await asyncio.wait_for(
        caller.invite(f"sip:bob@127.0.0.1:{to.port}", to, sdp=SDP), TIMEOUT)
    assert resp.status == 200 and isinstance(dialog, Dialog)
    assert resp.content_type.mime == "application/sdp"
    # The UAS side holds the same dialog, seen from the other end (§12.1.1).
    (uas_dialog,) = callee.dialogs.values()
    assert uas_dialog.id == (dialog.call_id, dialog.remote_tag, dialog.local_tag)

    # In-dialog OPTIONS and INFO: CSeq grows by one each time (§12.2.1.1).
    for method in ("OPTIONS", "INFO"):
        req = dialog.create_request(method)
        answer = await asyncio.wait_for(caller.request(req, to), TIMEOUT)
        assert answer.status == 200
    assert [i.request.cseq.seq for i in seen if i.request.method == "INFO"] == [3]
    assert seen[-1].dialog is uas_dialog

    # A request with an old CSeq is refused (§12.2.2).
    stale = dialog.create_request("INFO", cseq=2)
    assert (await asyncio.wait_for(caller.request(stale, to), TIMEOUT)).status == 500

    # re-INVITE in the dialog, then BYE.
    reinvite = dialog.create_request("INVITE", contact=caller.contact(transport))
    reinvite.set_body(SDP, "application/sdp")
    assert (await asyncio.wait_for(caller.request(reinvite, to), TIMEOUT)).status == 200
    bye = await asyncio.wait_for(caller.bye(dialog, to), TIMEOUT)
    assert bye.status == 200
    assert [i.request.method for i in seen if i.request.method in ("INVITE", "BYE")] == [
        "INVITE", "INVITE", "BYE"]


async def test_ack_for_2xx_stops_retransmission(pair) -> None:
    caller, callee, seen, _ = pair
    acked = asyncio.Event()
    callee.on("ACK", lambda inc: (seen.append(inc), acked.set()))
    to = dest(callee)
    resp, dialog = await asyncio.wait_for(
        caller.invite(f"sip:bob@127.0.0.1:{to.port}", to), TIMEOUT)
    assert resp.status == 200
    # The ACK reached the callee (§13.2.2.4), so no 2xx retransmission is pending.
    await asyncio.wait_for(acked.wait(), TIMEOUT)
    assert callee._pending_2xx == {}
    ack = next(i.request for i in seen if i.request.method == "ACK")
    assert ack.cseq.seq == 1 and ack.cseq.method == "ACK"
    assert ack.to.tag == resp.to.tag


async def test_bye_outside_a_dialog_gets_481(pair) -> None:
    caller, callee, _, _ = pair
    to = dest(callee)
    req = caller.new_request("BYE", f"sip:bob@127.0.0.1:{to.port}",
                             to="<sip:bob@127.0.0.1>;tag=nosuchdialog")
    assert (await asyncio.wait_for(caller.request(req, to), TIMEOUT)).status == 481


async def test_unknown_method_gets_405_with_allow(pair) -> None:
    caller, callee, _, _ = pair
    to = dest(callee)
    resp = await asyncio.wait_for(
        caller.request(caller.new_request("SUBSCRIBE", f"sip:bob@127.0.0.1:{to.port}"), to),
        TIMEOUT)
    assert resp.status == 405
    assert "INVITE" in resp.allow and "SUBSCRIBE" not in resp.allow


async def test_options_default_answer(pair) -> None:
    caller, callee, _, _ = pair
    callee.supported = ("timer",)
    to = dest(callee)
    resp = await asyncio.wait_for(
        caller.request(caller.new_request("OPTIONS", f"sip:bob@127.0.0.1:{to.port}"), to),
        TIMEOUT)
    assert resp.status == 200
    assert {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"} <= set(resp.allow)
    assert resp.get("Accept") == "application/sdp"
    assert resp.supported == ["timer"]


async def test_cancel_a_ringing_call(pair) -> None:
    """§9: CANCEL gets 200 and the INVITE 487; the caller sees 180 then 487."""
    caller, callee, seen, hold = pair
    hold["hold"] = asyncio.Event()
    to = dest(callee)
    ringing = asyncio.Event()
    invite = caller.new_request("INVITE", f"sip:bob@127.0.0.1:{to.port}")
    call = asyncio.ensure_future(caller.request(invite, to, on_provisional=lambda r: (
        ringing.set() if r.status == 180 else None)))
    await asyncio.wait_for(ringing.wait(), TIMEOUT)
    txn_resp = await asyncio.wait_for(caller.cancel(invite, to), TIMEOUT)
    assert txn_resp.status == 200
    final = await asyncio.wait_for(call, TIMEOUT)
    assert final.status == 487
    hold["hold"].set()


async def test_listen_retries_when_the_udp_port_number_is_taken_for_tcp() -> None:
    """udp=0, tcp=0: the kernel's UDP port may be some TCP connection's local
    port; listen() then takes another pair instead of failing."""
    import errno as _errno

    ua = UserAgent("127.0.0.1")
    real = ua.transport.listen_tcp
    refused: list[int] = []

    async def busy_once(host: str, port: int = 0) -> int:
        if not refused:
            refused.append(port)
            raise OSError(_errno.EADDRINUSE, "address already in use")
        return await real(host, port)

    ua.transport.listen_tcp = busy_once
    try:
        await ua.listen(udp=0, tcp=0)
        assert refused and ua.transport.ports["udp"] == ua.transport.ports["tcp"]
    finally:
        await ua.close()
