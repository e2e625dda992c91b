"""RELOAD link layer (RFC 6940 §6.6.2 framing and acks, §6.6.4 TLS/TCP) on real loopback sockets."""

from __future__ import annotations

import asyncio
import gc
import glob
import os
import ssl
import struct
import tempfile
import tracemalloc

import pytest
from cryptography.hazmat.primitives import serialization

from sipmesh.overlay import link as L
from sipmesh.overlay import security
from sipmesh.proto import reload as rl

T = 5.0  # seconds any single wait may take before the test fails


class Side:
    """Callbacks of one side of a link, turned into things a test can await."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[bytes] = asyncio.Queue()
        self.links: asyncio.Queue[L.Link] = asyncio.Queue()
        self.closed: list[tuple[L.Link, Exception | None]] = []
        self.closed_event = asyncio.Event()
        self.reply: bytes | None = None  # echo every message with this prefix

    def on_message(self, link: L.Link, message: bytes) -> None:
        self.messages.put_nowait(message)
        if self.reply is not None and message != b"fin":
            link.send(self.reply + message)

    def on_closed(self, link: L.Link, exc: Exception | None) -> None:
        self.closed.append((link, exc))
        self.closed_event.set()

    def on_link(self, link: L.Link) -> None:
        self.links.put_nowait(link)

    async def message(self) -> bytes:
        return await asyncio.wait_for(self.messages.get(), T)

    async def link(self) -> L.Link:
        return await asyncio.wait_for(self.links.get(), T)

    async def wait_closed(self) -> Exception | None:
        await asyncio.wait_for(self.closed_event.wait(), T)
        assert len(self.closed) == 1
        return self.closed[0][1]


@pytest.fixture(scope="module")
def pki():
    ca = security.make_ca("link.test")
    alice = security.Identity.generate(ca, "alice@link.test", bytes(range(16)))
    bob = security.Identity.generate(ca, "bob@link.test", bytes(range(16, 32)))
    other_ca = security.make_ca("link.test")
    mallory = security.Identity.generate(other_ca, "mallory@link.test", bytes(16))
    return ca, alice, bob, mallory


async def _listen(side: Side, ssl_ctx=None, **kw) -> L.Listener:
    return await L.listen(
        "127.0.0.1", 0, ssl=ssl_ctx, on_link=side.on_link, on_message=side.on_message,
        on_closed=side.on_closed, **kw,
    )


async def _connect(side: Side, port: int, ssl_ctx=None, **kw) -> L.Link:
    return await L.connect(
        "127.0.0.1", port, ssl=ssl_ctx, on_message=side.on_message, on_closed=side.on_closed,
        **kw,
    )


async def _pair(tls: bool, pki):
    ca, alice, bob, _ = pki
    server_ctx = client_ctx = None
    if tls:
        server_ctx, _ = L.tls_contexts(alice, ca.certificate)
        _, client_ctx = L.tls_contexts(bob, ca.certificate)
    srv, cli = Side(), Side()
    listener = await _listen(srv, server_ctx)
    client = await _connect(cli, listener.port, client_ctx)
    server = await srv.link()
    return listener, srv, server, cli, client


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_exchange_both_directions_with_acks_and_exact_counters(tls, pki):
    listener, srv, server, cli, client = await _pair(tls, pki)
    assert client.secure is tls and server.secure is tls
    assert client.remote_address == server.local_address
    assert server.remote_address == client.local_address
    srv.reply = b"re:"
    sent = [b"one", b"", os.urandom(60_000), b"last"]
    for m in sent:
        client.send(m)
    assert client.outstanding == 4
    assert [await srv.message() for _ in sent] == sent
    assert [await cli.message() for _ in sent] == [b"re:" + m for m in sent]
    # The server acked each frame before echoing it, on the same ordered stream.
    assert client.outstanding == 0 and client.rtt is not None and client.rtt >= 0
    client.send(b"fin")
    assert await srv.message() == b"fin"
    assert server.outstanding == 0 and server.rtt is not None  # acks came before "fin"
    server.close()
    assert await cli.wait_closed() is None
    assert await srv.wait_closed() is None
    data = sum(8 + len(m) for m in sent)
    echoes = sum(8 + 3 + len(m) for m in sent)
    assert (client.frames_sent, client.bytes_sent) == (5 + 4, data + 11 + 4 * 9)
    assert (client.frames_received, client.bytes_received) == (4 + 5, echoes + 5 * 9)
    assert (server.frames_sent, server.bytes_sent) == (4 + 5, echoes + 5 * 9)
    assert (server.frames_received, server.bytes_received) == (5 + 4, data + 11 + 4 * 9)
    with pytest.raises(L.LinkError):
        client.send(b"late")
    listener.close()
    await listener.wait_closed()


async def _raw_client(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return reader, writer


async def _read_acks(reader: asyncio.StreamReader, n: int) -> list[rl.AckFrame]:
    dec, frames = rl.FrameDecoder(), []
    while len(frames) < n:
        chunk = await asyncio.wait_for(reader.read(4096), T)
        assert chunk, "link closed before sending all acks"
        frames += dec.feed(chunk)
    assert len(frames) == n and all(isinstance(f, rl.AckFrame) for f in frames)
    return frames


async def test_raw_peer_byte_by_byte_and_burst_with_ack_bitmasks():
    srv = Side()
    listener = await _listen(srv)
    reader, writer = await _raw_client(listener.port)
    link = await srv.link()
    for seq, msg in ((0, b"zero"), (1, b"one")):
        for b in rl.encode_data_frame(seq, msg):
            writer.write(bytes([b]))
            await writer.drain()
    # One burst: 2, then a gap (3 and 4 never sent), 5, 6, a jump past the window, 41.
    burst = [(2, b"two"), (5, b""), (6, b"six"), (40, b"forty"), (41, b"x" * 1000)]
    writer.write(b"".join(rl.encode_data_frame(s, m) for s, m in burst))
    await writer.drain()
    expected = [b"zero", b"one"] + [m for _, m in burst]
    assert [await srv.message() for _ in expected] == expected
    acks = await _read_acks(reader, len(expected))
    # RFC 6940 §6.6.2: bit N-M is set for every received M with N-32 < M < N.
    assert [(a.sequence, a.received) for a in acks] == [
        (0, 0),
        (1, 1 << 1),
        (2, 1 << 1 | 1 << 2),
        (5, 1 << 3 | 1 << 4 | 1 << 5),
        (6, 1 << 1 | 1 << 4 | 1 << 5 | 1 << 6),
        (40, 0),
        (41, 1 << 1),
    ]
    assert link.frames_received == len(expected) and link.frames_sent == len(expected)
    # The raw peer acks a frame the link sends: nothing stays outstanding.
    link.send(b"to raw")
    frame = await _read_data(reader)
    assert frame.message == b"to raw" and link.outstanding == 1
    writer.write(rl.encode_ack_frame(frame.sequence, 0) + rl.encode_data_frame(42, b"sync"))
    assert await srv.message() == b"sync"
    assert link.outstanding == 0 and link.rtt is not None
    writer.close()
    assert await srv.wait_closed() is None
    listener.close()


async def _read_data(reader: asyncio.StreamReader) -> rl.DataFrame:
    dec = rl.FrameDecoder()
    while True:
        chunk = await asyncio.wait_for(reader.read(4096), T)
        assert chunk
        frames = dec.feed(chunk)
        if frames:
            assert len(frames) == 1 and isinstance(frames[0], rl.DataFrame)
            return frames[0]


async def test_ack_bitmask_across_sequence_wrap():
    srv = Side()
    listener = await _listen(srv)
    reader, writer = await _raw_client(listener.port)
    seqs = [0xFFFFFFFE, 0xFFFFFFFF, 0, 1]
    writer.write(b"".join(rl.encode_data_frame(s, b"m") for s in seqs))
    acks = await _read_acks(reader, 4)
    assert [(a.sequence, a.received) for a in acks] == [
        (0xFFFFFFFE, 0), (0xFFFFFFFF, 0b10), (0, 0b110), (1, 0b1110),
    ]
    writer.close()
    await srv.wait_closed()
    listener.close()


async def test_sender_sequence_wraps_and_acks_still_clear(pki):
    listener, srv, server, cli, client = await _pair(False, pki)
    client._next_seq = 0xFFFFFFFE  # RFC 6940 §6.6.2: uint32, so it wraps to 0
    srv.reply = b""
    for m in (b"a", b"b", b"c"):
        client.send(m)
    assert [await cli.message() for _ in range(3)] == [b"a", b"b", b"c"]
    assert client.outstanding == 0
    client.close()
    await srv.wait_closed()
    listener.close()


@pytest.mark.parametrize(
    "bad, code",
    [(b"\x7f", None), (b"\x80\x00\x00\x00\x02\x00\x03\xe9", rl.ERROR_MESSAGE_TOO_LARGE)],
    ids=["unknown-type", "oversize"],
)
async def test_stream_error_closes_link_with_the_error(bad, code):
    srv = Side()
    listener = await _listen(srv, max_frame=1000)
    reader, writer = await _raw_client(listener.port)
    await srv.link()
    writer.write(
        rl.encode_data_frame(0, b"good") + rl.encode_data_frame(1, b"y" * 1000)
        + bad + rl.encode_data_frame(3, b"after")
    )
    exc = await srv.wait_closed()
    assert isinstance(exc, rl.ReloadDecodeError) and exc.code == code
    assert [srv.messages.get_nowait() for _ in range(2)] == [b"good", b"y" * 1000]
    assert srv.messages.empty()
    # The peer sees the connection reset (perhaps after the acks of the good frames).
    with pytest.raises(ConnectionResetError):
        while await asyncio.wait_for(reader.read(4096), T):
            pass
    listener.close()


async def test_tls_identities_come_from_certificates_both_ways(pki):
    ca, alice, bob, _ = pki
    listener, srv, server, cli, client = await _pair(True, pki)
    assert client.remote_node_id == alice.node_id
    assert client.remote_cert_info.user_name == "alice@link.test"
    assert server.remote_node_id == bob.node_id
    assert server.remote_cert_info.user_name == "bob@link.test"
    assert client._transport.get_extra_info("ssl_object").version() == "TLSv1.3"
    client.close()
    await srv.wait_closed()
    listener.close()


async def test_tls12_with_ed25519_works(pki):
    ca, alice, bob, _ = pki
    server_ctx, _ = L.tls_contexts(alice, ca.certificate)
    _, client_ctx = L.tls_contexts(bob, ca.certificate)
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    srv, cli = Side(), Side()
    listener = await _listen(srv, server_ctx)
    client = await _connect(cli, listener.port, client_ctx)
    server = await srv.link()
    assert client._transport.get_extra_info("ssl_object").version() == "TLSv1.2"
    assert server.remote_node_id == bob.node_id and client.remote_node_id == alice.node_id
    client.send(b"hi")
    assert await srv.message() == b"hi"
    client.abort()
    await srv.wait_closed()
    listener.close()


async def _refused(srv: Side, listener: L.Listener, client_ctx, good_ctx) -> None:
    """The handshake with ``client_ctx`` must fail on the client side (at once,
    or, with TLS 1.3, by the link closing with an error right after), and the
    server must not deliver a link; a good client after it is delivered."""
    cli = Side()
    try:
        link = await _connect(cli, listener.port, client_ctx)
    except (ssl.SSLError, ConnectionError):
        pass
    else:
        # TLS 1.3: the client finished first; the server's refusal reaches it
        # as the end of the connection (asyncio drops the unsent alert).
        await cli.wait_closed()
        assert link.closed and link.frames_received == 0
    good = await _connect(Side(), listener.port, good_ctx)
    accepted = await srv.link()
    assert accepted.remote_address == good.local_address
    assert srv.links.empty()
    good.abort()


async def test_tls_refuses_foreign_ca_and_missing_certificate(pki):
    ca, alice, bob, mallory = pki
    server_ctx, _ = L.tls_contexts(alice, ca.certificate)
    _, good_ctx = L.tls_contexts(bob, ca.certificate)
    _, mallory_client = L.tls_contexts(mallory, ca.certificate)  # trusts our CA, foreign cert
    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.check_hostname = False
    no_cert.load_verify_locations(
        cadata=ca.certificate.public_bytes(serialization.Encoding.PEM).decode()
    )
    srv = Side()
    listener = await _listen(srv, server_ctx)
    await _refused(srv, listener, mallory_client, good_ctx)
    await _refused(srv, listener, no_cert, good_ctx)
    listener.close()
    # A server with a foreign certificate is refused by our client.
    mallory_server, _ = L.tls_contexts(mallory, ca.certificate)
    bad_srv = Side()
    bad_listener = await _listen(bad_srv, mallory_server)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _connect(Side(), bad_listener.port, good_ctx)
    bad_listener.close()


def test_tls_contexts_leave_no_key_file(pki):
    ca, alice, _, _ = pki
    pattern = os.path.join(tempfile.gettempdir(), "sipmesh-link-*")
    before = set(glob.glob(pattern))
    server_ctx, client_ctx = L.tls_contexts(alice, ca.certificate)
    assert set(glob.glob(pattern)) <= before
    for ctx in (server_ctx, client_ctx):
        assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_abort_is_seen_by_the_peer(tls, pki):
    listener, srv, server, cli, client = await _pair(tls, pki)
    client.abort()
    assert client.closed
    exc = await srv.wait_closed()
    assert isinstance(exc, ConnectionResetError)
    assert await cli.wait_closed() is None
    client.abort()
    client.close()
    await client.wait_closed()
    assert len(cli.closed) == 1
    listener.close()


async def test_ack_timeout_declares_failure():
    received = asyncio.Event()
    peer_end: asyncio.Future = asyncio.get_running_loop().create_future()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(4096):
                received.set()
        except ConnectionResetError as e:
            peer_end.set_result(e)
        else:
            peer_end.set_result(None)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cli = Side()
    link = await _connect(cli, port, ack_timeout=0.2)
    link.send(b"are you there?")
    await asyncio.wait_for(received.wait(), T)
    exc = await cli.wait_closed()
    assert isinstance(exc, L.LinkError) and "ack timeout" in str(exc)
    assert link.closed and link.outstanding == 1
    assert isinstance(await asyncio.wait_for(peer_end, T), ConnectionResetError)
    server.close()


async def test_callback_errors_do_not_break_the_link():
    loop = asyncio.get_running_loop()
    reported = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx["exception"]))
    srv, cli = Side(), Side()

    def boom(link: L.Link, message: bytes) -> None:
        srv.on_message(link, message)
        raise RuntimeError("upper layer bug")

    listener = await L.listen(
        "127.0.0.1", 0, on_link=srv.on_link, on_message=boom, on_closed=srv.on_closed
    )
    client = await _connect(cli, listener.port)
    client.send(b"a")
    client.send(b"b")
    assert [await srv.message(), await srv.message()] == [b"a", b"b"]
    assert [str(e) for e in reported] == ["upper layer bug"] * 2
    client.close()
    await srv.wait_closed()
    listener.close()


async def test_memory_per_link_pair():
    """Prints tracemalloc bytes per established plain-TCP link pair (no threshold)."""
    n = 1000
    srv, cli = Side(), Side()
    listener = await _listen(srv, backlog=n)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    clients = []
    for _ in range(n // 100):
        clients += await asyncio.gather(*(_connect(cli, listener.port) for _ in range(100)))
    servers = [await srv.link() for _ in range(n)]
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(f"\nlink memory: {used / n:.0f} bytes per established plain-TCP link pair "
          f"({n} pairs, both ends, asyncio transports included)")
    assert len(servers) == n and not any(c.closed for c in clients)
    for c in clients:
        c.abort()
    for s in servers:
        await asyncio.wait_for(s.wait_closed(), T)
    assert len(srv.closed) == n and len(cli.closed) == n
    listener.close()
    await listener.wait_closed()


def test_linger_option_means_reset():
    assert struct.unpack("ii", L._LINGER_RST) == (1, 0)
