"""Symmetric recursive routing of RELOAD messages (RFC 6940 §6.1, §6.2).

The message layer of a peer: requests out with end-to-end retransmission
(§6.2.1), messages in through the links, forwarding with the via list
(§6.1.2: the previous hop's Node-ID is appended, so the responder can
reverse the list into the response's destination list, §6.2.2), delivery
to this node with signature checks (§6.3.4), and the Error responses of
§6.3.3.1. Forwarding peers read only the forwarding header and copy the
rest of the message.

A failed link takes its node out of the routing table at once and sends
the requests in flight over it, ours and forwarded ones, through another
next hop on the spot; the reliability timer stays as the last resort.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

from sipmesh.overlay import link as links
from sipmesh.overlay.ids import to_bytes, to_int
from sipmesh.overlay.requests import (
    MAX_TRANSMISSIONS,
    WILDCARD,
    OverlayError,
    Pending,
    Response,
    dest_int,
    error_body,
)
from sipmesh.overlay.security import SecurityError
from sipmesh.overlay.storage import StorageError
from sipmesh.proto import reload as rl
from sipmesh.proto import reload_topology as rt

log = logging.getLogger("sipmesh.overlay")

# Requests that would make the sender a ring member or a neighbour's link
# (§6.4.2, §6.5.1): refused when they come straight from a client link.
_PEER_ONLY = (rl.JOIN_REQ, rl.UPDATE_REQ, rl.ATTACH_REQ)


class MessageLayer:
    """Routing, forwarding, transactions and dispatch; mixed into Peer."""

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

    def _route(self, target: int, node: bool = False) -> Any | None:
        """The link to send towards ``target``. A client's link (§3.2, §4.2.1)
        carries only messages for the client's own Node-ID (``node``): it is
        never a hop towards anything else."""
        ln = self.links.get(target)
        if ln is not None and (node or ln not in self._client_links):
            return ln
        nxt = self.table.next_hop(target)
        ln = self.links.get(nxt) if nxt is not None else None
        return None if ln in self._client_links else ln

    def is_client(self, node: int) -> bool:
        """Is ``node`` a RELOAD client linked to this peer (§3.2)?"""
        ln = self.links.get(node)
        return ln is not None and ln in self._client_links

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
        p = Pending(fut, list(dests), code, body, tuple(extra_certs), link)
        self._pending[tid] = p
        self._transmit(tid, p)
        return fut

    def _transmit(self, tid: int, p: Pending) -> None:
        if p.future.done():
            self._pending.pop(tid, None)
            return
        if p.sent >= MAX_TRANSMISSIONS:
            self._pending.pop(tid, None)
            p.future.set_exception(OverlayError(rl.ERROR_REQUEST_TIMEOUT, "no response"))
            return
        p.sent += 1
        first = p.dests[0]
        target = dest_int(first)
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
                ln = self._route(target, first.type == rl.DEST_NODE)
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

    def _local_request(self, tid: int, p: Pending) -> None:
        """A request for a range this peer owns: answered without the network."""
        if p.future.done():
            return
        data = self._encode(p.dests, p.code, p.body, tid, p.extra)
        msg = rl.decode_message(data)
        try:
            result = self._dispatch(msg, self.own, self.own)
            if asyncio.iscoroutine(result):
                result.close()
                raise OverlayError(rl.ERROR_FORBIDDEN, "cannot attach to itself")
            code, body, after, extra = result
        except OverlayError as e:
            code, body, after = rl.ERROR, error_body(e), None
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

    def _on_link(self, link) -> None:
        rid = getattr(link, "remote_node_id", None)
        if rid is not None and self.tls is not None:
            self._bind(link, to_int(rid))
        else:
            self._unbound.add(link)

    def _bind(self, link, node: int) -> None:
        """Put a link in the Connection Table under the Node-ID it proved.

        A client link (§3.2) never displaces a ring member's: a client whose
        Node-ID is ours, in the Chord table or on a peer link is refused; a
        peer link with a client's Node-ID replaces the client's link."""
        self._unbound.discard(link)
        old = self.links.get(node)
        if link in self._client_links:
            if node == self.own or node in self.table.nodes() or (
                old is not None and not old.closed and old not in self._client_links
            ):
                log.info("client link refused: Node-ID %x belongs to a ring member", node)
                self._client_links.discard(link)
                link.close()
                return
            link.remote_node_id = to_bytes(node)
            if old is not None and old is not link:
                old.remote_node_id = None
                old.close()
            self.links[node] = link
            return
        link.remote_node_id = to_bytes(node)
        if old is not None and old in self._client_links:
            old.remote_node_id = None
            old.close()
            old = None
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
        self._client_links.discard(link)
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
                if not is_request and len(dests) > 1 and target not in self.links:
                    # A hop of the return path failed since the request went
                    # by: route the (end-to-end signed) response straight to
                    # its origin, the last entry, rather than lose it.
                    del dests[:-1]
                    self.stats["rerouted"] += 1
                    continue
                if target not in self.links and self.table.responsible(target):
                    self.stats["dropped"] += 1
                    if is_request:
                        self._reject(hdr, link, rl.ERROR_NOT_FOUND, "no such node")
                    return
            elif first.type == rl.DEST_RESOURCE:
                target = dest_int(first)
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
        nxt = self._route(target, hdr.destinations[0].type == rl.DEST_NODE)
        if nxt is link:
            # Our table sends it back where it came from (tables disagree
            # while the ring repairs): take the best other next hop.
            alt = self.table.next_hop(target, exclude=from_node)
            nxt = self.links.get(alt) if alt is not None else None
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
            result = self._dispatch(msg, origin, from_node)
        except OverlayError as e:
            result = (rl.ERROR, error_body(e), None, ())
        if asyncio.iscoroutine(result):
            self._spawn(self._answer_later(result, msg, link, dests, tid))
            return
        self._complete(result, msg, link, dests, tid)

    async def _answer_later(self, pending, msg, link, dests, tid: int) -> None:
        """A handler that has to wait (ICE gathering for an Attach answer)."""
        try:
            result = await pending
        except OverlayError as e:
            result = (rl.ERROR, error_body(e), None, ())
        if not self.stopped:
            self._complete(result, msg, link, dests, tid)

    def _complete(self, result, msg, link, dests, tid: int) -> None:
        code, body, after, extra = result if len(result) == 4 else (*result, ())
        if msg.contents.code == rl.STORE_REQ:
            self._answers[tid] = (code, body, time.monotonic() + self.settings.request_lifetime)
        self._send_answer(link, dests, tid, code, body, extra)
        if after is not None:
            after()

    def _send_answer(self, link, dests, tid, code, body, extra=()) -> None:
        data = self._encode(dests, code, body, tid, extra)
        ln = (
            link
            if link is not None and not link.closed
            else self._route(dest_int(dests[0]), True)
        )
        if ln is None:
            return
        with contextlib.suppress(links.LinkError):
            ln.send(data)

    def _dispatch(self, msg, origin: int, from_node: int):
        c = msg.contents
        try:
            c.check_extensions()
        except rl.ReloadDecodeError as e:
            raise OverlayError(e.code or rl.ERROR_UNKNOWN_EXTENSION, str(e)) from e
        if c.code in _PEER_ONLY and from_node == origin and self.is_client(from_node):
            raise OverlayError(rl.ERROR_FORBIDDEN, "a client takes no part in the ring (§3.2)")
        handler = self._handlers.get(c.code)
        if handler is None:
            raise OverlayError(rl.ERROR_INVALID_MESSAGE, f"unsupported message code {c.code}")
        try:
            out = handler(self, msg, origin, from_node)
            if asyncio.iscoroutine(out):
                return out
            return out if len(out) == 4 else (*out, ())
        except rl.ReloadDecodeError as e:
            raise OverlayError(
                e.code or rl.ERROR_INVALID_MESSAGE, str(e), getattr(e, "error_info", b"") or b""
            ) from e
        except StorageError as e:
            raise OverlayError(e.code, str(e), e.info) from e
        except SecurityError as e:
            raise OverlayError(e.code, e.reason) from e

    def _signer_of(self, msg) -> tuple[bytes, ...]:
        return self.verifier.verify_message(msg).node_ids
