"""The MicroPython half of frame_bench.py: run by the unix port, prints key=value lines."""

import gc
import time

import samples

from sipmesh.proto import cbor, frame


def rate(fn, min_us=300000):
    """Calls per second, doubling the count until a run lasts min_us."""
    n = 1
    while True:
        t0 = time.ticks_us()
        for _ in range(n):
            fn()
        dt = time.ticks_diff(time.ticks_us(), t0)
        if dt >= min_us:
            return n * 1000000 / dt
        n *= 2


def best(fn, repeat=3):
    return max(rate(fn) for _ in range(repeat))


def main():
    for name in ("management_message", "config_document"):
        payload = cbor.dumps(getattr(samples, name)())
        wire = frame.encode(frame.REQUEST, 7, payload)
        dec = frame.FrameDecoder()
        print("%s.wire=%d" % (name, len(wire)))
        enc_rate = best(lambda: frame.encode(frame.REQUEST, 7, payload))
        print("%s.encode_per_s=%.1f" % (name, enc_rate))
        print("%s.decode_per_s=%.1f" % (name, best(lambda: dec.feed(wire))))
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        dec.feed(wire)
        allocated = gc.mem_alloc() - before
        gc.enable()
        print("%s.decode_allocated=%d" % (name, allocated))
    dec = None
    gc.collect()
    before = gc.mem_alloc()
    fresh = frame.FrameDecoder()
    gc.collect()
    print("decoder_size=%d" % (gc.mem_alloc() - before))
    return fresh


main()
