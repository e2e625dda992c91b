"""``sipmesh boards``: the boards the controller knows, from its registry
(``DATA_DIR/boards.sqlite``), as a table or JSON; ``sipmesh boards history
ID`` lists one board's events. Reading never creates the registry.
Exit codes: 0 success, 1 unknown board, 2 usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

from sipmesh import config

EXIT_UNKNOWN = 1
EXIT_USAGE = 2


def _registry(args: argparse.Namespace):
    from sipmesh.boards.registry import FILE_NAME, BoardRegistry

    if args.data_dir:
        data_dir = Path(args.data_dir)
    else:
        try:
            data_dir = config.load(args.config).data_dir
        except config.ConfigError as e:
            print(f"sipmesh boards: {e}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
    path = data_dir / FILE_NAME
    return BoardRegistry(path) if path.exists() else None


def _age(t: float | None, now: float) -> str:
    if t is None:
        return "-"
    s = max(0, int(now - t))
    if s < 120:
        return f"{s}s ago"
    if s < 7200:
        return f"{s // 60}m ago"
    return f"{s // 3600}h ago" if s < 172800 else f"{s // 86400}d ago"


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _dump(value: object) -> None:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _cmd_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    boards = registry.boards() if registry else []
    if args.json:
        _dump({"boards": [b.to_json() for b in boards]})
        return 0
    if not boards:
        print("no boards known yet")
        return 0
    now = time.time()
    rows = [("ID", "NAME", "STATE", "KIND", "FW", "ADDRESS", "CFG", "LAST SEEN")]
    for b in boards:
        where = f"{b.ip}:{b.port}" if b.ip and b.port else (b.ip or "-")
        cfg = f"{b.cfg_confirmed}/{b.cfg_seq}" if b.cfg_seq else "-"
        rows.append((b.id, b.name or "-", b.state, b.kind or "-", b.fw or "-", where, cfg,
                     _age(b.last_seen, now)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    registry = _registry(args)
    board = registry.get(args.id) if registry else None
    if board is None:
        print(f"sipmesh boards: no board {args.id}", file=sys.stderr)
        return EXIT_UNKNOWN
    entries = registry.history(args.id, limit=args.limit)
    if args.json:
        _dump({"board": board.to_json(), "history": [e.to_json() for e in entries]})
        return 0
    print(f"{board.id} {board.name or ''} ({board.state})".replace("  ", " "))
    for e in entries:
        print(f"{_when(e.at)}  {e.event:<11} {e.detail}")
    return 0


def _common(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--json", action="store_true", default=default,
                        help="machine-readable output")
    parser.add_argument("--config", metavar="FILE", default=default,
                        help="TOML configuration file (for data_dir)")
    parser.add_argument("--data-dir", metavar="DIR", default=default,
                        help="the controller's data folder (overrides the configuration)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``sipmesh boards`` and ``sipmesh boards history ID``."""
    boards = sub.add_parser("boards", help="list the boards: state, address, configuration")
    _common(boards, None)
    boards.set_defaults(func=_cmd_list, json=False)
    boards_sub = boards.add_subparsers(dest="boards_command", metavar="BOARDSCOMMAND")
    history = boards_sub.add_parser("history", help="one board's events, oldest first")
    history.add_argument("id", metavar="ID", help="board id (sm-...)")
    history.add_argument("--limit", type=int, default=200, help="at most this many events")
    # SUPPRESS: options given before "history" are not reset by the subcommand.
    _common(history, argparse.SUPPRESS)
    history.set_defaults(func=_cmd_history)
