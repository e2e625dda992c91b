"""Ed25519 signatures (RFC 8032 §5.1) in pure Python, for boards and the controller.

A board signs its RELOAD stores and verifies the controller's signed
configuration with no crypto library: MicroPython has none for Ed25519.
The controller signs with pynacl, and the bytes are the same (checked
against pynacl in tests/test_cose_interop.py).

Points use extended twisted Edwards coordinates (X:Y:Z:T), x = X/Z,
y = Y/Z, x*y = T/Z, with the addition and doubling formulas of RFC 8032
§5.1.4. Scalar multiplication uses a fixed window of signed 2-bit digits
(tables of [1..2]P: a quarter of the big integers of a 4-bit window, for
about 10% more time than 3-bit digits, so a verification fits a board's
heap); table points are kept, without spare digits, in the "cached" form
(Y-X, Y+X, 2*d*T, 2*Z) so an addition costs 8 multiplications.
Both multiplications go through one routine, ``_mul``: [S]B + [k](-A)
for verification shares one chain of doublings (Straus), and signing is
the same routine with one scalar. Verification compares the encoding of
the result with R, which also rejects non-canonical encodings of R.

Verification is cofactorless ([S]B = R + [k]A, allowed by RFC 8032 §5.1.7)
like libsodium's, rejects S >= L, an A that does not decode (y >= p, not
on the curve, x = 0 with the sign bit set) and wrong lengths or types: it
returns False and never raises.

This code is not constant-time (Python integers are not), so an attacker
timing many signatures on the same board could learn about the key. A board
signs rarely, after a network exchange with much larger jitter; keep it so.
"""

from sipmesh.proto.sha512 import Sha512, sha512

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_P = const(2**255 - 19)
# RFC 8032 §5.1: d = -121665/121666 mod p (and 2d); the group order L.
_D = const(37095705934669439343138083508754565189542113879843219016388785533085940283555)
_D2 = const(16295367250680780974490674513165176452449235426866156013048779062215315747161)
_L = const(2**252 + 27742317777372353535851937790883648493)
# sqrt(-1) mod p = 2^((p-1)/4), used by the square root of RFC 8032 §5.1.3.
_SQRT_M1 = const(19681161376707505956807079304988542015446066515923890162744021073123829784752)
_BX = const(15112221349535400772501151409588531511454012693041857206046113283949847762202)
_BY = const(46316835694926478169428394003475163141307993866256225615783033603165251855960)

# Bits per digit of the scalars in _mul: 3 needs tables of [1..4]P, 2 of
# [1..2]P (half the table ints in a verification's heap, ~10% more time).
_W = const(2)

_last_key = None  # seed || pub of the last key used: boards sign with one key


def _add(pt, q, neg=False):
    """pt + q, or pt - q with neg; q in cached form (RFC 8032 §5.1.4 addition).

    -q in cached form is (Y+X, Y-X, -2dT, 2Z): swapping and sign-flipping
    here avoids allocating the negated point.
    """
    p = _P
    x1, y1, z1, t1 = pt
    a = (y1 - x1) * q[neg] % p
    b = (y1 + x1) * q[not neg] % p
    c = t1 * q[2] % p
    d = z1 * q[3] % p
    if neg:
        c = -c
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def _double(pt, n):
    """[2^n]pt: n doublings (RFC 8032 §5.1.4); T is only computed for the last."""
    p = _P
    x1, y1, z1 = pt[0], pt[1], pt[2]
    for _ in range(n):
        a = x1 * x1 % p
        b = y1 * y1 % p
        c = 2 * z1 * z1 % p
        h = a + b
        s = x1 + y1
        e = h - s * s % p
        g = a - b
        f = c + g
        x1 = e * f % p
        y1 = g * h % p
        z1 = f * g % p
    return (x1, y1, z1, e * h % p)


def _c(v):
    """v (0 <= v < 2^256) in an int without spare digits. MicroPython keeps a
    remainder in as many digits as the dividend had (66 bytes for a product
    mod p); the table entries live through a whole multiplication."""
    return int.from_bytes(v.to_bytes(32, "little"), "little")


def _mul(ks, pts):
    """sum of [k]P over the pairs, scalars below 2^256: one doubling chain (Straus).

    Each scalar is cut into signed digits of _W bits, in [-2^(_W-1), 2^(_W-1)),
    so a table of [1..2^(_W-1)]P in cached form (Y-X, Y+X, 2dT, 2Z) serves:
    [-d]P is [d]P with _add's neg flag.
    """
    p = _P
    n = (256 + _W) // _W
    half = 1 << (_W - 1)
    digs = []
    tabs = []
    for k, pt in zip(ks, pts):
        dig = bytearray(n)
        carry = 0
        for i in range(n):
            d = (k & (2 * half - 1)) + carry
            k >>= _W
            carry = d >= half
            dig[i] = d - half if carry else d + half
        digs.append(dig)
        tab = [None]
        acc = pt
        for j in range(half):
            x, y, z, t = acc
            tab.append((_c((y - x) % p), _c((y + x) % p), _c(t * _D2 % p), _c(2 * z % p)))
            if j < half - 1:
                acc = _add(acc, tab[1])
        tabs.append(tab)
    acc = (0, 1, 1, 0)
    for i in range(n - 1, -1, -1):
        acc = _double(acc, _W)
        for dig, tab in zip(digs, tabs):
            d = dig[i] - half
            if d:
                acc = _add(acc, tab[abs(d)], d < 0)
    return acc


def _base(k):
    """The encoding of [k]B (RFC 8032 §5.1.2): y little-endian, the low bit of x in bit 255."""
    x, y, z, _ = _mul((k,), ((_BX, _BY, 1, _BX * _BY % _P),))
    return _encode(x, y, z)


def _encode(x, y, z):
    zi = pow(z, _P - 2, _P)
    return (y * zi % _P | ((x * zi % _P & 1) << 255)).to_bytes(32, "little")


def _key(seed):
    """(a, prefix, pub) of a 32-byte seed (RFC 8032 §5.1.5); ValueError for anything else.

    The public key of the last seed is remembered (one 64-byte object, so
    the cache does not fragment the heap): signing then costs one scalar
    multiplication instead of two.
    """
    global _last_key
    if not isinstance(seed, (bytes, bytearray, memoryview)) or len(seed) != 32:
        raise ValueError("Ed25519 seed must be 32 bytes")
    seed = bytes(seed)
    h = sha512(seed)
    a = int.from_bytes(h[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    last = _last_key
    if last is not None and last[:32] == seed:
        pub = last[32:]
    else:
        pub = _base(a)
        _last_key = seed + pub
    return a, h[32:], pub


def public_key(seed):
    """The 32-byte public key of a 32-byte private key (seed), RFC 8032 §5.1.5."""
    return _key(seed)[2]


def sign(seed, msg):
    """The 64-byte Ed25519 signature of msg under seed (RFC 8032 §5.1.6).

    Deterministic: the same seed and message always give the same bytes.
    Raises ValueError when the seed is not 32 bytes.
    """
    a, prefix, pub = _key(seed)
    r = int.from_bytes(Sha512(prefix).update(msg).digest(), "little") % _L
    rb = _base(r)
    k = int.from_bytes(Sha512(rb).update(pub).update(msg).digest(), "little") % _L
    return rb + ((r + k * a) % _L).to_bytes(32, "little")


def verify(pub, msg, sig):
    """True when sig is a valid signature of msg under pub (RFC 8032 §5.1.7).

    False for anything else: lengths other than 32/64, S >= L, a public key
    that is not a point (RFC 8032 §5.1.3 decoding), a non-canonical R;
    never raises.
    """
    for b in (pub, msg, sig):
        if not isinstance(b, (bytes, bytearray, memoryview)):
            return False
    if len(pub) != 32 or len(sig) != 64:
        return False
    sig = bytes(sig)
    s = int.from_bytes(sig[32:], "little")
    y = int.from_bytes(pub, "little")
    x = _minus_x(y)
    if s >= _L or x is None:
        return False
    y &= (1 << 255) - 1
    k = int.from_bytes(Sha512(sig[:32]).update(pub).update(msg).digest(), "little") % _L
    x, y, z, _ = _mul((s, k), ((_BX, _BY, 1, _BX * _BY % _P), (x, y, 1, x * y % _P)))
    return _encode(x, y, z) == sig[:32]


def _minus_x(y):
    """x of -A for the encoding y of A (RFC 8032 §5.1.3 decoding, then negated:
    verification adds [k](-A)); None when y is not a point's encoding. A
    function of its own, so its big temporaries are gone during _mul."""
    p = _P
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= p:
        return None
    # x = u v^3 (u v^7)^((p-5)/8), u = y^2 - 1, v = d y^2 + 1.
    yy = y * y % p
    u = (yy - 1) % p
    v = (_D * yy + 1) % p
    v3 = v * v % p * v % p
    x = u * v3 % p * pow(u * v3 % p * v3 % p * v % p, (p - 5) // 8, p) % p
    vxx = v * x % p * x % p
    if vxx != u:
        if vxx != p - u:
            return None
        x = x * _SQRT_M1 % p
    if x == 0 and sign:
        return None
    return _c(p - x if (x & 1) == sign else x)
