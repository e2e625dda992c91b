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
import time
from collections.abc import Callable
from typing import Any

from sipmesh.overlay import link as links
from sipmesh.overlay.chord import ChordTable
from sipmesh.overlay.chord_protocol import ChordProtocol
from sipmesh.overlay.ids import to_bytes, to_int
from sipmesh.overlay.requests import OverlayError, Pending, Response
from sipmesh.overlay.routing import MessageLayer
from sipmesh.overlay.security import Identity, Verifier
from sipmesh.overlay.settings import OverlaySettings
from sipmesh.overlay.storage import Store
from sipmesh.overlay.storage_protocol import StorageProtocol
from sipmesh.proto import reload as rl
from sipmesh.proto import reload_topology as rt

__all__ = ["OverlayError", "Peer", "Response"]

log = logging.getLogger("sipmesh.overlay")


class Peer(MessageLayer, ChordProtocol, StorageProtocol):
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
        ice_stun: tuple[str, int] | None = None,
        client_listen: tuple[str, int] | None = None,
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
        # With a STUN server, Attach offers ICE candidates (§6.5.1.3) as well as TCP.
        self.ice_stun = ice_stun
        # Plain-TCP listener for RELOAD clients (§3.2, §4.2.1): boards.
        self.client_listen = client_listen
        self.client_port: int | None = None
        self._client_listener = None
        self._client_links: set = set()
        self.table = ChordTable(self.own)
        self.links: dict[int, Any] = {}
        self._unbound: set = set()
        self._pending: dict[int, Pending] = {}
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
        if self.client_listen is not None:
            try:
                self._client_listener = await links.listen(
                    self.client_listen[0],
                    self.client_listen[1],
                    on_link=self._on_client_link,
                    on_message=self._on_message,
                    on_closed=self._on_link_closed,
                    ack_timeout=self.ack_timeout,
                )
            except OSError:
                self._listener.close()
                raise
            self.client_port = self._client_listener.port
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
        if self._client_listener is not None:
            self._client_listener.close()
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

    async def ping(self, node: bytes) -> Response:
        return await self.request([rl.Destination.node(node)], rl.PING_REQ, rl.PingReq().encode())

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
            "clients": sorted(
                to_bytes(n).hex() for n, ln in self.links.items() if ln in self._client_links
            ),
            "responsible": [to_bytes(x).hex() for x in t.responsible_range()],
            "stored": self.store.stats(),
            "uptime": self.uptime(),
        }

    def _on_client_link(self, link) -> None:
        """A link on the client listener: unbound until its first signed
        message names the client (§4.2.1), and a client link for good."""
        self._client_links.add(link)
        self._unbound.add(link)

    def _send_update(self, node: int, kind: int) -> None:
        # A client is not a neighbour: it gets no Chord Updates (§3.2).
        if not self.is_client(node):
            ChordProtocol._send_update(self, node, kind)

    _handlers = {
        rl.PING_REQ: ChordProtocol._h_ping,
        rl.ATTACH_REQ: ChordProtocol._h_attach,
        rl.JOIN_REQ: ChordProtocol._h_join,
        rl.LEAVE_REQ: ChordProtocol._h_leave,
        rl.UPDATE_REQ: ChordProtocol._h_update,
        rl.ROUTE_QUERY_REQ: ChordProtocol._h_route_query,
        rl.PROBE_REQ: ChordProtocol._h_probe,
        rl.APP_ATTACH_REQ: ChordProtocol._h_app_attach,
        rl.CONFIG_UPDATE_REQ: ChordProtocol._h_config_update,
        rl.STORE_REQ: StorageProtocol._h_store,
        rl.FETCH_REQ: StorageProtocol._h_fetch,
        rl.STAT_REQ: StorageProtocol._h_stat,
        rl.FIND_REQ: StorageProtocol._h_find,
    }
