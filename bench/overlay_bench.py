"""Overlay under churn: sipmesh's RELOAD/Chord peer vs PyPI kademlia, same workload.

For each N, each system starts N peers on 127.0.0.1 in this process and the
workload of ``overlay_workload.py`` runs against it (1,000 resources, 2,000
fetches, 20% of the peers crashed in four waves, fetches during and after).
It prints the figures side by side with the issue's goals and the ratio
sipmesh / kademlia. ``--quick`` is the short form ``make bench`` runs.

The sipmesh adapter (``overlay_sipmesh.SipmeshSystem``) is imported only when
sipmesh is among ``--systems``. Both systems get the same stabilisation
period: sipmesh's own unless ``--period`` is given (see overlay_kademlia.py
for what the period means to kademlia).

Each (system, N) runs in a fresh child process of this script: Python keeps
freed memory for reuse, so a second run in the same process would start from
an inflated RSS baseline and report too little RSS per peer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from overlay_kademlia import DEFAULT_PERIOD, KademliaSystem
from overlay_workload import Result, System, format_table, run

QUICK = {"n": [50], "resources": 200, "fetches": 400}


def _sipmesh(period: float | None) -> System:
    try:
        from overlay_sipmesh import SipmeshSystem
    except ModuleNotFoundError as e:
        if e.name != "overlay_sipmesh":
            raise
        raise SystemExit("bench/overlay_sipmesh.py is not written yet: "
                         "run with --systems kademlia") from e

    system = SipmeshSystem()
    if period is not None:
        system.stabilisation_period = period
    return system


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def _run_one(args: argparse.Namespace, name: str, n: int) -> Result:
    if name == "sipmesh":
        system = _sipmesh(args.period)
    else:
        system = KademliaSystem(args.period if args.period is not None else DEFAULT_PERIOD,
                                seed=args.seed, single_seed=args.kademlia_single_seed)
    return await run(system, n, args.resources, args.fetches, args.seed, _progress)


def _child(args: argparse.Namespace, name: str, n: int, period: float | None) -> Result:
    """Run one (system, N) in a fresh process of this script and read back its Result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--n", str(n),
               "--systems", name, "--resources", str(args.resources),
               "--fetches", str(args.fetches), "--seed", str(args.seed), "--json", str(out)]
        if period is not None:
            cmd += ["--period", str(period)]
        if args.kademlia_single_seed:
            cmd.append("--kademlia-single-seed")
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit(f"overlay bench: {name} at N={n} failed (see above)")
        return Result.from_dict(json.loads(out.read_text())[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 300, 1000],
                        help="overlay sizes (default 100 300 1000)")
    parser.add_argument("--systems", nargs="+", choices=["sipmesh", "kademlia"],
                        default=["sipmesh", "kademlia"])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--fetches", type=int, default=2000, help="fetches per phase")
    parser.add_argument("--period", type=float, default=None,
                        help="stabilisation period in seconds for every system "
                             f"(default: sipmesh's, else {DEFAULT_PERIOD:g})")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kademlia-single-seed", action="store_true",
                        help="every kademlia node bootstraps from node 0 alone "
                             "(default: from 3 random earlier nodes)")
    parser.add_argument("--quick", action="store_true",
                        help="N=50, 200 resources, 400 fetches (what make bench runs)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.resources, args.fetches = QUICK["n"], QUICK["resources"], QUICK["fetches"]
    # sipmesh first, so the ratio column reads sipmesh / kademlia
    args.systems = sorted(set(args.systems), key=["sipmesh", "kademlia"].index)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    if args.child:
        result = asyncio.run(_run_one(args, args.systems[0], args.n[0]))
        Path(args.json).write_text(json.dumps([result.as_dict()]))
        return

    wall = time.perf_counter()
    results = []
    for n in args.n:
        period = args.period
        for name in args.systems:
            results.append(_child(args, name, n, period))
            period = results[-1].period  # kademlia gets sipmesh's period
    seeds = "node 0 alone" if args.kademlia_single_seed else "3 random earlier nodes"
    print(f"Overlay under churn: {', '.join(args.systems)} (kademlia {version('kademlia')}, "
          f"k=20, alpha=3, bootstrapping from {seeds}); "
          f"total wall time {time.perf_counter() - wall:.0f} s\n")
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in results], indent=2))


if __name__ == "__main__":
    main()
