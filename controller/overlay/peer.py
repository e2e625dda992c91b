"""A RELOAD peer on a CHORD-RELOAD ring (RFC 6940 §6 and §10).

The peer glues the parts together: links (``link.py``) carry framed
messages; every message is signed and checked (``security.py``, §6.3.4);
the Chord table (``chord.py``) picks next hops; the store (``storage.py``)
keeps what this peer is responsible for and the replicas it holds.

Routing is symmetric recursive (§6.2): a forwarding peer appends the Node-ID
it received a message from to the via list (§6.1.2), and the responder
reverses the via list into the response's destination list (§6.2.2).
Forwarding peers look only at the forwarding header and copy the rest of
the message; only the final destination decodes and verifies it (§6.1).

Failure handling is driven by the link layer: when a link closes (reset,
ack timeout, keepalive), the node is removed from the routing table at once
(§10.7.1) and requests in flight over that link, ours or forwarded, are
rerouted on the spot rather than after the end-to-end reliability timer
(§6.2.1), which stays as the last resort.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

from sipmesh.overlay import link as links
from sipmesh.overlay.chord import ChordTable
from sipmesh.overlay.ids import ID_LEN, distance, in_half_open, resource_id, to_bytes, to_int
from sipmesh.overlay.security import Identity, SecurityError, Verifier
from sipmesh.overlay.settings import OverlaySettings
from sipmesh.overlay.storage import StorageError, Store
from sipmesh.proto import reload as rl
from sipmesh.proto import reload_storage as rs
from sipmesh.proto import reload_topology as rt

log = logging.getLogger("sipmesh.overlay")

WILDCARD = b"\xff" * ID_LEN
MAX_TRANSMISSIONS = 5  # §6.2.1: up to 4 retransmissions


class OverlayError(Exception):
    """A request failed: ``code`` is the RELOAD error code (§14.9) the peer
    answered with, or Error_Request_Timeout when nobody answered."""

    def __init__(self, code: int, reason: str = "", info: bytes = b""):
        super().__init__(reason or f"RELOAD error {code}")
        self.code = code
        self.reason = reason
        self.info = info


class Response:
    """An answer to one of our requests: code, body, the responder's Node-ID
    and the number of overlay hops the request took."""

    __slots__ = ("code", "body", "responder", "hops", "message")

    def __init__(self, code: int, body: bytes, responder: bytes, hops: int, message):
        self.code = code
        self.body = body
        self.responder = responder
        self.hops = hops
        self.message = message


class _Pending:
    __slots__ = ("future", "dests", "code", "body", "link", "sent", "timer", "extra", "via_link")

    def __init__(self, future, dests, code, body, extra, via_link):
        self.future = future
        self.dests = dests
        self.code = code
        self.body = body
        self.extra = extra
        self.via_link = via_link
        self.link = None
        self.sent = 0
        self.timer = None


def _dest_int(d: rl.Destination) -> int | None:
    if d.type in (rl.DEST_NODE, rl.DEST_RESOURCE) and len(d.value) == ID_LEN:
        return int.from_bytes(d.value, "big")
    return None


class Peer:
    """One RELOAD peer (§3.2): routes, stores and answers for its range."""

    def __init__(
        self,
        identity: Identity,
        settings: OverlaySettings,
        store: Store,
        *,
        verifier: Verifier,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: tuple[Any, Any] | None = None,
        ack_timeout: float = 5.0,
        on_event: Callable[[str, dict], None] | None = None,
    ):
        self.identity = identity
        self.node_id = bytes(identity.node_id)
        self.own = to_int(self.node_id)
        self.settings = settings
        self.store = store
        self.verifier = verifier
        self.host = host
        self.port = port
        self.tls = tls
        self.ack_timeout = ack_timeout
        self.on_event = on_event
        self.table = ChordTable(self.own)
        self.links: dict[int, Any] = {}
        self._unbound: set = set()
        self._pending: dict[int, _Pending] = {}
        self._forwarded: dict[int, tuple] = {}
        self._answers: dict[int, tuple] = {}
        self._attaching: dict[int, asyncio.Future] = {}
        self._send_update_to: set[int] = set()
        self._replicated_to: tuple[int, ...] = ()
        self._range_low: int | None = None
        self._tasks: set[asyncio.Task] = set()
        self._announce_scheduled = False
        self._update_waiters: dict[int, asyncio.Future] = {}
        self._full_updates: dict[int, Any] = {}
        self._unneeded: set[int] = set()
        self._listener = None
        self._loop_task: asyncio.Task | None = None
        self._started = time.monotonic()
        self._finger_cursor = 0
        self._cert = rl.GenericCertificate(0, identity.cert_der)
        self._signer = identity.signer_identity()
        self._signer_bytes = self._signer.encode()
        self._overlay = settings.hash
        self._models = settings.models()
        self.joined = False
        self.stopped = False
        self.stats = {
            "forwarded": 0,
            "delivered": 0,
            "rerouted": 0,
            "dropped": 0,
            "closed_link_bytes": 0,
        }

    # ------------------------------------------------------------ lifecycle

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> None:
        """Listen for links (§6.6) and start the stabilisation loop (§10.7.4)."""
        self._listener = await links.listen(
            self.host,
            self.port,
            ssl=self.tls[0] if self.tls else None,
            on_link=self._on_link,
            on_message=self._on_message,
            on_closed=self._on_link_closed,
            ack_timeout=self.ack_timeout,
        )
        self.port = self._listener.port
        self._loop_task = asyncio.get_running_loop().create_task(self._stabilise_loop())

    async def join(self, bootstrap: list[tuple[str, int]] = (), *, first: bool = False) -> None:
        """Join the ring (§10.5) through a bootstrap peer (§11.4); with
        ``first`` and no reachable bootstrap, start a ring of one (§6.4.2.1
        asks for an explicit setting for that)."""
        for host, port in bootstrap:
            if (host, port) == (self.host, self.port):
                continue
            try:
                await self._join_via(host, port)
                self.joined = True
                self._event("joined", {"via": f"{host}:{port}"})
                return
            except (TimeoutError, OSError, OverlayError, links.LinkError) as e:
                log.info("join via %s:%d failed: %s", host, port, e)
        if first:
            self.joined = True
            self._event("joined", {"via": "first"})
            return
        raise OverlayError(rl.ERROR_NOT_FOUND, "no bootstrap peer reachable")

    async def stop(self) -> None:
        """Leave gracefully (§10.9): Leave to every neighbour, then close."""
        if self.stopped:
            return
        if self.joined:
            succ = [to_bytes(n) for n in self.table.successors]
            pred = [to_bytes(n) for n in self.table.predecessors]
            reqs = []
            for n in self.table.neighbours():
                data = (
                    rt.ChordLeaveData(rt.LEAVE_FROM_PRED, predecessors=pred)
                    if n in self.table.successors
                    else rt.ChordLeaveData(rt.LEAVE_FROM_SUCC, successors=succ)
                )
                body = rt.LeaveReq(self.node_id, data.encode()).encode()
                reqs.append(self._request([rl.Destination.node(to_bytes(n))], rl.LEAVE_REQ, body))
            if reqs:
                await asyncio.wait(
                    [asyncio.ensure_future(r) for r in reqs],
                    timeout=self.settings.reliability_timer,
                )
        self._shutdown(abort=False)
        if self._listener is not None:
            await self._listener.wait_closed()

    def kill(self) -> None:
        """Stop abruptly, as a crash would: no Leave, links reset."""
        self._shutdown(abort=True)

    def _shutdown(self, abort: bool) -> None:
        self.stopped = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self._listener is not None:
            self._listener.close()
        for ln in list(self.links.values()) + list(self._unbound):
            ln.abort() if abort else ln.close()
        for p in self._pending.values():
            if p.timer:
                p.timer.cancel()
            if not p.future.done():
                p.future.set_exception(OverlayError(rl.ERROR_REQUEST_TIMEOUT, "peer stopped"))
        self._pending.clear()
        with contextlib.suppress(Exception):
            self.store.close()

    # ------------------------------------------------------------ helpers

    def _event(self, name: str, data: dict) -> None:
        if self.on_event is not None:
            self.on_event(name, data)

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._task_done)
        return t

    def _task_done(self, t: asyncio.Task) -> None:
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            e = t.exception()
            if not isinstance(e, (OverlayError, OSError, links.LinkError, asyncio.TimeoutError)):
                log.warning("peer task failed: %r", e, exc_info=e)

    def _candidate(self) -> rt.IceCandidate:
        ip = ipaddress.ip_address(self.host)
        t = rt.ADDR_IPV4 if ip.version == 4 else rt.ADDR_IPV6
        addr = rt.IpAddressPort(t, ip.packed, self.port)
        return rt.IceCandidate(addr, rt.LINK_TLS_TCP_FH_NO_ICE, b"1", 1, rt.CAND_HOST)

    def uptime(self) -> int:
        return int(time.monotonic() - self._started)

    # ------------------------------------------------------------ messages out

    def _encode(self, dests, code: int, body: bytes, tid: int, extra=()) -> bytes:
        contents = rl.MessageContents(code, body).encode()
        sig_input = rl.signed_bytes(self._overlay, tid, contents, self._signer_bytes)
        value = self.identity.signing_key.sign(sig_input).signature
        sec = rl.SecurityBlock(rl.Signature(self._signer, value), [self._cert, *extra]).encode()
        hdr = rl.ForwardingHeader(
            self._overlay,
            tid,
            destinations=dests,
            configuration_sequence=self.settings.configuration_sequence,
            ttl=self.settings.initial_ttl,
        )
        hb = hdr.encode(0)
        total = len(hb) + len(contents) + len(sec)
        return b"".join((hb[:16], total.to_bytes(4, "big"), hb[20:], contents, sec))

    def _route(self, target: int) -> Any | None:
        ln = self.links.get(target)
        if ln is not None:
            return ln
        nxt = self.table.next_hop(target)
        return self.links.get(nxt) if nxt is not None else None

    def _request(
        self,
        dests: list[rl.Destination],
        code: int,
        body: bytes,
        *,
        extra_certs=(),
        link=None,
    ) -> asyncio.Future:
        """Send a request (§6.2.1) and return a future of its Response.

        Retransmitted with the same transaction id after the reliability
        timer, 5 transmissions in all; sent again at once through another
        next hop when the link it went out on fails."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        tid = random.getrandbits(64)
        while tid in self._pending:
            tid = random.getrandbits(64)
        p = _Pending(fut, list(dests), code, body, tuple(extra_certs), link)
        self._pending[tid] = p
        self._transmit(tid, p)
        return fut

    def _transmit(self, tid: int, p: _Pending) -> None:
        if p.future.done():
            self._pending.pop(tid, None)
            return
        if p.sent >= MAX_TRANSMISSIONS:
            self._pending.pop(tid, None)
            p.future.set_exception(OverlayError(rl.ERROR_REQUEST_TIMEOUT, "no response"))
            return
        p.sent += 1
        first = p.dests[0]
        target = _dest_int(first)
        if p.via_link is not None:
            if p.via_link.closed:
                self._pending.pop(tid, None)
                p.future.set_exception(OverlayError(rl.ERROR_REQUEST_TIMEOUT, "link closed"))
                return
            ln = p.via_link
        elif target is None:
            ln = None
        else:
            if first.type == rl.DEST_NODE and target == self.own and len(p.dests) == 1:
                ln = "local"
            elif first.type == rl.DEST_RESOURCE and self.table.responsible(target):
                ln = "local"
            else:
                ln = self._route(target)
        loop = asyncio.get_running_loop()
        p.timer = loop.call_later(self.settings.reliability_timer, self._transmit, tid, p)
        if ln == "local":
            p.link = None
            loop.call_soon(self._local_request, tid, p)
            return
        if ln is None:
            p.link = None
            return
        p.link = ln
        data = self._encode(p.dests, p.code, p.body, tid, p.extra)
        try:
            ln.send(data)
        except links.LinkError:
            pass

    def _local_request(self, tid: int, p: _Pending) -> None:
        """A request for a range this peer owns: answered without the network."""
        if p.future.done():
            return
        data = self._encode(p.dests, p.code, p.body, tid, p.extra)
        msg = rl.decode_message(data)
        try:
            code, body, after, extra = self._dispatch(msg, self.own, self.own)
        except OverlayError as e:
            code, body, after = rl.ERROR, _error_body(e), None
            extra = ()
        if extra:
            msg.security.certificates.extend(extra)
        self._pending.pop(tid, None)
        if p.timer:
            p.timer.cancel()
        if code == rl.ERROR:
            err = rl.decode_error(body)
            p.future.set_exception(OverlayError(err.error_code, "", err.error_info))
        else:
            p.future.set_result(Response(code, body, self.node_id, 0, msg))
        if after is not None:
            after()

    async def request(self, dests: list[rl.Destination], code: int, body: bytes, **kw) -> Response:
        """Send a request and wait for the answer; raise OverlayError on an
        Error response or when every transmission went unanswered."""
        return await self._request(dests, code, body, **kw)

    # ------------------------------------------------------------ links

    def _on_link(self, link) -> None:
        rid = getattr(link, "remote_node_id", None)
        if rid is not None and self.tls is not None:
            self._bind(link, to_int(rid))
        else:
            self._unbound.add(link)

    def _bind(self, link, node: int) -> None:
        """Put a link in the Connection Table under the Node-ID it proved."""
        self._unbound.discard(link)
        link.remote_node_id = to_bytes(node)
        old = self.links.get(node)
        if old is not None and old is not link and not old.closed:
            # Both sides attached at once: keep the link the smaller Node-ID opened.
            keep_new = getattr(link, "initiated", False) == (self.own < node)
            if not keep_new:
                self._unbound.add(link)
                link.remote_node_id = None
                link.close()
                return
            self._unbound.add(old)
            old.remote_node_id = None
            old.close()
        self.links[node] = link
        if node in self._send_update_to:
            self._send_update_to.discard(node)
            self._send_update(node, rt.CHORD_FULL)

    def _on_link_closed(self, link, exc) -> None:
        self._unbound.discard(link)
        self.stats["closed_link_bytes"] += link.bytes_sent
        rid = link.remote_node_id
        if rid is None:
            self._reroute(link)
            return
        node = to_int(rid)
        if self.links.get(node) is link:
            del self.links[node]
            if not self.stopped:
                self._event("link-lost", {"node": rid.hex(), "error": str(exc or "")})
                self._node_gone(node)
        self._reroute(link)

    def _node_gone(self, node: int) -> None:
        """§10.7.1 / 10.7.2: drop the node and repair."""
        if self.table.remove(node):
            self._table_changed()

    def _reroute(self, link) -> None:
        """Requests in flight over a failed link take another path now."""
        if self.stopped:
            return
        for tid, p in list(self._pending.items()):
            if p.link is link and not p.future.done():
                if p.timer:
                    p.timer.cancel()
                p.sent = max(0, p.sent - 1)
                self.stats["rerouted"] += 1
                self._transmit(tid, p)
        for tid, (data, ln, target, until) in list(self._forwarded.items()):
            if ln is link:
                nxt = self._route(target)
                if nxt is None or nxt is link:
                    del self._forwarded[tid]
                    continue
                self.stats["rerouted"] += 1
                self._forwarded[tid] = (data, nxt, target, until)
                with contextlib.suppress(links.LinkError):
                    nxt.send(data)

    async def _connect(self, host: str, port: int):
        return await links.connect(
            host,
            port,
            ssl=self.tls[1] if self.tls else None,
            on_message=self._on_message,
            on_closed=self._on_link_closed,
            ack_timeout=self.ack_timeout,
        )

    # ------------------------------------------------------------ messages in

    def _on_message(self, link, data: bytes) -> None:
        if self.stopped:
            return
        try:
            hdr, off = rl.decode_header(data, self.settings.max_message_size)
        except rl.ReloadDecodeError:
            self.stats["dropped"] += 1
            return
        if hdr.overlay != self._overlay or not hdr.destinations:
            self.stats["dropped"] += 1
            return
        msg = None
        if link.remote_node_id is None:
            # §4.2.1: a node with a single Node-ID may talk without Attach;
            # its signed message tells who it is.
            msg = self._decode_verified(data, link, hdr)
            if msg is None:
                return
            if hdr.via:
                self.stats["dropped"] += 1
                return
            ids = msg[1].node_ids
            if len(ids) != 1:
                self.stats["dropped"] += 1
                return
            self._bind(link, to_int(ids[0]))
            if link.remote_node_id is None:
                return
            msg = msg[0]
        from_node = to_int(link.remote_node_id)
        self._process(data, hdr, off, link, from_node, msg)

    def _decode_verified(self, data, link, hdr):
        try:
            msg = rl.decode_message(data, self.settings.max_message_size)
        except rl.ReloadDecodeError as e:
            self._reject(hdr, link, e.code or rl.ERROR_INVALID_MESSAGE, str(e))
            return None
        try:
            info = self.verifier.verify_message(msg)
        except SecurityError as e:
            self._reject(hdr, link, e.code, e.reason)
            return None
        return msg, info

    def _process(self, data, hdr, off, link, from_node: int, msg) -> None:
        is_request = False
        if len(data) >= off + 2:
            code = int.from_bytes(data[off : off + 2], "big")
            is_request = code != rl.ERROR and code & 1 == 1 and code < 0x8000
        dests = hdr.destinations
        while True:
            first = dests[0]
            if first.type == rl.DEST_NODE:
                if first.value == self.node_id or first.value == WILDCARD:
                    if len(dests) > 1 and first.value == self.node_id:
                        dests.pop(0)
                        continue
                    self._deliver(data, hdr, off, link, from_node, msg, is_request)
                    return
                target = to_int(first.value)
                if target not in self.links and self.table.responsible(target):
                    self.stats["dropped"] += 1
                    if is_request:
                        self._reject(hdr, link, rl.ERROR_NOT_FOUND, "no such node")
                    return
            elif first.type == rl.DEST_RESOURCE:
                target = _dest_int(first)
                if target is None or len(dests) > 1:
                    self.stats["dropped"] += 1
                    return
                if self.table.responsible(target):
                    self._deliver(data, hdr, off, link, from_node, msg, is_request)
                    return
            else:
                self.stats["dropped"] += 1
                return
            break
        self._forward(data, hdr, off, link, from_node, target, is_request)

    def _forward(self, data, hdr, off, link, from_node, target, is_request) -> None:
        """§6.1.2: append the previous hop to the via list, decrement TTL, send on."""
        if hdr.ttl <= 1:
            if is_request:
                self._reject(hdr, link, rl.ERROR_TTL_EXCEEDED, "TTL exceeded")
            return
        nxt = self._route(target)
        if nxt is None or nxt is link:
            self.stats["dropped"] += 1
            if is_request:
                self._reject(hdr, link, rl.ERROR_NOT_FOUND, "no route")
            return
        hdr.ttl -= 1
        hdr.via.append(rl.Destination.node(to_bytes(from_node)))
        hb = hdr.encode(0)
        rest = memoryview(data)[off:]
        total = len(hb) + len(rest)
        out = b"".join((hb[:16], total.to_bytes(4, "big"), hb[20:], rest))
        if total > self.settings.max_message_size:
            if is_request:
                self._reject(hdr, link, rl.ERROR_MESSAGE_TOO_LARGE, "via list too long")
            return
        self.stats["forwarded"] += 1
        tid = hdr.transaction_id
        if is_request:
            if len(self._forwarded) > 10000:
                self._sweep_forwarded()
            self._forwarded[tid] = (out, nxt, target, time.monotonic() + 15.0)
        else:
            self._forwarded.pop(tid, None)
        with contextlib.suppress(links.LinkError):
            nxt.send(out)

    def _sweep_forwarded(self) -> None:
        now = time.monotonic()
        for tid, v in list(self._forwarded.items()):
            if v[3] < now:
                del self._forwarded[tid]
        for tid, v in list(self._answers.items()):
            if v[2] < now:
                del self._answers[tid]

    def _reject(self, hdr, link, code: int, reason: str) -> None:
        """Answer a request we cannot process with an Error response (§6.3.3.1)."""
        if link is None or link.remote_node_id is None:
            return
        dests = [rl.Destination.node(link.remote_node_id), *reversed(hdr.via)]
        body = rl.ErrorResponse(code, reason.encode()[:200]).encode()
        with contextlib.suppress(links.LinkError):
            link.send(self._encode(dests, rl.ERROR, body, hdr.transaction_id))

    def _deliver(self, data, hdr, off, link, from_node, msg, is_request) -> None:
        """§6.1.1: the message is for this node: verify it and act."""
        self.stats["delivered"] += 1
        if msg is None:
            got = self._decode_verified(data, link if is_request else None, hdr)
            if got is None:
                return
            msg = got[0]
        origin = to_int(hdr.via[0].value) if hdr.via else from_node
        if is_request:
            self._answer(msg, hdr, link, from_node, origin)
        else:
            self._response(msg, hdr)

    def _response(self, msg, hdr) -> None:
        p = self._pending.pop(hdr.transaction_id, None)
        if p is None or p.future.done():
            return
        if p.timer:
            p.timer.cancel()
        c = msg.contents
        if c.code == rl.ERROR:
            try:
                err = rl.decode_error(c.body)
            except rl.ReloadDecodeError:
                err = rl.ErrorResponse(rl.ERROR_INVALID_MESSAGE, b"bad error body")
            p.future.set_exception(
                OverlayError(
                    err.error_code, err.error_info.decode("utf-8", "replace"), err.error_info
                )
            )
            return
        responder = hdr.via[0].value if hdr.via else (p.link.remote_node_id if p.link else b"")
        p.future.set_result(Response(c.code, c.body, responder, len(hdr.via) + 1, msg))

    def _answer(self, msg, hdr, link, from_node: int, origin: int) -> None:
        tid = hdr.transaction_id
        dests = [rl.Destination.node(to_bytes(from_node)), *reversed(hdr.via)]
        if hdr.configuration_sequence != self.settings.configuration_sequence and not (
            hdr.configuration_sequence == 0xFFFF and msg.contents.code == rl.CONFIG_UPDATE_REQ
        ):
            older = (self.settings.configuration_sequence - hdr.configuration_sequence) % 65536
            code = rl.ERROR_CONFIG_TOO_OLD if older < 32768 else rl.ERROR_CONFIG_TOO_NEW
            self._send_answer(link, dests, tid, rl.ERROR, rl.ErrorResponse(code).encode())
            return
        cached = self._answers.get(tid)
        if cached is not None:
            # §6.2.1: a retransmission gets the same answer.
            self._send_answer(link, dests, tid, cached[0], cached[1])
            return
        try:
            code, body, after, extra = self._dispatch(msg, origin, from_node)
        except OverlayError as e:
            code, body, after, extra = rl.ERROR, _error_body(e), None, ()
        if msg.contents.code == rl.STORE_REQ:
            self._answers[tid] = (code, body, time.monotonic() + self.settings.request_lifetime)
        self._send_answer(link, dests, tid, code, body, extra)
        if after is not None:
            after()

    def _send_answer(self, link, dests, tid, code, body, extra=()) -> None:
        data = self._encode(dests, code, body, tid, extra)
        ln = link if link is not None and not link.closed else self._route(_dest_int(dests[0]))
        if ln is None:
            return
        with contextlib.suppress(links.LinkError):
            ln.send(data)

    # ------------------------------------------------------------ dispatch

    def _dispatch(self, msg, origin: int, from_node: int):
        c = msg.contents
        try:
            c.check_extensions()
        except rl.ReloadDecodeError as e:
            raise OverlayError(e.code or rl.ERROR_UNKNOWN_EXTENSION, str(e)) from e
        handler = self._handlers.get(c.code)
        if handler is None:
            raise OverlayError(rl.ERROR_INVALID_MESSAGE, f"unsupported message code {c.code}")
        try:
            out = handler(self, msg, origin, from_node)
            return out if len(out) == 4 else (*out, ())
        except rl.ReloadDecodeError as e:
            raise OverlayError(
                e.code or rl.ERROR_INVALID_MESSAGE, str(e), getattr(e, "error_info", b"") or b""
            ) from e
        except StorageError as e:
            raise OverlayError(e.code, str(e), e.info) from e
        except SecurityError as e:
            raise OverlayError(e.code, e.reason) from e

    def _h_ping(self, msg, origin, from_node):
        rl.decode_ping_req(msg.contents.body)
        ans = rl.PingAns(random.getrandbits(64), int(time.time() * 1000))
        return rl.PING_ANS, ans.encode(), None

    def _h_attach(self, msg, origin, from_node):
        """§6.5.1: answer with our TCP candidate (TLS-TCP-FH-NO-ICE); the
        requester opens the link."""
        req = rt.decode_attach(msg.contents.body)
        after = None
        if req.send_update:

            def after():
                if origin in self.links:
                    self._send_update(origin, rt.CHORD_FULL)
                else:
                    self._send_update_to.add(origin)

        ans = rt.AttachReqAns(
            os.urandom(8).hex().encode(),
            os.urandom(12).hex().encode(),
            b"passive",
            [self._candidate()],
            False,
        )
        return rl.ATTACH_ANS, ans.encode(), after

    def _h_join(self, msg, origin, from_node):
        """§6.4.2.1 and §10.5 steps 5-8, as the admitting peer."""
        req = rt.decode_join_req(msg.contents.body)
        jn = to_int(req.peer_id)
        signer = self._signer_of(msg)
        if req.peer_id not in signer or from_node != jn or jn not in self.links:
            raise OverlayError(rl.ERROR_FORBIDDEN, "JoinReq Node-ID is not the sender's")
        if not self.table.responsible(jn):
            raise OverlayError(rl.ERROR_FORBIDDEN, "joining Node-ID not in this peer's range")
        low, _ = self.table.responsible_range()

        def after():
            self._spawn(self._admit(jn, low))

        return rl.JOIN_ANS, rt.JoinAns(b"").encode(), after

    async def _admit(self, jn: int, low: int) -> None:
        for rid in self.store.resource_ids(to_bytes(low), to_bytes(jn)):
            await self._push(rid, jn, 1)
        if self.table.add(jn):
            self._table_changed()
        else:
            self._send_update(jn, rt.CHORD_NEIGHBORS)

    def _h_leave(self, msg, origin, from_node):
        req = rt.decode_leave_req(msg.contents.body)
        if req.peer_id not in self._signer_of(msg) or to_int(req.peer_id) != origin:
            raise OverlayError(rl.ERROR_FORBIDDEN, "LeaveReq Node-ID is not the sender's")
        if req.data:
            rt.decode_chord_leave_data(req.data)

        def after():
            self._node_gone(origin)
            ln = self.links.pop(origin, None)
            if ln is not None:
                ln.remote_node_id = None
                ln.close()

        return rl.LEAVE_ANS, b"", after

    def _h_update(self, msg, origin, from_node):
        """§10.7.3: learn neighbours; attach to closer ones."""
        up = rt.decode_chord_update(msg.contents.body)
        fut = self._update_waiters.pop(origin, None)
        if fut is not None and not fut.done():
            fut.set_result(up)
        elif up.type == rt.CHORD_FULL:
            self._full_updates[origin] = up

        def after():
            changed = False
            if origin == from_node and origin in self.links:
                changed = self.table.add(origin)
            for nid in (*up.predecessors, *up.successors, *up.fingers):
                n = to_int(nid)
                if n != self.own and n not in self.table.nodes() and self._wanted(n):
                    self._spawn(self._attach_node(n, via=from_node))
            if changed:
                self._table_changed()

        return rl.UPDATE_ANS, b"", after

    def _wanted(self, n: int) -> bool:
        """Would ``n`` enter the Neighbor Table (§10.7.3)?"""
        t = self.table
        if len(t.successors) < t.size or len(t.predecessors) < t.size:
            return True
        d = distance(self.own, n)
        return d < distance(self.own, t.successors[-1]) or d > distance(
            self.own, t.predecessors[-1]
        )

    def _h_route_query(self, msg, origin, from_node):
        req = rt.decode_route_query_req(msg.contents.body)
        target = _dest_int(req.destination)
        if target is None:
            raise OverlayError(rl.ERROR_INVALID_MESSAGE, "RouteQuery destination")
        if req.destination.type == rl.DEST_RESOURCE and self.table.responsible(target):
            nxt = self.own
        else:
            nxt = self.table.next_hop(target)
            if nxt is None:
                nxt = self.own
        after = None
        if req.send_update:

            def after():
                self._send_update(origin, rt.CHORD_FULL)

        return rl.ROUTE_QUERY_ANS, rt.ChordRouteQueryAns(to_bytes(nxt)).encode(), after

    def _h_probe(self, msg, origin, from_node):
        req = rt.decode_probe_req(msg.contents.body)
        low, high = self.table.responsible_range()
        share = distance(low, high) or (1 << 128)
        values = {
            rt.PROBE_RESPONSIBLE_SET: min(0xFFFFFFFF, share >> 96),
            rt.PROBE_NUM_RESOURCES: self.store.stats().get("resources", 0),
            rt.PROBE_UPTIME: self.uptime(),
        }
        info = [rt.ProbeInformation(t, values[t]) for t in req.requested_info if t in values]
        return rl.PROBE_ANS, rt.ProbeAns(info).encode(), None

    def _h_app_attach(self, msg, origin, from_node):
        rt.decode_app_attach(msg.contents.body)
        raise OverlayError(rl.ERROR_NOT_FOUND, "no application listens here")

    def _h_config_update(self, msg, origin, from_node):
        rt.decode_config_update_req(msg.contents.body)
        raise OverlayError(
            rl.ERROR_FORBIDDEN, "configuration is taken from the enrollment server only"
        )

    def _signer_of(self, msg) -> tuple[bytes, ...]:
        return self.verifier.verify_message(msg).node_ids

    # ------------------------------------------------------------ storage methods

    def _h_store(self, msg, origin, from_node):
        """§7.4.1 at the responsible peer, §10.4 for replicas."""
        req = rs.decode_store_req(msg.contents.body, self._models)
        rid = to_int(req.resource) if len(req.resource) == ID_LEN else None
        if rid is None:
            raise OverlayError(rl.ERROR_INVALID_MESSAGE, "Resource-ID must be 16 bytes")
        responsible = self.table.responsible(rid)
        if req.replica_number and not responsible:
            # §10.4: a replica must come from a predecessor (or, on join
            # hand-off, from our successor).
            if from_node != origin or (
                origin not in self.table.predecessors and origin not in self.table.successors
            ):
                raise OverlayError(
                    rl.ERROR_FORBIDDEN, "replica from a peer that is not a neighbour"
                )
        elif not responsible:
            raise OverlayError(rl.ERROR_FORBIDDEN, "not responsible for this Resource-ID")
        ans = self.store.store(req, msg.security.certificates)
        after = None
        if responsible and not req.replica_number:
            replicas = self.table.replica_set(2)
            for kr in ans.kind_responses:
                kr.replicas = [to_bytes(n) for n in replicas]

            def after():
                for i, n in enumerate(replicas):
                    self._spawn(self._push(req.resource, n, i + 1))

        return rl.STORE_ANS, ans.encode(), after

    def _h_fetch(self, msg, origin, from_node):
        req = rs.decode_fetch_req(msg.contents.body, self._models)
        ans = self.store.fetch(req)
        signers = {sd.signature.identity.hash for kr in ans.kind_responses for sd in kr.values}
        signers.discard(self._signer.hash)
        return rl.FETCH_ANS, ans.encode(), None, self.store.certificates(signers)

    def _h_stat(self, msg, origin, from_node):
        req = rs.decode_stat_req(msg.contents.body, self._models)
        return rl.STAT_ANS, self.store.stat(req).encode(), None

    def _h_find(self, msg, origin, from_node):
        req = rs.decode_find_req(msg.contents.body)
        low, high = self.table.responsible_range()
        return rl.FIND_ANS, self.store.find(req, to_bytes(low), to_bytes(high)).encode(), None

    _handlers = {
        rl.PING_REQ: _h_ping,
        rl.ATTACH_REQ: _h_attach,
        rl.JOIN_REQ: _h_join,
        rl.LEAVE_REQ: _h_leave,
        rl.UPDATE_REQ: _h_update,
        rl.ROUTE_QUERY_REQ: _h_route_query,
        rl.PROBE_REQ: _h_probe,
        rl.APP_ATTACH_REQ: _h_app_attach,
        rl.CONFIG_UPDATE_REQ: _h_config_update,
        rl.STORE_REQ: _h_store,
        rl.FETCH_REQ: _h_fetch,
        rl.STAT_REQ: _h_stat,
        rl.FIND_REQ: _h_find,
    }

    async def _push(self, rid: bytes, node: int, replica_number: int) -> None:
        """Send one resource, with its original signatures, to ``node`` (§10.4)."""
        req, certs = self.store.export(rid)
        if not req.kind_data:
            return
        req.replica_number = replica_number
        try:
            await self._request(
                [rl.Destination.node(to_bytes(node))],
                rl.STORE_REQ,
                req.encode(),
                extra_certs=certs,
            )
        except OverlayError as e:
            log.info("replica of %s to %x failed: %s", rid.hex(), node, e)

    # ------------------------------------------------------------ topology

    def _send_update(self, node: int, kind: int) -> None:
        t = self.table
        preds = [to_bytes(n) for n in t.predecessors]
        succs = [to_bytes(n) for n in t.successors]
        if kind == rt.CHORD_FULL:
            up = rt.ChordUpdate(
                self.uptime(), kind, preds, succs, [to_bytes(n) for n in t.finger_ids()]
            )
        elif kind == rt.CHORD_NEIGHBORS:
            up = rt.ChordUpdate(self.uptime(), kind, preds, succs)
        else:
            up = rt.ChordUpdate(self.uptime(), kind)
        ln = self.links.get(node)
        fut = self._request(
            [rl.Destination.node(to_bytes(node))], rl.UPDATE_REQ, up.encode(), link=ln
        )
        fut.add_done_callback(_ignore)

    def _table_changed(self) -> None:
        """Neighbour set changed: tell the neighbours (reactive recovery,
        §10.7.1 / 10.7.3) once per loop turn, and fix replicas (§10.7.3)."""
        if self._announce_scheduled or self.stopped:
            return
        self._announce_scheduled = True
        asyncio.get_running_loop().call_soon(self._announce)

    def _announce(self) -> None:
        self._announce_scheduled = False
        if self.stopped or not self.joined:
            return
        self._event("neighbours", self.ring())
        low, _ = self.table.responsible_range()
        range_changed = low != self._range_low
        targets = set(self.links) if range_changed else self.table.neighbours()
        if self.settings.reactive:
            for n in targets:
                if n in self.links:
                    kind = (
                        rt.CHORD_NEIGHBORS if n in self.table.neighbours() else rt.CHORD_PEER_READY
                    )
                    self._send_update(n, kind)
        self._fix_replicas(low)

    def _fix_replicas(self, low: int) -> None:
        replicas = tuple(self.table.replica_set(2))
        old_low = self._range_low
        new_members = [n for n in replicas if n not in self._replicated_to]
        grown = old_low is not None and old_low != low and in_half_open(old_low, low, self.own)
        self._replicated_to = replicas
        self._range_low = low
        if not new_members and not grown:
            return
        lo, hi = to_bytes(low), self.node_id
        if new_members:
            for rid in self.store.resource_ids(lo, hi):
                for n in new_members:
                    self._spawn(self._push(rid, n, replicas.index(n) + 1))
        if grown:
            for rid in self.store.resource_ids(lo, to_bytes(old_low)):
                for i, n in enumerate(replicas):
                    if n not in new_members:
                        self._spawn(self._push(rid, n, i + 1))

    async def _attach_node(self, node: int, via: int | None = None) -> int | None:
        """Attach to a known Node-ID, source-routed through the peer that told
        us about it (§10.6)."""
        fut = self._attaching.get(node)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._attaching[node] = fut
        try:
            dests = [rl.Destination.node(to_bytes(node))]
            if via is not None and via != node and via in self.links:
                dests.insert(0, rl.Destination.node(to_bytes(via)))
            got = await self._attach(dests)
            fut.set_result(got)
            return got
        except BaseException as e:
            fut.set_result(None)
            if isinstance(e, asyncio.CancelledError):
                raise
            return None
        finally:
            self._attaching.pop(node, None)

    async def _attach(self, dests, send_update: bool = False) -> int:
        """Attach (§6.5.1) and open the link; returns the responder's Node-ID."""
        body = rt.AttachReqAns(
            os.urandom(8).hex().encode(),
            os.urandom(12).hex().encode(),
            b"active",
            [self._candidate()],
            send_update,
        ).encode()
        r = await self._request(dests, rl.ATTACH_REQ, body)
        ans = rt.decode_attach(r.body)
        node = to_int(r.responder)
        if node == self.own:
            return node
        if node not in self.links:
            host, port = _tcp_address(ans)
            ln = await self._connect(host, port)
            ln.initiated = True
            if self.tls is not None and ln.remote_node_id != r.responder:
                ln.abort()
                raise OverlayError(rl.ERROR_FORBIDDEN, "attached peer's certificate mismatch")
            self._bind(ln, node)
            if self.links.get(node) is ln:
                # Tell the other side who we are: our signed Ping binds the link.
                await self._request(
                    [rl.Destination.node(r.responder)], rl.PING_REQ, rl.PingReq().encode(), link=ln
                )
        if self.joined and self.table.add(node):
            self._table_changed()
        elif self.joined:
            self._send_update(node, rt.CHORD_PEER_READY)
        return node

    async def _join_via(self, host: str, port: int) -> None:
        """§10.5: attach to the admitting peer through the bootstrap, learn
        its table, attach to our neighbours, send Join, then Updates."""
        boot = await self._connect(host, port)
        boot.initiated = True
        self._unbound.add(boot)
        try:
            r = await self._request(
                [rl.Destination.node(WILDCARD)], rl.PING_REQ, rl.PingReq().encode(), link=boot
            )
            boot_id = to_int(r.responder)
            self._bind(boot, boot_id)
            ap_wait = asyncio.get_running_loop().create_future()
            target = to_bytes(self.own + 1)
            r = await self._request(
                [rl.Destination.resource(target)],
                rl.ATTACH_REQ,
                rt.AttachReqAns(
                    os.urandom(8).hex().encode(),
                    os.urandom(12).hex().encode(),
                    b"active",
                    [self._candidate()],
                    True,
                ).encode(),
                link=boot,
            )
            ap = to_int(r.responder)
            if ap == self.own:
                raise OverlayError(rl.ERROR_FORBIDDEN, "Node-ID already in the ring")
            if ap in self._full_updates:
                ap_wait.set_result(self._full_updates.pop(ap))
            else:
                self._update_waiters[ap] = ap_wait
            if ap not in self.links:
                ans = rt.decode_attach(r.body)
                h, p = _tcp_address(ans)
                ln = await self._connect(h, p)
                ln.initiated = True
                self._bind(ln, ap)
                await self._request(
                    [rl.Destination.node(r.responder)], rl.PING_REQ, rl.PingReq().encode(), link=ln
                )
            up = await asyncio.wait_for(ap_wait, self.settings.reliability_timer * 3)
            self.table.add(ap)
            if boot_id != ap and boot_id in self.links:
                self.table.add(boot_id)
            # Our neighbours-to-be: AP's predecessors and successors (§10.5 step 3).
            wanted = [to_int(x) for x in (*up.predecessors, *up.successors)]
            await asyncio.gather(
                *[self._attach_node(n, via=ap) for n in wanted if n != self.own and n != ap],
                return_exceptions=True,
            )
            await self._fill_fingers()
            await self._request(
                [rl.Destination.node(to_bytes(ap))],
                rl.JOIN_REQ,
                rt.JoinReq(self.node_id, b"").encode(),
            )
            self.joined = True
            self._range_low = None
            self._table_changed()
        except BaseException:
            self._update_waiters.clear()
            raise

    async def _fill_fingers(self) -> None:
        """§10.5: Attach to own + 2^(128-i) for each finger."""
        for i in range(1, self.table.finger_count() + 1):
            target = ChordTable.finger_target(self.own, i)
            best = self.table.finger_for(i)
            if best is not None and distance(target, best) < distance(
                target, self.table.successors[0] if self.table.successors else best
            ):
                continue
            with contextlib.suppress(OverlayError, OSError, links.LinkError, asyncio.TimeoutError):
                await self._attach([rl.Destination.resource(to_bytes(target))])

    async def _stabilise_loop(self) -> None:
        """§10.7.4: periodic Updates to neighbours and finger refresh."""
        period = self.settings.update_interval
        await asyncio.sleep(period * random.uniform(0.5, 1.0))
        while not self.stopped:
            try:
                self.stabilise()
            except Exception:
                log.exception("stabilisation failed")
            await asyncio.sleep(period * random.uniform(0.75, 1.25))

    def stabilise(self) -> None:
        """One round of §10.7.4: Updates to neighbours, one finger refreshed,
        expired data removed, old transaction state swept."""
        if not self.joined:
            return
        for n in self.table.neighbours():
            if n in self.links:
                self._send_update(n, rt.CHORD_NEIGHBORS)
        count = self.table.finger_count()
        if count:
            self._finger_cursor = self._finger_cursor % count + 1
            target = ChordTable.finger_target(self.own, self._finger_cursor)
            self._spawn(self._refresh_finger(target))
        self.store.expire()
        self._sweep_forwarded()
        self._prune_links()
        self._fix_replicas(self.table.responsible_range()[0])

    def _prune_links(self) -> None:
        """Close links this peer opened to nodes that are no longer its
        neighbours or fingers, after two rounds of not needing them: the
        Connection Table keeps only what routing uses (§10.7.4.2)."""
        needed = self.table.neighbours() | set(self.table.finger_ids())
        idle = set()
        for node, ln in list(self.links.items()):
            if node in needed or not ln.initiated:
                continue
            if node in self._unneeded:
                del self.links[node]
                ln.remote_node_id = None
                ln.close()
                if self.table.remove(node):
                    self._table_changed()
            else:
                idle.add(node)
        self._unneeded = idle

    async def _refresh_finger(self, target: int) -> None:
        with contextlib.suppress(OverlayError, OSError, links.LinkError, asyncio.TimeoutError):
            await self._attach([rl.Destination.resource(to_bytes(target))])

    # ------------------------------------------------------------ client operations

    async def store_value(
        self,
        resource: bytes | str,
        kind: int,
        values: list,
        *,
        lifetime: int = 86400,
        generation: int = 0,
    ) -> rs.StoreAns:
        """Sign ``values`` (DataValue / ArrayEntry / DictionaryEntry for the
        kind's model) and store them at the resource (§7.4.1)."""
        from sipmesh.overlay.security import sign_stored_data

        rid = (
            resource
            if isinstance(resource, bytes) and len(resource) == ID_LEN
            else resource_id(resource)
        )
        now = int(time.time() * 1000)
        stored = []
        for v in values:
            sd = rs.StoredData(now, lifetime, v, None)
            sign_stored_data(sd, rid, kind, self.identity)
            stored.append(sd)
        req = rs.StoreReq(rid, 0, [rs.StoreKindData(kind, generation, stored)])
        r = await self.request([rl.Destination.resource(rid)], rl.STORE_REQ, req.encode())
        return rs.decode_store_ans(r.body)

    async def fetch(
        self, resource: bytes | str, specifiers: list[rs.StoredDataSpecifier]
    ) -> tuple[rs.FetchAns, Response]:
        """Fetch (§7.4.2); every returned value's signature is checked."""
        rid = _rid(resource)
        req = rs.FetchReq(rid, specifiers)
        r = await self.request([rl.Destination.resource(rid)], rl.FETCH_REQ, req.encode())
        ans = rs.decode_fetch_ans(r.body, self._models)
        certs = r.message.security.certificates
        for kr in ans.kind_responses:
            for sd in kr.values:
                if not sd.signature.value and not _exists(sd.value):
                    continue  # §7.4.2.2: a placeholder for a value that does not exist
                self.verifier.verify_stored_data(sd, rid, kr.kind, certs)
        return ans, r

    async def stat(self, resource: bytes | str, specifiers) -> rs.StatAns:
        rid = _rid(resource)
        req = rs.StatReq(rid, specifiers)
        r = await self.request([rl.Destination.resource(rid)], rl.STAT_REQ, req.encode())
        return rs.decode_stat_ans(r.body, self._models)

    async def find(self, resource: bytes | str, kinds: list[int]) -> rs.FindAns:
        rid = _rid(resource)
        r = await self.request(
            [rl.Destination.resource(rid)], rl.FIND_REQ, rs.FindReq(rid, kinds).encode()
        )
        return rs.decode_find_ans(r.body)

    async def ping(self, node: bytes) -> Response:
        return await self.request([rl.Destination.node(node)], rl.PING_REQ, rl.PingReq().encode())

    async def route_query(self, dest: rl.Destination) -> bytes:
        via = self.table.next_hop(_dest_int(dest) or 0)
        if via is None:
            return self.node_id
        r = await self.request(
            [rl.Destination.node(to_bytes(via))],
            rl.ROUTE_QUERY_REQ,
            rt.RouteQueryReq(False, dest).encode(),
        )
        return rt.decode_chord_route_query_ans(r.body).next_peer

    def bytes_sent(self) -> int:
        """Bytes this peer has written to its links, closed ones included."""
        live = set(self.links.values()) | self._unbound
        return self.stats["closed_link_bytes"] + sum(ln.bytes_sent for ln in live)

    def ring(self) -> dict:
        """The peer's view: neighbours, fingers and links (for tools)."""
        t = self.table
        return {
            "node_id": self.node_id.hex(),
            "address": f"{self.host}:{self.port}",
            "joined": self.joined,
            "predecessors": [to_bytes(n).hex() for n in t.predecessors],
            "successors": [to_bytes(n).hex() for n in t.successors],
            "fingers": [to_bytes(n).hex() for n in t.finger_ids()],
            "links": sorted(to_bytes(n).hex() for n in self.links),
            "responsible": [to_bytes(x).hex() for x in t.responsible_range()],
            "stored": self.store.stats(),
            "uptime": self.uptime(),
        }


def _exists(value) -> bool:
    inner = getattr(value, "value", value)
    return bool(getattr(inner, "exists", getattr(value, "exists", True)))


def _rid(resource: bytes | str) -> bytes:
    if isinstance(resource, bytes) and len(resource) == ID_LEN:
        return resource
    return resource_id(resource)


def _tcp_address(ans: rt.AttachReqAns) -> tuple[str, int]:
    for c in ans.candidates:
        a = c.addr_port
        if c.overlay_link == rt.LINK_TLS_TCP_FH_NO_ICE and a.type in (rt.ADDR_IPV4, rt.ADDR_IPV6):
            return str(ipaddress.ip_address(a.addr)), a.port
    raise OverlayError(rl.ERROR_INVALID_MESSAGE, "Attach answer has no TCP candidate")


def _error_body(e: OverlayError) -> bytes:
    info = e.info or e.reason.encode("utf-8", "replace")[:255]
    return rl.ErrorResponse(e.code, info).encode()


def _ignore(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()
