"""Tiny assertion helpers for checks that run on CPython and MicroPython.

pytest is not available on MicroPython, so portable checks are plain
functions named ``check_*`` that use ``assert`` and these helpers.
"""

import sys

MICROPYTHON = sys.implementation.name == "micropython"


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raised; fail if it raised none or another type."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    except Exception as e:  # noqa: BLE001 - report the wrong type clearly
        raise AssertionError(
            "expected %s, got %s: %s" % (exc_type.__name__, type(e).__name__, e)
        ) from None
    raise AssertionError("expected %s, nothing raised" % exc_type.__name__)


def eq(got, want, what=""):
    """Assert equality with a message that shows both sides."""
    if not got == want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def unhex(s):
    """bytes.fromhex that ignores spaces (present on both runtimes)."""
    return bytes.fromhex(s.replace(" ", ""))


class Rng:
    """xorshift32 (Marsaglia 2003): identical sequences on both runtimes.

    ``random`` differs between CPython and MicroPython, so checks that must
    see the same cases everywhere draw from this.
    """

    def __init__(self, seed):
        self.s = seed

    def next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def below(self, n):
        return self.next() % n

    def bytes(self, n):
        return bytes([self.next() & 0xFF for _ in range(n)])


def damage(rng, data, ops=4):
    """data with 1-3 random edits: overwrite, bit flip, insert, and (ops=4) delete."""
    b = bytearray(data)
    for _ in range(1 + rng.below(3)):
        k = rng.below(ops)
        p = rng.below(len(b))
        if k == 0:
            b[p] = rng.next() & 0xFF
        elif k == 1:
            b[p] ^= 1 << rng.below(8)
        elif k == 2:
            b[p:p] = bytes([rng.next() & 0xFF])
        elif len(b) > 1:
            b = b[:p] + b[p + 1 :]
    return b


def truncations_fail(samples, exc_type):
    """Each (bytes, decode) decodes whole; every prefix and one extra byte raise exc_type."""
    for b, fn in samples:
        fn(b)
        for i in range(len(b)):
            raises(exc_type, fn, b[:i])
        raises(exc_type, fn, b + b"\x00")


def mutations_decode_or_fail(rng, base, exc_type, count):
    """Damage (bytes, decode) samples count times; return how many still decoded.

    A damaged input either raises exc_type with an offset inside it, or
    decodes to a value that re-encodes to exactly those bytes (one
    encoding per value).
    """
    decoded = 0
    for n in range(count):
        src, fn = base[n % len(base)]
        b = damage(rng, src)
        try:
            m = fn(bytes(b))
        except exc_type as e:
            assert 0 <= e.offset <= len(b), "offset in range"
            continue
        decoded += 1
        eq(m.encode(), bytes(b), "decoded mutation re-encodes identically")
    return decoded
