"""SIP Auto Peer end to end on loopback, and validation ours vs yanglint (issue 5).

End to end: a fresh fetcher (empty state, no cached token, new HTTPS
connections) against ``sipmesh capserver`` on 127.0.0.1 does WebFinger
discovery (RFC 7033), the client-credentials token (RFC 6749 §4.4), the
capability set GET (RFC 10006 §4), YANG validation (§7), mapping to the
trunk configuration and the SQLite write: median and p99 over --runs
(default 200). The phases are also timed alone. Validation alone: the
RFC 10006 §9.1 example through our in-process yangson validator (data
model loaded once, as the controller does) vs running Debian's
``yanglint`` on the same file (what a tool-calling implementation pays).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trustme

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / "tests" / "data" / "autopeer"
YANG = ROOT / "controller" / "autopeer" / "yang"
MODULE = "ietf-sip-auto-peering"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(name: str, seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"name": name, "runs": len(ms), "median_ms": statistics.median(ms),
            "p99_ms": pct(ms, 0.99), "min_ms": min(ms)}


def provider_files(folder: Path) -> Path:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(folder / "cert.pem"), append=i > 0)
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    (folder / "acme.secret").write_text("bench-secret\n")
    shutil.copy(DATA / "example-capset-rfc10006.json", folder / "acme.json")
    (folder / "capserver.toml").write_text("""
listen = "127.0.0.1:0"
certificate = "cert.pem"
private_key = "key.pem"
[[enterprise]]
name = "acme"
client_id = "acme-sbc"
client_secret_file = "acme.secret"
resources = ["acct:trunk@acme.example"]
documents = { "capdoc.json" = "acme.json" }
""")
    return folder / "capserver.toml"


async def end_to_end(runs: int, folder: Path) -> list[dict]:
    from sipmesh.autopeer.capserver import CapServer, load_config
    from sipmesh.autopeer.discovery import discover
    from sipmesh.autopeer.fetch import fetch_capset
    from sipmesh.autopeer.https import open_session
    from sipmesh.autopeer.options import AutopeerOptions
    from sipmesh.autopeer.service import AutoPeer
    from sipmesh.autopeer.store import TrunkStore
    from sipmesh.autopeer.token import ClientCredentials
    from sipmesh.autopeer.trunk import map_capset
    from sipmesh.autopeer.validate import Validator

    validator = Validator()
    server = CapServer(load_config(provider_files(folder)), validator=validator)
    base = await server.start()
    doc = json.loads((DATA / "example-capset-rfc10006.json").read_text())
    doc[f"{MODULE}:sip-auto-peering"]["revision"]["location"] = \
        f"{base}/capserver/acme/capdoc.json"
    (folder / "acme.json").write_text(json.dumps(doc, indent=1))
    ca = str(folder / "ca.pem")
    opts = AutopeerOptions(
        enabled=True, resource="acct:trunk@acme.example",
        webfinger_host=base.removeprefix("https://"), token_url=f"{base}/oauth/token",
        client_id="acme-sbc", client_secret_file=folder / "acme.secret",
        ca_file=folder / "ca.pem")
    try:
        total = []
        for i in range(runs):
            store = TrunkStore(folder / f"state{i}.sqlite")
            peer = AutoPeer(opts, store, validator=validator)
            t = time.perf_counter()
            outcome = await peer.refresh()
            total.append(time.perf_counter() - t)
            store.close()
            (folder / f"state{i}.sqlite").unlink()
            if outcome.result != "applied":
                raise RuntimeError(f"run {i}: {outcome}")
        store = TrunkStore(folder / "steady.sqlite")
        peer = AutoPeer(opts, store, validator=validator)
        await peer.refresh()
        steady = []
        for i in range(runs):
            t = time.perf_counter()
            outcome = await peer.refresh()
            steady.append(time.perf_counter() - t)
            if outcome.result != "unchanged":
                raise RuntimeError(f"steady run {i}: {outcome}")
        store.close()
        phases: dict[str, list[float]] = {k: [] for k in
                                          ("discovery", "token", "fetch", "validate", "map")}
        url = f"{base}/capserver/acme/capdoc.json"
        for _ in range(runs):
            async with open_session(ca) as session:
                t = time.perf_counter()
                await discover(session, "acct:trunk@acme.example",
                               host=base.removeprefix("https://"))
                phases["discovery"].append(time.perf_counter() - t)
            async with open_session(ca) as session:
                tokens = ClientCredentials(f"{base}/oauth/token", "acme-sbc", "bench-secret")
                t = time.perf_counter()
                await tokens.get(session)
                phases["token"].append(time.perf_counter() - t)
            async with open_session(ca) as session:
                t = time.perf_counter()
                result = await fetch_capset(session, url, tokens)
                phases["fetch"].append(time.perf_counter() - t)
            t = time.perf_counter()
            validator.validate(result.body)
            phases["validate"].append(time.perf_counter() - t)
            t = time.perf_counter()
            map_capset(json.loads(result.body), validator=validator)
            phases["map"].append(time.perf_counter() - t)
    finally:
        await server.stop()
    rows = [summary("end to end (fresh state, new connections)", total),
            summary("poll of an unchanged set (ETag -> 304, cached token)", steady)]
    rows += [summary(f"  {name} alone", v) for name, v in phases.items()]
    return rows


def validation(runs: int) -> list[dict]:
    from sipmesh.autopeer.validate import Validator

    t = time.perf_counter()
    validator = Validator()
    load = time.perf_counter() - t
    body = (DATA / "example-capset-rfc10006.json").read_bytes()
    ours = []
    for _ in range(runs):
        t = time.perf_counter()
        if validator.issues(body):
            raise RuntimeError("the example must validate")
        ours.append(time.perf_counter() - t)
    rows = [summary("ours: yangson in process (model loaded once)", ours),
            {"name": "ours: loading the data model (once per process)", "runs": 1,
             "median_ms": load * 1000, "p99_ms": load * 1000, "min_ms": load * 1000}]
    yanglint = shutil.which("yanglint")
    if yanglint is None:
        rows.append({"name": "yanglint: not installed (Debian libyang-tools)", "runs": 0})
        return rows
    cmd = [yanglint, "-p", str(YANG / "deps"), "-p", str(YANG),
           "-F", "ietf-tls-common:tls12,tls13", "-t", "data",
           str(YANG / f"{MODULE}@2026-06-15.yang"), str(DATA / "example-capset-rfc10006.json")]
    theirs = []
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True)
        theirs.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise RuntimeError(f"yanglint refused the example: {proc.stderr.decode()}")
    version = subprocess.run([yanglint, "-v"], capture_output=True, text=True).stdout.strip()
    rows.append(summary(f"yanglint subprocess ({version})", theirs))
    return rows


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'':58} {'runs':>5} {'median ms':>10} {'p99 ms':>9} {'min ms':>8}")
    for r in rows:
        if r.get("runs"):
            print(f"{r['name']:58} {r['runs']:>5} {r['median_ms']:>10.2f} {r['p99_ms']:>9.2f} "
                  f"{r['min_ms']:>8.2f}")
        else:
            print(r["name"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        e2e = asyncio.run(end_to_end(args.runs, Path(tmp)))
    val = validation(args.runs)
    ours = val[0]["median_ms"]
    theirs = next((r for r in val if r["name"].startswith("yanglint subprocess")), None)
    if args.json:
        json.dump({"end_to_end": e2e, "validation": val}, sys.stdout, indent=2)
        print()
        return 0
    print_table(f"Auto Peer on loopback, {args.runs} runs (python {sys.version.split()[0]})",
                e2e)
    print_table("Validation of the RFC 10006 §9.1 example", val)
    if theirs:
        print(f"\nratio yanglint / ours (median): {theirs['median_ms'] / ours:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
