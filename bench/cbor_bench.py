"""CBOR speed and memory: sipmesh.proto.cbor vs cbor2 (C extension), and on MicroPython.

Prints, in one run: encode and decode rates for a typical management
message (about 20 keys, nested) and a 4 KB configuration document on
CPython for ours and for cbor2 (``canonical=True``, its C extension), the
ratios, the same rates for ours on the MicroPython unix port, and the
MicroPython heap used while decoding the 4 KB document. `make bench` runs
it; docs/performance.md quotes it.
"""

from __future__ import annotations

import platform
import sys
from importlib.metadata import version

import cbor2
from harness import HERE, bench_main, best_rate, heap_floors, run_micropython

from sipmesh.proto import cbor

sys.path.insert(0, str(HERE))
import samples  # noqa: E402

DOCS = ("management_message", "config_document")


def cpython_rates() -> dict[str, float]:
    if "cbor2._cbor2" not in sys.modules:
        raise SystemExit("cbor2's C extension is not loaded: the anchor must be the C version")
    out: dict[str, float] = {}
    for name in DOCS:
        doc = getattr(samples, name)()
        ours = cbor.dumps(doc)
        theirs = cbor2.dumps(doc, canonical=True)
        if ours != theirs:
            raise SystemExit(f"{name}: encodings differ, the comparison would be meaningless")
        out[f"{name}.size"] = len(ours)
        out[f"{name}.ours.encode"] = best_rate(lambda d=doc: cbor.dumps(d))
        out[f"{name}.ours.decode"] = best_rate(lambda b=ours: cbor.loads(b))
        out[f"{name}.cbor2.encode"] = best_rate(lambda d=doc: cbor2.dumps(d, canonical=True))
        out[f"{name}.cbor2.decode"] = best_rate(lambda b=theirs: cbor2.loads(b))
    return out


def micropython_figures() -> dict[str, float]:
    out = run_micropython("mp_cbor_bench.py")
    out.update(heap_floors(cbor.dumps(samples.config_document()), "cbor-decode"))
    return out


def report(cp: dict[str, float], mp: dict[str, float]) -> str:
    lines = [
        f"CBOR: sipmesh.proto.cbor vs cbor2 {version('cbor2')} (C extension, canonical=True); "
        f"CPython {platform.python_version()}; MicroPython unix port",
        "",
        f"{'document':<19} {'op':<6} {'ours/s':>8} {'cbor2/s':>8} {'ours/cbor2':>10} "
        f"{'ours us':>8} {'cbor2 us':>8} {'MP/s':>7} {'MP us':>7} {'MP/CPython':>10}",
    ]
    for name in DOCS:
        for op in ("encode", "decode"):
            ours = cp[f"{name}.ours.{op}"]
            theirs = cp[f"{name}.cbor2.{op}"]
            mpr = mp[f"{name}.{op}_per_s"]
            lines.append(
                f"{name:<19} {op:<6} {ours:>8.0f} {theirs:>8.0f} {ours / theirs:>10.3f} "
                f"{1e6 / ours:>8.1f} {1e6 / theirs:>8.1f} {mpr:>7.0f} {1e6 / mpr:>7.1f} "
                f"{mpr / ours:>10.3f}"
            )
        lines.append(f"{'':<19} {int(cp[name + '.size'])} bytes, identical encodings")
    load, dec = int(mp["heap_floor.load"]), int(mp["heap_floor.decode"])
    lines += [
        "",
        f"MicroPython heap, decoding the {int(mp['config_document.size'])}-byte config document:",
        f"  allocated by loads() with GC off (every allocation, upper bound of the peak): "
        f"{int(mp['config_document.decode_allocated'])} B",
        f"  smallest heap that imports the codecs (.mpy) and reads the document: "
        f"{load // 1024} KiB",
        f"  smallest heap that also decodes it: {dec // 1024} KiB "
        f"(decoding needs {(dec - load) // 1024} KiB, result included)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    bench_main(__doc__, cpython_rates, micropython_figures, report)
