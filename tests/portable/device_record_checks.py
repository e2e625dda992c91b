"""Portable checks of sipmesh.proto.device_record (the board's overlay record).

The known-answer bytes are what cbor2 writes with ``canonical=True`` for the
same map (RFC 8949 §4.2.3 length-first key order), so a board and the
controller agree on the bytes that get signed.
"""

from portable import eq, raises, unhex

from sipmesh.proto import cbor
from sipmesh.proto import device_record as dr


def _rec(**kw):
    r = {
        "aor": "sip:door-1@demo.sipmesh",
        "addrs": ["10.77.0.2:5060", "[fe80::1]:5060"],
        "caps": ["door", "sip"],
        "kind": "esp32",
        "fw": "0.1.0",
        "t": 1800000000,
    }
    r.update(kw)
    return r


KNOWN = unhex(
    "a661741a6b49d20062667765302e312e3063616f72777369703a646f6f722d314064656d6f2e"
    "7369706d65736864636170738264646f6f7263736970646b696e64656573703332656164647273"
    "826e31302e37372e302e323a353036306e5b666538303a3a315d3a35303630"
)


def check_known_answer():
    eq(dr.encode(_rec()), KNOWN, "deterministic CBOR")
    eq(dr.decode(KNOWN), _rec(), "decode")


def check_make_matches_encode():
    r = _rec()
    eq(dr.make(r["aor"], r["addrs"], r["caps"], r["kind"], r["fw"], r["t"]), KNOWN)


def check_round_trip_empty_lists():
    r = _rec(addrs=[], caps=[])
    eq(dr.decode(dr.encode(r)), r)


def check_kind_id():
    eq(dr.KIND, 0xF0000002)


def check_unknown_keys_dropped_on_decode():
    m = _rec()
    m["x-new"] = [1, 2, 3]
    eq(dr.decode(cbor.dumps(m)), _rec())


def check_unknown_key_refused_on_encode():
    m = _rec()
    m["x"] = 1
    raises(dr.DeviceRecordError, dr.encode, m)


def check_missing_key():
    for k in dr.KEYS:
        m = _rec()
        del m[k]
        raises(dr.DeviceRecordError, dr.encode, m)
        raises(dr.DeviceRecordError, dr.decode, cbor.dumps(m))


def check_wrong_types():
    bad = [
        {"aor": 5},
        {"aor": ""},
        {"aor": "x" * 257},
        {"addrs": "10.0.0.1:1"},
        {"addrs": [7]},
        {"caps": [b"door"]},
        {"caps": ["c"] * 17},
        {"kind": None},
        {"fw": "v" * 33},
        {"t": -1},
        {"t": True},
        {"t": 1.5},
        {"t": 1 << 40},
    ]
    for kw in bad:
        raises(dr.DeviceRecordError, dr.encode, _rec(**kw))
        raises(dr.DeviceRecordError, dr.decode, cbor.dumps(_rec(**kw)))


def check_addresses():
    for a in ("10.0.0.1:0", "10.0.0.1:65535", "[::1]:5060", "host.local:7381"):
        dr.encode(_rec(addrs=[a]))
    for a in ("10.0.0.1", "10.0.0.1:", ":5060", "10.0.0.1:65536", "::1:5060",
              "[::1:5060", "10.0.0.1:50a", "[]:5060"):
        raises(dr.DeviceRecordError, dr.encode, _rec(addrs=[a]))
    raises(dr.DeviceRecordError, dr.encode, _rec(addrs=["10.0.0.1:1"] * 9))


def check_size_limit():
    big = _rec(caps=["c" * 32] * 16, addrs=["[%s]:65535" % ("f" * 40)] * 8, aor="s" * 256)
    raises(dr.DeviceRecordError, dr.encode, big)
    raises(dr.DeviceRecordError, dr.decode, b"\xa0" + b"\x00" * dr.MAX_SIZE)


def check_not_cbor_or_not_map():
    for data in (b"", b"\xff", b"\x1b\x00", cbor.dumps([1, 2]), cbor.dumps("x"), KNOWN[:-1]):
        raises(dr.DeviceRecordError, dr.decode, data)
    raises(dr.DeviceRecordError, dr.decode, "a string")
    raises(dr.DeviceRecordError, dr.encode, [1])


def check_every_truncation_fails():
    for n in range(len(KNOWN)):
        raises(dr.DeviceRecordError, dr.decode, KNOWN[:n])
