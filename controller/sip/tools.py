"""`sipmesh sip options|listen|call`: the SIP tools an administrator reaches for.

Each runs a short-lived UserAgent on its own event loop. Destinations come
from the URI itself (host, port, ``transport`` parameter; RFC 3263 lookups
are not done here, so give an address or a name with A records).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import ssl
import sys
import time

from sipmesh.app import tune_collector
from sipmesh.sip.message import Response
from sipmesh.sip.transport import Peer
from sipmesh.sip.ua import Incoming, UserAgent
from sipmesh.sip.uri import URI, parse_uri

log = logging.getLogger("sipmesh.sip")
calls_log = logging.getLogger("sipmesh.sip.calls")

SDP_TEMPLATE = (
    "v=0\r\no=sipmesh {sess} {sess} IN IP4 {ip}\r\ns=sipmesh\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
)


def sdp(ip: str, port: int = 40000) -> bytes:
    """A minimal audio offer/answer (RFC 4566) for calls that carry no media yet."""
    return SDP_TEMPLATE.format(sess=int(time.time()), ip=ip, port=port).encode()


def destination(uri: URI, transport: str | None) -> Peer:
    """Where to send a request for uri: its host, port and transport (§18.1.1)."""
    t = (transport or uri.transport or ("tls" if uri.scheme == "sips" else "udp")).lower()
    port = uri.port or (5061 if t == "tls" else 5060)
    return Peer(t, uri.host.strip("[]"), port)


def _client_ssl(insecure: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _line(resp: Response, ms: float) -> str:
    return f"{resp.status} {resp.reason} in {ms:.1f} ms"


async def _options(args) -> int:
    uri = parse_uri(args.uri)
    dest = destination(uri, args.transport)
    ua = UserAgent(args.bind, client_ssl=_client_ssl(args.insecure))
    await ua.listen(udp=0 if dest.transport == "udp" else None,
                    tcp=0 if dest.transport == "tcp" else None)
    results = []
    try:
        for _ in range(args.count):
            req = ua.new_request("OPTIONS", uri)
            req.add("Accept", "application/sdp")
            t0 = time.perf_counter()
            resp = await ua.request(req, dest)
            ms = (time.perf_counter() - t0) * 1000
            results.append({
                "status": resp.status, "reason": resp.reason, "ms": round(ms, 3),
                "server": resp.get("server") or resp.get("user-agent"),
                "allow": resp.get("allow"),
            })
            if not args.json:
                print(f"{args.uri}: {_line(resp, ms)}")
                if results[-1]["server"]:
                    print(f"  server: {results[-1]['server']}")
                if results[-1]["allow"]:
                    print(f"  allow:  {results[-1]['allow']}")
    finally:
        await ua.close()
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if all(200 <= r["status"] < 300 for r in results) else 1


async def _listen(args) -> int:
    if args.quiet:
        calls_log.setLevel(logging.WARNING)
    ua = UserAgent(args.bind, user=args.user)
    stop = asyncio.Event()

    def on_invite(inc: Incoming) -> None:
        req = inc.request
        calls_log.info("INVITE from %s (%s) via %s", req.from_, req.call_id,
                       inc.peer.transport)
        inc.respond(180)
        inc.respond(200, body=sdp(args.bind), content_type="application/sdp")

    def on_bye(inc: Incoming) -> None:
        calls_log.info("BYE for %s: call ended", inc.request.call_id)
        inc.respond(200)

    def on_ack(inc: Incoming) -> None:
        calls_log.info("ACK for %s: call established", inc.request.call_id)

    ua.on("INVITE", on_invite)
    ua.on("BYE", on_bye)
    ua.on("ACK", on_ack)
    await ua.listen(udp=args.port, tcp=args.port if args.tcp else None)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tune_collector()
    ports = ", ".join(f"{t} {p}" for t, p in sorted(ua.transport.ports.items()))
    log.info("listening on %s (%s) as sip:%s@%s", args.bind, ports, args.user, args.bind)
    await stop.wait()
    log.info("stopping after answering %d calls", ua.calls_answered)
    await ua.close()
    return 0


async def _call(args) -> int:
    uri = parse_uri(args.uri)
    dest = destination(uri, args.transport)
    ua = UserAgent(args.bind, client_ssl=_client_ssl(args.insecure))
    await ua.listen(udp=0 if dest.transport == "udp" else None,
                    tcp=0 if dest.transport == "tcp" else None)
    t0 = time.perf_counter()

    def provisional(resp: Response) -> None:
        print(f"< {_line(resp, (time.perf_counter() - t0) * 1000)}")

    try:
        print(f"> INVITE {args.uri}")
        resp, dialog = await ua.invite(args.uri, dest, sdp=sdp(args.bind),
                                       on_provisional=provisional)
        print(f"< {_line(resp, (time.perf_counter() - t0) * 1000)}")
        if dialog is None:
            return 1
        print("> ACK")
        await asyncio.sleep(args.duration)
        print("> BYE")
        bye = await ua.bye(dialog, dest)
        print(f"< {bye.status} {bye.reason}")
        return 0 if 200 <= bye.status < 300 else 1
    finally:
        await ua.close()


def add_commands(sub) -> None:
    """Add options, listen and call to the `sipmesh sip` parser."""
    opt = sub.add_parser("options", help="SIP ping: send OPTIONS and time the answer")
    opt.add_argument("uri")
    opt.add_argument("--count", type=int, default=1)
    opt.add_argument("--json", action="store_true")
    listen = sub.add_parser("listen", help="answer calls and log them until Ctrl-C")
    listen.add_argument("--port", type=int, default=5060)
    listen.add_argument("--user", default="sipmesh")
    listen.add_argument("--tcp", action="store_true", help="also listen on TCP")
    listen.add_argument("--quiet", action="store_true", help="do not log each call (load tests)")
    call = sub.add_parser("call", help="place a call, print the responses, hang up")
    call.add_argument("uri")
    call.add_argument("--duration", type=float, default=5.0, help="seconds before BYE")
    for p in (opt, listen, call):
        p.add_argument("--bind", default="127.0.0.1", help="local address")
    for p in (opt, call):
        p.add_argument("--transport", choices=("udp", "tcp", "tls"))
        p.add_argument("--insecure", action="store_true",
                       help="TLS: do not verify the server certificate")
    opt.set_defaults(func=lambda a: _run(_options(a)))
    listen.set_defaults(func=lambda a: _run(_listen(a)))
    call.set_defaults(func=lambda a: _run(_call(a)))


def _run(coro) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    return asyncio.run(coro)
