"""RELOAD storage methods at a peer (RFC 6940 §7.4) and replication (§10.4).

Store, Fetch, Stat and Find requests are answered from the peer's Store;
the responsible peer pushes every stored resource, with its original
signatures and signer certificates, to its two successors (replica numbers
1 and 2) and again to any new member of that replica set or for any range
it takes over when the ring changes (§10.7.3). Client-side helpers sign
values (§7.1) and check every fetched value's signature.
"""

from __future__ import annotations

import logging
import time

from sipmesh.overlay.ids import ID_LEN, in_half_open, resource_id, to_bytes, to_int
from sipmesh.overlay.requests import (
    OverlayError,
    Response,
)
from sipmesh.proto import reload as rl
from sipmesh.proto import reload_storage as rs

log = logging.getLogger("sipmesh.overlay")


class StorageProtocol:
    """Storage methods of a Peer (mixed into it)."""

    def _h_store(self, msg, origin, from_node):
        """§7.4.1 at the responsible peer, §10.4 for replicas."""
        req = rs.decode_store_req(msg.contents.body, self._models)
        rid = to_int(req.resource) if len(req.resource) == ID_LEN else None
        if rid is None:
            raise OverlayError(rl.ERROR_INVALID_MESSAGE, "Resource-ID must be 16 bytes")
        responsible = self.table.responsible(rid)
        if req.replica_number and not responsible:
            # §10.4: replicas come from the peer responsible for the range,
            # over a direct link. While the ring repairs, that peer may not
            # be in our predecessor list yet: any routable peer linked to us
            # is accepted (every value still carries its owner's signature
            # and passes the kind's access policy).
            if from_node != origin or origin not in self.table.nodes():
                raise OverlayError(rl.ERROR_FORBIDDEN, "replica from a peer that is not linked")
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
            # Push everything to this member again at the next check (§10.7.3).
            self._replicated_to = tuple(n for n in self._replicated_to if n != node)

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


def _exists(value) -> bool:
    inner = getattr(value, "value", value)
    return bool(getattr(inner, "exists", getattr(value, "exists", True)))


def _rid(resource: bytes | str) -> bytes:
    if isinstance(resource, bytes) and len(resource) == ID_LEN:
        return resource
    return resource_id(resource)
