"""`sipmesh board provision|info|logs|reboot|sim`: one board over its serial line.

Exit codes, the same for every command here: 0 done, 1 the board answered
with an error (or a wrong answer), 2 usage, 3 no answer or no such port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

OK, BOARD_ERROR, USAGE, NO_ANSWER = 0, 1, 2, 3
# `logs --follow` asks the board for new lines this often; the ring buffer
# holds ~50 lines, far more than a board logs in a second.
FOLLOW_INTERVAL = 1.0


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _fail(e: Exception) -> int:
    from sipmesh.boards.serial_link import SerialError

    print(f"sipmesh: {e}", file=sys.stderr)
    if isinstance(e, SerialError) and not e.answered:
        return NO_ANSWER
    return BOARD_ERROR


def _open(args: argparse.Namespace, **kw: Any) -> Any:
    from sipmesh.boards.serial_link import SerialLink

    return SerialLink(args.port, args.baud, args.timeout, **kw)


def _cmd_info(args: argparse.Namespace) -> int:
    from sipmesh.boards.serial_link import SerialError

    try:
        with _open(args) as link:
            info = link.request("info")
    except SerialError as e:
        return _fail(e)
    info.pop("ok", None)
    if args.json:
        print(json.dumps(_jsonable(info), sort_keys=True))
        return OK
    for key in ("id", "kind", "fw", "state", "name", "cfg", "ip", "uptime", "free", "alloc", "kid"):
        if key in info:
            print(f"{key:<8} {_jsonable(info[key])}")
    return OK


def _print_lines(lines: list[Any], as_json: bool) -> None:
    for line in lines:
        print(json.dumps({"line": line}) if as_json else line, flush=True)


def _cmd_logs(args: argparse.Namespace) -> int:
    from sipmesh.boards.serial_link import SerialError
    from sipmesh.proto import cbor, frame

    def on_frame(f: frame.Frame) -> None:
        if f.type != frame.LOG:
            return
        try:
            item = cbor.loads(f.payload)
        except cbor.CBORDecodeError:
            return
        if isinstance(item, dict):
            item = item.get("line")
        text = item
        if isinstance(text, str):
            _print_lines([text], args.json)

    try:
        with _open(args, on_frame=on_frame if args.follow else None) as link:
            since = 0
            while True:
                answer = link.request("logs", since=since)
                _print_lines(list(answer.get("lines", [])), args.json)
                since = int(answer.get("next", since))
                if not args.follow:
                    return OK
                link.poll(FOLLOW_INTERVAL)
    except SerialError as e:
        return _fail(e)


def _cmd_reboot(args: argparse.Namespace) -> int:
    from sipmesh.boards.serial_link import SerialError

    try:
        with _open(args) as link:
            link.request("reboot")
    except SerialError as e:
        return _fail(e)
    print(f"{args.port}: rebooting")
    return OK


def _enroller(args: argparse.Namespace) -> Any:
    """The controller side of provisioning: the controller's BoardService on its data folder."""
    from sipmesh import config

    try:
        from sipmesh.boards.service import BoardService
    except ImportError as e:
        raise SystemExit(f"sipmesh: the controller's board service is missing: {e}") from e
    cfg = config.load(args.config)
    data_dir = Path(args.data_dir) if args.data_dir else Path(cfg.data_dir)
    if not args.aor:
        args.aor = f"sip:{args.name}@{cfg.branch}.sipmesh"
    return _OverlayEnroller(BoardService(cfg.boards, data_dir, branch=cfg.branch), cfg, data_dir)


class _OverlayEnroller:
    """BoardService.enroll_board plus the board's overlay certificate (RFC 6940
    §3.2 client, user ``NAME@OVERLAY``) from the demo overlay CA in the data folder."""

    def __init__(self, service: Any, cfg: Any, data_dir: Path) -> None:
        self.service, self.cfg, self.data_dir = service, cfg, data_dir

    def enroll_board(self, board_id: str, pub: bytes, kind: str, fw: str, name: str, aor: str,
                     **kw: Any) -> dict:
        from sipmesh.overlay.service import OverlayServiceError, demo_board_certificate

        if not kw.get("cert") and self.cfg.overlay.enabled and self.cfg.overlay.demo:
            overlay = f"{self.cfg.branch}.demo.sipmesh"
            try:
                kw["cert"], kw["ca_key"] = demo_board_certificate(
                    self.data_dir, overlay, pub, f"{name}@{overlay}")
            except OverlayServiceError as e:
                raise SystemExit(f"sipmesh: {e}") from None
        return self.service.enroll_board(board_id, pub, kind, fw, name, aor, **kw)


def _cmd_provision(args: argparse.Namespace) -> int:
    from sipmesh.boards.provision import ProvisionError, provision
    from sipmesh.boards.serial_link import SerialError

    def progress(step: str) -> None:
        if not args.json:
            print(f"[{step}]", flush=True)

    try:
        controller = _enroller(args)
        with _open(args) as link:
            result = provision(
                link, controller, name=args.name, aor=args.aor, board_key=args.key_on,
                progress=progress,
            )
    except (SerialError, ProvisionError) as e:
        return _fail(e)
    if args.json:
        print(json.dumps(_jsonable(result), sort_keys=True))
    else:
        print(f"provisioned {result['id']} as {result['name']} "
              f"(key made on the {result['key_on']}, configuration {result['cfg']}, "
              f"state {result['state']})")
    return OK


def _cmd_sim(args: argparse.Namespace) -> int:
    from sipmesh.boards import sim

    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    board = sim.VirtualBoard(root, Path(args.pty), heap=args.heap, board_id=args.id, ip=args.ip,
                             netns=args.netns)

    async def run() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(sim.serve(board, ready=ready))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if ready.is_set():
            print(f"board {board.board_id} on {args.pty} (root {board.root}, heap {args.heap})",
                  flush=True)
        await task

    try:
        if args.bundle:
            n = sim.install_bundle(Path(args.bundle), root)
            print(f"installed {n} files from {args.bundle}", flush=True)
        asyncio.run(run())
    except sim.SimError as e:
        print(f"sipmesh: {e}", file=sys.stderr)
        return USAGE
    return OK


def _serial_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, metavar="P", help="the board's serial port")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--timeout", type=float, default=5.0, metavar="S",
                   help="seconds to wait for each answer (default 5)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register provision, info, logs, reboot and sim under `sipmesh board`."""
    p = sub.add_parser("provision", help="give a board its identity and first configuration")
    _serial_options(p)
    p.add_argument("--name", required=True, metavar="N", help="the board's name, e.g. door-1")
    p.add_argument("--aor", metavar="A", help="its SIP address of record")
    p.add_argument("--config", metavar="FILE", help="the controller's configuration file")
    p.add_argument("--data-dir", metavar="D", help="the controller's data folder")
    p.add_argument("--key-on", choices=("board", "controller"), default="board",
                   help="where the board's key pair is made (default: on the board)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_provision)

    p = sub.add_parser("info", help="what a board reports about itself")
    _serial_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("logs", help="a board's recent log lines")
    _serial_options(p)
    p.add_argument("--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_cmd_logs)

    p = sub.add_parser("reboot", help="reset a board")
    _serial_options(p)
    p.set_defaults(func=_cmd_reboot)

    p = sub.add_parser("sim", help="run a virtual board (MicroPython unix port behind a PTY)")
    p.add_argument("--root", required=True, metavar="DIR", help="the board's flash (a folder)")
    p.add_argument("--pty", required=True, metavar="PATH", help="symlink to the board's PTY")
    p.add_argument("--heap", default="100K", help="interpreter heap (default 100K, an ESP32)")
    p.add_argument("--id", metavar="ID", help="board id (default: derived from the root path)")
    p.add_argument("--ip", metavar="A.B.C.D", help="the address the board reports")
    p.add_argument("--netns", metavar="NS", help="run the interpreter in this network namespace")
    p.add_argument("--bundle", metavar="DIR", help="install a built bundle into the root first")
    p.set_defaults(func=_cmd_sim)
