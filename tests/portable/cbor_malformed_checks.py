"""Malformed CBOR: every case raises CBORDecodeError, within a memory bound, on both runtimes."""

import gc
import sys

from portable import eq, raises, unhex

from sipmesh.proto import cbor
from sipmesh.proto.cbor import CBORDecodeError

MICROPYTHON = sys.implementation.name == "micropython"

# Bytes a failed decode may allocate beyond its input. The decoder keeps at
# most MAX_DEPTH (32) small frames plus the items decoded so far, and these
# inputs hold little; 16 KiB is far below what a decoder that trusted a
# declared length (2^63) or recursed 100,000 deep would need.
MEMORY_BOUND = 16 * 1024

TRUNCATED = [
    "18", "1901", "1a0102", "1b01020304050607", "3b01", "6261", "4301", "82", "8201",
    "a101", "a2010203", "5f41", "5f", "7f6161", "9f01", "bf0102", "c0", "c6", "d9", "f9",
    "f900", "fa000000", "fb00", "f8", "5b00000000000000", "7a0000", "9f00", "9f0000",
    "98400000", "8281", "98408140",
]
BAD_UTF8 = [
    "61ff", "6180", "62c080", "62c1bf", "63e08080", "63eda080", "63edbfbf", "64f4908080",
    "64f8888080", "62e282", "63e282", "7f61ffff", "7f6161 62c080 ff", "a161ff00",
]
RESERVED_AI = ["1c", "1d", "1e", "3c", "3d", "3e", "5c", "7d", "9e", "bc", "dc", "fd", "fe"]
INDEFINITE_WHERE_FORBIDDEN = ["1f", "3f", "df"]
HUGE_LENGTHS = [
    "5b8000000000000000", "7b8000000000000000", "9b8000000000000000", "bb8000000000000000",
    "5bffffffffffffffff", "9b7fffffffffffffff", "bb4000000000000000", "5a80000000",
    "9affffffff00", "7b8000000000000000616161",
]
MISPLACED_BREAK = [
    "ff", "81ff", "8201ff", "a1ff", "a101ff", "bf01ff", "c6ff", "5f01ff", "5f6161ff",
    "7f4161ff", "5f5fffff", "7f7fffff", "5f9fffff", "82ff01", "9f01ffff", "bfff01",
]
OTHER = [
    "f800", "f81f", "0000", "c201", "c36161", "a2010101 02", "a1a00001", "a1a10102 03",
    "a2818001 818002",
]


def _cases():
    out = []
    for group in (TRUNCATED, BAD_UTF8, RESERVED_AI, INDEFINITE_WHERE_FORBIDDEN, HUGE_LENGTHS,
                  MISPLACED_BREAK, OTHER):
        for h in group:
            out.append(unhex(h))
    return out


def _deep_cases():
    n = 100000
    return [
        b"\x81" * n + b"\x00",
        b"\x9f" * n,
        b"\xa1\x00" * n + b"\x00",
        b"\xbf\x00" * n,
        b"\xc6" * n + b"\x00",
        b"\xd8\xff" * n + b"\x00",
        b"\x82\x00" * n + b"\x00",
    ]


def _measure(data, **limits):
    """Decode data that must fail; return the bytes allocated while failing.

    MicroPython: automatic GC is off during the call, so gc.mem_alloc()
    growth is every byte allocated, an upper bound of the peak. CPython:
    tracemalloc's peak during the call.
    """
    if MICROPYTHON:
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        try:
            raises(CBORDecodeError, cbor.loads, data, **limits)
            return gc.mem_alloc() - before
        finally:
            gc.enable()
    import tracemalloc

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        raises(CBORDecodeError, cbor.loads, data, **limits)
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def check_every_malformed_case_raises_within_memory_bound():
    worst = 0
    for data in _cases():
        try:
            used = _measure(data)
        except AssertionError as e:
            raise AssertionError("%s: %s" % (data.hex(), e)) from None
        assert used < MEMORY_BOUND, "%s used %d bytes" % (data.hex(), used)
        worst = max(worst, used)


def check_nesting_100000_deep_raises_within_memory_bound():
    for data in _deep_cases():
        e = raises(CBORDecodeError, cbor.loads, data)
        assert "limit" in e.reason, e.reason
        # With the size limit lifted, the depth limit is what stops it.
        used = _measure(data, max_size=1 << 20)
        assert used < MEMORY_BOUND, "%s... used %d bytes" % (data[:4].hex(), used)
        e = raises(CBORDecodeError, cbor.loads, data, max_size=1 << 20)
        assert "nesting" in e.reason, e.reason
        want = cbor.MAX_DEPTH * (len(data) // 100000)
        eq(e.offset, want, "offset of the first too-deep item")
        del data
        gc.collect()


def check_error_offsets_and_reasons():
    cases = [
        ("9f01", 2, "truncated"), ("8201", 0, "truncated"), ("61ff", 0, "UTF-8"),
        ("9f1c", 1, "reserved"),
        ("8201ff", 2, "break"), ("5b8000000000000000", 0, "truncated"),
        ("0000", 1, "trailing"), ("a2010101 02", 3, "duplicate"), ("f810", 0, "simple"),
        ("9f5f4101 01ff", 4, "chunk"), ("c201", 1, "bignum"),
    ]
    for h, offset, word in cases:
        e = raises(CBORDecodeError, cbor.loads, unhex(h))
        eq(e.offset, offset, "offset for " + h)
        assert word in e.reason, "%s: %r lacks %r" % (h, e.reason, word)
        assert ("at byte %d" % offset) in str(e), str(e)


def _xorshift(seed):
    x = seed
    while True:
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        yield x


def check_random_and_mutated_inputs_raise_only_decode_errors():
    rnd = _xorshift(2463534242)
    valid = cbor.dumps({"op": "set", "cfg": {"a": [1, -2, 3.5, b"xy", "z"], "t": cbor.Tag(7, 1)}})
    accepted = rejected = 0
    for i in range(3000):
        if i % 2:
            n = next(rnd) % 24
            data = bytes(next(rnd) & 0xFF for _ in range(n))
        else:
            buf = bytearray(valid)
            for _ in range(1 + next(rnd) % 3):
                buf[next(rnd) % len(buf)] = next(rnd) & 0xFF
            cut = next(rnd) % (len(buf) + 1)
            data = bytes(buf[:cut]) if i % 4 == 0 else bytes(buf)
        try:
            v = cbor.loads(data)
        except CBORDecodeError:
            rejected += 1
        else:
            accepted += 1
            try:
                cbor.dumps(v)
            except cbor.CBOREncodeError:
                pass
    assert accepted > 50 and rejected > 1000, (accepted, rejected)
