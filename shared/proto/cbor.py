"""CBOR (RFC 8949) for the controller and the boards, one implementation for both.

Decoding accepts every well-formed item (RFC 8949 §3, Appendix C),
indefinite lengths included. Encoding is always deterministic: preferred
serialization, definite lengths, and the length-first map key ordering of
RFC 8949 §4.2.3 (what cbor2 writes with ``canonical=True``). Management
messages are signed, so the same value must always give the same bytes.

Value model:

- unsigned/negative integers -> int; tags 2 and 3 (bignums, §3.4.3) -> int,
  and ints outside 64 bits are encoded as bignums;
- byte strings -> bytes; text strings -> str (strict UTF-8, RFC 3629,
  checked on both runtimes: MicroPython's own decoder accepts surrogates
  and overlong forms, so they are checked here);
- arrays -> list (tuples encode as arrays); maps -> dict (array keys become
  tuples; duplicate keys are an error, §5.6);
- other tags -> ``Tag(number, value)``; false/true/null -> False/True/None;
  undefined -> ``UNDEFINED``; other simple values -> ``Simple(n)``;
- floats: half, single and double decode to float; a float encodes in the
  shortest of the three that keeps its value (§4.2.1), NaN as 0xf97e00.

Boards whose MicroPython build has single-precision floats (the usual ESP32
and RP2040 builds) get the nearest single-precision value of a decoded
double, and their floats encode from that value. Management messages
therefore carry no floats: use integers with a stated unit.

Limits: ``max_size`` bytes of input, ``max_depth`` nested containers and
tags, ``max_items`` data items. The decoder never recurses (a board's C
stack is small) and never allocates from a declared length before the
bytes are there. Every malformed input raises ``CBORDecodeError`` with the
byte offset where the problem was found; nothing else escapes ``loads``.
"""

import struct
import sys

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# Default limits, each far above what sipmesh sends and far below what hurts
# a board: the largest legitimate item is a configuration document inside an
# 8 KiB serial frame; management messages nest about 5 deep (a COSE_Sign1
# envelope around a config adds 2); every item is at least one byte, so the
# item count only matters for callers that raise max_size.
MAX_SIZE = const(65536)
MAX_DEPTH = const(32)
MAX_ITEMS = const(16384)
# Definite arrays up to this length are allocated at their final size: on
# MicroPython, growing lists by reallocation fragments the heap (measured:
# 13 KiB more heap to decode a 4 KB configuration without it).
_PREALLOC = const(64)

_MICROPYTHON = sys.implementation.name == "micropython"

_FILL = const(-1)  # definite array preallocated to its length
_ARRAY = const(0)
_MAP = const(1)
_TAG = const(2)
_BYTES = const(3)
_TEXT = const(4)


class CBORError(ValueError):
    """Base class of this module's errors."""


class CBORDecodeError(CBORError):
    """Malformed or over-limit input; ``offset`` is the byte where it was found."""

    def __init__(self, reason, offset):
        super().__init__("%s (at byte %d)" % (reason, offset))
        self.reason = reason
        self.offset = offset


class CBOREncodeError(CBORError):
    """A value that has no CBOR form here (unknown type, too deep, cyclic)."""


class Tag:
    """A tagged data item (RFC 8949 §3.4) whose tag this module does not interpret."""

    def __init__(self, tag, value):
        if not isinstance(tag, int) or tag < 0 or tag > 0xFFFFFFFFFFFFFFFF:
            raise CBOREncodeError("tag number must be an unsigned 64-bit int")
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash((self.tag, self.value))

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


class Simple:
    """A simple value (RFC 8949 §3.3) other than false, true, null and undefined."""

    def __init__(self, value):
        if not isinstance(value, int) or not (0 <= value < 20 or 32 <= value < 256):
            raise CBOREncodeError("simple value must be 0..19 or 32..255")
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Simple) and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

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

# --- encoding ---------------------------------------------------------------

_END = object()  # closes a container on the encoder's work stack
_RAW = object()  # the next stack entry is already-encoded bytes


def _head(out, major, n):
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out += struct.pack(">BH", mt | 25, n)
    elif n < 0x100000000:
        out += struct.pack(">BI", mt | 26, n)
    else:
        out += struct.pack(">BQ", mt | 27, n)


def _bignum(out, tag, n):
    length = 0
    x = n
    while x:
        x >>= 8
        length += 1
    out.append(0xC0 | tag)
    b = n.to_bytes(length, "big")
    _head(out, 2, len(b))
    out += b


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


def _int(out, v):
    if v >= 0:
        if v <= 0xFFFFFFFFFFFFFFFF:
            _head(out, 0, v)
        else:
            _bignum(out, 2, v)
    else:
        n = -1 - v
        if n <= 0xFFFFFFFFFFFFFFFF:
            _head(out, 1, n)
        else:
            _bignum(out, 3, n)


def _map_items(d, depth, max_depth):
    """Key encodings paired with values, in length-first order (RFC 8949 §4.2.3)."""
    items = []
    for k, v in d.items():
        kb = dumps(k, max_depth - depth)
        items.append((len(kb), kb, v))
    items.sort(key=_sort_key)
    return items


def _sort_key(item):
    return (item[0], item[1])


def dumps(obj, max_depth=MAX_DEPTH):
    """Encode obj deterministically; raise CBOREncodeError if it has no CBOR form.

    Preferred serialization and definite lengths (RFC 8949 §4.2.1), map keys
    in length-first order (§4.2.3). Iterative, so ``max_depth`` also stops
    cyclic values.
    """
    out = bytearray()
    stack = [obj]
    depth = 0
    while stack:
        v = stack.pop()
        if v is _END:
            depth -= 1
            continue
        if v is _RAW:
            out += stack.pop()
            continue
        t = type(v)
        if t is str:
            b = v.encode("utf-8")
            _head(out, 3, len(b))
            out += b
        elif t is int:
            _int(out, v)
        elif t is bytes or t is bytearray or t is memoryview:
            _head(out, 2, len(v))
            out += v
        elif t is bool:
            out.append(0xF5 if v else 0xF4)
        elif v is None:
            out.append(0xF6)
        elif t is float:
            _float(out, v)
        elif t is dict or t is list or t is tuple or t is Tag:
            depth += 1
            if depth > max_depth:
                raise CBOREncodeError("nesting deeper than %d (or a cycle)" % max_depth)
            stack.append(_END)
            if t is dict:
                _head(out, 5, len(v))
                items = _map_items(v, depth, max_depth)
                i = len(items) - 1
                while i >= 0:
                    stack.append(items[i][2])
                    stack.append(items[i][1])
                    stack.append(_RAW)
                    i -= 1
            elif t is Tag:
                _head(out, 6, v.tag)
                stack.append(v.value)
            else:
                _head(out, 4, len(v))
                i = len(v) - 1
                while i >= 0:
                    stack.append(v[i])
                    i -= 1
        elif t is Simple:
            if v.value < 24:
                out.append(0xE0 | v.value)
            else:
                out.append(0xF8)
                out.append(v.value)
        elif v is UNDEFINED:
            out.append(0xF7)
        elif isinstance(v, bool):
            out.append(0xF5 if v else 0xF4)
        elif isinstance(v, int):
            _int(out, int(v))
        elif isinstance(v, str):
            stack.append(str(v))
        elif isinstance(v, float):
            _float(out, float(v))
        elif isinstance(v, dict):
            stack.append(dict(v))
        elif isinstance(v, (list, tuple)):
            stack.append(list(v))
        else:
            raise CBOREncodeError("cannot encode %s" % type(v).__name__)
    return bytes(out)


# --- decoding ---------------------------------------------------------------


def _utf8_strict(b):
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


def _text(raw, offset):
    try:
        s = str(raw, "utf-8")
    except UnicodeError:
        raise CBORDecodeError("text string is not valid UTF-8", offset) from None
    if _MICROPYTHON and len(s) != len(raw) and not _utf8_strict(raw):
        raise CBORDecodeError("text string is not valid UTF-8", offset)
    return s


def _half(h):
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        v = mant / 16777216.0
    elif exp == 31:
        v = float("inf") if mant == 0 else float("nan")
    else:
        v = (mant + 1024) * (2.0 ** (exp - 25))
    return -v if h & 0x8000 else v


def _freeze(v, offset):
    """Make a decoded map key hashable: arrays become tuples (depth is already bounded)."""
    if type(v) is list:
        return tuple(_freeze(x, offset) for x in v)
    try:
        hash(v)
    except TypeError:
        raise CBORDecodeError(
            "map key of type %s is not supported" % type(v).__name__, offset
        ) from None
    return v


_NOKEY = object()


def loads(data, max_depth=MAX_DEPTH, max_items=MAX_ITEMS, max_size=MAX_SIZE):
    """Decode exactly one data item from data (bytes, bytearray or memoryview)."""
    if len(data) > max_size:
        raise CBORDecodeError(
            "input of %d bytes exceeds the %d-byte limit" % (len(data), max_size), max_size
        )
    value, end = decode_item(data, 0, max_depth, max_items, max_size)
    if end != len(data):
        raise CBORDecodeError("%d bytes of trailing data" % (len(data) - end), end)
    return value


def decode_item(data, pos=0, max_depth=MAX_DEPTH, max_items=MAX_ITEMS, max_size=MAX_SIZE):
    """Decode one data item starting at pos; return (value, end offset).

    The limits apply to this item: ``max_size`` counts from pos. Open
    containers live on four parallel stacks (kind, container, remaining
    count or -1 when indefinite, pending map key or tag number) so that
    nesting costs no allocation per container and no recursion.
    """
    n = len(data)
    if n - pos > max_size:
        n = pos + max_size
    view = memoryview(data) if _MICROPYTHON else data
    kinds = []
    conts = []
    rems = []
    keys = []
    reserved = 0
    items = 0
    unpack_from = struct.unpack_from
    while True:
        if pos >= n:
            if len(data) > n:
                raise CBORDecodeError("item larger than %d bytes" % max_size, pos)
            raise CBORDecodeError("truncated: a data item was expected", pos)
        start = pos
        ib = data[pos]
        pos += 1
        major = ib >> 5
        ai = ib & 31
        if ai < 24:
            arg = ai
        elif ai == 24:
            if pos + 1 > n:
                raise CBORDecodeError("truncated: 1-byte argument", start)
            arg = data[pos]
            pos += 1
        elif ai == 25:
            if pos + 2 > n:
                raise CBORDecodeError("truncated: 2-byte argument", start)
            arg = (data[pos] << 8) | data[pos + 1]
            pos += 2
        elif ai == 26:
            if pos + 4 > n:
                raise CBORDecodeError("truncated: 4-byte argument", start)
            arg = unpack_from(">I", data, pos)[0]
            pos += 4
        elif ai == 27:
            if pos + 8 > n:
                raise CBORDecodeError("truncated: 8-byte argument", start)
            arg = unpack_from(">Q", data, pos)[0]
            pos += 8
        elif ai == 31:
            arg = -1
        else:
            raise CBORDecodeError("reserved additional information value %d" % ai, start)

        items += 1
        if items > max_items:
            raise CBORDecodeError("more than %d data items" % max_items, start)

        if kinds and kinds[-1] >= _BYTES and ib != 0xFF:
            if major != kinds[-1] - 1 or arg < 0:
                raise CBORDecodeError(
                    "indefinite-length string chunk is not a definite string of the same type",
                    start,
                )

        if major == 0:
            if arg < 0:
                raise CBORDecodeError("indefinite length on an integer", start)
            value = arg
        elif major == 1:
            if arg < 0:
                raise CBORDecodeError("indefinite length on an integer", start)
            value = -1 - arg
        elif major == 2 or major == 3:
            if arg < 0:
                if len(kinds) >= max_depth:
                    raise CBORDecodeError("nesting deeper than %d" % max_depth, start)
                kinds.append(major + 1)
                conts.append([])
                rems.append(-1)
                keys.append(None)
                continue
            if arg > n - pos:
                if arg <= len(data) - pos:
                    raise CBORDecodeError("item larger than %d bytes" % max_size, start)
                raise CBORDecodeError(
                    "truncated: string of %d bytes with %d left" % (arg, len(data) - pos), start
                )
            if major == 2:
                value = bytes(data[pos : pos + arg])
            else:
                value = _text(view[pos : pos + arg], start)
            pos += arg
        elif major == 4 or major == 5:
            if arg == 0:
                value = [] if major == 4 else {}
            else:
                if arg > 0 and arg * (major - 3) > n - pos:
                    raise CBORDecodeError(
                        "truncated: %d %s declared with %d bytes left"
                        % (arg, "elements" if major == 4 else "pairs", n - pos),
                        start,
                    )
                if len(kinds) >= max_depth:
                    raise CBORDecodeError("nesting deeper than %d" % max_depth, start)
                if major == 4:
                    # Preallocated slots never exceed the bytes left, which a
                    # well-formed item needs at least one of per slot.
                    if 0 < arg <= _PREALLOC and reserved + arg <= n - pos:
                        kinds.append(_FILL)
                        conts.append([None] * arg)
                        reserved += arg
                    else:
                        kinds.append(_ARRAY)
                        conts.append([])
                    keys.append(None)
                else:
                    kinds.append(_MAP)
                    conts.append({})
                    keys.append(_NOKEY)
                rems.append(arg)
                continue
        elif major == 6:
            if arg < 0:
                raise CBORDecodeError("indefinite length on a tag", start)
            if len(kinds) >= max_depth:
                raise CBORDecodeError("nesting deeper than %d" % max_depth, start)
            kinds.append(_TAG)
            conts.append(None)
            rems.append(1)
            keys.append(arg)
            continue
        else:
            if ai < 20:
                value = Simple(ai)
            elif ai == 20:
                value = False
            elif ai == 21:
                value = True
            elif ai == 22:
                value = None
            elif ai == 23:
                value = UNDEFINED
            elif ai == 24:
                if arg < 32:
                    raise CBORDecodeError("simple value %d in two-byte form" % arg, start)
                value = Simple(arg)
            elif ai == 25:
                value = _half(arg)
            elif ai == 26:
                value = unpack_from(">f", data, start + 1)[0]
            elif ai == 27:
                value = unpack_from(">d", data, start + 1)[0]
            else:
                if not kinds or rems[-1] != -1:
                    raise CBORDecodeError("break outside an indefinite-length item", start)
                kind = kinds.pop()
                value = conts.pop()
                rems.pop()
                if keys.pop() is not _NOKEY and kind == _MAP:
                    raise CBORDecodeError("break after a map key with no value", start)
                if kind == _BYTES:
                    value = b"".join(value)
                elif kind == _TEXT:
                    value = "".join(value)
        # Hand the finished value to the enclosing containers.
        while kinds:
            kind = kinds[-1]
            if kind == _FILL:
                rem = rems[-1]
                c = conts[-1]
                c[len(c) - rem] = value
                reserved -= 1
                if rem > 1:
                    rems[-1] = rem - 1
                    break
                value = c
            elif kind == _ARRAY:
                conts[-1].append(value)
                rem = rems[-1]
                if rem < 0:
                    break
                if rem > 1:
                    rems[-1] = rem - 1
                    break
                value = conts[-1]
            elif kind == _MAP:
                m = conts[-1]
                key = keys[-1]
                if key is _NOKEY:
                    key = _freeze(value, start)
                    if key in m:
                        raise CBORDecodeError("duplicate map key %r" % (key,), start)
                    keys[-1] = key
                    break
                m[key] = value
                keys[-1] = _NOKEY
                rem = rems[-1]
                if rem < 0:
                    break
                if rem > 1:
                    rems[-1] = rem - 1
                    break
                value = m
            elif kind == _TAG:
                tag = keys[-1]
                if tag == 2 or tag == 3:
                    if type(value) is not bytes:
                        raise CBORDecodeError("bignum tag %d on a non-byte-string" % tag, start)
                    value = int.from_bytes(value, "big") if value else 0
                    if tag == 3:
                        value = -1 - value
                else:
                    value = Tag(tag, value)
            else:
                conts[-1].append(value)
                break
            kinds.pop()
            conts.pop()
            rems.pop()
            keys.pop()
        else:
            return value, pos
