"""One RELOAD peer with ICE, run inside a test's network namespace.

Driven by lines on stdin; answers on stdout:

    stdout: ready <node-id hex> <host>:<port>
    stdin:  ring               stdout: ring <json: peer.ring() + link kinds>
    stdin:  store <text>       stdout: stored | error <text>   (our user's single value)
    stdin:  fetch <user>       stdout: fetched <text or -> <hops> | error <text>
    stdin:  ping <node hex>    stdout: pong <hops> | error <text>

The overlay CA comes from a JSON file the test writes (key and certificate
as hex): enrollment is tested elsewhere; here the subject is the link.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import nacl.signing
from cryptography import x509

from sipmesh.overlay.kinds import KindDef
from sipmesh.overlay.peer import OverlayError, Peer
from sipmesh.overlay.security import CA, Identity, Verifier
from sipmesh.overlay.settings import OverlaySettings
from sipmesh.overlay.storage import Store
from sipmesh.proto import reload_storage as rs

KIND = 4001


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--stun", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--bootstrap")
    args = ap.parse_args()
    doc = json.loads(open(args.ca).read())
    cert = x509.load_der_x509_certificate(bytes.fromhex(doc["cert"]))
    ca = CA(nacl.signing.SigningKey(bytes.fromhex(doc["key"])), cert, doc["overlay"])
    kinds = {KIND: KindDef(KIND, "note", rs.MODEL_SINGLE, "USER-MATCH", 1, 256)}
    settings = OverlaySettings(doc["overlay"], kinds=kinds, update_interval=2.0,
                               reliability_timer=1.0)
    ident = Identity.generate(ca, args.user, os.urandom(16))
    verifier = Verifier(cert)
    store = Store(os.path.join(args.data, f"{args.user}.sqlite"), kinds, cert, verifier=verifier)
    stun_host, stun_port = args.stun.rsplit(":", 1)
    peer = Peer(ident, settings, store, verifier=verifier, host=args.host, port=args.port,
                ice_stun=(stun_host, int(stun_port)))
    await peer.start()
    if args.bootstrap:
        h, p = args.bootstrap.rsplit(":", 1)
        await peer.join([(h, int(p))])
    else:
        await peer.join([], first=True)
    _say(f"ready {peer.node_id.hex()} {args.host}:{peer.port}")

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode():
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd == "ring":
                info = peer.ring()
                info["link_kinds"] = {
                    ln.remote_node_id.hex(): "ice" if type(ln).__name__ == "IceLink" else "tcp"
                    for ln in peer.links.values()
                }
                _say("ring " + json.dumps(info))
            elif cmd == "store":
                await peer.store_value(args.user, KIND, [rs.DataValue(True, arg.encode())])
                _say("stored")
            elif cmd == "fetch":
                ans, r = await peer.fetch(arg, [rs.StoredDataSpecifier(KIND, 0, rs.MODEL_SINGLE)])
                vals = ans.kind_responses[0].values
                text = vals[0].value.value.decode() if vals and vals[0].value.exists else "-"
                _say(f"fetched {text} {r.hops}")
            elif cmd == "ping":
                r = await peer.ping(bytes.fromhex(arg))
                _say(f"pong {r.hops}")
        except (OverlayError, OSError) as e:
            _say(f"error {e}")
    await peer.stop()


if __name__ == "__main__":
    asyncio.run(main())
