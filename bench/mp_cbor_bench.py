"""The MicroPython half of cbor_bench.py: run by the unix port, prints key=value lines."""

import gc
import time

import samples

from sipmesh.proto import cbor


def rate(fn, arg, min_us=300000):
    """Calls per second, doubling the count until a run lasts min_us."""
    n = 1
    while True:
        t0 = time.ticks_us()
        for _ in range(n):
            fn(arg)
        dt = time.ticks_diff(time.ticks_us(), t0)
        if dt >= min_us:
            return n * 1000000 / dt
        n *= 2


def best(fn, arg, repeat=3):
    return max(rate(fn, arg) for _ in range(repeat))


def main():
    for name in ("management_message", "config_document"):
        doc = getattr(samples, name)()
        enc = cbor.dumps(doc)
        print("%s.size=%d" % (name, len(enc)))
        print("%s.encode_per_s=%.1f" % (name, best(cbor.dumps, doc)))
        print("%s.decode_per_s=%.1f" % (name, best(cbor.loads, enc)))
    enc = cbor.dumps(samples.config_document())
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    value = cbor.loads(enc)
    allocated = gc.mem_alloc() - before
    gc.enable()
    del value
    print("config_document.decode_allocated=%d" % allocated)


main()
