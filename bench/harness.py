"""What the benchmarks share: timing on CPython and running the MicroPython half."""

from __future__ import annotations

import argparse
import json
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

from sipmesh.boards import unixport

HERE = Path(__file__).resolve().parent


def best_rate(fn: Callable[[], object], repeat: int = 5) -> float:
    """Calls per second: the best of `repeat` timeit runs of at least 0.2 s each."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return number / min(timer.repeat(repeat=repeat, number=number))


def parse(text: str) -> dict[str, float]:
    """Read the key=value lines the MicroPython scripts print."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = float(value)
    return out


def run_micropython(script: str, *args: str) -> dict[str, float]:
    """Run bench/SCRIPT on the unix port with the codecs laid out as on a board."""
    with tempfile.TemporaryDirectory() as tmp:
        lib = unixport.stage_lib(Path(tmp))
        proc = unixport.run([str(HERE / script), *args], [lib, HERE], timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"MicroPython {script} failed:\n{proc.stdout}\n{proc.stderr}")
    return parse(proc.stdout)


def heap_floors(data: bytes, op: str) -> dict[str, float]:
    """Heap floors of mp_heap_probe.py on data: without and with operation op."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.bin"
        path.write_bytes(data)
        return {
            "heap_floor.load": heap_floor("mp_heap_probe.py", [str(path)], Path(tmp)),
            "heap_floor.decode": heap_floor("mp_heap_probe.py", [str(path), op], Path(tmp)),
        }


def heap_floor(probe: str, args: list[str], workdir: Path) -> int:
    """Smallest -X heapsize (1 KiB steps) with which PROBE still prints ok.

    The codecs are compiled to .mpy first, as on a deployed board, so the
    floor is not the compiler's. Run with and without the operation under
    test: the difference is the heap that operation needs, GC included.
    """
    lib = unixport.stage_lib(workdir / "lib", compiled=True)

    def ok(kib: int) -> bool:
        proc = unixport.run(
            [str(HERE / probe), *args], [lib, HERE], heapsize=f"{kib}K", timeout=60
        )
        return proc.returncode == 0 and proc.stdout.strip().endswith("ok")

    lo, hi = 4, 1024
    if not ok(hi):
        raise RuntimeError(f"{probe} {args} fails even with {hi} KiB of heap")
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo * 1024


def bench_main(
    doc: str,
    cpython_rates: Callable[[], dict[str, float]],
    micropython_figures: Callable[[], dict[str, float]],
    report: Callable[[dict[str, float], dict[str, float]], str],
) -> None:
    """Command line shared by the benchmarks: measure both runtimes, print, --json FILE."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--json", metavar="FILE", help="also write the raw figures as JSON")
    args = parser.parse_args()
    cp = cpython_rates()
    mp = micropython_figures()
    print(report(cp, mp))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpython": cp, "micropython": mp}, indent=2))
