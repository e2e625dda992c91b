"""RELOAD overlay link layer over TCP or TLS/TCP with the Framing Header (RFC 6940 §6.6).

One :class:`Link` is one hop-by-hop connection between two RELOAD nodes
(OverlayLinkType TLS-TCP-FH-NO-ICE, RFC 6940 §6.6.4). Every message goes out
as a FramedMessage of type data with this connection's own sequence number,
starting at 0 (§6.6.2); every data frame received is answered at once with an
ack frame. The wire codec is :mod:`sipmesh.proto.reload` (``encode_data_frame``,
``encode_ack_frame``, ``FrameDecoder``); this module only does the I/O.

Failure detection (§6.6: "a mechanism that quickly signals a likely
failure"): TCP already retransmits, so this layer never resends. Instead, if
the oldest data frame still unacknowledged is older than ``ack_timeout`` the
link is declared failed and closed, and TCP keepalive catches a dead peer on
an idle link. A stream error (unknown frame type, a frame longer than
``max_frame``) closes the link at once. For an oversize message §6.6 says
to send Error_Message_Too_Large first; the link layer has only the frame
header then (no transaction id to answer), so it just closes. The upper
layer (routing, §6.2) learns of the end of a link through exactly one
``on_closed(link, exc)`` call and retransmits end to end.

Scale: a peer holds thousands of links, so a Link is its own
``asyncio.Protocol`` with ``__slots__``; it has no task, and it holds a timer
only while frames are outstanding and a future only while someone waits on it.

TLS (§6.6.4, §13 and §11.3): both sides present their overlay certificate
and verify the other against the overlay's CA only; peers are named by the
Node-ID in the certificate, not by host name. ``ssl=None`` gives plain TCP,
which exists only for tests and packet captures (it gives none of the
authentication or confidentiality §6.6.1 requires).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl as _ssl
import struct
import tempfile
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sipmesh.overlay import security, stream
from sipmesh.proto import reload as rl

ACK_TIMEOUT = 5.0
"""Seconds a data frame may stay unacknowledged before the link is declared failed.

RFC 6940 leaves the value open; 5 s is well above any LAN or Internet RTT
yet much faster than TCP's own give-up time (minutes)."""

MAX_FRAME = rl.MAX_FRAME
"""Largest framed message accepted (the overlay's max-message-size, §11.1, default 64 KiB)."""

HANDSHAKE_TIMEOUT = 10.0
"""Seconds allowed for the TLS handshake."""

# TCP keepalive for idle links: first probe after 10 s, then every 5 s, give up
# after 3 missed probes, so a silently dead idle peer is noticed in about 25 s.
KEEPALIVE_IDLE = 10
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3

_SEQ_MASK = 0xFFFFFFFF
_OPEN, _CLOSING, _CLOSED = 0, 1, 2
_LINGER_RST = struct.pack("ii", 1, 0)  # struct linger: on, 0 s: close() sends RST

MessageCallback = Callable[["Link", bytes], None]
ClosedCallback = Callable[["Link", "Exception | None"], None]
LinkCallback = Callable[["Link"], None]


class LinkError(Exception):
    """The link is closed, or failed (ack timeout, RFC 6940 §6.6)."""


def _ack_mask(high: int | None, mask: int, seq: int) -> tuple[int | None, int, int]:
    """Update the receive window with ``seq``; return (high, mask, received).

    RFC 6940 §6.6.2: the ack for sequence N has bit N-M set (bit 0 = least
    significant) for each sequence M received with N-32 < M < N. The window is
    kept as the highest sequence received and a bitmask whose bit k says
    ``high - k`` was received; on TCP frames arrive in order, so these are the
    most recently received sequence numbers the RFC asks to track.
    """
    if high is None:
        return seq, 0, 0
    ahead = (seq - high) & _SEQ_MASK
    if ahead == 0:
        return high, mask, mask & ~1
    if ahead < 0x80000000:
        mask = ((mask | 1) << ahead) & _SEQ_MASK if ahead < 32 else 0
        return seq, mask, mask
    behind = (high - seq) & _SEQ_MASK
    if behind >= 32:
        return high, mask, 0
    received = (mask | 1) >> behind & ~1
    return high, mask | (1 << behind), received


def _address(addr) -> tuple[str, int] | None:
    return addr[:2] if isinstance(addr, tuple) else None


def _tune_socket(sock) -> None:
    """TCP_NODELAY (frames are small and latency matters) and keepalive (§6.6 failure signal)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    for level, name, value in (
        (socket.IPPROTO_TCP, "TCP_NODELAY", 1),
        (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
        (socket.IPPROTO_TCP, "TCP_KEEPIDLE", KEEPALIVE_IDLE),
        (socket.IPPROTO_TCP, "TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        (socket.IPPROTO_TCP, "TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        opt = getattr(socket, name, None)
        if opt is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, opt, value)


class Link(asyncio.Protocol):
    """One RELOAD link: framing, acks, failure detection (RFC 6940 §6.6.2, §6.6.4).

    Made by :func:`connect` and :func:`listen`, not directly. Public state:
    ``local_address`` / ``remote_address`` (host, port); ``secure`` (TLS);
    ``remote_cert_info`` (the peer certificate's :class:`security.CertInfo`,
    TLS only); ``remote_node_id`` (from the certificate when it holds exactly
    one Node-ID, else None; the upper layer may set it); ``rtt`` (smoothed
    round-trip time from acks in seconds, or None); counters ``frames_sent``
    / ``frames_received`` (data and ack frames) and ``bytes_sent`` /
    ``bytes_received`` (framed bytes, headers and acks included, TLS
    overhead not).
    """

    __slots__ = (
        "_transport",
        "_loop",
        "_on_message",
        "_on_closed",
        "_on_open",
        "_decoder",
        "_ack_timeout",
        "_next_seq",
        "_unacked_first",
        "_unacked_times",
        "_timer",
        "_rx_high",
        "_rx_mask",
        "_state",
        "_error",
        "_waiter",
        "_drain",
        "rtt",
        "remote_node_id",
        "remote_cert_info",
        "secure",
        "initiated",
        "frames_sent",
        "frames_received",
        "bytes_sent",
        "bytes_received",
    )

    def __init__(
        self,
        on_message: MessageCallback,
        on_closed: ClosedCallback,
        *,
        ack_timeout: float = ACK_TIMEOUT,
        max_frame: int = MAX_FRAME,
        on_open: LinkCallback | None = None,
    ) -> None:
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_message = on_message
        self._on_closed = on_closed
        self._on_open = on_open
        self._decoder = rl.FrameDecoder(max_frame)
        self._ack_timeout = ack_timeout
        self._next_seq = 0
        self._unacked_first = 0
        self._unacked_times: list[float] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._rx_high: int | None = None
        self._rx_mask = 0
        self._state = _OPEN
        self._error: Exception | None = None
        self._waiter: asyncio.Future | None = None
        self._drain: asyncio.Future | None = None
        self.rtt: float | None = None
        self.remote_node_id: bytes | None = None
        self.remote_cert_info: security.CertInfo | None = None
        self.secure = False
        self.initiated = False  # set by the upper layer on links it opened
        self.frames_sent = 0
        self.frames_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    def __repr__(self) -> str:
        state = ("open", "closing", "closed")[self._state]
        return f"<Link {self.local_address}->{self.remote_address} {state}>"

    # ------------------------------------------------------------ public API

    @property
    def closed(self) -> bool:
        """True once the link is closing or closed; ``send`` then raises LinkError."""
        return self._state != _OPEN

    @property
    def local_address(self) -> tuple[str, int] | None:
        """This end's (host, port); read from the transport, not stored per link."""
        return _address(self._transport.get_extra_info("sockname")) if self._transport else None

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's (host, port)."""
        return _address(self._transport.get_extra_info("peername")) if self._transport else None

    @property
    def outstanding(self) -> int:
        """Data frames sent and not yet acknowledged (after the link ends: when it ended)."""
        return len(self._unacked_times) if self._unacked_times else 0

    @property
    def writing_paused(self) -> bool:
        """True while the transport's write buffer is above its high-water mark."""
        return self._drain is not None

    def send(self, message: bytes) -> None:
        """Send ``message`` as one data frame with the next sequence number (§6.6.2).

        Never blocks; the frame is buffered by the transport (see :meth:`drain`
        for flow control). Raises LinkError if the link is closed, and
        ReloadEncodeError if the message exceeds the 2^24-1 bytes a frame holds.
        """
        if self._state != _OPEN or self._transport.is_closing():
            raise LinkError("link closed")
        seq = self._next_seq
        frame = rl.encode_data_frame(seq, message)
        self._next_seq = (seq + 1) & _SEQ_MASK
        now = self._loop.time()
        if self._unacked_times:
            self._unacked_times.append(now)
        else:
            self._unacked_first = seq
            self._unacked_times = [now]
        if self._timer is None:
            self._timer = self._loop.call_at(now + self._ack_timeout, self._ack_timer)
        self.frames_sent += 1
        self.bytes_sent += len(frame)
        self._transport.write(frame)

    async def drain(self) -> None:
        """Wait until the transport accepts more data (TCP flow control)."""
        if self._drain is not None:
            await asyncio.shield(self._drain)

    def close(self) -> None:
        """Close gracefully: buffered frames are flushed, then FIN. ``on_closed`` gets None."""
        if self._state == _OPEN:
            self._state = _CLOSING
            self._cancel_timer()
            self._transport.close()

    def abort(self) -> None:
        """Close at once with a TCP RST, dropping buffered frames; ``on_closed`` gets None."""
        if self._state == _OPEN:
            self._state = _CLOSING
            self._cancel_timer()
            self._reset()

    async def wait_closed(self) -> None:
        """Return once the connection is gone and ``on_closed`` has been called."""
        if self._state == _CLOSED:
            return
        if self._waiter is None:
            self._waiter = self._loop.create_future()
        await asyncio.shield(self._waiter)

    # ------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        _tune_socket(transport.get_extra_info("socket"))
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.secure = True
            der = ssl_object.getpeercert(binary_form=True)
            if der:
                info = security.cert_info(x509.load_der_x509_certificate(der))
                self.remote_cert_info = info
                if len(info.node_ids) == 1:
                    self.remote_node_id = info.node_ids[0]
        on_open, self._on_open = self._on_open, None
        if on_open is not None:
            self._call(on_open, self)

    def data_received(self, data: bytes) -> None:
        if self._state != _OPEN:
            return
        self.bytes_received += len(data)
        frames: list = []
        error: Exception | None = None
        try:
            frames = self._decoder.feed(data)
            if frames:
                self._decoder.feed(b"")  # raises a stream error found after these frames
        except rl.ReloadDecodeError as e:
            error = e
        acks = []
        messages = []
        for f in frames:
            self.frames_received += 1
            if f.kind == rl.FRAME_DATA:
                self._rx_high, self._rx_mask, received = _ack_mask(
                    self._rx_high, self._rx_mask, f.sequence
                )
                acks.append(rl.encode_ack_frame(f.sequence, received))
                messages.append(f.message)
            else:
                self._acked(f.sequence)
        if acks:
            out = b"".join(acks)
            self.frames_sent += len(acks)
            self.bytes_sent += len(out)
            self._transport.write(out)
        for message in messages:
            if self._state != _OPEN:
                return
            self._call(self._on_message, self, message)
        if error is not None:
            self._fail(error)

    def eof_received(self) -> bool | None:
        return None  # the peer closed its side: the link is over (transport closes)

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = self._loop.create_future()

    def resume_writing(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._cancel_timer()
        error = self._error if self._error is not None else exc
        self.resume_writing()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._call(self._on_closed, self, error)

    # ------------------------------------------------------------- internals

    def _call(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # an upper-layer bug must not break the link's state
            self._loop.call_exception_handler(
                {"message": f"exception in link callback {fn!r}", "exception": e, "protocol": self}
            )

    def _acked(self, seq: int) -> None:
        """ACK for ``seq`` (§6.6.2): on TCP every earlier frame arrived too, so
        clear all outstanding frames up to ``seq``; RTT from ``seq``'s send time."""
        times = self._unacked_times
        if not times:
            return
        k = (seq - self._unacked_first) & _SEQ_MASK
        if k >= len(times):
            return
        sample = self._loop.time() - times[k]
        self.rtt = sample if self.rtt is None else 0.875 * self.rtt + 0.125 * sample
        if k + 1 == len(times):
            self._unacked_times = None
            self._cancel_timer()
        else:
            del times[: k + 1]
            self._unacked_first = (seq + 1) & _SEQ_MASK

    def _ack_timer(self) -> None:
        """Fires at most ``ack_timeout`` after the oldest outstanding frame was sent."""
        self._timer = None
        if self._state != _OPEN or not self._unacked_times:
            return
        due = self._unacked_times[0] + self._ack_timeout
        now = self._loop.time()
        if now >= due:
            self._fail(
                LinkError(
                    f"ack timeout: frame {self._unacked_first} unacknowledged "
                    f"after {self._ack_timeout:g} s"
                )
            )
        else:
            self._timer = self._loop.call_at(due, self._ack_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, error: Exception) -> None:
        if self._state == _CLOSED:
            return
        if self._error is None:
            self._error = error
        self._state = _CLOSING
        self._cancel_timer()
        self._reset()

    def _reset(self) -> None:
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        self._transport.abort()


class Listener:
    """A listening socket accepting RELOAD links (RFC 6940 §6.6.4).

    ``close()`` stops accepting; links already accepted stay open.
    """

    __slots__ = ("_server",)

    def __init__(self, server: asyncio.Server) -> None:
        self._server = server

    @property
    def sockets(self) -> tuple:
        return self._server.sockets

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        self._server.close()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()


async def connect(
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None = None,
    on_message: MessageCallback,
    on_closed: ClosedCallback,
    ack_timeout: float = ACK_TIMEOUT,
    max_frame: int = MAX_FRAME,
    local_addr: tuple[str, int] | None = None,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
) -> Link:
    """Open a link to ``host:port``; with ``ssl`` (a client context from
    :func:`tls_contexts`) it is TLS-TCP-FH-NO-ICE (§6.6.4), else plain TCP
    (tests and captures only). Returns after the TLS handshake.

    With TLS 1.3 the server checks our certificate after our side of the
    handshake is done: a refused client sees its link close right after.
    """
    loop = asyncio.get_running_loop()
    if ssl is None:
        _, link = await stream.open_stream(
            host,
            port,
            lambda: Link(on_message, on_closed, ack_timeout=ack_timeout, max_frame=max_frame),
            local_addr=local_addr,
        )
        return link
    kw = {"ssl": ssl, "server_hostname": "", "ssl_handshake_timeout": handshake_timeout}
    _, link = await loop.create_connection(
        lambda: Link(on_message, on_closed, ack_timeout=ack_timeout, max_frame=max_frame),
        host,
        port,
        local_addr=local_addr,
        **kw,
    )
    return link


async def listen(
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None = None,
    on_link: LinkCallback,
    on_message: MessageCallback,
    on_closed: ClosedCallback,
    ack_timeout: float = ACK_TIMEOUT,
    max_frame: int = MAX_FRAME,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    backlog: int = 128,
) -> Listener:
    """Accept links on ``host:port`` (0 = ephemeral); ``on_link(link)`` is
    called for each one once it is established (after the TLS handshake, so
    ``remote_node_id`` is already known). ``ssl`` is a server context from
    :func:`tls_contexts`, or None for plain TCP (tests and captures only)."""
    loop = asyncio.get_running_loop()

    def factory():
        return Link(
            on_message, on_closed, ack_timeout=ack_timeout, max_frame=max_frame, on_open=on_link
        )

    if ssl is None:
        return Listener(await stream.start_stream_server(host, port, factory, backlog))
    kw = {"ssl": ssl, "ssl_handshake_timeout": handshake_timeout}
    server = await loop.create_server(
        lambda: Link(
            on_message, on_closed, ack_timeout=ack_timeout, max_frame=max_frame, on_open=on_link
        ),
        host,
        port,
        backlog=backlog,
        **kw,
    )
    return Listener(server)


def tls_contexts(
    identity: security.Identity, ca_certificate: x509.Certificate
) -> tuple[_ssl.SSLContext, _ssl.SSLContext]:
    """(server, client) TLS contexts for overlay links (RFC 6940 §6.6.4, §13, §11.3).

    TLS 1.2 or later (1.3 preferred); both sides present ``identity``'s
    Ed25519 certificate and require the peer's, verified against the
    overlay CA only; no host name check, since peers are named by the
    Node-ID in their certificate. The ``ssl`` module loads keys only from
    files, so the key is written to a private (0600) temporary file that is
    removed before returning.
    """
    pem = security.key_pem(identity.signing_key) + identity.certificate.public_bytes(
        serialization.Encoding.PEM
    )
    ca_pem = ca_certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
    server = _ssl.SSLContext(_ssl.PROTOCOL_TLS_SERVER)
    client = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    fd, path = tempfile.mkstemp(prefix="sipmesh-link-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        for ctx in (server, client):
            ctx.minimum_version = _ssl.TLSVersion.TLSv1_2
            ctx.verify_mode = _ssl.CERT_REQUIRED
            ctx.load_cert_chain(path)
            ctx.load_verify_locations(cadata=ca_pem)
    finally:
        os.unlink(path)
    return server, client
