"""SIP transports on asyncio: UDP, TCP and TLS (RFC 3261 §18, RFC 3581, RFC 5626 §3.5.1).

The transport layer turns bytes into messages and back, and owns the
rules that belong to it:

- receiving a request: ``received`` when the source address differs from
  the Via sent-by, and ``rport`` filled in when asked (§18.2.1, RFC 3581
  §4); a malformed request is answered with the error of ``reject`` when it
  carries what a response needs, otherwise dropped and counted;
- receiving a response: discarded unless its top Via names us (§18.1.2);
- sending a request: over TCP instead of UDP when it is larger than 1300
  bytes (§18.1.1), reusing an open connection to the same address and
  transport;
- sending a response: by the top Via (§18.2.2), on the connection the
  request came in on while it is open;
- on streams: Content-Length framing, CRLF keep-alive pings answered with
  one CRLF, and connections closed after an idle time.

Nothing malformed raises past this layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sipmesh.sip.errors import SIPParseError
from sipmesh.sip.message import Request, Response
from sipmesh.sip.parser import MAX_MESSAGE, KeepAlive, StreamParser, parse_message
from sipmesh.sip.reject import error_response
from sipmesh.sip.via import Via

log = logging.getLogger("sipmesh.sip.transport")

# RFC 3261 §18.1.1: requests within 200 bytes of a 1500-byte path MTU go
# over a congestion-controlled transport.
MTU_LIMIT = 1300
# Close stream connections with no traffic for this long (seconds).
IDLE_TIMEOUT = 300.0

STREAM_TRANSPORTS = ("tcp", "tls")


@dataclass(frozen=True)
class Peer:
    """Where a message came from: the transport and the remote address."""

    transport: str
    host: str
    port: int


@dataclass
class Stats:
    """Counters an operator reads to see what the transport refused."""

    received: int = 0
    sent: int = 0
    dropped: int = 0
    rejected: int = 0
    keepalives: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def drop(self, why: str) -> None:
        self.dropped += 1
        self.reasons[why] = self.reasons.get(why, 0) + 1


RequestHandler = Callable[[Request, Peer], Awaitable[None] | None]
ResponseHandler = Callable[[Response, Peer], Awaitable[None] | None]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def _same_host(a: str, b: str) -> bool:
    a, b = a.strip("[]").lower(), b.strip("[]").lower()
    if a == b:
        return True
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


class _Stream(asyncio.Protocol):
    """One TCP or TLS connection: framing in, bytes out, idle timer."""

    def __init__(self, owner: SIPTransport, transport_name: str) -> None:
        self.owner = owner
        self.name = transport_name
        self.parser = StreamParser()
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.closed = asyncio.Event()
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Peer(self.name, host, port)
        self.owner._connections[self.peer] = self
        self._touch()

    def _touch(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self.owner.idle_timeout, self._idle_close)

    def _idle_close(self) -> None:
        log.debug("closing idle %s connection to %s", self.name, self.peer)
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._touch()
        assert self.peer is not None
        for item in self.parser.feed(data):
            if isinstance(item, KeepAlive):
                self.owner.stats.keepalives += 1
                if item.ping and self.transport is not None:
                    self.transport.write(b"\r\n")
            else:
                self.owner._deliver(item, self.peer)
        if self.parser.broken and self.transport is not None:
            self.transport.close()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError(f"{self.name} connection to {self.peer} is closed")
        self._touch()
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if self.peer is not None and self.owner._connections.get(self.peer) is self:
            del self.owner._connections[self.peer]
        self.closed.set()


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, owner: SIPTransport) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        peer = Peer("udp", addr[0], addr[1])
        if data in (b"\r\n", b"\r\n\r\n"):
            self.owner.stats.keepalives += 1
            return
        try:
            msg: Request | Response | SIPParseError = parse_message(data)
        except SIPParseError as e:
            msg = e
        self.owner._deliver(msg, peer)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class SIPTransport:
    """Listening sockets, outgoing connections and the §18 send/receive rules.

    ``host`` is what goes into our Via sent-by; ``on_request`` and
    ``on_response`` receive well-formed messages with their source.
    """

    def __init__(
        self,
        host: str,
        on_request: RequestHandler,
        on_response: ResponseHandler,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.on_request = on_request
        self.on_response = on_response
        self.idle_timeout = idle_timeout
        self.client_ssl = client_ssl
        self.stats = Stats()
        self.ports: dict[str, int] = {}
        self._udp: _Datagram | None = None
        self._servers: list[asyncio.Server] = []
        self._connections: dict[Peer, _Stream] = {}
        self._tasks: set[asyncio.Task] = set()

    # --- listening ----------------------------------------------------------

    async def listen_udp(self, host: str, port: int = 0) -> int:
        """Bind the UDP socket (also used to send over UDP); return the port."""
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Datagram(self), local_addr=(host, port)
        )
        self._udp = proto
        self.ports["udp"] = transport.get_extra_info("sockname")[1]
        return self.ports["udp"]

    def close_udp(self) -> None:
        """Close the UDP socket (used when its port number cannot also serve TCP)."""
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        self._udp = None
        self.ports.pop("udp", None)

    async def listen_tcp(self, host: str, port: int = 0) -> int:
        return await self._listen_stream("tcp", host, port, None)

    async def listen_tls(self, host: str, port: int, context: ssl.SSLContext) -> int:
        return await self._listen_stream("tls", host, port, context)

    async def _listen_stream(
        self, name: str, host: str, port: int, context: ssl.SSLContext | None
    ) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Stream(self, name), host, port, ssl=context)
        self._servers.append(server)
        self.ports[name] = server.sockets[0].getsockname()[1]
        return self.ports[name]

    async def close(self) -> None:
        """Stop listening and close every connection, waiting until each is closed."""
        for server in self._servers:
            server.close()
        # A connection may be known under two peers (accepted and dialled).
        conns = list({id(c): c for c in self._connections.values()}.values())
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
        for server in self._servers:
            await server.wait_closed()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        # TLS needs loop turns for close_notify before the socket really closes.
        for conn in conns:
            try:
                await asyncio.wait_for(conn.closed.wait(), 2.0)
            except TimeoutError:
                if conn.transport is not None:
                    conn.transport.abort()
        for task in list(self._tasks):
            task.cancel()

    # --- receiving ----------------------------------------------------------

    def _deliver(self, item: Request | Response | SIPParseError, peer: Peer) -> None:
        self.stats.received += 1
        if isinstance(item, SIPParseError):
            self._malformed(item, peer)
        elif isinstance(item, Request):
            try:
                self._stamp_via(item, peer)
            except SIPParseError as e:
                e.message = item
                self._malformed(e, peer)
                return
            self._run(self.on_request(item, peer))
        else:
            try:
                via = item.top_via
            except SIPParseError:
                via = None
            if via is None or not self._via_is_ours(via):
                self.stats.drop("response not for us")
                return
            self._run(self.on_response(item, peer))

    def _malformed(self, err: SIPParseError, peer: Peer) -> None:
        msg = err.message
        if not isinstance(msg, Request):
            self.stats.drop("malformed " + ("response" if msg is not None else "message"))
            return
        with contextlib.suppress(SIPParseError):
            self._stamp_via(msg, peer)
        self.reject(msg, err, peer)

    def reject(self, req: Request, err: SIPParseError, peer: Peer) -> None:
        """Answer a request the transport or the TU refused, or drop and count it."""
        answer = error_response(req, err)
        if answer is None:
            self.stats.drop("bad request, nothing to answer")
            return
        self.stats.rejected += 1
        self._run(self.send_response(answer, peer))

    def _stamp_via(self, req: Request, peer: Peer) -> None:
        """§18.2.1 and RFC 3581 §4: record where the request really came from."""
        via = req.top_via
        if via is None:
            raise SIPParseError("no Via header", header="Via")
        changed = False
        if not _same_host(via.host, peer.host):
            via.set_param("received", peer.host)
            changed = True
        if via.param("rport") == "":
            via.set_param("rport", str(peer.port))
            if via.param("received") is None:
                via.set_param("received", peer.host)
            changed = True
        if changed:
            req.pop_first("via")
            req.add("Via", str(via), top=True)

    def _via_is_ours(self, via: Via) -> bool:
        host, port = via.sent_by
        return _same_host(host, self.host) and port in self.ports.values()

    def _run(self, result: Awaitable[None] | None) -> None:
        if result is None or not asyncio.iscoroutine(result):
            return
        task = asyncio.ensure_future(result)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SIP handler failed", exc_info=task.exception())

    # --- sending ------------------------------------------------------------

    def via_for(self, transport: str, branch: str) -> Via:
        """Our Via for a request sent over transport (with rport, RFC 3581 §3)."""
        port = self.ports.get(transport) or self.ports.get("udp") or 5060
        return Via(transport.upper(), self.host, port, [("branch", branch), ("rport", None)])

    async def send_request(self, req: Request, peer: Peer) -> Peer:
        """Send req to peer; returns the peer actually used (TCP for large UDP requests).

        The caller has put our Via on top; its transport is rewritten if the
        §18.1.1 size rule moves the request to TCP.
        """
        data = req.to_bytes()
        if peer.transport == "udp" and len(data) > MTU_LIMIT and "tcp" in self.ports:
            via = req.top_via
            if via is not None:
                via.transport = "TCP"
                via.port = self.ports["tcp"]
                req.pop_first("via")
                req.add("Via", str(via), top=True)
                data = req.to_bytes()
            peer = Peer("tcp", peer.host, peer.port)
        await self._send(data, peer)
        return peer

    async def send_response(self, resp: Response, peer: Peer | None = None) -> None:
        """Send resp by its top Via (§18.2.2), on the request's connection when open."""
        via = resp.top_via
        if via is None:
            raise ValueError("a response needs a Via")
        transport = via.transport.lower()
        if peer is not None and peer.transport in STREAM_TRANSPORTS:
            conn = self._connections.get(peer)
            if conn is not None:
                conn.write(resp.to_bytes())
                self.stats.sent += 1
                return
        host, port = via.sent_by
        host = via.param("maddr") or via.param("received") or host
        rport = via.param("rport")
        if rport and transport == "udp":
            port = int(rport)  # RFC 3581 §4: back to the source port
        await self._send(resp.to_bytes(), Peer(transport, host, port))

    def send_nowait(self, msg: Request | Response, peer: Peer | None) -> bool:
        """Send at once when no connection must be opened; False means use the async path.

        Transactions send from inside timer and receive callbacks; UDP and
        open connections need no task, which keeps a busy server's event
        loop short.
        """
        if isinstance(msg, Request):
            if peer is None or peer.transport != "udp":
                return False
            data = msg.to_bytes()
            if len(data) > MTU_LIMIT and "tcp" in self.ports:
                return False
            self._sendto(data, peer)
            return True
        via = msg.top_via
        if via is None:
            return False
        if peer is not None and peer.transport in STREAM_TRANSPORTS:
            conn = self._connections.get(peer)
            if conn is None or conn.transport is None or conn.transport.is_closing():
                return False
            conn.write(msg.to_bytes())
            self.stats.sent += 1
            return True
        if via.transport.lower() != "udp":
            return False
        host, port = via.sent_by
        host = via.param("maddr") or via.param("received") or host
        rport = via.param("rport")
        if rport:
            port = int(rport)
        self._sendto(msg.to_bytes(), Peer("udp", host, port))
        return True

    def _sendto(self, data: bytes, peer: Peer) -> None:
        if self._udp is None or self._udp.transport is None:
            raise ConnectionError("no UDP socket")
        if len(data) > MAX_MESSAGE:
            raise ValueError("message too large for UDP")
        self._udp.transport.sendto(data, (peer.host.strip("[]"), peer.port))
        self.stats.sent += 1

    async def _send(self, data: bytes, peer: Peer) -> None:
        if peer.transport == "udp":
            self._sendto(data, peer)
            return
        conn = self._connections.get(peer) or await self._connect(peer)
        conn.write(data)
        self.stats.sent += 1

    async def _connect(self, peer: Peer) -> _Stream:
        loop = asyncio.get_running_loop()
        context = None
        server_hostname = None
        if peer.transport == "tls":
            context = self.client_ssl or ssl.create_default_context()
            server_hostname = None if _is_ip(peer.host) else peer.host
            if _is_ip(peer.host) and context.check_hostname:
                server_hostname = peer.host.strip("[]")
        _, proto = await loop.create_connection(
            lambda: _Stream(self, peer.transport), peer.host.strip("[]"), peer.port,
            ssl=context, server_hostname=server_hostname,
        )
        assert isinstance(proto, _Stream)
        # The connection is also known under the address we dialled.
        self._connections[peer] = proto
        return proto

    def connection(self, peer: Peer) -> _Stream | None:
        """The open stream connection to peer, if any (used by tests and the UA)."""
        return self._connections.get(peer)
