"""The CHORD-RELOAD topology plug-in's protocol (RFC 6940 §10, §6.4, §6.5).

Join through the admitting peer (§10.5), Attach and the links it opens
(§6.5.1; this implementation offers a TLS/TCP candidate with the framing
header, overlay_link TLS-TCP-FH-NO-ICE), Update and reactive recovery
(§10.7), Leave (§10.9), RouteQuery (§10.8), Probe (§6.4.2.5), periodic
stabilisation and finger refresh (§10.7.4), and the Connection Table kept
to what routing uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import time

from sipmesh.overlay import link as links
from sipmesh.overlay.chord import ChordTable
from sipmesh.overlay.ids import distance, to_bytes, to_int
from sipmesh.overlay.requests import (
    WILDCARD,
    OverlayError,
    dest_int,
    ignore,
)
from sipmesh.proto import reload as rl
from sipmesh.proto import reload_topology as rt

log = logging.getLogger("sipmesh.overlay")


class ChordProtocol:
    """Topology methods of a Peer (mixed into it)."""

    def _h_ping(self, msg, origin, from_node):
        rl.decode_ping_req(msg.contents.body)
        ans = rl.PingAns(random.getrandbits(64), int(time.time() * 1000))
        return rl.PING_ANS, ans.encode(), None

    def _h_attach(self, msg, origin, from_node):
        """§6.5.1: answer with our TCP candidate (TLS-TCP-FH-NO-ICE), the
        requester opening the link; or, when both sides do ICE, with our ICE
        candidates (§6.5.1.3), both sides then running the checks."""
        req = rt.decode_attach(msg.contents.body)
        after = None
        if req.send_update:

            def after():
                if origin in self.links:
                    self._send_update(origin, rt.CHORD_FULL)
                else:
                    self._send_update_to.add(origin)

        if self.ice_stun is not None and origin not in self.links and _ice_offered(req):
            return self._ice_answer(req, origin, after)
        return rl.ATTACH_ANS, self._tcp_attach(b"passive"), after

    def _tcp_attach(self, role: bytes, send_update: bool = False) -> bytes:
        """An AttachReqAns body offering only our TCP candidate (TLS-TCP-FH-NO-ICE)."""
        return rt.AttachReqAns(
            os.urandom(8).hex().encode(),
            os.urandom(12).hex().encode(),
            role,
            [self._candidate()],
            send_update,
        ).encode()

    async def _ice_answer(self, req, origin: int, after):
        """The answering side of an ICE Attach: gather, answer, and run the
        connectivity checks in the background (controlled role, §6.5.1.9)."""
        from sipmesh.overlay.ice import IceAgent

        agent = IceAgent(False, self.ice_stun)
        try:
            ans = await agent.gather()
        except (OSError, links.LinkError) as e:
            await agent.close()
            log.info("ICE gathering failed, answering with TCP only: %s", e)
            return rl.ATTACH_ANS, self._tcp_attach(b"passive"), after
        ans.candidates = ans.candidates[: rt.MAX_CANDIDATES - 1] + [self._candidate()]
        self._spawn(self._ice_accept(agent, req, origin))
        return rl.ATTACH_ANS, ans.encode(), after

    async def _ice_accept(self, agent, req, origin: int) -> None:
        try:
            ln = await agent.connect(
                req,
                timeout=ICE_TIMEOUT,
                remote_node_id=to_bytes(origin),
                on_message=self._on_message,
                on_closed=self._on_link_closed,
            )
        except links.LinkError as e:
            log.info("ICE with %x failed: %s", origin, e)
            return
        ln.initiated = False
        self._bind(ln, origin)

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
        target = dest_int(req.destination)
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
        fut.add_done_callback(ignore)

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

    async def _attach(self, dests, send_update: bool = False, via=None) -> int:
        """Attach (§6.5.1) and open the link; returns the responder's Node-ID.

        With a STUN server configured the offer carries ICE candidates
        (§6.5.1.3) and our TCP candidate; an answer with ICE candidates gets
        an ICE link (this side controlling), one with only a TCP candidate a
        TCP or TLS connection. ``via`` sends the request down that link (a
        joining node's bootstrap link)."""
        agent = None
        if self.ice_stun is not None:
            from sipmesh.overlay.ice import IceAgent

            agent = IceAgent(True, self.ice_stun)
            try:
                offer = await agent.gather(send_update)
            except (OSError, links.LinkError) as e:
                log.info("ICE gathering failed, offering TCP only: %s", e)
                await agent.close()
                agent = None
        if agent is not None:
            offer.candidates = offer.candidates[: rt.MAX_CANDIDATES - 1] + [self._candidate()]
            body = offer.encode()
        else:
            body = self._tcp_attach(b"active", send_update)
        try:
            r = await self._request(dests, rl.ATTACH_REQ, body, link=via)
            ans = rt.decode_attach(r.body)
            node = to_int(r.responder)
            if node == self.own:
                return node
            if node not in self.links and agent is not None and _ice_offered(ans):
                ln = await agent.connect(
                    ans,
                    timeout=ICE_TIMEOUT,
                    remote_node_id=r.responder,
                    on_message=self._on_message,
                    on_closed=self._on_link_closed,
                )
                agent = None
                ln.initiated = True
                self._bind(ln, node)
            elif node not in self.links:
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
                        [rl.Destination.node(r.responder)],
                        rl.PING_REQ,
                        rl.PingReq().encode(),
                        link=ln,
                    )
        finally:
            if agent is not None:
                await agent.close()
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
            ap = await self._attach(
                [rl.Destination.resource(to_bytes(self.own + 1))], send_update=True, via=boot
            )
            if ap == self.own:
                raise OverlayError(rl.ERROR_FORBIDDEN, "Node-ID already in the ring")
            if ap in self._full_updates:
                ap_wait.set_result(self._full_updates.pop(ap))
            else:
                self._update_waiters[ap] = ap_wait
            up = await asyncio.wait_for(ap_wait, self.settings.reliability_timer * 3)
            self._full_updates.clear()
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

    async def route_query(self, dest: rl.Destination) -> bytes:
        via = self.table.next_hop(dest_int(dest) or 0)
        if via is None:
            return self.node_id
        r = await self.request(
            [rl.Destination.node(to_bytes(via))],
            rl.ROUTE_QUERY_REQ,
            rt.RouteQueryReq(False, dest).encode(),
        )
        return rt.decode_chord_route_query_ans(r.body).next_peer


ICE_TIMEOUT = 10.0


def _ice_offered(body: rt.AttachReqAns) -> bool:
    """Does an Attach body carry ICE candidates (any link type but NO-ICE TCP)?"""
    return any(c.overlay_link != rt.LINK_TLS_TCP_FH_NO_ICE for c in body.candidates)


def _tcp_address(ans: rt.AttachReqAns) -> tuple[str, int]:
    for c in ans.candidates:
        a = c.addr_port
        if c.overlay_link == rt.LINK_TLS_TCP_FH_NO_ICE and a.type in (rt.ADDR_IPV4, rt.ADDR_IPV6):
            return str(ipaddress.ip_address(a.addr)), a.port
    raise OverlayError(rl.ERROR_INVALID_MESSAGE, "Attach answer has no TCP candidate")
