"""Our Ed25519 and COSE_Sign1 against independent implementations (CPython only).

pynacl (libsodium) must produce byte-identical keys and signatures, since the
controller signs with it and boards verify with sipmesh.proto.ed25519.
pycose must read our COSE_Sign1 and we must read its, so the envelope is
RFC 9052's and not merely self-consistent. A hypothesis fuzz holds verify1 to
its promise: CoseError or a payload, never another exception.
"""

from __future__ import annotations

import random

import cbor2
import nacl.exceptions
import nacl.signing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from sipmesh.proto import cbor, cose, ed25519

SEED = bytes(range(1, 33))
PUB = ed25519.public_key(SEED)
PAYLOAD = cbor.dumps({"v": 1, "board": "sm-0123456789ab", "seq": 3, "name": "door-1"})


def _pycose_decode(data: bytes) -> Sign1Message:
    """Sign1Message.decode, working around pycose 1.1.0 with cbor2 >= 6.

    cbor2 6 decodes arrays inside tags as tuples and maps as frozendicts, and
    pycose's decode then refuses every message (TimothyClaeys/pycose#141);
    this does what decode does, with a list and a dict.
    """
    item = cbor2.loads(data)
    assert item.tag == 18
    arr = list(item.value)
    arr[1] = dict(arr[1])
    return Sign1Message.from_cose_obj(arr, True)


def _nacl_verify(pub: bytes, msg: bytes, sig: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(pub).verify(msg, sig)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def test_pycose_verifies_ours() -> None:
    data = cose.sign1(PAYLOAD, SEED, kid=cose.key_id(PUB))
    msg = _pycose_decode(data)
    msg.key = OKPKey(crv=Ed25519, x=PUB)
    assert msg.verify_signature()
    assert msg.payload == PAYLOAD
    assert msg.phdr == {Algorithm: EdDSA}
    assert msg.uhdr == {KID: cose.key_id(PUB)}

    tampered = bytearray(data)
    tampered[tampered.index(PAYLOAD) + 5] ^= 1
    msg = _pycose_decode(bytes(tampered))
    msg.key = OKPKey(crv=Ed25519, x=PUB)
    assert not msg.verify_signature()


def test_we_verify_pycose() -> None:
    key = OKPKey(crv=Ed25519, d=SEED, x=PUB)
    for uhdr in ({KID: cose.key_id(PUB)}, {}):
        msg = Sign1Message(phdr={Algorithm: EdDSA}, uhdr=uhdr, payload=PAYLOAD)
        msg.key = key
        data = msg.encode(tag=True)
        assert cose.verify1(data, PUB) == PAYLOAD
        assert cose.peek_kid(data) == uhdr.get(KID)
        # Same key, same deterministic Ed25519, same CBOR: same bytes.
        assert data == cose.sign1(PAYLOAD, SEED, kid=uhdr.get(KID))

    other = OKPKey(crv=Ed25519, d=bytes(32), x=ed25519.public_key(bytes(32)))
    msg = Sign1Message(phdr={Algorithm: EdDSA}, uhdr={}, payload=PAYLOAD)
    msg.key = other
    try:
        cose.verify1(msg.encode(tag=True), PUB)
    except cose.CoseError as e:
        assert "bad signature" in str(e)
    else:
        raise AssertionError("a message signed by another key was accepted")

    untagged = Sign1Message(phdr={Algorithm: EdDSA}, uhdr={}, payload=PAYLOAD)
    untagged.key = key
    try:
        cose.verify1(untagged.encode(tag=False), PUB)
    except cose.CoseError as e:
        assert "tagged" in str(e)
    else:
        raise AssertionError("an untagged message was accepted")


def test_controller_signer_and_fast_verifier() -> None:
    """What the controller does: pynacl signs through encode_sign1, pynacl verifies."""
    nacl_key = nacl.signing.SigningKey(SEED)
    data = cose.encode_sign1(PAYLOAD, lambda tbs: nacl_key.sign(tbs).signature, kid=b"k" * 8)
    assert data == cose.sign1(PAYLOAD, SEED, kid=b"k" * 8)
    pub = nacl_key.verify_key.encode()
    assert cose.verify1(cose.sign1(PAYLOAD, SEED), pub, verify=_nacl_verify) == PAYLOAD
    raw = cbor.loads(cose.sign1(PAYLOAD, SEED)).value
    raw[2] = PAYLOAD + b"\x00"
    try:
        cose.verify1(cbor.dumps(cbor.Tag(18, raw)), pub, verify=_nacl_verify)
    except cose.CoseError as e:
        assert "bad signature" in str(e)
    else:
        raise AssertionError("changed payload accepted")


def test_ed25519_matches_pynacl_on_random_pairs() -> None:
    rng = random.Random(20260522)
    for i in range(200):
        seed = rng.randbytes(32)
        msg = rng.randbytes(rng.choice((0, 1, 31, 32, 64, 111, 112, 128, rng.randrange(1000))))
        nk = nacl.signing.SigningKey(seed)
        pub = nk.verify_key.encode()
        sig = nk.sign(msg).signature
        assert ed25519.public_key(seed) == pub, i
        assert ed25519.sign(seed, msg) == sig, i
        assert ed25519.verify(pub, msg, sig), i
        assert _nacl_verify(pub, msg, ed25519.sign(seed, msg)), i
        bad = bytearray(sig)
        bad[rng.randrange(64)] ^= 1 << rng.randrange(8)
        assert not ed25519.verify(pub, msg, bytes(bad)), i
        assert not _nacl_verify(pub, msg, bytes(bad)), i


def _check_verify1(data: bytes) -> None:
    try:
        out = cose.verify1(data, PUB)
    except cose.CoseError:
        return
    assert isinstance(out, bytes)


VALID = cose.sign1(PAYLOAD, SEED, kid=cose.key_id(PUB))


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    _check_verify1(data)
    try:
        cose.peek_kid(data)
    except cose.CoseError:
        pass


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(VALID)), st.integers(0, 255), st.integers(0, 2))))
def test_fuzz_mutated_valid_message(edits: list[tuple[int, int, int]]) -> None:
    b = bytearray(VALID)
    for pos, val, op in edits:
        pos = min(pos, len(b))
        if op == 0 and pos < len(b):
            b[pos] = val
        elif op == 1:
            b[pos:pos] = bytes([val])
        elif pos < len(b):
            del b[pos]
    _check_verify1(bytes(b))


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.binary(max_size=70),
    st.text(max_size=8),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.integers(-10, 10), st.text(max_size=3)), inner, max_size=4),
    ),
    max_leaves=10,
)
_protected = st.one_of(
    st.just(b"\xa1\x01\x27"),
    _value.map(cbor2.dumps),
    st.dictionaries(st.integers(-5, 5), _value, max_size=3).map(cbor2.dumps),
    st.binary(max_size=8),
)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_protected, _value, st.one_of(st.binary(max_size=40), _value), _value, st.booleans())
def test_fuzz_structured(protected, unprotected, payload, sig, tagged: bool) -> None:
    arr = [protected, unprotected, payload, sig]
    _check_verify1(cbor2.dumps(cbor2.CBORTag(18, arr) if tagged else arr))
