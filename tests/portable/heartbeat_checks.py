"""Portable checks of sipmesh.proto.heartbeat (HMAC-SHA256 and the heartbeat envelope).

The HMAC expectations are the RFC 4231 §4.2-§4.8 test vectors, typed from
the RFC; on CPython each is also compared with the standard library's hmac
(absent on MicroPython), so a typing slip cannot go unnoticed.
"""

from portable import MICROPYTHON, Rng, eq, raises, unhex

from sipmesh.proto import cbor, heartbeat
from sipmesh.proto.heartbeat import HeartbeatError

_KEY = bytes(range(32))
_OTHER = bytes(range(1, 33))

# (key, data, HMAC-SHA-256, truncated to the length given) from RFC 4231 §4.2-§4.8.
_RFC4231 = (
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (b"\xaa" * 131,
     b"This is a test using a larger than block-size key and a larger than block-size data."
     b" The key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
)


def _payload(**over):
    p = {"id": "sm-0123456789ab", "boot": 3, "n": 41, "cfg": 7, "up": 1234,
         "ip": "10.77.0.2", "free": 51200, "alloc": 40960, "overlay": "ok"}
    p.update(over)
    return p


def _envelope(p, mac):
    return cbor.dumps({"p": p, "mac": mac})


def check_rfc4231_vectors():
    for i, (key, data, want) in enumerate(_RFC4231):
        got = heartbeat.hmac_sha256(key, data)
        eq(got[: len(want) // 2], unhex(want), "RFC 4231 case %d" % (i + 1))


def check_against_stdlib_hmac():
    if MICROPYTHON:
        return
    import hashlib
    import hmac

    for key, data, want in _RFC4231:
        eq(hmac.new(key, data, hashlib.sha256).hexdigest()[: len(want)], want, "vector typo")
    rng = Rng(0xC0FFEE)
    for _ in range(40):
        key = rng.bytes(rng.below(150))
        msg = rng.bytes(rng.below(300))
        eq(heartbeat.hmac_sha256(key, msg), hmac.new(key, msg, hashlib.sha256).digest())


def check_roundtrip():
    p = _payload()
    body = heartbeat.seal(_KEY, p)
    eq(heartbeat.open_(_KEY, body), p)
    env = cbor.loads(body)
    eq(sorted(env), ["mac", "p"])
    eq(env["mac"], heartbeat.hmac_sha256(_KEY, env["p"]), "mac covers p's bytes")
    assert len(body) < 200, len(body)


def check_extra_keys_tolerated():
    p = _payload(rssi=-61)
    eq(heartbeat.open_(_KEY, heartbeat.seal(_KEY, p)), p)


def check_wrong_key_refused():
    body = heartbeat.seal(_KEY, _payload())
    e = raises(HeartbeatError, heartbeat.open_, _OTHER, body)
    assert "MAC" in str(e), e


def check_tampering_refused():
    body = heartbeat.seal(_KEY, _payload())
    env = cbor.loads(body)
    p, mac = env["p"], env["mac"]
    for i in range(len(p)):
        bad = bytearray(p)
        bad[i] ^= 0x01
        raises(HeartbeatError, heartbeat.open_, _KEY, _envelope(bytes(bad), mac))
    for i in range(len(mac)):
        bad = bytearray(mac)
        bad[i] ^= 0x80
        raises(HeartbeatError, heartbeat.open_, _KEY, _envelope(p, bytes(bad)))
    raises(HeartbeatError, heartbeat.open_, _KEY, _envelope(p, mac[:16]))
    raises(HeartbeatError, heartbeat.open_, _KEY, _envelope(p, mac + b"\x00"))


def check_malformed_bodies():
    good = heartbeat.seal(_KEY, _payload())
    env = cbor.loads(good)
    p, mac = env["p"], env["mac"]
    bad = [
        b"",
        b"\xff",
        good[:-1],
        good + b"\x00",
        cbor.dumps([p, mac]),
        cbor.dumps({"p": p}),
        cbor.dumps({"p": p, "mac": mac, "x": 1}),
        cbor.dumps({"p": "text", "mac": mac}),
        cbor.dumps({"p": p, "mac": list(mac)}),
        cbor.dumps({1: p, 2: mac}),
        b"\x9f" * 40,
        bytes(2000),
    ]
    for body in bad:
        raises(HeartbeatError, heartbeat.open_, _KEY, body)
    rng = Rng(0x5EED)
    for _ in range(200):
        b = bytearray(good)
        b[rng.below(len(b))] = rng.next() & 0xFF
        if bytes(b) != good:
            raises(HeartbeatError, heartbeat.open_, _KEY, bytes(b))


def check_authentic_but_bad_payload():
    def sealed(p):
        return _envelope(p, heartbeat.hmac_sha256(_KEY, p))

    bad = [
        b"\xff",
        cbor.dumps([1, 2]),
        cbor.dumps("sm-0123456789ab"),
        cbor.dumps(_payload(n=-1)),
        cbor.dumps(_payload(n=True)),
        cbor.dumps(_payload(cfg="7")),
        cbor.dumps(_payload(overlay="maybe")),
        cbor.dumps(_payload(id="")),
        cbor.dumps(_payload(ip=b"10.0.0.1")),
        cbor.dumps(_payload(ip="x" * 65)),
    ]
    for k in ("id", "n", "boot", "cfg", "up", "ip", "free", "alloc", "overlay"):
        p = _payload()
        del p[k]
        bad.append(cbor.dumps(p))
    for p in bad:
        raises(HeartbeatError, heartbeat.open_, _KEY, sealed(p))


def check_seal_refuses_bad_input():
    raises(HeartbeatError, heartbeat.seal, _KEY, _payload(overlay="?"))
    raises(HeartbeatError, heartbeat.seal, _KEY, [1])
    raises(HeartbeatError, heartbeat.seal, b"short", _payload())
    raises(HeartbeatError, heartbeat.seal, "text key of enough length", _payload())
    raises(HeartbeatError, heartbeat.seal, _KEY, _payload(note="x" * 2000))
    raises(HeartbeatError, heartbeat.open_, b"short", heartbeat.seal(_KEY, _payload()))
    raises(HeartbeatError, heartbeat.open_, "x" * 32, heartbeat.seal(_KEY, _payload()))
    eq(heartbeat.open_(_KEY, heartbeat.seal(bytearray(_KEY), _payload(ip=""))), _payload(ip=""))


def check_max_len():
    body = heartbeat.seal(_KEY, _payload())
    raises(HeartbeatError, heartbeat.open_, _KEY, body, max_len=len(body) - 1)
    eq(heartbeat.open_(_KEY, body, max_len=len(body))["n"], 41)
