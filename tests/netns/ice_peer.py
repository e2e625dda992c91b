"""One RELOAD ICE peer, run inside a test's network namespace.

The test drives it by lines (hex bodies, encoded with the real codecs):

    stdout: attach <hex AttachReqAns>   our ICE parameters, after gathering
    stdin:  remote <hex AttachReqAns>   the peer's, starts the checks
    stdout: connected <local (host, port)> <remote (host, port)> | error <text>
    stdin:  send <hex message>          one RELOAD message over the link
    stdout: message <hex message>       one RELOAD message received
    stdin:  close
    stdout: closed <reason or ->        the link's on_closed
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from sipmesh.overlay.ice import IceAgent, IceError, IceLink
from sipmesh.proto.reload_topology import decode_attach


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--controlling", action="store_true")
    ap.add_argument("--stun", required=True, help="HOST:PORT of the STUN server")
    ap.add_argument("--rto", type=float, default=0.5)
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    host, port = args.stun.rsplit(":", 1)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    agent = IceAgent(args.controlling, (host, int(port)))
    ours = await agent.gather()
    _say("attach " + ours.encode().hex())

    def on_message(link: IceLink, message: bytes) -> None:
        _say("message " + message.hex())

    def on_closed(link: IceLink, exc: Exception | None) -> None:
        _say("closed " + (str(exc) if exc else "-"))

    link = None
    while line := (await reader.readline()).decode():
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "remote":
            try:
                link = await agent.connect(
                    decode_attach(bytes.fromhex(arg)),
                    timeout=args.timeout,
                    on_message=on_message,
                    on_closed=on_closed,
                    rto=args.rto,
                )
            except IceError as exc:
                _say(f"error {exc}")
                return
            _say(f"connected {link.local_address} {link.remote_address}")
        elif cmd == "send" and link is not None:
            link.send(bytes.fromhex(arg))
        elif cmd == "close" and link is not None:
            link.close()
            await link.wait_closed()
    if link is not None:
        link.abort()
        await link.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
