"""Serial framing speed: sipmesh.proto.frame vs the same format built on C parts.

The anchor is the same wire format assembled from PyPI's ``cobs`` (its C
extension) and ``binascii.crc32``: what a CPython-only implementation would
use. Both must produce identical bytes. Prints encode and decode rates
for a frame carrying the typical management message and one carrying the
4 KB configuration document, on CPython (ours and the anchor) and on the
MicroPython unix port (ours), with what decoding allocates per frame.
"""

from __future__ import annotations

import binascii
import platform
import struct
import sys
from importlib.metadata import version

from cobs import cobs
from harness import HERE, bench_main, best_rate, heap_floors, run_micropython

from sipmesh.proto import cbor, frame

sys.path.insert(0, str(HERE))
import samples  # noqa: E402

DOCS = ("management_message", "config_document")


def anchor_encode(ftype: int, seq: int, payload: bytes) -> bytes:
    body = struct.pack(">BBH", frame.VERSION, ftype, seq) + payload
    return cobs.encode(body + struct.pack(">I", binascii.crc32(body))) + b"\x00"


def anchor_decode(stream: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    for segment in stream.split(b"\x00")[:-1]:
        if not segment:
            continue
        try:
            body = cobs.decode(segment)
        except cobs.DecodeError:
            continue
        if len(body) < 8 or binascii.crc32(body[:-4]) != struct.unpack(">I", body[-4:])[0]:
            continue
        out.append((body[1], (body[2] << 8) | body[3], body[4:-4]))
    return out


def cpython_rates() -> dict[str, float]:
    out: dict[str, float] = {}
    for name in DOCS:
        payload = cbor.dumps(getattr(samples, name)())
        wire = frame.encode(frame.REQUEST, 7, payload)
        if wire != anchor_encode(frame.REQUEST, 7, payload):
            raise SystemExit(f"{name}: wire formats differ, the comparison would be meaningless")
        dec = frame.FrameDecoder()
        assert dec.feed(wire) == [frame.Frame(frame.REQUEST, 7, payload)]
        assert anchor_decode(wire) == [(frame.REQUEST, 7, payload)]
        out[f"{name}.wire"] = len(wire)
        out[f"{name}.ours.encode"] = best_rate(lambda p=payload: frame.encode(1, 7, p))
        out[f"{name}.ours.decode"] = best_rate(lambda w=wire, d=dec: d.feed(w))
        out[f"{name}.anchor.encode"] = best_rate(lambda p=payload: anchor_encode(1, 7, p))
        out[f"{name}.anchor.decode"] = best_rate(lambda w=wire: anchor_decode(w))
    return out


def micropython_figures() -> dict[str, float]:
    out = run_micropython("mp_frame_bench.py")
    wire = frame.encode(1, 7, cbor.dumps(samples.config_document()))
    out.update(heap_floors(wire, "frame-decode"))
    return out


def report(cp: dict[str, float], mp: dict[str, float]) -> str:
    lines = [
        f"Framing: sipmesh.proto.frame vs cobs {version('cobs')} (C) + binascii.crc32; "
        f"CPython {platform.python_version()}; MicroPython unix port",
        "",
        f"{'payload':<19} {'op':<6} {'ours/s':>8} {'anchor/s':>9} {'ours/anchor':>11} "
        f"{'ours MB/s':>9} {'MP/s':>7} {'MP MB/s':>8} {'MP alloc B':>10}",
    ]
    for name in DOCS:
        size = cp[f"{name}.wire"]
        for op in ("encode", "decode"):
            ours = cp[f"{name}.ours.{op}"]
            anchor = cp[f"{name}.anchor.{op}"]
            mpr = mp[f"{name}.{op}_per_s"]
            alloc = f"{int(mp[name + '.decode_allocated'])}" if op == "decode" else ""
            lines.append(
                f"{name:<19} {op:<6} {ours:>8.0f} {anchor:>9.0f} {ours / anchor:>11.3f} "
                f"{ours * size / 1e6:>9.1f} {mpr:>7.0f} {mpr * size / 1e6:>8.2f} {alloc:>10}"
            )
        lines.append(f"{'':<19} {int(size)} bytes on the wire, identical to the anchor's")
    load, dec = int(mp["heap_floor.load"]), int(mp["heap_floor.decode"])
    lines += [
        "",
        f"MicroPython: a FrameDecoder holds {int(mp['decoder_size'])} B (its max_frame buffer); "
        f"decoding the {int(cp['config_document.wire'])}-byte frame from a cold start needs "
        f"{(dec - load) // 1024} KiB of heap ({load // 1024} -> {dec // 1024} KiB floor).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    bench_main(__doc__, cpython_rates, micropython_figures, report)
