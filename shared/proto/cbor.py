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

Heap: a board keeps this module resident, so it holds only what sipmesh's
own messages use (ints, strings, arrays, maps, bool, null, tags). Floats,
bignums, simple values, undefined, array map keys, non-ASCII text checks on
MicroPython and subclasses of the built-in types are handled by
``cbor_ext``, imported the first time such an item is met; a board may drop
it from ``sys.modules`` afterwards. ``Simple`` and ``UNDEFINED`` are served
from there too (module ``__getattr__``, PEP 562).

Limits: ``max_size`` bytes of input, ``max_depth`` nested containers and
tags, ``max_items`` data items. The decoder never recurses (a board's C
stack is small) and never allocates from a declared length before the
bytes are there. Every malformed input raises ``CBORDecodeError`` with the
byte offset where the problem was found; nothing else escapes ``loads``.
"""

try:
    from micropython import const

    _MP = True
except ImportError:
    _MP = False
    const = int


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
        if not isinstance(tag, int) or tag < 0 or tag >> 64:
            raise CBOREncodeError("bad tag")
        self.tag = tag
        self.value = value

    def __eq__(self, x):
        return isinstance(x, Tag) and self.tag == x.tag and self.value == x.value

    def __hash__(self):
        return hash((self.tag, self.value))

    def __repr__(self):
        return "Tag" + repr((self.tag, self.value))


def _ext():
    from sipmesh.proto import cbor_ext

    return cbor_ext


def __getattr__(name):
    if name == "Simple" or name == "UNDEFINED":
        return getattr(_ext(), name)
    raise AttributeError(name)


# --- encoding ---------------------------------------------------------------

_END = object()  # closes a container on the encoder's stack; no map key yet
_RAW = object()  # the next stack entry is already-encoded bytes


def _head(buf, t, n):
    """Append to buf the initial byte (major type bits ``t``) and argument n < 2**64 (§3)."""
    if n < 24:
        buf.append(t | n)
        return
    ai = 24
    k = 8
    while n >> k:
        k <<= 1
        ai += 1
    buf.append(t | ai)
    while k:
        k -= 8
        buf.append((n >> k) & 255)


def _text(buf, s):
    # MicroPython's str is UTF-8 and exports its bytes without a copy.
    b = memoryview(s) if _MP else s.encode()
    _head(buf, 0x60, len(b))
    buf += b


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
            _text(out, v)
        elif t is int and not (v if v >= 0 else ~v) >> 64:
            if v >= 0:
                _head(out, 0, v)
            else:
                _head(out, 0x20, ~v)
        elif t is bytes or t is bytearray or t is memoryview:
            _head(out, 0x40, len(v))
            out += v
        elif t is bool:
            out.append(0xF5 if v else 0xF4)
        elif v is None:
            out.append(0xF6)
        elif t is dict or t is list or t is tuple or t is Tag:
            depth += 1
            if depth > max_depth:
                raise CBOREncodeError("nesting>%d" % max_depth)
            stack.append(_END)
            if t is Tag:
                _head(out, 0xC0, v.tag)
                stack.append(v.value)
            elif t is dict:
                _head(out, 0xA0, len(v))
                # Length-first order (§4.2.3) is (length, bytes) order of the
                # key encodings; the index keeps values out of comparisons.
                pairs = []
                for k in v:
                    if type(k) is str:
                        kb = bytearray()
                        _text(kb, k)
                    else:
                        kb = dumps(k, max_depth - depth)
                    pairs.append((len(kb), kb, len(pairs), v[k]))
                pairs.sort()
                i = len(pairs)
                while i:
                    i -= 1
                    p = pairs[i]
                    stack.append(p[3])
                    stack.append(p[1])
                    stack.append(_RAW)
            else:
                _head(out, 0x80, len(v))
                i = len(v)
                while i:
                    i -= 1
                    stack.append(v[i])
        else:
            _ext().encode(out, v, stack)
    return bytes(out)


# --- decoding ---------------------------------------------------------------


def loads(data, max_depth=MAX_DEPTH, max_items=MAX_ITEMS, max_size=MAX_SIZE):
    """Decode exactly one data item from data (bytes, bytearray or memoryview)."""
    n = len(data)
    if n > max_size:
        raise CBORDecodeError("size limit", max_size)
    value, end = decode_item(data, 0, max_depth, max_items, max_size)
    if end != n:
        raise CBORDecodeError("trailing", end)
    return value


def decode_item(data, pos=0, max_depth=MAX_DEPTH, max_items=MAX_ITEMS, max_size=MAX_SIZE):
    """Decode one data item starting at pos; return (value, end offset).

    The limits apply to this item: ``max_size`` counts from pos. Open
    containers live on a stack of [kind, container, remaining count or -1
    when indefinite, pending map key or tag number] frames, so nesting
    costs no recursion. Reasons
    are short (they are kept in a board's heap); the offset says where.
    """
    n = len(data)
    if n - pos > max_size:
        n = pos + max_size
    view = memoryview(data)
    st = []
    reserved = 0
    items = 0
    while True:
        start = pos
        ib = data[pos] if pos < n else 0
        major = ib >> 5
        ai = arg = ib & 31
        k = 1 << (ai - 24) if 23 < ai < 28 else 0
        pos += 1 + k
        if pos > n:
            raise CBORDecodeError("truncated" if pos > len(data) else "size limit", start)
        if k:
            arg = 0
            while k:
                arg = (arg << 8) | data[pos - k]
                k -= 1
        elif ai > 27:
            if ai < 31:
                raise CBORDecodeError("reserved", start)
            arg = -1

        items += 1
        if items > max_items:
            raise CBORDecodeError("item limit", start)
        if st and st[-1][0] >= _BYTES and ib != 0xFF and (major != st[-1][0] - 1 or arg < 0):
            raise CBORDecodeError("bad chunk type", start)
        if arg < 0 and (major < 2 or major == 6):
            raise CBORDecodeError("indefinite", start)
        if 1 < major < 6 and arg > 0:
            need = pos + (arg if major < 4 else arg * (major - 3))
            if need > n:
                raise CBORDecodeError("truncated" if need > len(data) else "size limit", start)

        if major < 2:
            value = arg if major == 0 else ~arg
        elif major < 4 and arg >= 0:
            value = view[pos : pos + arg]
            pos += arg
            if major == 2:
                value = bytes(value)
            else:
                try:
                    s = str(value, "utf-8")
                    # MicroPython accepts surrogates and overlong forms.
                    if _MP and len(s) != arg and not _ext().strict_utf8(value):
                        raise UnicodeError
                except UnicodeError:
                    raise CBORDecodeError("bad UTF-8 text", start) from None
                value = s
        elif major < 6 and arg == 0:
            value = [] if major == 4 else {}
        elif major < 7:
            if len(st) >= max_depth:
                raise CBORDecodeError("nesting>%d" % max_depth, start)
            rem = arg
            key = None
            if major == 6:
                kind = _TAG
                cont = None
                rem = 1
                key = arg
            elif major < 4:
                kind = major + 1
                cont = []
            elif major == 5:
                kind = _MAP
                cont = {}
                key = _END
            elif 0 < arg <= _PREALLOC and reserved + arg <= n - pos:
                # Preallocated slots never exceed the bytes left, which a
                # well-formed item needs at least one of per slot.
                kind = _FILL
                cont = [None] * arg
                reserved += arg
            else:
                kind = _ARRAY
                cont = []
            st.append([kind, cont, rem, key])
            continue
        elif ai == 20:
            value = False
        elif ai == 21:
            value = True
        elif ai == 22:
            value = None
        elif ai != 31:
            value = _ext().decode_simple(ai, arg, data, start)
        else:
            if not st or st[-1][2] != -1:
                raise CBORDecodeError("misplaced break", start)
            kind, value, rem, key = st.pop()
            if key is not _END and kind == _MAP:
                raise CBORDecodeError("misplaced break", start)
            if kind == _BYTES:
                value = b"".join(value)
            elif kind == _TEXT:
                value = "".join(value)
        # Hand the finished value to the enclosing containers.
        while st:
            f = st[-1]
            kind = f[0]
            if kind == _TAG:
                tag = f[3]
                if tag == 2 or tag == 3:
                    value = _ext().decode_bignum(tag, value, start)
                else:
                    value = Tag(tag, value)
            elif kind >= _BYTES:
                f[1].append(value)
                break
            else:
                c = f[1]
                if kind == _MAP:
                    key = f[3]
                    if key is _END:
                        if type(value) is list:
                            value = _ext().freeze(value)
                        try:
                            hash(value)
                        except TypeError:
                            raise CBORDecodeError("bad map key", start) from None
                        if value in c:
                            raise CBORDecodeError("duplicate", start)
                        f[3] = value
                        break
                    c[key] = value
                    f[3] = _END
                elif kind == _FILL:
                    c[len(c) - f[2]] = value
                    reserved -= 1
                else:
                    c.append(value)
                rem = f[2] - 1
                if rem:  # -2 for an indefinite container: it ends at its break
                    if rem > 0:
                        f[2] = rem
                    break
                value = c
            st.pop()
        else:
            return value, pos
