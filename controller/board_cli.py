"""`sipmesh board build|flash|deploy`: put the firmware and the application on a board.

build compiles the bundle (sipmesh.boards.bundle), flash writes a
MicroPython image (sipmesh.boards.flash), deploy copies the bundle with
mpremote (sipmesh.boards.deploy). Long steps draw a text progress bar on
stderr when stderr is a terminal; ``--json`` prints one JSON object on
stdout for scripts. Errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from sipmesh.boards import boardkind

KINDS = ("unix", "esp32", "rp2040-w")


class _Bar:
    """A one-line text progress bar on stderr, drawn only on a terminal."""

    WIDTH = 30

    def __init__(self, label: str, unit: str = "") -> None:
        self.label = label
        self.unit = unit
        self.on = sys.stderr.isatty()
        self.drawn = False

    def __call__(self, done: int, total: int, name: str) -> None:
        if not self.on or total <= 0:
            return
        filled = self.WIDTH * min(done, total) // total
        amount = f"{done}/{total}{self.unit}"
        line = f"\r{self.label} [{'#' * filled}{'-' * (self.WIDTH - filled)}] {amount} {name}"
        sys.stderr.write(line[:120] + "\x1b[K")
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _fail(message: str, code: int, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": False, "error": message}))
    print(f"sipmesh board: {message}", file=sys.stderr)
    return code


def _cache_dir(kind: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sipmesh" / "bundles" / kind


def _cmd_build(args: argparse.Namespace) -> int:
    from sipmesh.boards import bundle

    out = Path(args.out) if args.out else Path("build") / f"bundle-{args.kind}"
    bar = _Bar(f"build {args.kind}", " files")
    try:
        m = bundle.build(args.kind, out, version=args.version, progress=bar)
    except (bundle.BuildError, boardkind.BoardKindError) as e:
        return _fail(str(e), 2, args.json)
    finally:
        bar.close()
    summary: dict[str, Any] = {"ok": True, "kind": m.kind, "version": m.version, "mpy": m.mpy,
                               "dir": str(m.root), "files": len(m.files),
                               "bytes": m.total_bytes}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"bundle {m.version} for {m.kind} (.mpy {m.mpy}) in {m.root}: "
              f"{len(m.files)} files, {m.total_bytes} bytes")
    return 0


def _cmd_flash(args: argparse.Namespace) -> int:
    from sipmesh.boards import flash

    try:
        kind = boardkind.load(args.kind)
        digest = flash.check_image(kind, Path(args.image))
        commands = flash.plan(kind, args.image, port=args.port, baud=args.baud,
                              drive=args.drive)
    except boardkind.BoardKindError as e:
        return _fail(str(e), 2, args.json)
    except flash.FlashError as e:
        return _fail(str(e), e.exit_code, args.json)
    report: dict[str, Any] = {"kind": kind.kind, "image": args.image, "sha256": digest,
                              "commands": commands, "dry_run": args.dry_run}
    if args.dry_run:
        if args.json:
            print(json.dumps({"ok": True, **report}))
        else:
            sys.stdout.write(flash.format_plan(commands))
        return 0
    # With --json, the tools' own output (esptool's progress) goes to stderr.
    out = sys.stderr.buffer if args.json else sys.stdout.buffer
    try:
        flash.run(commands, out)
    except flash.FlashError as e:
        if args.json:
            print(json.dumps({"ok": False, "error": str(e), **report}))
        print(f"sipmesh board: flash failed: {e}", file=sys.stderr)
        return e.exit_code
    if args.json:
        print(json.dumps({"ok": True, **report}))
    else:
        print(f"flashed {args.image} onto the {kind.kind} board")
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    from sipmesh.boards import bundle, deploy

    try:
        kind = boardkind.load(args.kind)
        if args.bundle:
            m = bundle.load(Path(args.bundle))
            if m.kind != kind.kind:
                return _fail(f"bundle {args.bundle} is for {m.kind}, not {kind.kind}", 2,
                             args.json)
            bundle_dir = m.root
        else:
            bar = _Bar(f"build {kind.kind}", " files")
            try:
                bundle_dir = bundle.build(kind.kind, _cache_dir(kind.kind), progress=bar).root
            finally:
                bar.close()
    except (bundle.BuildError, boardkind.BoardKindError) as e:
        return _fail(str(e), 2, args.json)
    bar = _Bar(f"deploy {args.port}", " B")
    try:
        result = deploy.deploy(args.port, bundle_dir, progress=bar, reset=not args.no_reset,
                               reset_command=kind.reset_command)
    except deploy.DeployError as e:
        return _fail(str(e), 1, args.json)
    finally:
        bar.close()
    if args.json:
        print(json.dumps({"ok": True, "port": args.port, "bundle": str(bundle_dir),
                          "copied": result.copied, "skipped": result.skipped,
                          "removed": result.removed, "bytes": result.bytes_copied,
                          "serial": result.serial}))
    else:
        print(f"deployed {bundle_dir} to {args.port}: {len(result.copied)} copied "
              f"({result.bytes_copied} bytes), {len(result.skipped)} unchanged, "
              f"{len(result.removed)} removed")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `board build`, `board flash` and `board deploy`."""
    build = sub.add_parser("build", help="compile firmware and codecs to .mpy with a manifest")
    build.add_argument("--kind", required=True, choices=KINDS)
    build.add_argument("--out", metavar="DIR", help="bundle folder (default build/bundle-KIND)")
    build.add_argument("--version", help="bundle version (default: sipmesh version + hash)")
    build.add_argument("--json", action="store_true", help="machine-readable output")
    build.set_defaults(func=_cmd_build)

    flash = sub.add_parser("flash", help="write a MicroPython image (esptool or UF2 copy)")
    flash.add_argument("--kind", required=True, choices=KINDS)
    flash.add_argument("--image", required=True, metavar="FILE", help="MicroPython image")
    flash.add_argument("--port", metavar="PORT", help="serial port (ESP32; esptool finds one)")
    flash.add_argument("--baud", type=int, help="override board.toml's baud rate")
    flash.add_argument("--drive", metavar="DIR", help="mounted RPI-RP2 drive (RP2040)")
    flash.add_argument("--dry-run", action="store_true", help="print the commands only")
    flash.add_argument("--json", action="store_true", help="machine-readable output")
    flash.set_defaults(func=_cmd_flash)

    dep = sub.add_parser("deploy", help="copy the bundle to a board with mpremote (changes only)")
    dep.add_argument("--port", required=True, metavar="PORT", help="the board's serial port")
    dep.add_argument("--kind", required=True, choices=KINDS)
    dep.add_argument("--bundle", metavar="DIR", help="built bundle (default: build one)")
    dep.add_argument("--no-reset", action="store_true", help="leave the board at the REPL")
    dep.add_argument("--json", action="store_true", help="machine-readable output")
    dep.set_defaults(func=_cmd_deploy)
