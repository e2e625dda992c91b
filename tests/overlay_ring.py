"""A ring of real RELOAD peers on loopback for tests (plain TCP or TLS links).

Peers join one after the other through the first; ``wait_for`` re-checks a
condition whenever any peer's neighbour set changes (no fixed sleeps), with
a deadline.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from sipmesh.overlay import link as links
from sipmesh.overlay.ids import to_int
from sipmesh.overlay.kinds import KindDef
from sipmesh.overlay.peer import Peer
from sipmesh.overlay.security import CA, Identity, Verifier, make_ca
from sipmesh.overlay.settings import OverlaySettings
from sipmesh.overlay.storage import Store
from sipmesh.proto.reload_storage import MODEL_ARRAY, MODEL_DICTIONARY, MODEL_SINGLE

OVERLAY = "branch.sipmesh.test"

KIND_SINGLE = 4001  # USER-MATCH
KIND_ARRAY = 4002  # NODE-MATCH
KIND_DICT = 4003  # USER-NODE-MATCH
KIND_MULTI = 4004  # NODE-MULTIPLE

TEST_KINDS = {
    KIND_SINGLE: KindDef(KIND_SINGLE, "test-single", MODEL_SINGLE, "USER-MATCH", 1, 1024),
    KIND_ARRAY: KindDef(KIND_ARRAY, "test-array", MODEL_ARRAY, "NODE-MATCH", 16, 256),
    KIND_DICT: KindDef(KIND_DICT, "test-dict", MODEL_DICTIONARY, "USER-NODE-MATCH", 16, 256),
    KIND_MULTI: KindDef(KIND_MULTI, "test-multi", MODEL_SINGLE, "NODE-MULTIPLE", 1, 256, 3),
}


def random_node_id() -> bytes:
    return os.urandom(16)


class Ring:
    """N peers on 127.0.0.1 sharing one CA and settings."""

    def __init__(
        self,
        folder: Path,
        *,
        settings: OverlaySettings | None = None,
        tls: bool = False,
        ca: CA | None = None,
    ):
        self.folder = Path(folder)
        self.ca = ca or make_ca(OVERLAY)
        self.settings = settings or OverlaySettings(
            OVERLAY, kinds=TEST_KINDS, update_interval=2.0, reliability_timer=1.0
        )
        self.tls = tls
        self.verifier = Verifier(self.ca.certificate)
        self.peers: list[Peer] = []
        self.identities: list[Identity] = []
        self.changed = asyncio.Event()

    def _on_event(self, name: str, data: dict) -> None:
        self.changed.set()

    def make_peer(self, identity: Identity, port: int = 0, index: int | None = None) -> Peer:
        n = len(self.peers) if index is None else index
        store = Store(
            str(self.folder / f"peer{n}.sqlite"),
            self.settings.kinds,
            self.ca.certificate,
            verifier=self.verifier,
        )
        tls = links.tls_contexts(identity, self.ca.certificate) if self.tls else None
        return Peer(
            identity,
            self.settings,
            store,
            verifier=self.verifier,
            port=port,
            tls=tls,
            on_event=self._on_event,
        )

    async def add(self, identity: Identity | None = None, port: int = 0) -> Peer:
        """Start one more peer and join it through the first."""
        if identity is None:
            identity = Identity.generate(self.ca, f"user{len(self.peers)}", random_node_id())
        peer = self.make_peer(identity, port)
        await peer.start()
        if self.peers:
            alive = [p for p in self.peers if not p.stopped]
            await peer.join([alive[0].address])
        else:
            await peer.join([], first=True)
        self.peers.append(peer)
        self.identities.append(identity)
        return peer

    async def start(self, n: int) -> None:
        for _ in range(n):
            await self.add()

    def alive(self) -> list[Peer]:
        return [p for p in self.peers if not p.stopped]

    def ring_correct(self) -> bool:
        """Every live peer's first successor and predecessor match the sorted ring."""
        alive = self.alive()
        ids = sorted(p.own for p in alive)
        n = len(ids)
        for p in alive:
            i = ids.index(p.own)
            want_succ = [ids[(i + k) % n] for k in range(1, min(3, n - 1) + 1)]
            want_pred = [ids[(i - k) % n] for k in range(1, min(3, n - 1) + 1)]
            if p.table.successors[: len(want_succ)] != want_succ:
                return False
            if p.table.predecessors[: len(want_pred)] != want_pred:
                return False
        return True

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until ``condition()`` holds, re-checking on every neighbour
        change and at least every stabilisation period; fail at ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("condition not reached")
            self.changed.clear()
            try:
                await asyncio.wait_for(
                    self.changed.wait(), min(left, self.settings.update_interval)
                )
            except TimeoutError:
                pass

    async def stop(self) -> None:
        for p in self.alive():
            p.kill()
        await asyncio.sleep(0)

    def sorted_ids(self) -> list[int]:
        return sorted(to_int(i.node_id) for i in self.identities)
