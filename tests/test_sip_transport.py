"""The SIP transports on loopback: every message of the hand-written set sent to a live server.

The server is the transport plus a minimal UAS core (the §8.2 checks of
``reject``, then 200 OK). Malformed requests must get their specific error
response or be dropped and counted, and the server must keep serving:
each message is followed by an OPTIONS probe that must be answered.
Absence of an answer is shown by the probe's answer arriving first (one
socket pair on loopback delivers in order), never by waiting.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
from judges import self_signed_cert
from sip_cases import CASES, SUPPORTED

from sipmesh.sip.message import Request, Response
from sipmesh.sip.parser import KeepAlive, StreamParser, parse_message
from sipmesh.sip.reject import check_request, make_response
from sipmesh.sip.transport import Peer, SIPTransport

TIMEOUT = 10.0


def options(call_id: str, via: str) -> bytes:
    return (
        "OPTIONS sip:server@127.0.0.1 SIP/2.0\r\n"
        f"Via: {via};branch=z9hG4bK{call_id}\r\n"
        "Max-Forwards: 70\r\nTo: <sip:server@127.0.0.1>\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=p\r\nCall-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def with_rport(raw: bytes) -> bytes:
    """Ask for rport in the top Via, so that answers come back to our socket (RFC 3581)."""
    lines = raw.split(b"\r\n")
    for i, line in enumerate(lines):
        if line.lower().startswith((b"via", b"v:", b"v :")):
            if b"rport" not in line:
                lines[i] = line.replace(b";branch", b";rport;branch", 1)
            break
    return b"\r\n".join(lines)


async def start_server(**kw) -> SIPTransport:
    async def on_request(req: Request, peer: Peer) -> None:
        err = check_request(req, SUPPORTED)
        if err is not None:
            server.reject(req, err, peer)  # an ACK is never answered: dropped, counted
        elif req.method != "ACK":
            await server.send_response(make_response(req, 200), peer)

    async def on_response(resp: Response, peer: Peer) -> None:
        pass

    server = SIPTransport("127.0.0.1", on_request, on_response, **kw)
    await server.listen_udp("127.0.0.1", 0)
    await server.listen_tcp("127.0.0.1", 0)
    return server


class UDPClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Response] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr) -> None:
        msg = parse_message(data)
        assert isinstance(msg, Response)
        self.queue.put_nowait(msg)


async def test_every_case_over_udp_gets_its_answer_and_the_server_keeps_serving() -> None:
    server = await start_server()
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        UDPClient, local_addr=("127.0.0.1", 0))
    cport = transport.get_extra_info("sockname")[1]
    dest = ("127.0.0.1", server.ports["udp"])
    try:
        for n, case in enumerate(CASES):
            if len(case.raw) > 65000 or case.raw.startswith(b"SIP/") or case.proxy:
                continue
            dropped = server.stats.dropped
            raw = with_rport(case.raw)
            transport.sendto(raw, dest)
            probe = f"probe{n}"
            transport.sendto(options(probe, f"SIP/2.0/UDP 127.0.0.1:{cport}"), dest)
            answers = []
            while True:
                resp = await asyncio.wait_for(client.queue.get(), TIMEOUT)
                if resp.call_id == probe:
                    assert resp.status == 200
                    break
                answers.append(resp)
            if case.expect == "ok":
                assert [a.status for a in answers] == [200], case.name
            elif case.expect == "drop":
                assert answers == [], case.name
                assert server.stats.dropped == dropped + 1, case.name
            else:
                status, words = case.expect
                assert [a.status for a in answers] == [status], case.name
                assert words in answers[0].reason, case.name
    finally:
        transport.close()
        await server.close()


async def read_events(reader: asyncio.StreamReader, parser: StreamParser,
                      want: int) -> list[object]:
    """Stream events until `want` responses have arrived."""
    out: list[object] = []
    while sum(isinstance(m, Response) for m in out) < want:
        data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        assert data, "connection closed"
        out += parser.feed(data)
    return out


async def test_tcp_framing_keepalive_and_connection_reuse() -> None:
    server = await start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports["tcp"])
    try:
        local = writer.get_extra_info("sockname")
        via = f"SIP/2.0/TCP 127.0.0.1:{local[1]}"
        # Two requests in one segment, a ping, then a third split in two writes.
        a, b, c = (options(f"t{i}", via) for i in range(3))
        writer.write(a + b + b"\r\n\r\n" + c[:40])
        await writer.drain()
        parser = StreamParser()
        events = await read_events(reader, parser, 2)
        writer.write(c[40:])
        events += await read_events(reader, parser, 1)
        responses = [e for e in events if isinstance(e, Response)]
        assert [r.call_id for r in responses] == ["t0", "t1", "t2"]
        # The ping was answered with one CRLF (a pong) on the same connection.
        assert [e.ping for e in events if isinstance(e, KeepAlive)] == [False]
        assert server.stats.keepalives == 1
        # Every answer went back over the client's connection: one connection.
        assert len(server._connections) == 1
    finally:
        writer.close()
        await server.close()


async def test_received_and_rport_are_stamped() -> None:
    seen: list[Request] = []

    async def on_request(req: Request, peer: Peer) -> None:
        seen.append(req)
        await server.send_response(make_response(req, 200), peer)

    server = SIPTransport("127.0.0.1", on_request, lambda r, p: None)
    await server.listen_udp("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        UDPClient, local_addr=("127.0.0.1", 0))
    cport = transport.get_extra_info("sockname")[1]
    try:
        # The Via claims another host and port: the answer must come back to
        # the real source (rport) anyway.
        transport.sendto(options("r1", "SIP/2.0/UDP 192.0.2.77:5999;rport"),
                         ("127.0.0.1", server.ports["udp"]))
        resp = await asyncio.wait_for(client.queue.get(), TIMEOUT)
        via = resp.top_via
        assert via.param("received") == "127.0.0.1"
        assert via.param("rport") == str(cport)
        assert seen[0].top_via.param("rport") == str(cport)
    finally:
        transport.close()
        await server.close()


async def test_large_request_moves_to_tcp_and_responses_not_for_us_are_dropped() -> None:
    got: list[tuple[Request, Peer]] = []
    arrived = asyncio.Event()

    async def on_request(req: Request, peer: Peer) -> None:
        got.append((req, peer))
        arrived.set()

    server = SIPTransport("127.0.0.1", on_request, lambda r, p: None)
    port = await server.listen_udp("127.0.0.1", 0)
    await server.listen_tcp("127.0.0.1", port)  # SIP serves both on one port number
    stray_seen = asyncio.Event()
    client = SIPTransport("127.0.0.1", lambda r, p: None, lambda r, p: None)
    await client.listen_udp("127.0.0.1", 0)
    await client.listen_tcp("127.0.0.1", 0)
    client.stats.drop = lambda why, _orig=client.stats.drop: (_orig(why), stray_seen.set())
    try:
        raw = options("big", "SIP/2.0/UDP 127.0.0.1:1").replace(
            b"Content-Length: 0", b"X-Padding: " + b"x" * 1400 + b"\r\nContent-Length: 0")
        req = parse_message(raw)
        req.pop_first("via")
        req.add("Via", str(client.via_for("udp", "z9hG4bKbig")), top=True)
        used = await client.send_request(req, Peer("udp", "127.0.0.1", server.ports["udp"]))
        assert used.transport == "tcp"
        await asyncio.wait_for(arrived.wait(), TIMEOUT)
        assert got[0][1].transport == "tcp"
        assert got[0][0].top_via.transport == "TCP"
        # A response whose top Via is not ours is discarded (§18.1.2).
        stray = make_response(parse_message(options("stray", "SIP/2.0/UDP 192.0.2.1:5060")),
                              200)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dropped = client.stats.dropped
        sock.sendto(stray.to_bytes(), ("127.0.0.1", client.ports["udp"]))
        await asyncio.wait_for(stray_seen.wait(), TIMEOUT)
        assert client.stats.dropped == dropped + 1
        assert client.stats.reasons == {"response not for us": 1}
        sock.close()
    finally:
        await client.close()
        await server.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


async def test_tls_between_two_transports(tls_files: tuple[Path, Path]) -> None:
    key, cert = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    answers: asyncio.Queue[Response] = asyncio.Queue()

    async def on_request(req: Request, peer: Peer) -> None:
        await server.send_response(make_response(req, 200), peer)

    async def on_response(resp: Response, peer: Peer) -> None:
        answers.put_nowait(resp)

    server = SIPTransport("127.0.0.1", on_request, lambda r, p: None)
    port = await server.listen_tls("127.0.0.1", 0, server_ctx)
    client = SIPTransport("127.0.0.1", lambda r, p: None, on_response, client_ssl=client_ctx)
    await client.listen_tls("127.0.0.1", 0, server_ctx)
    try:
        req = parse_message(options("tls1", "SIP/2.0/TLS 127.0.0.1:1"))
        req.pop_first("via")
        req.add("Via", str(client.via_for("tls", "z9hG4bKtls1")), top=True)
        await client.send_request(req, Peer("tls", "127.0.0.1", port))
        resp = await asyncio.wait_for(answers.get(), TIMEOUT)
        assert resp.status == 200 and resp.call_id == "tls1"
    finally:
        await client.close()
        await server.close()


async def test_idle_connections_are_closed() -> None:
    server = SIPTransport("127.0.0.1", lambda r, p: None, lambda r, p: None, idle_timeout=0.2)
    port = await server.listen_tcp("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # The server closes the silent connection: our read sees end of stream.
        assert await asyncio.wait_for(reader.read(100), TIMEOUT) == b""
        assert server._connections == {}
    finally:
        writer.close()
        await server.close()
