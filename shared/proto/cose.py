"""COSE_Sign1 with EdDSA (RFC 9052 §4.2, §4.4; RFC 9053 §2.2): the signed-config envelope.

The controller signs each board's configuration; the board checks it with
the controller's public key before taking it. The envelope is the standard
one for signed CBOR, so independent COSE libraries (pycose in the tests)
read and write the same bytes::

    COSE_Sign1 = #6.18([protected: bstr .cbor {1: -8},
                        unprotected: {? 4: kid},
                        payload: bstr,
                        signature: bstr .size 64])
    Sig_structure = ["Signature1", protected, external_aad = h'', payload]

The Ed25519 signature covers the deterministic CBOR encoding of
Sig_structure (RFC 9052 §4.4). The kid is ``sha256(pub)[:8]`` of the
signer's key; it is unprotected, so ``verify1`` refuses a kid that does not
name the key it verifies with: that is the only way a changed kid can be
noticed, and it gives a clearer reason than a signature failure.

Decisions where RFC 9052 leaves room:

- the tag 18 is required (§2 allows untagged messages when the context
  says so; ours never does, and the tag keeps a Sign1 from being read as
  another COSE structure);
- only alg EdDSA (-8) in the protected bucket is accepted, never in the
  unprotected one; a ``crit`` header (§3.1) is refused since we understand
  no extension; a label may not appear in both buckets (§3);
- detached payloads (nil) are refused, external_aad is always empty;
- at most ``MAX_SIZE`` bytes are decoded at all.

Every refusal raises ``CoseError`` with a short reason, the one error type
of this module. The module is loaded on a board only while a configuration
is judged, so its checks share one helper and its messages are short.
"""

import hashlib

from sipmesh.proto import cbor

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# An 8 KiB serial frame (sipmesh.proto.frame.MAX_FRAME) is the largest thing
# a board reads; a 4 KiB configuration payload plus envelope fits well.
MAX_SIZE = const(8192)

TAG_SIGN1 = const(18)
ALG_EDDSA = const(-8)

# tag 18, array of 4, bstr of the deterministic CBOR of {1: -8}
_SIGN1_START = b"\xd2\x84\x43\xa1\x01\x27"


class CoseError(ValueError):
    """A COSE_Sign1 message was refused, or cannot be built; ``str(e)`` says why."""


def _want(ok, why):
    if not ok:
        raise CoseError(why)


def key_id(pub):
    """The key id of a public key: the first 8 bytes of its SHA-256 (the boards contract)."""
    return hashlib.sha256(bytes(pub)).digest()[:8]


def _bstr(b):
    """CBOR head of a byte string b (RFC 8949 §3, preferred form; len(b) < 2^16)."""
    n = len(b)
    if n < 24:
        return bytes((0x40 | n,))
    if n < 256:
        return bytes((0x58, n))
    return bytes((0x59, n >> 8, n & 0xFF))


def _tbs(protected, payload):
    """CBOR of ["Signature1", protected, h'', payload] (RFC 9052 §4.4), one allocation.

    Same bytes as ``cbor.dumps`` gives, without the encoder's growing buffer.
    """
    return b"".join(
        (b"\x84\x6aSignature1", _bstr(protected), protected, b"\x40", _bstr(payload), payload)
    )


def encode_sign1(payload, signature_fn, kid=None):
    """Tagged COSE_Sign1 bytes of payload, signed by ``signature_fn(to_be_signed) -> sig64``.

    The controller passes pynacl's signer; boards use :func:`sign1`.
    """
    _want(type(payload) in (bytes, bytearray) and len(payload) <= MAX_SIZE, "bad payload")
    _want(kid is None or type(kid) in (bytes, bytearray), "kid must be bytes")
    head = cbor.dumps({} if kid is None else {4: bytes(kid)}) + _bstr(payload)
    _want(len(head) + len(payload) + 72 <= MAX_SIZE, "message over MAX_SIZE")
    sig = signature_fn(_tbs(b"\xa1\x01\x27", payload))
    _want(type(sig) in (bytes, bytearray) and len(sig) == 64, "signature must be 64 bytes")
    return b"".join((_SIGN1_START, head, payload, b"\x58\x40", sig))


def sign1(payload, seed, kid=None):
    """Tagged COSE_Sign1 bytes of payload signed with the Ed25519 key ``seed`` (32 bytes)."""
    from sipmesh.proto import ed25519

    return encode_sign1(payload, lambda tbs: ed25519.sign(seed, tbs), kid)


def _hmap(m, what):
    """m when it is a header map (RFC 9052 §3: labels are int or text), else CoseError."""
    _want(type(m) is dict, what)
    for k in m:
        _want(type(k) in (int, str), what)
    return m


def _parse(data):
    """(protected bytes, kid or None, payload, signature) of a Sign1 as verify1 wants it."""
    _want(type(data) in (bytes, bytearray, memoryview), "not bytes")
    _want(len(data) <= MAX_SIZE, "over MAX_SIZE")
    try:
        item = cbor.loads(data, max_depth=8)
        arr = item.value if type(item) is cbor.Tag and item.tag == TAG_SIGN1 else None
        _want(type(arr) is list and len(arr) == 4, "not a tagged COSE_Sign1 array of 4")
        prot, um, payload, sig = arr
        pm = None
        if type(prot) is bytes:
            pm = cbor.loads(prot, max_depth=4) if prot else {}
    except cbor.CBORDecodeError as e:
        raise CoseError("bad CBOR: " + e.reason) from None
    _hmap(pm, "bad protected header")
    _hmap(um, "bad unprotected header")
    _want(2 not in pm and 2 not in um, "crit not supported")
    for k in um:
        _want(k not in pm, "label in both buckets")
    alg = pm.get(1)
    _want(type(alg) is int and alg == ALG_EDDSA, "alg is not EdDSA (-8)")
    kid = um.get(4)
    _want(4 not in pm and (kid is None or type(kid) is bytes), "kid must be an unprotected bstr")
    _want(type(payload) is bytes, "payload is not a bstr")
    _want(type(sig) is bytes and len(sig) == 64, "signature is not 64 bytes")
    return prot, kid, payload, sig


def peek_kid(data):
    """The kid of a COSE_Sign1 before verifying it (to pick a key), or None without one.

    Raises CoseError when data is not a well-formed COSE_Sign1 as verify1 wants it.
    """
    return _parse(data)[1]


def signed_parts(data, pub):
    """(to-be-signed bytes, payload, signature) of a tagged COSE_Sign1 meant for ``pub``.

    Every check of ``verify1`` but the signature itself: the structure, the
    algorithm and the kid. The to-be-signed bytes are the Sig_structure of
    RFC 9052 §4.4. A board runs the Ed25519 check with this module and the
    CBOR codec out of its heap (fw_store). Raises CoseError.
    """
    _want(type(pub) in (bytes, bytearray) and len(pub) == 32, "public key must be 32 bytes")
    prot, kid, payload, sig = _parse(data)
    _want(kid is None or kid == key_id(bytes(pub)), "kid names another key")
    return _tbs(prot, payload), payload, sig


def verify1(data, pub, *, verify=None):
    """The payload of a tagged COSE_Sign1 whose EdDSA signature by ``pub`` is valid.

    ``verify(pub, msg, sig) -> bool`` replaces the portable Ed25519 check (the
    controller passes a pynacl-based one); a false result or any exception
    from it is a bad signature (MemoryError excepted: running out of heap is
    not a verdict). Raises CoseError on any refusal.
    """
    tbs, payload, sig = signed_parts(data, pub)
    if verify is None:
        from sipmesh.proto import ed25519

        verify = ed25519.verify
    try:
        ok = verify(bytes(pub), tbs, sig)
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - a verifier that raises has refused
        ok = False
    _want(ok, "bad signature")
    return payload
