"""``sipmesh trunk ...`` and ``sipmesh capserver``: SIP Auto Peer from the shell.

``trunk`` works on the controller's Auto Peer state (``DATA_DIR/autopeer.sqlite``)
with the ``[autopeer]`` settings of ``--config`` (or the flags below):
discover the provider's capability server (RFC 10006 §4.5, RFC 7033),
fetch and validate its capability set (§4, §7), show, compare and apply
the trunk configuration derived from it (§8), and list what changed when.
``capserver`` runs the provider side. Exit codes: 0 success, 1 the
capability set is invalid (errors listed by path), 2 usage or
configuration, 3 the provider could not be reached or refused us.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from datetime import datetime
from pathlib import Path

from sipmesh import config

EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_PROVIDER = 3
STORE_NAME = "autopeer.sqlite"


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _options(args: argparse.Namespace):
    cfg = config.load(args.config)
    opts = cfg.autopeer
    overrides = {}
    for flag, key in (("url", "capset_url"), ("resource", "resource"),
                      ("webfinger_host", "webfinger_host"), ("token_url", "token_url"),
                      ("client_id", "client_id")):
        if getattr(args, flag, None):
            overrides[key] = getattr(args, flag)
    for flag in ("token_file", "client_secret_file", "ca_file"):
        if getattr(args, flag, None):
            overrides[flag] = Path(getattr(args, flag))
    if getattr(args, "yang_module", None):
        overrides["yang_modules"] = opts.yang_modules + tuple(Path(p) for p in args.yang_module)
    if getattr(args, "no_apply", False):
        overrides["auto_apply"] = False
    if overrides.get("capset_url"):
        overrides.setdefault("resource", "")
    data_dir = Path(args.data_dir) if args.data_dir else cfg.data_dir
    return dataclasses.replace(opts, **overrides), data_dir


def _autopeer(args: argparse.Namespace):
    from sipmesh.autopeer.service import AutoPeer
    from sipmesh.autopeer.store import TrunkStore

    opts, data_dir = _options(args)
    return AutoPeer(opts, TrunkStore(data_dir / STORE_NAME))


def _print_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _read(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as e:
        raise SystemExit(_fail(f"cannot read {path}: {e.strerror}", EXIT_USAGE)) from None


def _fail(message: str, code: int) -> int:
    print(f"sipmesh trunk: {message}", file=sys.stderr)
    return code


def _cmd_discover(args: argparse.Namespace) -> int:
    from sipmesh.autopeer.errors import AutopeerError

    ap = _autopeer(args)
    try:
        url = asyncio.run(ap.discover(args.resource))
    except AutopeerError as e:
        return _fail(str(e), EXIT_PROVIDER)
    if args.json:
        _print_json({"resource": args.resource, "url": url})
    else:
        print(url)
    return 0


def _outcome_json(outcome) -> dict:
    return {"result": outcome.result, "url": outcome.url, "status": outcome.status,
            "lines": outcome.lines,
            "errors": [{"path": i.path, "message": i.message} for i in outcome.issues]}


def _cmd_fetch(args: argparse.Namespace) -> int:
    from sipmesh.autopeer.errors import AutopeerError

    ap = _autopeer(args)
    try:
        outcome = asyncio.run(ap.refresh())
    except AutopeerError as e:
        return _fail(str(e), EXIT_PROVIDER)
    code = {"rejected": EXIT_INVALID, "error": EXIT_PROVIDER}.get(outcome.result, 0)
    if args.json:
        _print_json(_outcome_json(outcome))
        return code
    head = {
        "applied": f"trunk configuration applied from {outcome.url}",
        "candidate": f"valid capability set from {outcome.url} kept as the candidate "
                     "(not in force yet; see sipmesh trunk diff / apply)",
        "unchanged": f"capability set unchanged ({outcome.url})",
        "rejected": f"capability set from {outcome.url} is invalid; the configuration in "
                    "force is kept",
        "error": "cannot fetch the capability set; the configuration in force is kept",
    }[outcome.result]
    print(head, file=sys.stderr if code else sys.stdout)
    for line in outcome.lines:
        print(f"  {line}", file=sys.stderr if code else sys.stdout)
    return code


def _validator(args: argparse.Namespace):
    from sipmesh.autopeer.validate import Validator

    opts, _ = _options(args)
    return Validator(extra_modules=opts.yang_modules)


def _cmd_validate(args: argparse.Namespace) -> int:
    validator = _validator(args)
    body = _read(args.file)
    found = validator.issues(body)
    extensions = [] if found else validator.extensions(json.loads(body))
    if args.json:
        _print_json({"file": args.file, "valid": not found,
                     "errors": [{"path": i.path, "message": i.message} for i in found],
                     "extensions": [{"module": x.module, "path": x.path,
                                     "validated": x.validated} for x in extensions]})
        return EXIT_INVALID if found else 0
    if found:
        print(f"{args.file}: invalid capability set ({len(found)} error(s))", file=sys.stderr)
        for issue in found:
            print(f"  {issue}", file=sys.stderr)
        return EXIT_INVALID
    print(f"{args.file}: valid capability set (RFC 10006)")
    for x in extensions:
        state = "validated" if x.validated else "module not installed, not validated"
        print(f"  vendor extension {x.path} from {x.module} ({state})")
    return 0


def _trunk_of_file(validator, path: str):
    from sipmesh.autopeer.trunk import map_capset

    body = _read(path)
    found = validator.issues(body)
    if found:
        print(f"{path}: invalid capability set", file=sys.stderr)
        for issue in found:
            print(f"  {issue}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID)
    return map_capset(json.loads(body), validator=validator)


def _cmd_diff(args: argparse.Namespace) -> int:
    from sipmesh.autopeer.diff import changes
    from sipmesh.autopeer.trunk import from_json

    if len(args.files) == 2:
        validator = _validator(args)
        old = _trunk_of_file(validator, args.files[0])
        new = _trunk_of_file(validator, args.files[1])
        title = f"{args.files[0]} -> {args.files[1]}"
    else:
        ap = _autopeer(args)
        active = ap.store.active()
        old = from_json(active.trunk) if active else None
        if args.files:
            new = _trunk_of_file(ap.validator, args.files[0])
            title = f"trunk in force -> {args.files[0]}"
        else:
            cand = ap.store.candidate()
            if cand is None:
                return _fail("no candidate capability set; give a FILE to compare with",
                             EXIT_USAGE)
            new = from_json(cand.trunk)
            title = f"trunk in force -> candidate from {cand.url}"
    lines = changes(old, new)
    if args.json:
        _print_json({"changes": lines})
        return 0
    print(f"{title}:" if lines else f"{title}: no changes")
    for line in lines:
        print(f"  - {line}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from sipmesh.autopeer.trunk import describe, to_json

    ap = _autopeer(args)
    active, cand = ap.store.active(), ap.store.candidate()
    trunk = ap.trunk()
    if args.json:
        _print_json({
            "trunk": to_json(trunk) if trunk else None,
            "source": active.url if active else None,
            "applied_at": _when(active.applied_at) if active else None,
            "candidate": {"url": cand.url, "not_before": _when(cand.not_before)}
            if cand else None,
        })
        return 0
    if trunk is None:
        print("no trunk configuration yet: run sipmesh trunk fetch")
    else:
        print(f"trunk configuration from {active.url}, applied {_when(active.applied_at)}")
        for line in describe(trunk):
            print(f"  {line}")
    if cand is not None:
        print(f"candidate from {cand.url}, takes effect {_when(cand.not_before)} "
              "(sipmesh trunk diff / apply)")
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    ap = _autopeer(args)
    if args.file:
        path = Path(args.file).resolve()
        outcome = ap.accept(f"file://{path}", None, _read(args.file), force=True)
    else:
        outcome = ap.apply_candidate(force=args.force)
    if args.json:
        _print_json(_outcome_json(outcome))
    else:
        for line in outcome.lines or ["no changes"]:
            print(line)
    if outcome.result == "rejected":
        return EXIT_INVALID
    return 0 if outcome.result in ("applied", "unchanged") else EXIT_USAGE


def _cmd_history(args: argparse.Namespace) -> int:
    ap = _autopeer(args)
    entries = ap.store.history(args.limit)
    if args.json:
        _print_json([{"at": _when(e.at), "event": e.event, "lines": e.lines} for e in entries])
        return 0
    if not entries:
        print("no history yet")
    for e in entries:
        print(f"{_when(e.at)}  {e.event}")
        for line in e.lines:
            print(f"    {line}")
    return 0


def _cmd_credentials(args: argparse.Namespace) -> int:
    ap = _autopeer(args)
    from sipmesh.autopeer.errors import AutopeerError
    from sipmesh.autopeer.service import read_secret

    try:
        password = read_secret(Path(args.password_file), "password")
    except AutopeerError as e:
        return _fail(str(e), EXIT_USAGE)
    ap.store.set_credentials(args.realm, args.username, password)
    print(f"local credentials for realm {args.realm} saved")
    return 0


def _cmd_capserver(args: argparse.Namespace) -> int:
    from sipmesh.autopeer.capserver import serve
    from sipmesh.autopeer.capserver_config import CapServerConfigError

    try:
        asyncio.run(serve(args.config))
    except CapServerConfigError as e:
        print(f"sipmesh capserver: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"sipmesh capserver: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _common(p: argparse.ArgumentParser, *, source: bool = False) -> None:
    p.add_argument("--config", metavar="FILE", help="controller TOML file ([autopeer] section)")
    p.add_argument("--data-dir", metavar="DIR", help="state folder (default: the config's)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--yang-module", action="append", metavar="FILE",
                   help="an installed vendor YANG module that augments the capability set")
    if source:
        p.add_argument("--url", help="the capability set's https URL (no discovery)")
        p.add_argument("--resource", help="discover through WebFinger: acct:USER@HOST or https:")
        p.add_argument("--webfinger-host", metavar="HOST:PORT",
                       help="ask this host for an acct: resource")
        p.add_argument("--token-file", metavar="FILE", help="a static bearer token")
        p.add_argument("--token-url", metavar="URL", help="OAuth 2.0 token endpoint")
        p.add_argument("--client-id", metavar="ID", help="OAuth 2.0 client id")
        p.add_argument("--client-secret-file", metavar="FILE", help="OAuth 2.0 client secret")
        p.add_argument("--ca-file", metavar="FILE", help="CA bundle to verify the server")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``trunk`` and ``capserver`` on the top-level parser."""
    trunk = sub.add_parser("trunk", help="SIP Auto Peer: the provider trunk's configuration")
    tsub = trunk.add_subparsers(dest="trunk_command", metavar="TRUNKCOMMAND", required=True)

    p = tsub.add_parser("discover", help="find the capability set URL with WebFinger")
    p.add_argument("resource", metavar="RESOURCE", help="acct:USER@HOST or https://HOST")
    _common(p, source=True)
    p.set_defaults(func=_cmd_discover)

    p = tsub.add_parser("fetch", help="fetch, validate and (when due) apply the capability set")
    p.add_argument("--no-apply", action="store_true", help="keep a new set as the candidate")
    _common(p, source=True)
    p.set_defaults(func=_cmd_fetch)

    p = tsub.add_parser("validate", help="check a capability set file against RFC 10006")
    p.add_argument("file", metavar="FILE", help="JSON document ('-' for stdin)")
    _common(p)
    p.set_defaults(func=_cmd_validate)

    p = tsub.add_parser("show", help="the trunk configuration in force")
    _common(p)
    p.set_defaults(func=_cmd_show)

    p = tsub.add_parser("diff", help="what a capability set would change in the trunk")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="none: in force vs candidate; one: in force vs FILE; two: FILE vs FILE")
    _common(p)
    p.set_defaults(func=_cmd_diff)

    p = tsub.add_parser("apply", help="put the candidate (or a local FILE) in force")
    p.add_argument("file", nargs="?", metavar="FILE", help="a capability set file")
    p.add_argument("--force", action="store_true", help="apply before revision/not-before")
    _common(p)
    p.set_defaults(func=_cmd_apply)

    p = tsub.add_parser("history", help="what changed when, refusals and failures")
    p.add_argument("--limit", type=int, default=50)
    _common(p)
    p.set_defaults(func=_cmd_history)

    p = tsub.add_parser("credentials", help="local digest credentials for a realm")
    p.add_argument("realm", metavar="REALM")
    p.add_argument("--username", required=True)
    p.add_argument("--password-file", required=True, metavar="FILE")
    _common(p)
    p.set_defaults(func=_cmd_credentials)

    cap = sub.add_parser("capserver", help="run a provider's capability server (RFC 10006)")
    cap.add_argument("--config", required=True, metavar="FILE", help="capserver TOML file")
    cap.set_defaults(func=_cmd_capserver)
