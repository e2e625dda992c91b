"""The ``sipmesh`` command. Later capabilities add their subcommands here."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from sipmesh import __version__, config


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    logging.basicConfig(
        level=getattr(logging, (args.log_level or cfg.log_level).upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from sipmesh.app import serve
    from sipmesh.overlay.service import OverlayServiceError

    try:
        asyncio.run(serve(cfg))
    except OverlayServiceError as e:
        print(f"sipmesh: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    if args.default:
        sys.stdout.write(config.default_text())
        return 0
    cfg = config.load(args.config)
    print(f"source    {cfg.source}")
    print(f"branch    {cfg.branch}")
    print(f"data_dir  {cfg.data_dir}")
    print(f"log_level {cfg.log_level}")
    listen = ", ".join(f"{p}:{h}:{n}" for p, h, n in cfg.sip_listen) or "(nothing)"
    print(f"sip       sip:{cfg.sip_user}@ listening on {listen}")
    ov = cfg.overlay
    if ov.enabled:
        how = "demo CA" if ov.demo else f"enroll as {ov.user} at {ov.enroll_url}"
        boot = ", ".join(f"{h}:{p}" for h, p in ov.bootstrap) or "from the configuration document"
        print(f"overlay   peer on {ov.listen[0]}:{ov.listen[1]} "
              f"({'plain TCP' if ov.plain_tcp else 'TLS'}), {how}, bootstrap {boot}"
              f"{', may start a ring' if ov.first else ''}")
    else:
        print("overlay   (disabled)")
    return 0


def _cmd_sip_lint(args: argparse.Namespace) -> int:
    from sipmesh.sip import lint

    return lint.run(args.files, args.json)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, exposed so tests and docs can inspect it."""
    parser = argparse.ArgumentParser(
        prog="sipmesh",
        description="Self-configuring telephony edge for branch offices.",
    )
    parser.add_argument("--version", action="version", version=f"sipmesh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="start the controller (embedded demo config by default)")
    run.add_argument("--config", metavar="FILE", help="TOML configuration file")
    run.add_argument("--log-level", choices=config.LOG_LEVELS, help="override the log level")
    run.set_defaults(func=_cmd_run)

    cfg = sub.add_parser("config", help="check and show the configuration")
    cfg.add_argument("--config", metavar="FILE", help="TOML configuration file")
    cfg.add_argument("--default", action="store_true", help="print the embedded default")
    cfg.set_defaults(func=_cmd_config)

    sip = sub.add_parser("sip", help="SIP tools: options, listen, call, lint")
    sip_sub = sip.add_subparsers(dest="sip_command", metavar="SIPCOMMAND", required=True)
    from sipmesh.sip.tools import add_commands

    add_commands(sip_sub)
    lint = sip_sub.add_parser(
        "lint", help="check raw SIP messages (one per file, '-' for stdin), byte-exact"
    )
    lint.add_argument("files", nargs="+", metavar="FILE")
    lint.add_argument("--json", action="store_true", help="machine-readable output")
    lint.set_defaults(func=_cmd_sip_lint)

    overlay = sub.add_parser("overlay", help="RELOAD overlay: start a peer, ring, store, fetch")
    overlay_sub = overlay.add_subparsers(dest="overlay_command", metavar="OVERLAYCOMMAND",
                                         required=True)
    from sipmesh.overlay_cli import add_commands as add_overlay_commands

    add_overlay_commands(overlay_sub)
    from sipmesh.trunk_cli import add_commands as add_trunk_commands

    add_trunk_commands(sub)

    board = sub.add_parser("board", help="one board: build, flash, deploy, provision, sim")
    board_sub = board.add_subparsers(dest="board_command", metavar="BOARDCOMMAND", required=True)
    from sipmesh.board_cli import add_commands as add_board_commands
    from sipmesh.board_serial_cli import add_commands as add_board_serial_commands

    add_board_commands(board_sub)
    add_board_serial_commands(board_sub)
    from sipmesh.boards_cli import add_commands as add_boards_commands

    add_boards_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except config.ConfigError as e:
        print(f"sipmesh: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
