"""The rarely used half of ``sipmesh.proto.cbor`` (RFC 8949), loaded on first use.

Same codec, split in two files so that a board keeps resident only what its
own messages use: ``cbor`` imports this module the first time it meets a
float (§3.3, §4.2.1), a bignum (§3.4.3), a simple value or undefined (§3.3),
an array used as a map key, non-ASCII text on MicroPython, or a subclass of a
built-in type. Nothing here is meant to be imported by other modules: use
``cbor``, which re-exports ``Simple`` and ``UNDEFINED``.
"""

import struct

from sipmesh.proto import cbor as _c

# A board may drop this module from sys.modules and import it again later:
# Simple and UNDEFINED must stay the same objects, so they are kept in cbor's
# namespace once made.
_g = _c.__dict__
if "Simple" in _g:
    Simple = _g["Simple"]
    UNDEFINED = _g["UNDEFINED"]
else:

    class Simple:
        """A simple value (RFC 8949 §3.3) other than false, true, null and undefined."""

        def __init__(self, value):
            if not isinstance(value, int) or not (0 <= value < 20 or 32 <= value < 256):
                raise _c.CBOREncodeError("simple value must be 0..19 or 32..255")
            self.value = value

        def __eq__(self, other):
            return isinstance(other, Simple) and self.value == other.value

        def __hash__(self):
            return hash(("simple", self.value))

        def __repr__(self):
            return "Simple(%d)" % self.value

    class _Undefined:
        def __repr__(self):
            return "UNDEFINED"

        def __bool__(self):
            return False

    UNDEFINED = _Undefined()
    _c.Simple = Simple
    _c.UNDEFINED = UNDEFINED


# --- encoding ---------------------------------------------------------------


def encode(out, v, stack):
    """Encode what cbor's encoder leaves out, or push its built-in equivalent on stack."""
    t = type(v)
    if t is int:
        # Outside 64 bits: bignum, tag 2 or 3 (§3.4.3).
        tag = 0xC2
        if v < 0:
            tag = 0xC3
            v = ~v
        k = 0
        x = v
        while x:
            x >>= 8
            k += 1
        out.append(tag)
        _c._head(out, 0x40, k)
        out += v.to_bytes(k, "big")
    elif t is float:
        _float(out, v)
    elif t is Simple:
        if v.value < 24:
            out.append(0xE0 | v.value)
        else:
            out.append(0xF8)
            out.append(v.value)
    elif v is UNDEFINED:
        out.append(0xF7)
    elif isinstance(v, int):
        stack.append(int(v))
    elif isinstance(v, str):
        stack.append(str(v))
    elif isinstance(v, float):
        _float(out, float(v))
    elif isinstance(v, dict):
        stack.append(dict(v))
    elif isinstance(v, (list, tuple)):
        stack.append(list(v))
    else:
        raise _c.CBOREncodeError("cannot encode %s" % type(v).__name__)


def _half_bits(single):
    """The binary16 pattern equal to this binary32 pattern, or None (RFC 8949 §4.2.1)."""
    b = (single[0] << 24) | (single[1] << 16) | (single[2] << 8) | single[3]
    sign = (b >> 16) & 0x8000
    exp = (b >> 23) & 0xFF
    mant = b & 0x7FFFFF
    if exp == 0xFF:
        return None if mant else sign | 0x7C00
    if exp == 0:
        return None if mant else sign
    e = exp - 127
    if -14 <= e <= 15:
        if mant & 0x1FFF:
            return None
        return sign | ((e + 15) << 10) | (mant >> 13)
    if -24 <= e < -14:
        sig = mant | 0x800000
        shift = -(e + 1)
        if sig & ((1 << shift) - 1):
            return None
        return sign | (sig >> shift)
    return None


def _float(out, v):
    """The shortest of half, single and double that keeps v (§4.2.1); NaN as 0xf97e00."""
    if v != v:
        out += b"\xf9\x7e\x00"
        return
    try:
        single = struct.pack(">f", v)
    except OverflowError:
        single = None
    if single is not None and struct.unpack(">f", single)[0] == v:
        h = _half_bits(single)
        if h is None:
            out.append(0xFA)
            out += single
        else:
            out.append(0xF9)
            out.append(h >> 8)
            out.append(h & 0xFF)
    else:
        out.append(0xFB)
        out += struct.pack(">d", v)


# --- decoding ---------------------------------------------------------------


def decode_simple(ai, arg, data, start):
    """Major type 7 other than false/true/null/break (§3.3); arg already read."""
    if ai < 20:
        return Simple(ai)
    if ai == 23:
        return UNDEFINED
    if ai == 24:
        if arg < 32:
            raise _c.CBORDecodeError("simple value %d in two-byte form" % arg, start)
        return Simple(arg)
    if ai == 25:
        exp = (arg >> 10) & 0x1F
        mant = arg & 0x3FF
        if exp == 0:
            v = mant / 16777216.0
        elif exp == 31:
            v = float("inf") if mant == 0 else float("nan")
        else:
            v = (mant + 1024) * (2.0 ** (exp - 25))
        return -v if arg & 0x8000 else v
    return struct.unpack_from(">f" if ai == 26 else ">d", data, start + 1)[0]


def decode_bignum(tag, value, start):
    """Tag 2 or 3 around a byte string (§3.4.3)."""
    if type(value) is not bytes:
        raise _c.CBORDecodeError("bignum tag %d on a non-byte-string" % tag, start)
    value = int.from_bytes(value, "big") if value else 0
    return ~value if tag == 3 else value


def freeze(v):
    """An array map key as a tuple, nested arrays too (depth is already bounded)."""
    if type(v) is list:
        return tuple(freeze(x) for x in v)
    return v


def strict_utf8(b):
    """True if b is UTF-8 as RFC 3629 defines it (no overlong forms, no surrogates)."""
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            need, lo, hi = 1, 0x80, 0xBF
        elif c == 0xE0:
            need, lo, hi = 2, 0xA0, 0xBF
        elif c == 0xED:
            need, lo, hi = 2, 0x80, 0x9F
        elif 0xE1 <= c <= 0xEF:
            need, lo, hi = 2, 0x80, 0xBF
        elif c == 0xF0:
            need, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= c <= 0xF3:
            need, lo, hi = 3, 0x80, 0xBF
        elif c == 0xF4:
            need, lo, hi = 3, 0x80, 0x8F
        else:
            return False
        if i + need >= n:
            return False
        c = b[i + 1]
        if c < lo or c > hi:
            return False
        j = i + 2
        while j <= i + need:
            c = b[j]
            if c < 0x80 or c > 0xBF:
                return False
            j += 1
        i += need + 1
    return True
