"""SHA-512 (FIPS 180-4 §6.4) for Ed25519 on boards whose hashlib lacks it.

Ed25519 (RFC 8032 §5.1) is defined over SHA-512, and MicroPython's hashlib
offers only md5, sha1 and sha256. ``sha512`` and ``Sha512`` use
``hashlib.sha512`` when it exists (CPython, the controller) and the pure
Python ``_PureSha512`` otherwise, so both sides compute the same digests.

Sized for a board's heap: the round constants are five bytes literals read
word by word with ``struct.unpack_from`` (no table of 80 big ints built at
import), and the message schedule is a 16-word ring (FIPS 180-4 §6.4.2
step 1 only ever looks 16 words back). The 64-bit words are Python ints
masked to 64 bits; a rotation is taken from the word doubled into 128 bits
(``x | x << 64``), so each Sigma costs three shifts and one mask.
"""

import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_M = const(0xFFFFFFFFFFFFFFFF)

# FIPS 180-4 §4.2.3: K[0..79], big-endian 64-bit words, 16 to a string (a
# board loading this module then needs no 640-byte hole in its heap).
_K = (
    (
        b"\x42\x8a\x2f\x98\xd7\x28\xae\x22\x71\x37\x44\x91\x23\xef\x65\xcd"
        b"\xb5\xc0\xfb\xcf\xec\x4d\x3b\x2f\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc"
        b"\x39\x56\xc2\x5b\xf3\x48\xb5\x38\x59\xf1\x11\xf1\xb6\x05\xd0\x19"
        b"\x92\x3f\x82\xa4\xaf\x19\x4f\x9b\xab\x1c\x5e\xd5\xda\x6d\x81\x18"
        b"\xd8\x07\xaa\x98\xa3\x03\x02\x42\x12\x83\x5b\x01\x45\x70\x6f\xbe"
        b"\x24\x31\x85\xbe\x4e\xe4\xb2\x8c\x55\x0c\x7d\xc3\xd5\xff\xb4\xe2"
        b"\x72\xbe\x5d\x74\xf2\x7b\x89\x6f\x80\xde\xb1\xfe\x3b\x16\x96\xb1"
        b"\x9b\xdc\x06\xa7\x25\xc7\x12\x35\xc1\x9b\xf1\x74\xcf\x69\x26\x94"
    ),
    (
        b"\xe4\x9b\x69\xc1\x9e\xf1\x4a\xd2\xef\xbe\x47\x86\x38\x4f\x25\xe3"
        b"\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5\x24\x0c\xa1\xcc\x77\xac\x9c\x65"
        b"\x2d\xe9\x2c\x6f\x59\x2b\x02\x75\x4a\x74\x84\xaa\x6e\xa6\xe4\x83"
        b"\x5c\xb0\xa9\xdc\xbd\x41\xfb\xd4\x76\xf9\x88\xda\x83\x11\x53\xb5"
        b"\x98\x3e\x51\x52\xee\x66\xdf\xab\xa8\x31\xc6\x6d\x2d\xb4\x32\x10"
        b"\xb0\x03\x27\xc8\x98\xfb\x21\x3f\xbf\x59\x7f\xc7\xbe\xef\x0e\xe4"
        b"\xc6\xe0\x0b\xf3\x3d\xa8\x8f\xc2\xd5\xa7\x91\x47\x93\x0a\xa7\x25"
        b"\x06\xca\x63\x51\xe0\x03\x82\x6f\x14\x29\x29\x67\x0a\x0e\x6e\x70"
    ),
    (
        b"\x27\xb7\x0a\x85\x46\xd2\x2f\xfc\x2e\x1b\x21\x38\x5c\x26\xc9\x26"
        b"\x4d\x2c\x6d\xfc\x5a\xc4\x2a\xed\x53\x38\x0d\x13\x9d\x95\xb3\xdf"
        b"\x65\x0a\x73\x54\x8b\xaf\x63\xde\x76\x6a\x0a\xbb\x3c\x77\xb2\xa8"
        b"\x81\xc2\xc9\x2e\x47\xed\xae\xe6\x92\x72\x2c\x85\x14\x82\x35\x3b"
        b"\xa2\xbf\xe8\xa1\x4c\xf1\x03\x64\xa8\x1a\x66\x4b\xbc\x42\x30\x01"
        b"\xc2\x4b\x8b\x70\xd0\xf8\x97\x91\xc7\x6c\x51\xa3\x06\x54\xbe\x30"
        b"\xd1\x92\xe8\x19\xd6\xef\x52\x18\xd6\x99\x06\x24\x55\x65\xa9\x10"
        b"\xf4\x0e\x35\x85\x57\x71\x20\x2a\x10\x6a\xa0\x70\x32\xbb\xd1\xb8"
    ),
    (
        b"\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e\x37\x6c\x08\x51\x41\xab\x53"
        b"\x27\x48\x77\x4c\xdf\x8e\xeb\x99\x34\xb0\xbc\xb5\xe1\x9b\x48\xa8"
        b"\x39\x1c\x0c\xb3\xc5\xc9\x5a\x63\x4e\xd8\xaa\x4a\xe3\x41\x8a\xcb"
        b"\x5b\x9c\xca\x4f\x77\x63\xe3\x73\x68\x2e\x6f\xf3\xd6\xb2\xb8\xa3"
        b"\x74\x8f\x82\xee\x5d\xef\xb2\xfc\x78\xa5\x63\x6f\x43\x17\x2f\x60"
        b"\x84\xc8\x78\x14\xa1\xf0\xab\x72\x8c\xc7\x02\x08\x1a\x64\x39\xec"
        b"\x90\xbe\xff\xfa\x23\x63\x1e\x28\xa4\x50\x6c\xeb\xde\x82\xbd\xe9"
        b"\xbe\xf9\xa3\xf7\xb2\xc6\x79\x15\xc6\x71\x78\xf2\xe3\x72\x53\x2b"
    ),
    (
        b"\xca\x27\x3e\xce\xea\x26\x61\x9c\xd1\x86\xb8\xc7\x21\xc0\xc2\x07"
        b"\xea\xda\x7d\xd6\xcd\xe0\xeb\x1e\xf5\x7d\x4f\x7f\xee\x6e\xd1\x78"
        b"\x06\xf0\x67\xaa\x72\x17\x6f\xba\x0a\x63\x7d\xc5\xa2\xc8\x98\xa6"
        b"\x11\x3f\x98\x04\xbe\xf9\x0d\xae\x1b\x71\x0b\x35\x13\x1c\x47\x1b"
        b"\x28\xdb\x77\xf5\x23\x04\x7d\x84\x32\xca\xab\x7b\x40\xc7\x24\x93"
        b"\x3c\x9e\xbe\x0a\x15\xc9\xbe\xbc\x43\x1d\x67\xc4\x9c\x10\x0d\x4c"
        b"\x4c\xc5\xd4\xbe\xcb\x3e\x42\xb6\x59\x7f\x29\x9c\xfc\x65\x7e\x2a"
        b"\x5f\xcb\x6f\xab\x3a\xd6\xfa\xec\x6c\x44\x19\x8c\x4a\x47\x58\x17"
    ),
)
# FIPS 180-4 §5.3.5: the initial hash value H(0), big-endian 64-bit words.
_H0 = (
    b"\x6a\x09\xe6\x67\xf3\xbc\xc9\x08\xbb\x67\xae\x85\x84\xca\xa7\x3b"
    b"\x3c\x6e\xf3\x72\xfe\x94\xf8\x2b\xa5\x4f\xf5\x3a\x5f\x1d\x36\xf1"
    b"\x51\x0e\x52\x7f\xad\xe6\x82\xd1\x9b\x05\x68\x8c\x2b\x3e\x6c\x1f"
    b"\x1f\x83\xd9\xab\xfb\x41\xbd\x6b\x5b\xe0\xcd\x19\x13\x7e\x21\x79"
)


def _compress(h, block):
    """One SHA-512 compression (FIPS 180-4 §6.4.2) of a 128-byte block into the list h."""
    M = _M
    w = list(struct.unpack(">16Q", block))
    a, b, c, d, e, f, g, hh = h
    for t in range(80):
        i = t & 15
        if t > 15:
            x = w[(t - 15) & 15]
            y = w[(t - 2) & 15]
            xx = x | (x << 64)
            yy = y | (y << 64)
            w[i] = (
                w[i]
                + (((xx >> 1) ^ (xx >> 8) ^ (x >> 7)) & M)
                + (((yy >> 19) ^ (yy >> 61) ^ (y >> 6)) & M)
                + w[(t - 7) & 15]
            ) & M
        ee = e | (e << 64)
        aa = a | (a << 64)
        t1 = (
            hh
            + (((ee >> 14) ^ (ee >> 18) ^ (ee >> 41)) & M)
            + (g ^ (e & (f ^ g)))
            + struct.unpack_from(">Q", _K[t >> 4], (t & 15) << 3)[0]
            + w[i]
        )
        t2 = (((aa >> 28) ^ (aa >> 34) ^ (aa >> 39)) & M) + ((a & b) | (c & (a | b)))
        hh, g, f, e, d, c, b, a = g, f, e, (d + t1) & M, c, b, a, (t1 + t2) & M
    for i, x in enumerate((a, b, c, d, e, f, g, hh)):
        h[i] = (h[i] + x) & M


class _PureSha512:
    """Incremental pure-Python SHA-512 (FIPS 180-4 §5.1.2 padding, §6.4 hashing)."""

    def __init__(self, data=None):
        self._h = list(struct.unpack(">8Q", _H0))
        self._buf = bytearray(128)
        self._n = 0
        self._len = 0
        if data is not None:
            self.update(data)

    def update(self, data):
        mv = memoryview(data)
        n = self._n
        i = 0
        end = len(mv)
        self._len += end
        while i < end:
            k = min(128 - n, end - i)
            self._buf[n : n + k] = mv[i : i + k]
            n += k
            i += k
            if n == 128:
                _compress(self._h, self._buf)
                n = 0
        self._n = n
        return self

    def digest(self):
        h = self._h[:]
        n = self._n
        ln = self._len
        pad = self._buf[:n] + b"\x80" + bytes((111 - n) % 128)
        pad += struct.pack(">QQ", ln >> 61, (ln << 3) & _M)
        for i in range(0, len(pad), 128):
            _compress(h, pad[i : i + 128])
        return struct.pack(">8Q", *h)


try:
    from hashlib import sha512 as _hl

    class Sha512:
        """Incremental SHA-512; ``update`` returns the hasher so calls chain.

        Ed25519 hashes ``prefix || message`` and ``R || A || message``
        (RFC 8032 §5.1.6); feeding the parts in turn avoids copying the message.
        """

        def __init__(self, data=b""):
            self._h = _hl(data)

        def update(self, data):
            self._h.update(data)
            return self

        def digest(self):
            return self._h.digest()

except ImportError:
    Sha512 = _PureSha512


def sha512(data):
    """SHA-512 digest (64 bytes) of bytes-like ``data`` (FIPS 180-4 §6.4)."""
    return Sha512(data).digest()
