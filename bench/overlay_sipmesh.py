"""The overlay benchmark's sipmesh adapter: real RELOAD peers over loopback TCP.

Peers run in ``WORKERS`` worker processes (this file with ``--worker``), each
an asyncio loop hosting its share of the peers; every message between peers
goes over a real TCP link on 127.0.0.1, in the plain-TCP link mode (RFC 6940
framing, no TLS: TLS would add OpenSSL's per-connection state to the memory
figure, and the issue lets the bench choose). Messages are still signed
with Ed25519 and checked at their destination, and stored values are signed
and checked on every store and fetch, exactly as in production. Several
processes are used because one process cannot hold the ~25,000 socket ends
of a 1,000-peer ring within this machine's limit of 20,000 descriptors, and
because the machine has two cores.

Each worker keeps its peers' data in one SQLite file with a namespace per
peer (storage.StoreDatabase), which is how a many-peer host would run.

The workload's resources live under a NODE-MULTIPLE kind (§7.3.4): key k
stored by peer p goes to Resource-ID H(Node-ID(p) || i) for p's next i, so
1,000 resources spread over the ring and every store passes the access
policy of its signer. The runner talks to the workers over their stdin and
stdout (one JSON line per call); that hop adds a fraction of a millisecond to
each measured fetch.

RSS per peer is (sum of the workers' RSS - their RSS before any peer
started) / peers started.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from overlay_workload import Progress  # noqa: E402

KIND = 0xF00B  # the bench kind: NODE-MULTIPLE, one value per Resource-ID
MAX_I = 200
PERIOD = 10.0
WORKERS = 4
# Joins run this many at a time; each joins through a random peer already in.
JOIN_CONCURRENCY = 1


def _settings(period: float):
    from sipmesh.overlay.kinds import KindDef
    from sipmesh.overlay.settings import OverlaySettings
    from sipmesh.proto.reload_storage import MODEL_SINGLE

    kind = KindDef(KIND, "bench", MODEL_SINGLE, "NODE-MULTIPLE", 1, 1024, MAX_I)
    return OverlaySettings("bench.sipmesh.test", kinds={KIND: kind}, update_interval=period,
                           reliability_timer=1.0)


class SipmeshSystem:
    """N sipmesh peers in WORKERS processes."""

    name = "sipmesh"

    def __init__(self, period: float = PERIOD, workers: int = WORKERS):
        self.stabilisation_period = period
        self.workers = workers
        self._procs: list[asyncio.subprocess.Process] = []
        self._pending: dict[int, asyncio.Future] = {}
        self._next = 0
        self._readers: list[asyncio.Task] = []
        self._addresses: list[tuple[str, int]] = []
        self._node_ids: list[str] = []
        self._alive: list[int] = []
        self._keys: dict[bytes, tuple[int, bytes]] = {}
        self._next_i: dict[int, int] = {}
        self._baseline = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="sipmesh-bench-")
        self._dead_bytes = 0

    # ------------------------------------------------------------ workers

    async def _call(self, w: int, op: str, **args):
        self._next += 1
        rid = self._next
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        line = json.dumps({"id": rid, "op": op, **args}) + "\n"
        self._procs[w].stdin.write(line.encode())
        return await fut

    async def _read(self, proc) -> None:
        async for line in proc.stdout:
            msg = json.loads(line)
            fut = self._pending.pop(msg["id"], None)
            if fut is not None and not fut.done():
                if "error" in msg:
                    fut.set_exception(RuntimeError(msg["error"]))
                else:
                    fut.set_result(msg.get("result"))

    async def start(self, n: int, progress: Progress) -> None:
        from sipmesh.overlay.security import make_ca

        ca = make_ca("bench.sipmesh.test")
        from cryptography.hazmat.primitives import serialization

        init = {
            "ca_key": bytes(ca.signing_key).hex(),
            "ca_cert": ca.certificate.public_bytes(serialization.Encoding.DER).hex(),
            "period": self.stabilisation_period,
        }
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for w in range(self.workers):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).resolve()), "--worker",
                str(Path(self._tmp.name) / f"worker{w}.sqlite"),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
                limit=1 << 22,
            )
            self._procs.append(proc)
            self._readers.append(asyncio.create_task(self._read(proc)))
        for w in range(self.workers):
            await self._call(w, "init", **init)
        self._baseline = sum([await self._call(w, "rss") for w in range(self.workers)])
        rnd = random.Random(n)
        for i in range(n):
            boot = self._addresses[rnd.choice(self._alive)] if self._alive else None
            got = await self._call(i % self.workers, "start", index=i, bootstrap=boot)
            self._addresses.append(tuple(got["address"]))
            self._node_ids.append(got["node_id"])
            self._alive.append(i)
            if (i + 1) % 100 == 0:
                progress(f"{i + 1} peers joined")

    async def put(self, peer: int, key: bytes, value: bytes) -> bool:
        i = self._next_i.get(peer, 0) + 1
        if i > MAX_I:
            return False
        self._next_i[peer] = i
        from sipmesh.overlay.access import node_multiple_resource

        rid = node_multiple_resource(bytes.fromhex(self._node_ids[peer]), i)
        ok = await self._call(peer % self.workers, "put", index=peer, rid=rid.hex(),
                              value=value.hex())
        if ok:
            self._keys[key] = (peer, rid)
        return bool(ok)

    async def get(self, peer: int, key: bytes) -> tuple[bytes | None, int | None]:
        _owner, rid = self._keys[key]
        got = await self._call(peer % self.workers, "get", index=peer, rid=rid.hex())
        if got is None:
            return None, None
        return bytes.fromhex(got["value"]) if got["value"] is not None else None, got["hops"]

    def kill(self, peer: int) -> None:
        self._alive.remove(peer)
        w = peer % self.workers
        line = json.dumps({"id": 0, "op": "kill", "index": peer}) + "\n"
        self._procs[w].stdin.write(line.encode())

    def alive(self) -> list[int]:
        return list(self._alive)

    def bytes_sent(self) -> int:
        return self._bytes

    async def refresh(self) -> None:
        """Collect byte and RSS counters (the runner calls the sync getters)."""
        got = [await self._call(w, "stats") for w in range(self.workers)]
        self._bytes = sum(g["bytes"] for g in got)
        self._rss = sum(g["rss"] for g in got)

    def rss_per_peer(self) -> float:
        return (self._rss - self._baseline) / max(1, len(self._addresses))

    async def stop(self) -> None:
        for p in self._procs:
            if p.returncode is None:
                p.stdin.close()
        for p in self._procs:
            try:
                await asyncio.wait_for(p.wait(), 30)
            except TimeoutError:
                p.kill()
        for t in self._readers:
            t.cancel()
        self._tmp.cleanup()


# ---------------------------------------------------------------- worker side


class _Worker:
    def __init__(self, db_path: str):
        self.db_path = db_path
        self.peers: dict[int, object] = {}
        self.dead_bytes = 0

    def init(self, ca_key: str, ca_cert: str, period: float) -> bool:
        import nacl.signing
        from cryptography import x509

        from sipmesh.overlay.security import CA, Verifier
        from sipmesh.overlay.storage import StoreDatabase

        cert = x509.load_der_x509_certificate(bytes.fromhex(ca_cert))
        self.ca = CA(nacl.signing.SigningKey(bytes.fromhex(ca_key)), cert, "bench.sipmesh.test")
        self.settings = _settings(period)
        self.verifier = Verifier(cert)
        self.db = StoreDatabase(self.db_path)
        return True

    async def start(self, index: int, bootstrap) -> dict:
        from sipmesh.overlay.peer import Peer
        from sipmesh.overlay.security import Identity
        from sipmesh.overlay.storage import Store

        ident = Identity.generate(self.ca, f"peer{index}@bench", os.urandom(16))
        store = Store(self.db, self.settings.kinds, self.ca.certificate,
                      namespace=ident.node_id, verifier=self.verifier)
        peer = Peer(ident, self.settings, store, verifier=self.verifier)
        await peer.start()
        if bootstrap:
            await peer.join([tuple(bootstrap)])
        else:
            await peer.join([], first=True)
        self.peers[index] = peer
        return {"address": list(peer.address), "node_id": ident.node_id.hex()}

    async def put(self, index: int, rid: str, value: str) -> bool:
        from sipmesh.proto.reload_storage import DataValue

        await self.peers[index].store_value(bytes.fromhex(rid), KIND,
                                            [DataValue(True, bytes.fromhex(value))])
        return True

    async def get(self, index: int, rid: str):
        from sipmesh.proto.reload_storage import MODEL_SINGLE, StoredDataSpecifier

        ans, r = await self.peers[index].fetch(bytes.fromhex(rid),
                                               [StoredDataSpecifier(KIND, 0, MODEL_SINGLE)])
        vals = ans.kind_responses[0].values if ans.kind_responses else []
        v = vals[0].value if vals else None
        return {"value": v.value.hex() if v is not None and v.exists else None, "hops": r.hops}

    def kill(self, index: int) -> bool:
        peer = self.peers.pop(index)
        peer.kill()
        self.dead_bytes += peer.bytes_sent()
        return True

    def stats(self) -> dict:
        live = sum(p.bytes_sent() for p in self.peers.values())
        return {"bytes": live + self.dead_bytes, "rss": _rss()}

    def rss(self) -> int:
        return _rss()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _worker_main(db_path: str) -> None:
    import logging

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    w = _Worker(db_path)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 22)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    tasks = set()

    async def handle(msg):
        op = msg.pop("op")
        rid = msg.pop("id")
        try:
            fn = getattr(w, op)
            res = fn(**msg)
            if asyncio.iscoroutine(res):
                res = await res
            reply = {"id": rid, "result": res}
        except Exception as e:  # noqa: BLE001 - reported to the runner as a failed call
            reply = {"id": rid, "error": f"{type(e).__name__}: {e}"}
        if rid:
            out.write(json.dumps(reply) + "\n")
            out.flush()

    while line := await reader.readline():
        t = asyncio.create_task(handle(json.loads(line)))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    for p in list(w.peers.values()):
        p.kill()


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    asyncio.run(_worker_main(sys.argv[2]))
