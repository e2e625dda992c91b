"""Identifiers on the CHORD-RELOAD ring (RFC 6940 section 10).

Node-IDs and Resource-IDs are 128-bit numbers on a ring modulo 2^128
(section 10.1); a Resource-ID is SHA-1 of the resource name truncated to
its most significant 128 bits (section 10.2). Bytes are the wire form,
integers are used for arithmetic.
"""

from __future__ import annotations

import hashlib

ID_BITS = 128
RING = 1 << ID_BITS
ID_LEN = ID_BITS // 8


def resource_id(name: bytes | str) -> bytes:
    """Resource-ID of a resource name (section 10.2)."""
    if isinstance(name, str):
        name = name.encode("utf-8")
    return hashlib.sha1(name).digest()[:ID_LEN]


def to_int(ident: bytes) -> int:
    if len(ident) != ID_LEN:
        raise ValueError(f"identifier must be {ID_LEN} bytes, got {len(ident)}")
    return int.from_bytes(ident, "big")


def to_bytes(n: int) -> bytes:
    return (n % RING).to_bytes(ID_LEN, "big")


def distance(a: int, b: int) -> int:
    """Clockwise distance from ``a`` to ``b`` on the ring."""
    return (b - a) % RING


def in_half_open(x: int, low: int, high: int) -> bool:
    """True when ``x`` is in the ring interval (low, high] (section 10.1's
    responsibility test: peer ``high`` with predecessor ``low`` owns ``x``).
    With low == high the interval is the whole ring."""
    if low == high:
        return True
    return 0 < distance(low, x) <= distance(low, high)


def in_open(x: int, low: int, high: int) -> bool:
    """True when ``x`` is strictly between ``low`` and ``high`` clockwise."""
    if low == high:
        return x != low
    return 0 < distance(low, x) < distance(low, high)
