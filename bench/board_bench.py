"""Boards (issue 6): bundle size, Ed25519 on MicroPython vs PyNaCl, the board on a LAN, soak.

Sections (``--only NAME`` runs one; ``--json`` prints the figures as JSON):

1. ``bundle``: ``sipmesh.boards.bundle.build`` for esp32 and unix: files, .mpy
   bytes, biggest modules.
2. ``crypto``: ``sipmesh.proto.ed25519`` compiled to .mpy on the MicroPython
   unix port at the ESP32 heap (RFC 8032 sign and verify, median of --runs
   with ``time.ticks_us``) against PyNaCl (libsodium) on CPython in the same
   run, ``cose.verify1`` (RFC 9052 §4.4) of a real signed board
   configuration, and the smallest ``-X heapsize`` (4K steps) at which sign
   and verify pass.
3. ``lan`` (root): the controller and ``sipmesh board sim`` boards in network
   namespaces (tests/board_lan.py): the heap floor of the whole flow (4K
   steps, 64K..160K: provisioned, pulled, record stored in the overlay,
   ``online``) with the failing step below it from the board's own log,
   boot-to-online time of a provisioned board, and the heap its heartbeats
   report.
4. ``soak`` (root, ``--soak SECONDS``, 0 skips): board_soak.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import board_lan  # noqa: E402
import board_soak  # noqa: E402

from sipmesh.boards import bundle, unixport  # noqa: E402

SIPMESH = str(Path(sys.executable).parent / "sipmesh")
CTRL_IP, B1_IP, B2_IP = "10.81.0.1", "10.81.0.2", "10.81.0.3"
BRANCH = "bench"
OVERLAY = f"{BRANCH}.demo.sipmesh"
KIND_DEVICE_RECORD = 4026531842
SEED = bytes(range(32))
MESSAGE = bytes(range(256))  # about a RELOAD StoredData to-be-signed
FLOOR_STEPS = list(range(64, 161, 4))
ONLINE_WAIT = 90.0

# Run on MicroPython: `mp.py MODE CONFIG PUBHEX RUNS`; prints key=value lines.
MP_CRYPTO = """
import gc, sys, time
from sipmesh.proto import cose, ed25519
mode, path, pub, runs = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4])
seed = bytes(range(32))
msg = bytes(range(256))
def median(fn):
    t = []
    for _ in range(runs):
        gc.collect()
        t0 = time.ticks_us()
        fn()
        t.append(time.ticks_diff(time.ticks_us(), t0))
    t.sort()
    n = len(t)
    return t[n // 2] if n % 2 else (t[n // 2 - 1] + t[n // 2]) / 2
sig = ed25519.sign(seed, msg)
assert ed25519.verify(ed25519.public_key(seed), msg, sig)
if mode == "floor":
    print("ok")
else:
    f = open(path, "rb")
    data = f.read()
    f.close()
    assert cose.verify1(data, pub)
    print("sign_us=%s" % median(lambda: ed25519.sign(seed, msg)))
    print("verify_us=%s" % median(lambda: ed25519.verify(pub, msg, sig)))
    print("verify1_us=%s" % median(lambda: cose.verify1(data, pub)))
    gc.collect()
    print("free=%d" % gc.mem_free())
"""


def sipmesh(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIPMESH, *args], capture_output=True, text=True, timeout=timeout)


def kib(text: str) -> int:
    return int(text.rstrip("Kk"))


# 1. Bundle ------------------------------------------------------------------


def bundle_section(tmp: Path) -> dict:
    """Size of what `deploy` copies to a board of each kind."""
    out: dict = {}
    for kind in ("esp32", "unix"):
        m = bundle.build(kind, tmp / f"bundle-{kind}")
        sizes = {p: m.local(p).stat().st_size for p in m.files}
        mpy = {p: s for p, s in sizes.items() if p.endswith(".mpy")}
        out[kind] = {
            "files": len(m.files) + 1, "total_bytes": m.total_bytes,
            "mpy_files": len(mpy), "mpy_bytes": sum(mpy.values()),
            "biggest": sorted(mpy.items(), key=lambda kv: -kv[1])[:5],
        }
    return out


def bundle_table(fig: dict) -> str:
    lines = ["1. Bundle (sipmesh.boards.bundle.build; .mpy compiled by mpy-cross)", "",
             f"{'kind':<6} {'files':>5} {'total B':>8} {'.mpy files':>10} {'.mpy B':>7}  "
             "biggest modules (B)"]
    for kind, f in fig.items():
        big = ", ".join(f"{p.rsplit('/', 1)[-1]} {s}" for p, s in f["biggest"])
        lines.append(f"{kind:<6} {f['files']:>5} {f['total_bytes']:>8} {f['mpy_files']:>10} "
                     f"{f['mpy_bytes']:>7}  {big}")
    return "\n".join(lines)


# 2. Crypto ------------------------------------------------------------------


def _median_us(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1000)
    return statistics.median(times)


def board_config() -> tuple[bytes, bytes]:
    """A signed configuration as the controller issues it: (COSE_Sign1, controller pub)."""
    from sipmesh.proto import boardcfg, cose, ed25519

    payload = boardcfg.make(
        "sm-0000000000b1", 7, "door-1", f"sip:door-1@{BRANCH}.sipmesh",
        {"host": CTRL_IP, "port": 7380},
        {"host": CTRL_IP, "port": 6085, "name": OVERLAY, "kind": KIND_DEVICE_RECORD},
        {"heartbeat": 30, "pull": 300, "refresh": 600}, contacts=["door-2"])
    pub = ed25519.public_key(SEED)
    return cose.sign1(payload, SEED, kid=cose.key_id(pub)), pub


def crypto_section(tmp: Path, runs: int, heap: str) -> dict:
    """Ed25519 and COSE on MicroPython (.mpy, capped heap) vs PyNaCl on CPython."""
    import nacl.signing

    from sipmesh.proto import cose, ed25519

    data, pub = board_config()
    cfg = tmp / "config.cose"
    cfg.write_bytes(data)
    script = tmp / "mp_crypto.py"
    script.write_text(MP_CRYPTO)
    lib = unixport.stage_lib(tmp / "lib", compiled=True)

    def mp(mode: str, heapsize: str) -> subprocess.CompletedProcess[str]:
        return unixport.run([str(script), mode, str(cfg), pub.hex(), str(runs)], [lib],
                            heapsize=heapsize, timeout=600)

    done = mp("time", heap)
    if done.returncode != 0:
        raise RuntimeError(f"MicroPython crypto failed:\n{done.stdout}\n{done.stderr}")
    fig: dict = {"heap": heap, "runs": runs, "config_bytes": len(data)}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        fig["mp_" + key] = float(value)

    signer = nacl.signing.SigningKey(SEED)
    verifier = signer.verify_key
    sig = signer.sign(MESSAGE).signature
    if sig != ed25519.sign(SEED, MESSAGE):
        raise RuntimeError("PyNaCl and sipmesh.proto.ed25519 signatures differ")
    fig["nacl_sign_us"] = _median_us(lambda: signer.sign(MESSAGE), runs)
    fig["nacl_verify_us"] = _median_us(lambda: verifier.verify(MESSAGE, sig), runs)
    fig["py_sign_us"] = _median_us(lambda: ed25519.sign(SEED, MESSAGE), runs)
    fig["py_verify_us"] = _median_us(lambda: ed25519.verify(pub, MESSAGE, sig), runs)
    fig["py_verify1_us"] = _median_us(lambda: cose.verify1(data, pub), runs)

    def nacl_verify(p: bytes, m: bytes, s: bytes) -> bool:
        nacl.signing.VerifyKey(p).verify(m, s)
        return True

    fig["nacl_verify1_us"] = _median_us(lambda: cose.verify1(data, pub, verify=nacl_verify), runs)

    def passes(k: int) -> bool:
        run = mp("floor", f"{k}K")
        return run.returncode == 0 and run.stdout.strip().endswith("ok")

    steps = list(range(4, 101, 4))
    if not passes(steps[-1]):
        fig["heap_floor_kib"] = None
    else:
        lo, hi = 0, len(steps) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if passes(steps[mid]):
                hi = mid
            else:
                lo = mid + 1
        fig["heap_floor_kib"] = steps[lo]
    return fig


def crypto_table(f: dict) -> str:
    def row(name: str, mp: float, cp: float, py: float) -> str:
        return (f"{name:<26} {mp / 1000:>9.2f} {cp:>10.1f} {mp / cp:>9.0f}x "
                f"{py / 1000:>12.2f} {mp / py:>8.2f}x")

    return "\n".join([
        f"2. Crypto: sipmesh.proto.ed25519 (.mpy, MicroPython unix port, -X heapsize="
        f"{f['heap']}) vs PyNaCl (libsodium) on CPython {platform.python_version()}; "
        f"median of {f['runs']}", "",
        f"{'operation':<26} {'MP ms':>9} {'PyNaCl us':>10} {'MP/PyNaCl':>10} "
        f"{'CPython-pure ms':>12} {'MP/CPy':>9}",
        row("Ed25519 sign (256 B)", f["mp_sign_us"], f["nacl_sign_us"], f["py_sign_us"]),
        row("Ed25519 verify", f["mp_verify_us"], f["nacl_verify_us"], f["py_verify_us"]),
        row(f"cose.verify1 ({f['config_bytes']} B cfg)", f["mp_verify1_us"],
            f["nacl_verify1_us"], f["py_verify1_us"]),
        "",
        f"smallest -X heapsize (4K steps) for import + sign + verify: "
        f"{f['heap_floor_kib']}K; free heap after the timing run: {int(f['mp_free'])} B",
    ])


# 3. The board on the LAN ---------------------------------------------------------------


class Lines:
    """All output lines of a process, read continuously so its pipe never fills
    (the controller logs at debug level for minutes)."""

    def __init__(self, proc: board_lan.Proc) -> None:
        self.proc = proc
        self.lines: list[tuple[float, str]] = []
        self._new = asyncio.Event()
        self.ended = False
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            raw = await self.proc.proc.stdout.readline()
            if not raw:
                self.ended = True
                self._new.set()
                return
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append((loop.time(), line))
            self.proc.seen.append(line)
            self._new.set()

    async def wait(self, *parts: str, since: int = 0, timeout: float = ONLINE_WAIT
                   ) -> tuple[int, float, str] | None:
        """(index, time, line) of the first line from index since containing every
        part, or None when the deadline passes or the process ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        i = since
        while True:
            while i < len(self.lines):
                t, line = self.lines[i]
                if all(p in line for p in parts):
                    return i, t, line
                i += 1
            if self.ended or loop.time() >= deadline:
                return None
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), deadline - loop.time())
            except TimeoutError:
                pass


def board_id(tag: int) -> str:
    return f"sm-{tag:012x}"


class Site:
    """The LAN of tests/board_lan.py with the controller running and sims on demand."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[board_lan.Proc] = []
        self.ns: dict[str, str] = {}
        self.cfg = tmp / "branch.toml"
        self.data = tmp / "ctl"
        self.bundle = tmp / "bundle-sim"
        self.ctl: Lines

    async def __aenter__(self) -> Site:
        self.ns = board_lan.build(f"bb{os.getpid() % 10000}", CTRL_IP,
                                  {"b1": B1_IP, "b2": B2_IP})
        try:
            board_lan.controller_config(self.cfg, branch=BRANCH, ctrl_ip=CTRL_IP,
                                        data=self.data)
            proc = await board_lan.start(self.procs, "controller", self.ns["ctrl"], SIPMESH,
                                         "run", "--config", str(self.cfg),
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
            self.ctl = Lines(proc)
            if await self.ctl.wait("controller ready", timeout=120) is None:
                raise RuntimeError("controller did not start:\n" + await proc.tail())
            bundle.build("unix", self.bundle)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for p in reversed(self.procs):
            await p.close()
        self.procs.clear()
        board_lan.remove(self.ns)

    async def sim(self, key: str, bid: str, heap: str, root: Path) -> tuple[Lines, Path]:
        """Start a board sim in namespace key (b1/b2) on root; (its lines, its PTY)."""
        pty = root.with_suffix(".pty")
        proc = await board_lan.start(
            self.procs, bid, self.ns[key], SIPMESH, "board", "sim", "--root", str(root),
            "--pty", str(pty), "--id", bid, "--ip", B1_IP if key == "b1" else B2_IP,
            "--heap", heap, *(() if root.exists() else ("--bundle", str(self.bundle))))
        lines = Lines(proc)
        if await lines.wait(f"board {bid} on", timeout=60) is None:
            raise RuntimeError(f"sim {bid} did not start:\n" + await proc.tail())
        return lines, pty

    async def stop(self, sim: Lines) -> None:
        await sim.proc.close()
        self.procs.remove(sim.proc)

    async def provision(self, pty: Path, name: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(sipmesh, "board", "provision", "--port", str(pty),
                                       "--name", name, "--config", str(self.cfg), "--json")

    def registry(self) -> dict[str, dict]:
        out = sipmesh("boards", "--config", str(self.cfg), "--json", timeout=60)
        if out.returncode != 0:
            return {}
        return {b["id"]: b for b in json.loads(out.stdout)["boards"]}


def board_logs(pty: Path) -> list[str]:
    """The lines the board still holds in its log ring (serial `logs` op)."""
    out = sipmesh("board", "logs", "--port", str(pty), "--json", timeout=60)
    lines = []
    for raw in out.stdout.splitlines():
        try:
            lines.append(json.loads(raw)["line"])
        except (ValueError, KeyError, TypeError):
            lines.append(raw)
    if out.returncode != 0:
        lines.append("(board logs failed: " + (out.stderr.strip() or str(out.returncode)) + ")")
    return lines


async def flow(site: Site, bid: str, heap: str, name: str, root: Path
               ) -> tuple[bool, str, Lines, Path]:
    """Start a fresh board at heap, provision it, await online; (ok, why, sim, pty)."""
    sim, pty = await site.sim("b1", bid, heap, root)
    mark = len(site.ctl.lines)
    done = await site.provision(pty, name)
    if done.returncode != 0:
        return False, "provision failed", sim, pty
    got = await site.ctl.wait(f"boards: {bid} ", "-> online", since=mark)
    if got is None:
        return False, f"no online within {ONLINE_WAIT:.0f} s", sim, pty
    return True, "online", sim, pty


def failing_step(lines: list[str]) -> str:
    """The board's own account of where it stopped: its error lines, else its last line."""
    bad = [ln for ln in lines if any(w in ln for w in ("Error", "refused", "failed"))]
    return " | ".join((bad or lines)[-3:]) or "(no log lines)"


async def heap_floor(site: Site, tag: int) -> dict:
    """Bisect FLOOR_STEPS for the smallest heap the whole provisioned flow reaches online at."""
    results: dict[int, dict] = {}

    async def trial(k: int) -> bool:
        bid = board_id(tag + k)
        t0 = time.monotonic()
        ok, why, sim, pty = await flow(site, bid, f"{k}K", f"floor-{k}", site.tmp / f"fl{k}")
        entry = {"ok": ok, "why": why, "seconds": round(time.monotonic() - t0, 1)}
        if not ok:
            logs = await asyncio.to_thread(board_logs, pty)
            entry["board_log"] = logs[-8:]
            entry["failing_step"] = failing_step(logs)
        await site.stop(sim)
        results[k] = entry
        print(f"   heap {k}K: {why} ({entry['seconds']} s)", file=sys.stderr, flush=True)
        return ok

    floor = None
    if await trial(FLOOR_STEPS[-1]):
        lo, hi = 0, len(FLOOR_STEPS) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if await trial(FLOOR_STEPS[mid]):
                hi = mid
            else:
                lo = mid + 1
        floor = FLOOR_STEPS[lo]
        below = floor - 4
        if below >= FLOOR_STEPS[0] and below not in results:
            await trial(below)
    return {"floor_kib": floor, "trials": {str(k): v for k, v in sorted(results.items())}}


async def boot_to_online(site: Site, bid: str, heap: str, boots: int) -> tuple[dict, Lines, Path]:
    """Provision bid once, then restart its sim `boots` times, timing sim start -> online."""
    root = site.tmp / "boot"
    ok, why, sim, pty = await flow(site, bid, heap, "door-1", root)
    if not ok:
        raise RuntimeError(f"board at {heap} did not come online: {why}: "
                           + failing_step(board_logs(pty)))
    times = []
    for _ in range(boots):
        mark = len(site.ctl.lines)
        await site.stop(sim)
        if await site.ctl.wait(f"boards: {bid} ", "lost", since=mark, timeout=60) is None:
            raise RuntimeError(f"{bid} not marked lost after its sim stopped")
        mark = len(site.ctl.lines)
        t0 = asyncio.get_running_loop().time()
        sim, pty = await site.sim("b1", bid, heap, root)
        got = await site.ctl.wait(f"boards: {bid} ", "-> online", since=mark)
        if got is None:
            raise RuntimeError(f"{bid} did not come back online: " + failing_step(board_logs(pty)))
        times.append(round(got[1] - t0, 2))
    fig = {"heap": heap, "boots": times, "median_s": statistics.median(times)}
    # The heap the board reports: a heartbeat after coming online.
    mark = site.registry().get(bid, {}).get("heartbeat", {}).get("n", 0)
    deadline = time.monotonic() + 30
    hb: dict = {}
    while time.monotonic() < deadline:
        hb = site.registry().get(bid, {}).get("heartbeat", {})
        if hb.get("n", 0) > mark:
            break
        await asyncio.sleep(1)
    fig["heartbeat"] = {k: hb.get(k) for k in ("n", "boot", "free", "alloc", "overlay")}
    return fig, sim, pty


def lan_table(floor: dict, boot: dict) -> str:
    lines = ["3. The board on the LAN (controller + `sipmesh board sim`, namespaces; "
             "heartbeat 2 s, pull 4 s, refresh 8 s)", "",
             f"heap floor of provision -> pull -> store -> online (4K steps 64K..160K): "
             f"{floor['floor_kib']}K", f"{'heap':>6} {'result':<28} {'s':>6}  board log"]
    for k, t in floor["trials"].items():
        lines.append(f"{k + 'K':>6} {t['why'][:28]:<28} {t['seconds']:>6}  "
                     + (t.get("failing_step", "")[:150]))
    hb = boot["heartbeat"]
    lines += ["", f"boot-to-online of a provisioned board at {boot['heap']} (sim start -> "
              f"registry online): median {boot['median_s']} s, runs {boot['boots']}",
              f"heartbeat heap: free {hb['free']} B, alloc {hb['alloc']} B "
              f"(n {hb['n']}, boot {hb['boot']}, overlay {hb['overlay']})"]
    return "\n".join(lines)


async def lan_sections(tmp: Path, args: argparse.Namespace) -> dict:
    out: dict = {}
    async with Site(tmp) as site:
        if "lan" in args.only:
            print(" . heap floor search", file=sys.stderr, flush=True)
            out["lan_floor"] = await heap_floor(site, 0xf00000)
        heap = args.heap or "100K"  # the ESP32 budget (issue 6)
        bid = board_id(0xb1)
        print(f" . boot-to-online at {heap}", file=sys.stderr, flush=True)
        boot, sim, pty = await boot_to_online(site, bid, heap, args.boots)
        if "lan" in args.only:
            out["lan_boot"] = boot
            print(lan_table(out["lan_floor"], boot), flush=True)
            print(flush=True)
        if "soak" in args.only and args.soak > 0:
            print(f" . soak {args.soak} s at {heap}", file=sys.stderr, flush=True)
            out["soak"] = await board_soak.soak(site, bid, pty, board_id(0xb2), heap,
                                                args.soak)
            print(board_soak.table(out["soak"]), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=("bundle", "crypto", "lan", "soak"),
                    help="run only these sections (repeatable)")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per crypto figure")
    ap.add_argument("--heap", help="board heap for boot time and soak (default 100K, an "
                    "ESP32's free heap)")
    ap.add_argument("--boots", type=int, default=3, help="restarts timed to online")
    ap.add_argument("--soak", type=int, default=600, metavar="SECONDS",
                    help="soak duration (0 skips)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    args = ap.parse_args()
    args.only = args.only or ["bundle", "crypto", "lan", "soak"]
    figures: dict = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="board-bench-") as t:
        tmp = Path(t)
        if "bundle" in args.only:
            figures["bundle"] = bundle_section(tmp)
            print(bundle_table(figures["bundle"]) + "\n", flush=True)
        if "crypto" in args.only:
            figures["crypto"] = crypto_section(tmp, args.runs, "100K")
            print(crypto_table(figures["crypto"]) + "\n", flush=True)
        wants_lan = "lan" in args.only or ("soak" in args.only and args.soak > 0)
        if wants_lan and os.geteuid() != 0:
            print("3./4. skipped: the LAN sections need root (ip netns)", flush=True)
        elif wants_lan:
            if not shutil.which("ip"):
                raise SystemExit("the LAN sections need iproute2 (apt-get install iproute2)")
            figures.update(asyncio.run(lan_sections(tmp, args)))
    figures["elapsed_s"] = round(time.monotonic() - started, 1)
    print(f"board bench done in {figures['elapsed_s']} s", flush=True)
    if args.json:
        print(json.dumps(figures, indent=1, default=str))
    verdict = figures.get("soak", {}).get("verdict", "PASS")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
