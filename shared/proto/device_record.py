"""The device record a board stores in the overlay (issue 6, RELOAD kind 4026531842).

Portable (CPython and MicroPython). The record is the value of a
single-value, USER-MATCH Kind (RFC 6940 §7.3.1): it lives at the
Resource-ID of the user name in the board's certificate, so only that board
can write it, and every copy carries the board's signature (§7.1). The
value is a deterministic CBOR map (RFC 8949 §4.2):

    {"aor": "sip:door-1@demo.sipmesh", "addrs": ["10.77.0.2:5060"],
     "caps": ["door", "sip"], "kind": "esp32", "fw": "0.1.0", "t": 1800000000}

``aor``: the board's SIP address of record (1..256 characters); ``addrs``:
at most 8 places where it can be reached, "IPv4:port", "host:port" or
"[IPv6]:port" (1..64 characters); ``caps``: at most 16 capability names
(1..32 characters); ``kind``: board kind and ``fw``: firmware version
(1..32 characters); ``t``: unix time (s, 40 bits) when the board wrote it.
Decoding ignores keys it does not know (a newer firmware may add some);
encoding refuses them, so a typo is seen at once. Every problem raises
:class:`DeviceRecordError`, whose short message names the field.

A board imports this module for one overlay refresh: it is written to be
small in heap (one checking function, short messages).
"""

from sipmesh.proto import cbor

try:
    from micropython import const
except ImportError:
    const = int


KIND = const(4026531842)  # 0xF0000002, private-use Kind id (RFC 6940 §14.6)

# The Kind's max-size in the overlay configuration (RFC 6940 §11.1).
MAX_SIZE = const(1024)
_MAX_TIME = const(0xFFFFFFFFFF)  # 40 bits of seconds: past year 34000

KEYS = ("aor", "addrs", "caps", "kind", "fw", "t")


class DeviceRecordError(ValueError):
    """A device record that is malformed, too large or has a wrong field."""


def _checked(m):
    # A copy of record m, every field checked; lists become lists.
    if not isinstance(m, dict):
        raise DeviceRecordError("record is not a map")
    r = {}
    for k in KEYS:
        v = m.get(k)
        if k == "t":
            ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _MAX_TIME
        else:
            # At most 8 addresses and 16 capabilities: a board has few of each.
            vs = v if k == "addrs" or k == "caps" else [v]
            ok = isinstance(vs, (list, tuple)) and len(vs) <= (8 if k == "addrs" else 16)
            for x in vs if ok else ():
                # An AoR of a board is short, 256 bounds a hostile one;
                # "[IPv6]:port" is at most 47 characters.
                n = 256 if k == "aor" else 64 if k == "addrs" else 32
                ok = ok and isinstance(x, str) and 0 < len(x) <= n
                if ok and k == "addrs":
                    i = x.rfind(":")
                    h = x[:i]
                    port = x[i + 1 :]
                    ok = i > 0 and port.isdigit() and int(port) < 65536
                    # An IPv6 host needs brackets.
                    ok = ok and (h[-1] == "]" and len(h) > 2 if h[0] == "[" else ":" not in h)
            if ok and vs is v:
                v = list(v)
        if not ok:
            raise DeviceRecordError("bad " + k)  # or missing
        r[k] = v
    return r


def encode(record):
    """The CBOR bytes of ``record`` (a dict with exactly :data:`KEYS`)."""
    if isinstance(record, dict):
        for k in record:
            if k not in KEYS:
                raise DeviceRecordError("unknown %r" % (k,))
    data = cbor.dumps(_checked(record))
    if len(data) > MAX_SIZE:
        raise DeviceRecordError("record too big")
    return data


def make(aor, addrs, caps, kind, fw, t):
    """Build and encode a record from its fields."""
    return encode({"aor": aor, "addrs": addrs, "caps": caps, "kind": kind, "fw": fw, "t": t})


def decode(data):
    """The record dict of CBOR ``data``; unknown keys are dropped."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DeviceRecordError("not bytes")
    if len(data) > MAX_SIZE:
        raise DeviceRecordError("record too big")
    try:
        m = cbor.loads(bytes(data), max_depth=4, max_items=128)
    except cbor.CBORDecodeError as e:
        raise DeviceRecordError("record is not CBOR") from e
    return _checked(m)
