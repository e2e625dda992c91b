"""``sipmesh overlay ...``: run a RELOAD peer and talk to a running one.

``start`` runs a peer in the foreground (RFC 6940 §10.5 Join, §10.9 Leave
on Ctrl-C or SIGTERM); ``enrollment-server`` runs an overlay's
configuration and enrollment server (§11.2, §11.3). The other commands are
clients of the peer's local control channel (a Unix socket in its data
folder, see :mod:`sipmesh.overlay.control`). Exit codes: 0 success, 1 the
overlay answered a RELOAD error (§14.9, named in the message), 2 usage,
3 no peer running for that data folder.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import ssl
import sys
from pathlib import Path

from sipmesh import config
from sipmesh.overlay.control import SOCKET_NAME, ControlUnavailable, call

EXIT_RELOAD_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_PEER = 3


def _host_port(text: str) -> tuple[str, int]:
    try:
        return config.parse_host_port(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _index_range(text: str) -> list[int]:
    first, sep, last = text.partition("-")
    try:
        a, b = int(first), int(last) if sep else int(first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or A-B") from None
    if not 0 <= a <= b <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= A <= B < 2^32")
    return [a, b]


def _key_hex(text: str) -> str:
    """A dictionary key: text as UTF-8, or bytes written as ``0x`` + hex."""
    if text.startswith("0x"):
        try:
            return bytes.fromhex(text[2:]).hex()
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not 0x + hex") from None
    return text.encode("utf-8").hex()


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def _until_signal(what: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        logging.getLogger("sipmesh").info("%s ready; Ctrl-C stops it", what)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# ------------------------------------------------------------------ start


async def _serve_peer(options: config.OverlayOptions, data_dir: Path, branch: str) -> int:
    from sipmesh.overlay.service import OverlayService, OverlayServiceError

    service = OverlayService(options, data_dir, branch=branch)
    try:
        await service.start()
    except OverlayServiceError as e:
        print(f"sipmesh: {e}", file=sys.stderr)
        return EXIT_RELOAD_ERROR
    try:
        await _until_signal("overlay peer")
    finally:
        logging.getLogger("sipmesh").info("leaving the overlay")
        await service.stop()
        logging.getLogger("sipmesh").info("stopped")
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    _logging(args.log_level or cfg.log_level)
    opts = cfg.overlay
    changes: dict = {}
    if args.listen:
        changes["listen"] = args.listen
    if args.bootstrap:
        changes["bootstrap"] = tuple(args.bootstrap)
    if args.first:
        changes["first"] = True
    if args.plain_tcp:
        changes["plain_tcp"] = True
    opts = dataclasses.replace(opts, **changes)
    data_dir = Path(args.data) if args.data else cfg.data_dir
    return asyncio.run(_serve_peer(opts, data_dir, cfg.branch))


# ------------------------------------------------------------------ enrollment server


async def _serve_enrollment(args: argparse.Namespace, users: list[tuple[str, str]]) -> int:
    from sipmesh.overlay.enroll import EnrollmentServer
    from sipmesh.overlay.service import (
        OverlayServiceError,
        load_or_make_authority,
        overlay_document,
    )

    folder = Path(args.data)
    try:
        ca, signer = load_or_make_authority(folder, args.overlay)
    except OverlayServiceError as e:
        print(f"sipmesh: {e}", file=sys.stderr)
        return EXIT_USAGE
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as e:
        print(f"sipmesh: cannot load --tls-cert/--tls-key: {e}", file=sys.stderr)
        return EXIT_USAGE
    host, port = args.listen
    server = EnrollmentServer(
        ca=ca, config=overlay_document(ca, signer, bootstrap=tuple(args.bootstrap), days=365),
        signer=signer, data_dir=folder, ssl_context=tls, host=host, port=port,
    )
    try:
        for name, password in users:
            server.add_user(name, password)
        await server.start()
    except (ValueError, OSError) as e:
        await server.stop()
        print(f"sipmesh: {e}", file=sys.stderr)
        return EXIT_USAGE
    logging.getLogger("sipmesh").info("enrollment server of %s: %s", args.overlay,
                                      server.config_url)
    try:
        await _until_signal("enrollment server")
    finally:
        await server.stop()
    return 0


def _cmd_enrollment_server(args: argparse.Namespace) -> int:
    _logging(args.log_level)
    users = []
    for entry in args.user:
        name, sep, path = entry.partition(":")
        if not sep or not name or not path:
            print(f"sipmesh: --user {entry!r} is not NAME:PASSWORD_FILE", file=sys.stderr)
            return EXIT_USAGE
        try:
            users.append((name, Path(path).read_text(encoding="utf-8").rstrip("\r\n")))
        except OSError as e:
            print(f"sipmesh: cannot read {path}: {e.strerror}", file=sys.stderr)
            return EXIT_USAGE
    return asyncio.run(_serve_enrollment(args, users))


# ------------------------------------------------------------------ clients


def _join(ids: list[str]) -> str:
    return ", ".join(ids) if ids else "(none)"


def _show_ring(a: dict) -> None:
    st = a.get("stored", {})
    low, high = (a.get("responsible") or ["?", "?"])[:2]
    rows = [
        ("overlay", a.get("overlay", "")),
        ("node-id", a["node_id"]),
        ("address", a["address"]),
        ("joined", "yes" if a["joined"] else "no"),
        ("uptime", f"{a['uptime']} s"),
        ("responsible", f"({low}, {high}]"),
        ("predecessors", _join(a["predecessors"])),
        ("successors", _join(a["successors"])),
        ("fingers", f"{len(a['fingers'])}: {_join(a['fingers'])}"),
        ("links", _join(a["links"])),
        ("stored", f"{st.get('resources', 0)} resources, {st.get('values', 0)} values, "
                   f"{st.get('bytes', 0)} bytes"),
    ]
    for name, value in rows:
        print(f"{name:<13}{value}")


def _where(v: dict) -> str:
    if "index" in v:
        return f" index {v['index']}"
    if "key_hex" in v:
        return f" key 0x{v['key_hex']}"
    return ""


def _show_store(a: dict) -> None:
    for r in a["stored"]:
        print(f"stored kind {r['kind']} (generation {r['generation']}), "
              f"replicas: {_join(r['replicas'])}")


def _show_fetch(a: dict) -> None:
    print(f"{a['resource']}: answered by {a['responder']} after {a['hops']} hop(s)")
    if not a["values"]:
        print("no value")
    for v in a["values"]:
        text = v["value"] if v["value"] is not None else "0x" + v["value_hex"]
        print(f"kind {v['kind']}{_where(v)}: {text} (lifetime {v['lifetime']} s)")


def _show_stat(a: dict) -> None:
    if not a["values"]:
        print(f"{a['resource']}: no value")
    for v in a["values"]:
        print(f"kind {v['kind']}{_where(v)}: {v['value_length']} bytes, generation "
              f"{v['generation']}, lifetime {v['lifetime']} s, hash {v['hash_hex']}")


def _show_ping(a: dict) -> None:
    print(f"answer from {a['responder']} in {a['rtt_ms']} ms ({a['hops']} hop(s))")


def _client(args: argparse.Namespace, request: dict, show) -> int:
    path = Path(args.data) / SOCKET_NAME
    try:
        answer = call(path, request, timeout=args.timeout)
    except ControlUnavailable as e:
        print(f"sipmesh: no running overlay peer for data folder {args.data} ({e}); start one "
              f"with `sipmesh overlay start --data {args.data}` or `sipmesh run`",
              file=sys.stderr)
        return EXIT_NO_PEER
    except TimeoutError:
        print(f"sipmesh: the overlay peer of {args.data} did not answer in {args.timeout} s",
              file=sys.stderr)
        return EXIT_NO_PEER
    err = answer.get("error")
    if args.json:
        print(json.dumps(answer, indent=1))
    if err:
        if err.get("code") is None:
            print(f"sipmesh: bad request: {err.get('reason')}", file=sys.stderr)
            return EXIT_USAGE
        print(f"sipmesh: overlay answered {err['name']} ({err['code']}): {err.get('reason', '')}",
              file=sys.stderr)
        return EXIT_RELOAD_ERROR
    if not args.json:
        show(answer)
    return 0


def _cmd_ring(args: argparse.Namespace) -> int:
    return _client(args, {"op": "ring"}, _show_ring)


def _cmd_store(args: argparse.Namespace) -> int:
    req = {"op": "store", "resource": args.resource, "kind": args.kind, "value": args.value}
    if args.index is not None:
        req["index"] = args.index
    if args.key is not None:
        req["key_hex"] = args.key
    if args.lifetime is not None:
        req["lifetime"] = args.lifetime
    return _client(args, req, _show_store)


def _specifier(args: argparse.Namespace, op: str) -> dict:
    req = {"op": op, "resource": args.resource, "kind": args.kind}
    if getattr(args, "index", None) is not None:
        req["indices"] = [args.index]
    if getattr(args, "key", None) is not None:
        req["key_hex"] = args.key
    return req


def _cmd_fetch(args: argparse.Namespace) -> int:
    return _client(args, _specifier(args, "fetch"), _show_fetch)


def _cmd_stat(args: argparse.Namespace) -> int:
    return _client(args, _specifier(args, "stat"), _show_stat)


def _cmd_ping(args: argparse.Namespace) -> int:
    return _client(args, {"op": "ping", "node": args.node}, _show_ping)


# ------------------------------------------------------------------ parser


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``overlay`` subcommands to ``sub`` (the subparsers of ``overlay``)."""
    start = sub.add_parser("start", help="run a peer in the foreground until Ctrl-C (then Leave)")
    start.add_argument("--config", metavar="FILE", help="TOML configuration ([overlay] section)")
    start.add_argument("--listen", type=_host_port, metavar="HOST:PORT")
    start.add_argument("--bootstrap", type=_host_port, metavar="HOST:PORT", nargs="+",
                       help="peers to join through (default: config, then the overlay's)")
    start.add_argument("--first", action="store_true", help="start a ring if no peer answers")
    start.add_argument("--data", metavar="DIR", help="data folder (default: controller.data_dir)")
    start.add_argument("--plain-tcp", action="store_true", help="plain TCP links (tests only)")
    start.add_argument("--log-level", choices=config.LOG_LEVELS)
    start.set_defaults(func=_cmd_start)

    es = sub.add_parser("enrollment-server",
                        help="run an overlay's configuration and enrollment server (HTTPS)")
    es.add_argument("--data", metavar="DIR", required=True, help="CA and accounts (made once)")
    es.add_argument("--overlay", metavar="NAME", required=True, help="overlay instance name")
    es.add_argument("--listen", type=_host_port, metavar="HOST:PORT", required=True)
    es.add_argument("--tls-cert", metavar="FILE", required=True)
    es.add_argument("--tls-key", metavar="FILE", required=True)
    es.add_argument("--user", metavar="NAME:PASSWORD_FILE", action="append", default=[],
                    help="an account (repeat for more)")
    es.add_argument("--bootstrap", type=_host_port, metavar="HOST:PORT", nargs="+", default=[],
                    help="bootstrap peers the configuration names")
    es.add_argument("--log-level", choices=config.LOG_LEVELS, default="info")
    es.set_defaults(func=_cmd_enrollment_server)

    def client(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--data", metavar="DIR", default=".sipmesh",
                       help="the peer's data folder (default: .sipmesh)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--timeout", type=float, default=60.0, help=argparse.SUPPRESS)
        p.set_defaults(func=func)
        return p

    client("ring", "show the running peer's neighbours, fingers and links", _cmd_ring)
    store = client("store", "sign and store a value at a resource", _cmd_store)
    store.add_argument("resource", metavar="RESOURCE")
    store.add_argument("--kind", type=int, required=True, metavar="ID")
    store.add_argument("--value", required=True, metavar="TEXT")
    where = store.add_mutually_exclusive_group()
    where.add_argument("--index", type=int, metavar="N", help="array index (default: append)")
    where.add_argument("--key", type=_key_hex, metavar="K", help="dictionary key (0x... = hex)")
    store.add_argument("--lifetime", type=int, metavar="S", help="seconds (default 86400)")
    fetch = client("fetch", "fetch a resource's values of one kind", _cmd_fetch)
    fetch.add_argument("resource", metavar="RESOURCE")
    fetch.add_argument("--kind", type=int, required=True, metavar="ID")
    where = fetch.add_mutually_exclusive_group()
    where.add_argument("--index", type=_index_range, metavar="A-B", help="array range")
    where.add_argument("--key", type=_key_hex, metavar="K", help="dictionary key (0x... = hex)")
    stat = client("stat", "metadata of a resource's values of one kind", _cmd_stat)
    stat.add_argument("resource", metavar="RESOURCE")
    stat.add_argument("--kind", type=int, required=True, metavar="ID")
    ping = client("ping", "RELOAD Ping a node through the overlay", _cmd_ping)
    ping.add_argument("node", metavar="NODE_ID", help="Node-ID in hex")
