"""CBOR checks that run on CPython and MicroPython: RFC 8949 vectors and rules."""

import struct

from cbor_vectors import APPENDIX_A
from portable import eq, raises, unhex

from sipmesh.proto import cbor
from sipmesh.proto.cbor import UNDEFINED, CBORDecodeError, CBOREncodeError, Simple, Tag


def same(a, b):
    """Strict equality: same types, NaN equals NaN, 0.0 differs from -0.0."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if a != a:
            return b != b
        return struct.pack(">d", a) == struct.pack(">d", b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        if len(a) != len(b):
            return False
        for k in a:
            if k not in b or not same(a[k], b[k]):
                return False
        return True
    if type(a) is Tag:
        return a.tag == b.tag and same(a.value, b.value)
    return a == b


def check_appendix_a_decodes():
    for h, want, _ in APPENDIX_A:
        got = cbor.loads(unhex(h))
        assert same(got, want), "%s decoded to %r, want %r" % (h, got, want)


def check_appendix_a_reencodes_deterministic_items():
    count = 0
    for h, want, deterministic in APPENDIX_A:
        if deterministic:
            eq(cbor.dumps(want).hex(), h, "encoding of %r" % (want,))
            eq(cbor.dumps(cbor.loads(unhex(h))).hex(), h, "round trip of " + h)
            count += 1
    eq(count, 64, "deterministic vectors")


def check_appendix_a_other_items_encode_preferred():
    for h, want, deterministic in APPENDIX_A:
        if not deterministic:
            enc = cbor.dumps(cbor.loads(unhex(h)))
            assert len(enc) <= len(unhex(h)), h
            assert same(cbor.loads(enc), want), h


def check_length_first_key_order():
    # RFC 8949 §4.2.3 lists these keys in length-first order.
    keys = [10, -1, False, 100, "z", (-1,), "aa", (100,)]
    want = "a8" + "0a00" + "2000" + "f400" + "186400" + "617a00" + "812000"
    want += "62616100" + "81186400"
    m = {}
    for k in reversed(keys):
        m[k] = 0
    eq(cbor.dumps(m).hex(), want, "length-first map")
    back = cbor.loads(unhex(want))
    eq(sorted(repr(k) for k in back), sorted(repr(k) for k in keys), "keys")


def check_integer_boundaries():
    cases = [
        (0, "00"), (23, "17"), (24, "1818"), (255, "18ff"), (256, "190100"),
        (65535, "19ffff"), (65536, "1a00010000"), (4294967295, "1affffffff"),
        (4294967296, "1b0000000100000000"), (-24, "37"), (-25, "3818"),
        (-256, "38ff"), (-257, "390100"), (-4294967296, "3affffffff"),
        (-4294967297, "3b0000000100000000"), (2 ** 64 - 1, "1bffffffffffffffff"),
    ]
    for value, h in cases:
        eq(cbor.dumps(value).hex(), h, "int %d" % value)
        eq(cbor.loads(unhex(h)), value, "decode " + h)
    eq(cbor.dumps(2 ** 72).hex(), "c24a01" + "00" * 9, "bignum 2^72")
    eq(cbor.loads(cbor.dumps(-(2 ** 100))), -(2 ** 100), "negative bignum")
    eq(cbor.loads(unhex("c240")), 0, "empty bignum is zero")


def check_float_preferred_serialization():
    cases = [
        (65504.0, "f97bff"),
        (65536.0, "fa47800000"),
        (2.0 ** -25, "fa33000000"),
        (3 * 2.0 ** -24, "f90003"),
        (2.0 ** -24 * 1023, "f903ff"),
        (-2.0, "f9c000"),
        (0.1, "fb3fb999999999999a"),
        (1.0e-40, "fb37a16c262777579c"),
        (16777217.0, "fb4170000010000000"),
        (float("-inf"), "f9fc00"),
    ]
    for value, h in cases:
        eq(cbor.dumps(value).hex(), h, "float %r" % value)
        assert same(cbor.loads(unhex(h)), value), h


def check_half_precision_decoding_table():
    # Every finite half value decodes to sign * 2^(e-15) * (1 + m/1024).
    for h in range(0, 0x7C00, 97):
        got = cbor.loads(bytes([0xF9, h >> 8, h & 0xFF]))
        e, m = h >> 10, h & 0x3FF
        want = m * 2.0 ** -24 if e == 0 else (1 + m / 1024) * 2.0 ** (e - 15)
        assert same(got, want), "half %04x: %r != %r" % (h, got, want)
        eq(cbor.dumps(got), bytes([0xF9, h >> 8, h & 0xFF]), "half %04x re-encoded" % h)


def check_strings_and_bytes():
    for value in ["", "sip:alice@example.com", "\u00e9\u20ac\U0001f600", "x" * 300]:
        eq(cbor.loads(cbor.dumps(value)), value, "text")
    for value in [b"", b"\x00\xff", bytes(range(256)) * 3]:
        eq(cbor.loads(cbor.dumps(value)), value, "bytes")
    eq(cbor.dumps(bytearray(b"ab")), b"\x42ab", "bytearray encodes as bytes")
    eq(cbor.dumps(memoryview(b"ab")), b"\x42ab", "memoryview encodes as bytes")
    eq(cbor.dumps((1, 2)), cbor.dumps([1, 2]), "tuple encodes as array")


def check_tags_simple_undefined():
    eq(Tag(5, [1]), Tag(5, [1]), "Tag equality")
    assert Tag(5, 1) != Tag(6, 1)
    eq(repr(Tag(5, "a")), "Tag(5, 'a')", "Tag repr")
    eq(cbor.dumps(Tag(2 ** 40, None)).hex(), "db0000010000000000f6", "large tag number")
    eq(cbor.dumps(Simple(19)).hex(), "f3", "simple 19")
    eq(cbor.dumps(Simple(32)).hex(), "f820", "simple 32")
    eq(cbor.loads(unhex("f820")), Simple(32), "simple 32 decodes")
    raises(CBOREncodeError, Simple, 20)
    raises(CBOREncodeError, Simple, 31)
    raises(CBOREncodeError, Tag, -1, 0)
    assert cbor.loads(unhex("f7")) is UNDEFINED
    assert not UNDEFINED
    eq(cbor.loads(cbor.dumps({Tag(9, "k"): Simple(7)})), {Tag(9, "k"): Simple(7)}, "tag key")


def check_array_lengths_around_preallocation():
    # Short definite arrays are allocated at their final size, longer ones
    # grow: both paths, nested, must give the same values.
    for n in (1, 2, 63, 64, 65, 200):
        value = [list(range(n)), [[i] * (n % 7) for i in range(n)], n]
        eq(cbor.loads(cbor.dumps(value)), value, "arrays of %d" % n)
        eq(cbor.loads(cbor.dumps({"a": value})), {"a": value}, "in a map, %d" % n)
    eq(cbor.loads(unhex("9f8301020383040506ff")), [[1, 2, 3], [4, 5, 6]], "inside indefinite")


def check_array_keys_become_tuples():
    eq(cbor.loads(unhex("a1820102f5")), {(1, 2): True}, "array key")
    eq(cbor.loads(unhex("a18201820203f5")), {(1, (2, 3)): True}, "nested array key")


def check_management_message_round_trip():
    msg = {
        "v": 1, "op": "set-config", "id": 4711, "board": "door-1",
        "net": {"ssid": "branch", "dhcp": True, "dns": ["192.0.2.1", "192.0.2.2"]},
        "sip": {"aor": "sip:door-1@branch.example", "expires": 3600, "codecs": ["PCMU", "PCMA"]},
        "io": [{"pin": 4, "mode": "in", "pull": None}, {"pin": 5, "mode": "out"}],
        "key": bytes(range(32)), "neg": -70000, "big": 2 ** 63, "undef": UNDEFINED,
    }
    enc = cbor.dumps(msg)
    eq(cbor.loads(enc), msg, "round trip")
    eq(cbor.dumps(cbor.loads(enc)), enc, "re-encoding is byte-identical")


def check_decode_item_reports_end():
    data = unhex("0182020300")
    v, end = cbor.decode_item(data, 0)
    eq((v, end), (1, 1), "first")
    v, end = cbor.decode_item(data, end)
    eq((v, end), ([2, 3], 4), "second")
    eq(cbor.decode_item(memoryview(data), 4), (0, 5), "memoryview input")
    eq(cbor.loads(bytearray(unhex("6161"))), "a", "bytearray input")


def check_limits_are_parameters():
    deep = b"\x81" * 40 + b"\x00"
    raises(CBORDecodeError, cbor.loads, deep)
    back = cbor.dumps(cbor.loads(deep, max_depth=40), max_depth=40)
    eq(back, deep, "depth 40 allowed when asked")
    e = raises(CBORDecodeError, cbor.loads, b"\x83\x01\x02\x03", max_items=3)
    eq(e.offset, 3, "item limit offset")
    e = raises(CBORDecodeError, cbor.loads, bytes(11), max_size=10)
    eq(e.offset, 10, "size limit offset")


def check_encode_errors():
    raises(CBOREncodeError, cbor.dumps, object())
    raises(CBOREncodeError, cbor.dumps, {1, 2})
    nested = []
    for _ in range(40):
        nested = [nested]
    raises(CBOREncodeError, cbor.dumps, nested)
    cyclic = []
    cyclic.append(cyclic)
    raises(CBOREncodeError, cbor.dumps, cyclic)
    assert isinstance(CBOREncodeError("x"), ValueError)
    assert isinstance(CBORDecodeError("x", 0), ValueError)
