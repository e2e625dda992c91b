"""The overlay benchmark's anchor: PyPI ``kademlia`` (bmuller's asyncio Kademlia DHT).

Every node is a ``kademlia.network.Server`` with the library's defaults
(k = 20, alpha = 3, RPC timeout 5 s from rpcudp) on its own UDP port of
127.0.0.1, all in this process and loop. A new node bootstraps from up to
``BOOTSTRAP_CONTACTS`` random earlier nodes, one node after the other; with
``single_seed`` every node bootstraps from node 0 alone (one well-known seed).
Either way ``set()`` now and then returns False (0-6 of 1,000 stores at N=500
here, runs differ); the workload fetches only keys whose store succeeded, so
those show as "stores failed", not as failed fetches (counting them as fetch
failures gives the 99.2-99.7% "success before churn" of an earlier note).

Maintenance: kademlia refreshes buckets that saw no lookup for an hour and
republishes keys older than an hour (Maymounkov & Mazieres §2.3); both ages
are fixed in the library. In this benchmark every bucket is touched well
within an hour, so a refresh at any shorter period would do nothing: dead
contacts leave a routing table only when an RPC to them times out. The
stabilisation period given to this adapter only spaces the churn waves and
the settling wait; the fair choice, used by ``overlay_bench.py``, is the
same period as sipmesh's Chord stabilisation (RFC 6940 §10.7.4.3).

Hops: kademlia looks up iteratively; ``get`` reports the number of rounds of
its value lookup (each round up to alpha parallel FIND_VALUE RPCs, the next
round waiting for the previous), 0 when the asking node holds the value.
A round costs one round trip, as a hop of a recursive route does.
"""

from __future__ import annotations

import asyncio
import logging
import random

from kademlia.crawling import ValueSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node
from kademlia.utils import digest
from overlay_workload import Progress, rss_bytes

BOOTSTRAP_CONTACTS = 3
DEFAULT_PERIOD = 10.0  # seconds: sipmesh's (overlay_sipmesh.PERIOD), used when it is not run


class _CountingCrawl(ValueSpiderCrawl):
    """kademlia's value lookup, counting its rounds (each round calls find once)."""

    rounds = 0

    async def find(self) -> object:
        self.rounds += 1
        return await super().find()


class KademliaSystem:
    """The workload's ``System`` adapter for kademlia."""

    name = "kademlia"

    def __init__(self, stabilisation_period: float = DEFAULT_PERIOD, seed: int = 1,
                 single_seed: bool = False) -> None:
        self.stabilisation_period = stabilisation_period
        self.single_seed = single_seed
        self._rng = random.Random(seed)
        self._servers: list[Server] = []
        self._alive: set[int] = set()
        self._sent = 0
        self._rss0 = 0
        for name in ("kademlia", "rpcudp"):
            # a crash makes every lookup log its timeouts; the figures say it instead
            logging.getLogger(name).setLevel(logging.CRITICAL)

    async def start(self, n: int, progress: Progress) -> None:
        self._rss0 = rss_bytes()
        for i in range(n):
            # the library's default id, from our seeded source so runs are repeatable
            server = Server(node_id=digest(self._rng.getrandbits(255)))
            await server.listen(0, interface="127.0.0.1")
            self._count_bytes(server)
            if self._servers:
                earlier = [0] if self.single_seed else self._rng.sample(
                    sorted(self._alive), min(BOOTSTRAP_CONTACTS, len(self._alive)))
                addrs = [self._addr(j) for j in earlier]
                await server.bootstrap(addrs)
            self._servers.append(server)
            self._alive.add(i)
            if (i + 1) % 100 == 0:
                progress(f"{i + 1} nodes joined")

    def _addr(self, peer: int) -> tuple[str, int]:
        return self._servers[peer].transport.get_extra_info("sockname")[:2]

    def _count_bytes(self, server: Server) -> None:
        transport = server.transport
        send = transport.sendto

        def sendto(data: bytes, addr: object = None) -> None:
            if transport.is_closing():
                return  # a crashed node's leftover tasks send nothing
            self._sent += len(data)
            send(data, addr)
        transport.sendto = sendto

    async def put(self, peer: int, key: bytes, value: bytes) -> bool:
        return bool(await self._servers[peer].set(key, value))

    async def get(self, peer: int, key: bytes) -> tuple[bytes | None, int | None]:
        """``Server.get`` with the lookup's rounds counted (same steps as the library's)."""
        server = self._servers[peer]
        dkey = digest(key)
        local = server.storage.get(dkey)
        if local is not None:
            return local, 0
        node = Node(dkey)
        nearest = server.protocol.router.find_neighbors(node)
        if not nearest:
            return None, None
        crawl = _CountingCrawl(server.protocol, node, nearest, server.ksize, server.alpha)
        value = await crawl.find()
        return value, crawl.rounds

    def kill(self, peer: int) -> None:
        """Close the socket and drop the node's timers and pending RPCs, telling no one."""
        server = self._servers[peer]
        self._alive.discard(peer)
        server.stop()
        for future, timer in server.protocol._outstanding.values():
            timer.cancel()
            future.cancel()
        server.protocol._outstanding.clear()

    def alive(self) -> list[int]:
        return sorted(self._alive)

    def bytes_sent(self) -> int:
        """UDP payload bytes (rpcudp's 21-byte header + msgpack); IP/UDP headers not counted."""
        return self._sent

    def rss_per_peer(self) -> float:
        return (rss_bytes() - self._rss0) / max(1, len(self._servers))

    async def stop(self) -> None:
        for peer in list(self._alive):
            self.kill(peer)
        await asyncio.sleep(0)
