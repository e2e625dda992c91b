"""Board heartbeats: a CBOR status map authenticated with HMAC-SHA256.

A board reports its state to the controller every few tens of seconds.
Signing each report with Ed25519 would cost a microcontroller seconds, so
heartbeats carry a MAC under the shared ``hb_key`` the controller gave the
board at provisioning instead (issue 6: sign only on store, never per
packet).

Wire format (the body of ``POST /boards/<id>/status``)::

    {"p": bstr(CBOR payload), "mac": HMAC-SHA256(hb_key, p)}

The MAC covers the payload's exact bytes, so the receiver checks it before
decoding the payload at all. The payload map holds ``id`` (board id),
``boot`` (boot counter) and ``n`` (counter, monotonic within a boot),
``cfg`` (configuration seq), ``up`` (uptime, s), ``ip``, ``free`` and
``alloc`` (heap bytes) and ``overlay`` ("ok", "down" or "off"). Keys beyond
these are tolerated so that a newer board can add fields. Replay checking
(``(boot, n)`` must grow) is the controller's job: it keeps the state.

``hmac`` is missing on MicroPython, so HMAC (RFC 2104 §2) is built here on
``hashlib.sha256``, which both runtimes have. A board imports this module
for one heartbeat and drops it, so it is kept small: few functions and
few distinct texts (each costs heap).
"""

import hashlib

from sipmesh.proto import cbor

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# A heartbeat payload is about 120 bytes; a few times that leaves room for
# added fields while the controller never decodes anything big from an
# unauthenticated peer.
MAX_BODY = const(1024)


class HeartbeatError(ValueError):
    """The one error of this module: a heartbeat that cannot be made or trusted."""


def hmac_sha256(key, msg):
    """HMAC-SHA256 of msg under key (RFC 2104 §2; test vectors in RFC 4231 §4).

    A key longer than the 64-byte block is hashed first; a shorter one is
    padded with zeros. Any length is accepted here, as RFC 2104 allows.
    """
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    pad = bytearray(64)
    pad[: len(key)] = key
    for i in range(64):
        pad[i] ^= 0x36
    h = hashlib.sha256(pad)
    h.update(msg)
    # 0x36 ^ 0x6A == 0x5C: the inner pad becomes the outer one.
    for i in range(64):
        pad[i] ^= 0x6A
    o = hashlib.sha256(pad)
    o.update(h.digest())
    return o.digest()


def _check(key, payload):
    """Return payload if key is 16+ bytes (RFC 2104 §3) and payload has the contract's keys.

    payload None checks only the key. One constant string per key list:
    every distinct literal costs a board heap.
    """
    if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
        raise HeartbeatError("bad key")
    if payload is None:
        return None
    if not isinstance(payload, dict):
        raise HeartbeatError("malformed")
    for i, k in enumerate("n boot cfg up free alloc ip id".split()):
        v = payload.get(k)
        if i > 5:
            ok = isinstance(v, str) and len(v) <= 64
        else:
            # bool is an int subclass on both runtimes; CBOR true must not pass as 1.
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
        if not ok:
            raise HeartbeatError("malformed")
    # v is the id now: it must not be empty.
    if not v or payload.get("overlay") not in "ok down off".split():
        raise HeartbeatError("malformed")
    return payload


def seal(key, payload_map):
    """The heartbeat body for payload_map: CBOR {"p": payload bytes, "mac": MAC}."""
    _check(key, payload_map)
    try:
        p = cbor.dumps(payload_map)
    except ValueError as e:
        raise HeartbeatError(str(e)) from None
    body = cbor.dumps({"p": p, "mac": hmac_sha256(key, p)})
    if len(body) > MAX_BODY:
        raise HeartbeatError("too long")
    return body


def open_(key, body, *, max_len=MAX_BODY):
    """The payload map of a heartbeat body, after checking its MAC under key.

    Raises HeartbeatError for anything else: oversize or malformed CBOR, a
    wrong envelope shape, a MAC mismatch (compared in constant time), or a
    payload that is not a map with the contract's keys and types.
    """
    _check(key, None)
    if len(body) > max_len:
        raise HeartbeatError("too long")
    try:
        env = cbor.loads(body, max_depth=2, max_size=max_len)
        if not isinstance(env, dict) or len(env) != 2:
            raise HeartbeatError("malformed")
        p = env.get("p")
        mac = env.get("mac")
        if not isinstance(p, bytes) or not isinstance(mac, bytes) or len(mac) != 32:
            raise HeartbeatError("malformed")
        want = hmac_sha256(key, p)
        # Time depends only on the length, not on where a mismatch is.
        diff = 0
        for i in range(32):
            diff |= want[i] ^ mac[i]
        if diff:
            raise HeartbeatError("MAC mismatch")
        return _check(key, cbor.loads(p, max_depth=4, max_size=max_len))
    except ValueError as e:  # CBORError, and HeartbeatError as it is
        raise HeartbeatError(str(e)) from None
