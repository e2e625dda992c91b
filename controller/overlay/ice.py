"""ICE overlay links for RELOAD Attach (RFC 6940 §6.5.1, RFC 8445).

An Attach request and its answer carry each side's ICE parameters
(``AttachReqAns``: ufrag, password, role, candidates). :class:`IceAgent`
gathers ours with ``aioice`` (host and server-reflexive candidates, STUN
against a configured server, RFC 6940 §6.5.1.4-6.5.1.5), turns them into the
codec's ``IceCandidate`` values and back, and runs the connectivity checks
(full ICE, RFC 6940 §6.5.1.3; the Attach sender is controlling, §6.5.1.9).
The result is an :class:`IceLink` over the selected UDP candidate pair.

The link carries RELOAD ``FramedMessage``s (RFC 6940 §6.6.2), one frame per
datagram, with Simple Reliability (§6.6.3): every DATA frame is acknowledged
by an ACK frame, and the stop-and-wait sender of §6.6.3.1 retransmits an
unacknowledged message with a new sequence number after RTO, doubling the
wait each time, and declares the link failed after five transmissions.
An idle link still notices a dead peer: aioice's consent freshness checks
(RFC 7675, STUN every ~5 s, given up after 6 misses) are the STUN keepalives
of RFC 6940 §6.5.1.10.3, and their failure ends the link.

Not encrypted. RFC 6940 runs DTLS on the selected pair (§6.6.4, DTLS/UDP
with SR). CPython's ``ssl`` module has no DTLS and no maintained DTLS binding
is available to this project, so the frames travel in clear UDP. What they
carry is still protected end to end: every RELOAD message is signed by its
originator and checked by the receiver (RFC 6940 §13.3, ``security.py``), so
a path attacker can read and drop messages but cannot forge or alter them.
The candidates still announce overlay link type DTLS-UDP-SR (1), the only ICE
link type RFC 6940 defines; two sipmesh peers agree on the clear variant.

The reliability logic is sans-I/O (:class:`SimpleReliability`: datagrams and
the current time in, datagrams and the next timer out) so that tests move
time instead of sleeping; :class:`IceLink` is the thin asyncio adapter.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import aioice

from sipmesh.overlay.link import LinkError
from sipmesh.proto.reload import (
    AckFrame,
    DataFrame,
    ReloadDecodeError,
    decode_frame,
    encode_ack_frame,
    encode_data_frame,
)
from sipmesh.proto.reload_topology import (
    ADDR_IPV4,
    ADDR_IPV6,
    CAND_HOST,
    CAND_RELAY,
    CAND_SRFLX,
    LINK_DTLS_UDP_SR,
    MAX_CANDIDATES,
    AttachReqAns,
    IceCandidate,
    IpAddressPort,
)

log = logging.getLogger(__name__)

# RFC 6940 §6.6.3.1: the static RTO default and "a total of 5 requests".
RTO_DEFAULT = 0.5
MAX_TRANSMISSIONS = 5
# §6.6.3.1: "A sender MUST wait 10 ms between receipt of an ACK and
# transmission of the next message."
ACK_GAP = 0.010
# One datagram must cross the path without IP fragmentation (RFC 8085 §3.2).
# 1232 = the IPv6 minimum MTU of 1280 (RFC 8200 §5) less 40 bytes of IPv6 and
# 8 of UDP header; the same figure DNS settled on for its UDP payloads.
MAX_DATAGRAM = 1232
DATA_FRAME_HEADER = 8
# send() never blocks; past this many unacknowledged messages writing_paused
# is True and drain() waits (a stop-and-wait link moves one message per RTT).
QUEUE_HIGH_WATER = 64
# §6.6.2: the receiver keeps the 32 most recent sequence numbers for its ACKs.
_ACK_WINDOW = 32
_SEQ_MASK = 0xFFFFFFFF

ROLE_PASSIVE = b"passive"
ROLE_ACTIVE = b"active"

_CAND_TYPES = {"host": CAND_HOST, "srflx": CAND_SRFLX, "relay": CAND_RELAY}
_CAND_NAMES = {v: k for k, v in _CAND_TYPES.items()}
# RFC 8839 §5.1 (ice-char = ALPHA / DIGIT / "+" / "/"): foundation 1*32,
# ufrag 4*256 and password 22*256 of them.
_ICE_CHARS = re.compile(rb"[A-Za-z0-9+/]+")


class IceError(LinkError):
    """Anything that keeps an ICE link from being set up or kept: no candidates,
    bad ICE parameters from the peer, failed checks, timeout, a message too
    large for one datagram, a link that stopped acknowledging."""


# ---------------------------------------------------------------- candidates


def _addr_port(host: str, port: int) -> IpAddressPort:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as exc:
        raise IceError(f"candidate address {host!r} is not an IP address") from exc
    if not 0 <= port <= 0xFFFF:
        raise IceError(f"candidate port {port} out of range")
    return IpAddressPort(ADDR_IPV4 if ip.version == 4 else ADDR_IPV6, ip.packed, port)


def _host_port(ap: IpAddressPort) -> tuple[str, int]:
    if ap.type not in (ADDR_IPV4, ADDR_IPV6):
        raise IceError(f"address type {ap.type} is neither IPv4 nor IPv6")
    return str(ipaddress.ip_address(ap.addr)), ap.port


def candidate_to_reload(candidate: aioice.Candidate) -> IceCandidate:
    """An aioice candidate as an IceCandidate (RFC 6940 §6.5.1.1: the SDP
    candidate fields in binary, without the component ID, which is always 1)."""
    kind = _CAND_TYPES.get(candidate.type)
    if kind is None:
        # Peer-reflexive candidates are learnt during the checks, never signalled.
        raise IceError(f"candidate type {candidate.type!r} cannot be sent in an Attach")
    if candidate.transport.lower() != "udp":
        raise IceError(f"candidate transport {candidate.transport!r} is not UDP")
    rel = None
    if kind != CAND_HOST:
        if candidate.related_address is None or candidate.related_port is None:
            raise IceError(f"{candidate.type} candidate without a related address")
        rel = _addr_port(candidate.related_address, candidate.related_port)
    return IceCandidate(
        _addr_port(candidate.host, candidate.port),
        LINK_DTLS_UDP_SR,
        candidate.foundation.encode("ascii"),
        candidate.priority,
        kind,
        rel,
    )


def candidate_from_reload(candidate: IceCandidate) -> aioice.Candidate:
    """An IceCandidate from a peer's Attach as an aioice candidate (component 1).

    Raises IceError for what full ICE over UDP cannot use: another overlay link
    type (the No-ICE ones, §6.5.1.11), non-IP addresses, a foundation that is
    not 1 to 32 ice-chars (RFC 8839 §5.1)."""
    if candidate.overlay_link != LINK_DTLS_UDP_SR:
        raise IceError(f"overlay link type {candidate.overlay_link} is not an ICE link type")
    f = candidate.foundation
    if not (1 <= len(f) <= 32 and _ICE_CHARS.fullmatch(f)):
        raise IceError(f"foundation {f!r} is not 1 to 32 ice-chars")
    host, port = _host_port(candidate.addr_port)
    rel_host = rel_port = None
    if candidate.rel_addr_port is not None:
        rel_host, rel_port = _host_port(candidate.rel_addr_port)
    return aioice.Candidate(
        foundation=f.decode("ascii"),
        component=1,
        transport="udp",
        priority=candidate.priority,
        host=host,
        port=port,
        type=_CAND_NAMES[candidate.type],
        related_address=rel_host,
        related_port=rel_port,
    )


def _ice_string(value: bytes, what: str, low: int) -> str:
    if not (low <= len(value) <= 256 and _ICE_CHARS.fullmatch(value)):
        raise IceError(f"remote {what} is not {low} to 256 ice-chars (RFC 8839 §5.4)")
    return value.decode("ascii")


# ---------------------------------------------------------------- agent


class IceAgent:
    """One ICE agent for one Attach (RFC 6940 §6.5.1.3: a single stream with a
    single component). ``controlling`` is True for the node that sends the
    Attach request (§6.5.1.9); ``stun_server`` is where server-reflexive
    candidates are learnt (§6.5.1.4)."""

    def __init__(self, controlling: bool, stun_server: tuple[str, int] | None = None) -> None:
        self.controlling = controlling
        self._conn = aioice.Connection(ice_controlling=controlling, stun_server=stun_server)
        self._gathered = False

    @property
    def role(self) -> bytes:
        """§6.5.1.1: "passive" for the offerer (Attach request), "active" for the answerer."""
        return ROLE_PASSIVE if self.controlling else ROLE_ACTIVE

    async def gather(self, send_update: bool = False) -> AttachReqAns:
        """Gather candidates (§6.5.1.5) and return our AttachReqAns body.

        At most MAX_CANDIDATES (the codec's decode limit) of the highest priority
        are offered, so that the peer can decode what we send."""
        await self._conn.gather_candidates()
        self._gathered = True
        found = []
        for c in sorted(self._conn.local_candidates, key=lambda c: -c.priority):
            try:
                found.append(candidate_to_reload(c))
            except IceError as exc:
                log.info("local candidate %s left out: %s", c, exc)
        if not found:
            raise IceError("no ICE candidates: this host has no non-loopback address")
        return AttachReqAns(
            self._conn.local_username.encode("ascii"),
            self._conn.local_password.encode("ascii"),
            self.role,
            found[:MAX_CANDIDATES],
            send_update,
        )

    async def connect(
        self,
        remote: AttachReqAns,
        *,
        timeout: float,
        remote_node_id: bytes | None = None,
        on_message: Callable[[IceLink, bytes], None] | None = None,
        on_closed: Callable[[IceLink, Exception | None], None] | None = None,
        rto: float = RTO_DEFAULT,
        max_transmissions: int = MAX_TRANSMISSIONS,
    ) -> IceLink:
        """Run the connectivity checks against the peer's AttachReqAns and return
        the link over the selected pair (RFC 8445 §7-8).

        Remote candidates that full ICE over UDP cannot use are skipped; none
        left, a role that is not the opposite of ours, bad credentials, failed
        checks or ``timeout`` seconds passing raise IceError and release the
        sockets."""
        conn = self._conn
        try:
            expected = ROLE_ACTIVE if self.controlling else ROLE_PASSIVE
            if remote.role != expected:
                raise IceError(
                    f"remote role {remote.role!r} does not answer ours ({self.role!r}, §6.5.1.1)"
                )
            if not self._gathered:
                raise IceError("gather() must run before connect()")
            conn.remote_username = _ice_string(remote.ufrag, "ufrag", 4)
            conn.remote_password = _ice_string(remote.password, "password", 22)
            usable = 0
            for rc in remote.candidates:
                try:
                    cand = candidate_from_reload(rc)
                except IceError as exc:
                    log.info("remote candidate skipped: %s", exc)
                    continue
                await conn.add_remote_candidate(cand)
                usable += 1
            if not usable:
                raise IceError("the peer offered no usable ICE candidate")
            await conn.add_remote_candidate(None)
            try:
                await asyncio.wait_for(conn.connect(), timeout)
            except TimeoutError as exc:
                raise IceError(f"ICE checks did not conclude within {timeout} s") from exc
            except ConnectionError as exc:
                raise IceError(f"ICE checks failed: {exc}") from exc
        except BaseException:
            await conn.close()
            raise
        # aioice has no public accessor for the selected pair.
        pair = getattr(conn, "_nominated", {}).get(1)
        return IceLink(
            conn,
            local_address=getattr(pair, "local_addr", None),
            remote_address=getattr(pair, "remote_addr", None),
            remote_node_id=remote_node_id,
            on_message=on_message,
            on_closed=on_closed,
            rto=rto,
            max_transmissions=max_transmissions,
        )

    async def close(self) -> None:
        """Release the sockets when the Attach is abandoned before a link exists."""
        await self._conn.close()


# ---------------------------------------------------------------- reliability


class SimpleReliability:
    """RELOAD framing and Simple Reliability for one link, sans-I/O
    (RFC 6940 §6.6.2, §6.6.3.1 stop-and-wait sender).

    ``send`` queues a message; ``receive_datagram(data, now)`` returns the
    messages delivered; ``datagrams_to_send(now)`` gives what to put on the
    wire; ``get_timer()`` says when ``handle_timer(now)`` must next run.
    ``failure`` is set (an IceError) once a message went unacknowledged after
    ``max_transmissions``; nothing is sent after that.

    Each retransmission takes a new sequence number (§6.6.3.1), so when only
    the ACK was lost the receiver gets the message twice: RELOAD's transaction
    layer absorbs the duplicate (requests are matched by transaction ID).
    ACK bit numbering: bit N-M of ``received`` is ``1 << (N - M)``.
    """

    def __init__(
        self,
        *,
        rto: float = RTO_DEFAULT,
        max_transmissions: int = MAX_TRANSMISSIONS,
        max_datagram: int = MAX_DATAGRAM,
    ) -> None:
        if rto <= 0 or max_transmissions < 1 or max_datagram <= DATA_FRAME_HEADER:
            raise ValueError("rto, max_transmissions and max_datagram must be positive")
        self.rto = rto
        self.max_transmissions = max_transmissions
        self.max_message = max_datagram - DATA_FRAME_HEADER
        self.failure: IceError | None = None
        self.frames_invalid = 0
        self._next_seq = 0
        self._queue: deque[bytes] = deque()
        self._current: bytes | None = None
        self._current_seqs: list[int] = []
        self._transmissions = 0
        self._rto_at = 0.0
        self._interval = rto
        self._ready_at = 0.0
        self._out: list[bytes] = []
        self._recent: deque[int] = deque(maxlen=_ACK_WINDOW)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing waiting for its ACK."""
        return self._current is None and not self._queue

    @property
    def outstanding(self) -> int:
        """Messages queued or waiting for their ACK."""
        return len(self._queue) + (self._current is not None)

    def send(self, message: bytes) -> None:
        """Queue one RELOAD message; IceError if it cannot fit one datagram."""
        if len(message) > self.max_message:
            raise IceError(
                f"message of {len(message)} bytes exceeds the {self.max_message}-byte limit of "
                "one ICE link datagram; fragment it first (RFC 6940 §6.7)"
            )
        if self.failure is not None:
            raise IceError(f"link failed: {self.failure}")
        self._queue.append(bytes(message))

    def receive_datagram(self, data: bytes, now: float) -> list[bytes]:
        """Handle one datagram; the RELOAD messages it delivers (zero or one).

        A datagram that is not one whole frame is counted in ``frames_invalid``
        and dropped: on UDP it may be stray traffic, not a broken stream."""
        try:
            frame = decode_frame(data)
        except ReloadDecodeError:
            self.frames_invalid += 1
            return []
        if isinstance(frame, DataFrame):
            n = frame.sequence
            received = 0
            for m in self._recent:
                d = (n - m) & _SEQ_MASK
                if 0 < d < _ACK_WINDOW:
                    received |= 1 << d
            self._recent.append(n)
            # §6.6.2: the receiver SHOULD acknowledge at once.
            self._out.append(encode_ack_frame(n, received))
            return [bytes(frame.message)]
        assert isinstance(frame, AckFrame)
        if self._current is not None and self._acknowledges(frame):
            self._current = None
            self._current_seqs = []
            self._ready_at = now + ACK_GAP
        return []

    def _acknowledges(self, ack: AckFrame) -> bool:
        for s in self._current_seqs:
            d = (ack.sequence - s) & _SEQ_MASK
            if d == 0 or (d < _ACK_WINDOW and ack.received & (1 << d)):
                return True
        return False

    def _transmit(self) -> None:
        assert self._current is not None
        seq = self._next_seq
        self._next_seq = (seq + 1) & _SEQ_MASK
        self._current_seqs.append(seq)
        self._transmissions += 1
        self._out.append(encode_data_frame(seq, self._current))

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """The datagrams due now: ACKs, and the next message once the previous
        one is acknowledged and ACK_GAP has passed."""
        if (
            self.failure is None
            and self._current is None
            and self._queue
            and now >= self._ready_at
        ):
            self._current = self._queue.popleft()
            self._transmissions = 0
            self._interval = self.rto
            self._rto_at = now + self.rto
            self._transmit()
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        """When handle_timer must run next (RTO, or the end of ACK_GAP), or None."""
        if self.failure is not None:
            return None
        if self._current is not None:
            return self._rto_at
        if self._queue:
            return self._ready_at
        return None

    def handle_timer(self, now: float) -> None:
        """Retransmit on RTO with the wait doubled (§6.6.3.1); fail after the budget."""
        if self.failure is not None or self._current is None or now < self._rto_at:
            return
        if self._transmissions >= self.max_transmissions:
            self.failure = IceError(
                f"no ACK after {self._transmissions} transmissions (RFC 6940 §6.6.3.1)"
            )
            self._current = None
            self._queue.clear()
            return
        self._interval *= 2
        self._rto_at = now + self._interval
        self._transmit()


# ---------------------------------------------------------------- link


class DatagramChannel(Protocol):
    """What IceLink needs below it: aioice.Connection, or a plain UDP pair in tests.
    ``recv`` raises ConnectionError once the channel is gone."""

    def send(self, data: bytes) -> Awaitable[None]: ...

    def recv(self) -> Awaitable[bytes]: ...

    def close(self) -> Awaitable[None]: ...


class IceLink:
    """A RELOAD overlay link over the selected ICE pair: one FramedMessage per
    UDP datagram with Simple Reliability (RFC 6940 §6.6.3), not encrypted (see
    the module docstring).

    Same surface as the TCP/TLS link (``link.Link``): ``send(message)`` (never
    blocks; ``writing_paused``/``drain()`` for backpressure), callbacks
    ``on_message(link, message)`` and ``on_closed(link, exc)`` (exc None after
    close()/abort(), an IceError when the peer stopped acknowledging or the
    channel was lost; called once), ``close()``, ``abort()``, ``closed``,
    ``wait_closed()``, ``remote_node_id``, ``local_address``/``remote_address``
    (the selected pair), ``outstanding`` and the frame/byte counters. Set the
    callbacks before the next ``await`` after the link is made, or pass them
    to ``IceAgent.connect``.
    """

    def __init__(
        self,
        channel: DatagramChannel,
        *,
        local_address: tuple[str, int] | None = None,
        remote_address: tuple[str, int] | None = None,
        remote_node_id: bytes | None = None,
        on_message: Callable[[IceLink, bytes], None] | None = None,
        on_closed: Callable[[IceLink, Exception | None], None] | None = None,
        rto: float = RTO_DEFAULT,
        max_transmissions: int = MAX_TRANSMISSIONS,
        max_datagram: int = MAX_DATAGRAM,
    ) -> None:
        self.local_address = local_address
        self.remote_address = remote_address
        self.remote_node_id = remote_node_id
        self.on_message = on_message
        self.on_closed = on_closed
        self.frames_sent = 0
        self.frames_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self._channel = channel
        self._sr = SimpleReliability(
            rto=rto, max_transmissions=max_transmissions, max_datagram=max_datagram
        )
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = False
        self._done = asyncio.Event()
        self._drained = asyncio.Event()
        self._reader = asyncio.create_task(self._read_loop())
        self._timer = asyncio.create_task(self._timer_loop())
        self._closer: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        """True once the link is closing, closed or failed; send() then raises IceError."""
        return self._closed or self._closing

    @property
    def outstanding(self) -> int:
        """Messages queued or waiting for their ACK."""
        return self._sr.outstanding

    @property
    def writing_paused(self) -> bool:
        """True while more than QUEUE_HIGH_WATER messages are outstanding."""
        return self._sr.outstanding > QUEUE_HIGH_WATER

    async def drain(self) -> None:
        """Wait until writing is no longer paused (or the link ended)."""
        while self.writing_paused and not self._closed:
            self._drained.clear()
            await self._drained.wait()

    @property
    def max_message(self) -> int:
        """The largest RELOAD message one datagram carries."""
        return self._sr.max_message

    def send(self, message: bytes) -> None:
        """Queue one RELOAD message; IceError if closed or larger than max_message."""
        if self.closed:
            raise IceError("link is closed")
        self._sr.send(message)
        self._wake.set()

    def close(self) -> None:
        """Close once the queued messages are acknowledged (or the link fails)."""
        if self.closed:
            return
        self._closing = True
        self._wake.set()

    def abort(self) -> None:
        """Close at once, dropping what is queued."""
        self._finish(None)

    async def wait_closed(self) -> None:
        """Wait until the link is closed and its sockets are released."""
        await self._done.wait()

    async def _flush(self) -> None:
        for d in self._sr.datagrams_to_send(self._loop.time()):
            try:
                await self._channel.send(d)
            except (ConnectionError, OSError) as exc:
                self._finish(IceError(f"ICE link lost while sending: {exc}"))
                return
            self.frames_sent += 1
            self.bytes_sent += len(d)

    async def _read_loop(self) -> None:
        while True:
            try:
                data = await self._channel.recv()
            except (ConnectionError, OSError) as exc:
                self._finish(IceError(f"ICE link lost: {exc}"))
                return
            self.frames_received += 1
            self.bytes_received += len(data)
            messages = self._sr.receive_datagram(data, self._loop.time())
            await self._flush()
            if self._closed:
                return
            self._wake.set()
            for m in messages:
                if self._closed:
                    return
                if self.on_message is not None:
                    try:
                        self.on_message(self, m)
                    except Exception:
                        log.exception("on_message callback failed")

    async def _timer_loop(self) -> None:
        """Wakes for the RTO timer (RFC 6940 §6.6.3.1) and for queued sends."""
        while True:
            self._sr.handle_timer(self._loop.time())
            await self._flush()
            if self._closed:
                return
            if self._sr.failure is not None:
                self._finish(self._sr.failure)
                return
            if self._closing and self._sr.idle:
                self._finish(None)
                return
            if not self.writing_paused:
                self._drained.set()
            self._wake.clear()
            at = self._sr.get_timer()
            try:
                if at is None:
                    await self._wake.wait()
                else:
                    delay = max(0.0, at - self._loop.time())
                    await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass

    def _finish(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._drained.set()
        current = asyncio.current_task()
        for t in (self._reader, self._timer):
            if t is not current:
                t.cancel()
        self._closer = asyncio.create_task(self._close_channel())
        if self.on_closed is not None:
            try:
                self.on_closed(self, exc)
            except Exception:
                log.exception("on_closed callback failed")

    async def _close_channel(self) -> None:
        try:
            await self._channel.close()
        finally:
            self._done.set()
