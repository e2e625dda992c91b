"""Portable checks of sipmesh.proto.sha512, .ed25519 and .cose (both runtimes).

The Ed25519 vectors are RFC 8032 §7.1 TEST 1, 2, 3 and TEST SHA(abc); they
were typed from the RFC and agree with pynacl (libsodium). The SHA-512
vectors are the FIPS 180-2 Appendix C examples (empty, "abc", the 2-block
message) and a 1000-byte message whose digest was taken from CPython's hashlib.
The pure-Python SHA-512 is checked directly, so CPython (which would use
hashlib) tests it too.
"""

from portable import eq, raises, unhex

from sipmesh.proto import cbor, cose, ed25519, sha512

_SHA_VECTORS = (
    (
        b"",
        "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
        "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
    ),
    (
        b"abc",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    ),
    (
        b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
        b"ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
        "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
        "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909",
    ),
    (
        b"a" * 1000,
        "67ba5535a46e3f86dbfbed8cbbaf0125c76ed549ff8b0b9e03e0c88cf90fa634"
        "fa7b12b47d77b694de488ace8d9a65967dc96df599727d3292a8d9d447709c97",
    ),
)

# RFC 8032 §7.1: (secret key, public key, message, signature)
_ED_VECTORS = (
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        # TEST SHA(abc): the message is SHA-512("abc")
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
)

_L = 2**252 + 27742317777372353535851937790883648493
_SEED = unhex(_ED_VECTORS[1][0])
_PUB = unhex(_ED_VECTORS[1][1])


def _pure(data, chunk=0):
    h = sha512._PureSha512()
    if chunk:
        for i in range(0, len(data), chunk):
            h.update(data[i : i + chunk])
    else:
        h.update(data)
    return h.digest()


def check_sha512_vectors():
    for data, want in _SHA_VECTORS:
        eq(_pure(data).hex(), want, "pure sha512 of %d bytes" % len(data))
        eq(sha512.sha512(data).hex(), want, "sha512() of %d bytes" % len(data))
        eq(sha512.Sha512().update(data).digest().hex(), want, "Sha512 of %d bytes" % len(data))


def check_sha512_incremental_and_padding_edges():
    # 111/112 bytes: the length field just fits / spills into a second block.
    for n in (55, 111, 112, 127, 128, 129, 239, 240, 256, 300):
        data = bytes([(i * 31 + 7) & 0xFF for i in range(n)])
        want = _pure(data)
        for chunk in (1, 13, 64, 127, 128, 200):
            eq(_pure(data, chunk), want, "chunked %d by %d" % (n, chunk))
        eq(_pure(bytearray(data)), want, "bytearray input")
        eq(_pure(memoryview(data)), want, "memoryview input")
        eq(sha512.sha512(data), want, "pure agrees with sha512() at %d" % n)


def check_ed25519_rfc8032_vectors():
    for seed, pub, msg, sig in _ED_VECTORS:
        seed, pub, msg, sig = unhex(seed), unhex(pub), unhex(msg), unhex(sig)
        eq(ed25519.public_key(seed), pub, "public key")
        eq(ed25519.sign(seed, msg), sig, "signature")
        assert ed25519.verify(pub, msg, sig) is True, "vector verifies"


def check_ed25519_rejects_changed_signatures():
    msg = b"store device record"
    sig = ed25519.sign(_SEED, msg)
    assert ed25519.verify(_PUB, msg, sig)
    for pos in (0, 5, 31, 32, 40, 63):
        bad = bytearray(sig)
        bad[pos] ^= 0x01
        assert not ed25519.verify(_PUB, msg, bytes(bad)), "flipped sig byte %d" % pos
    assert not ed25519.verify(_PUB, msg + b".", sig), "changed message"
    assert not ed25519.verify(_PUB, msg[:-1], sig), "truncated message"
    other = ed25519.public_key(bytes(32))
    assert not ed25519.verify(other, msg, sig), "another key"
    bad_pub = bytearray(_PUB)
    bad_pub[3] ^= 0x10
    assert not ed25519.verify(bytes(bad_pub), msg, sig), "flipped public key"
    # forged: R and S of another message's signature
    assert not ed25519.verify(_PUB, msg, ed25519.sign(_SEED, b"other")), "other message's sig"
    assert not ed25519.verify(_PUB, msg, bytes(64)), "zero signature"


def check_ed25519_rejects_noncanonical_s():
    msg = b"x"
    sig = ed25519.sign(_SEED, msg)
    s = int.from_bytes(sig[32:], "little")
    assert s < _L
    # S + L satisfies the group equation too: only the S < L rule refuses it.
    forged = sig[:32] + (s + _L).to_bytes(32, "little")
    assert not ed25519.verify(_PUB, msg, forged), "S + L"
    assert not ed25519.verify(_PUB, msg, sig[:32] + b"\xff" * 32), "S all ones"


def check_ed25519_malformed_input_is_false():
    msg = b"m"
    sig = ed25519.sign(_SEED, msg)
    not_a_point = (2).to_bytes(32, "little")  # y = 2 has no x on edwards25519
    y_ge_p = (2**255 - 18).to_bytes(32, "little")  # y = p + 1, non-canonical
    cases = (
        (_PUB[:31], msg, sig),
        (_PUB + b"\x00", msg, sig),
        (_PUB, msg, sig[:63]),
        (_PUB, msg, sig + b"\x00"),
        (b"", msg, b""),
        (not_a_point, msg, sig),
        (y_ge_p, msg, sig),
        (None, msg, sig),
        (_PUB, None, sig),
        (_PUB, msg, None),
        ("x" * 32, msg, sig),
        (_PUB, "m", sig),
        (12345, msg, sig),
    )
    for i, (pub, m, s) in enumerate(cases):
        eq(ed25519.verify(pub, m, s), False, "malformed case %d" % i)
    eq(ed25519.verify(bytearray(_PUB), bytearray(msg), bytearray(sig)), True, "bytearrays")
    eq(ed25519.verify(memoryview(_PUB), memoryview(msg), memoryview(sig)), True, "memoryviews")


def check_ed25519_sign_is_deterministic_and_checks_seed():
    eq(ed25519.sign(_SEED, b"abc"), ed25519.sign(bytearray(_SEED), b"abc"), "deterministic")
    a = ed25519.public_key(bytes(32))
    eq(ed25519.public_key(_SEED), _PUB, "key cache follows the seed")
    eq(ed25519.public_key(bytes(32)), a, "key cache")
    raises(ValueError, ed25519.sign, _SEED[:31], b"m")
    raises(ValueError, ed25519.public_key, _SEED + b"\x00")
    raises(ValueError, ed25519.sign, None, b"m")


def _kid():
    return cose.key_id(_PUB)


def _rebuild(data, fn):
    """data decoded, its array changed by fn, re-encoded."""
    item = cbor.loads(data)
    arr = list(item.value)
    fn(arr)
    return cbor.dumps(cbor.Tag(item.tag, arr))


def check_cose_round_trip():
    payload = cbor.dumps({"v": 1, "board": "sm-0123456789ab", "seq": 7})
    msg = cose.sign1(payload, _SEED, kid=_kid())
    eq(msg[:6], unhex("d2 84 43 a1 01 27"), "tag 18, array of 4, protected {1: -8}")
    eq(cose.verify1(msg, _PUB), payload, "payload")
    eq(cose.peek_kid(msg), _kid(), "kid")
    eq(cose.sign1(payload, _SEED, kid=_kid()), msg, "deterministic bytes")
    no_kid = cose.sign1(payload, _SEED)
    eq(cose.peek_kid(no_kid), None, "no kid")
    eq(cose.verify1(no_kid, _PUB), payload, "payload without kid")
    eq(cose.verify1(bytearray(msg), bytearray(_PUB)), payload, "bytearray input")
    via_fn = cose.encode_sign1(payload, lambda tbs: ed25519.sign(_SEED, tbs), kid=_kid())
    eq(via_fn, msg, "encode_sign1 with a signer function")
    seen = []

    def fast(pub, tbs, sig):
        seen.append(tbs)
        return ed25519.verify(pub, tbs, sig)

    eq(cose.verify1(msg, _PUB, verify=fast), payload, "custom verifier")
    eq(seen[0], cbor.dumps(["Signature1", unhex("a10127"), b"", payload]), "Sig_structure")
    eq(cose.verify1(cose.sign1(b"", _SEED), _PUB), b"", "empty payload")


def check_cose_bytes_are_deterministic_cbor():
    # encode_sign1 and the Sig_structure are joined by hand; they must be what
    # the deterministic encoder gives, at every bstr head size.
    seen = []

    def signer(tbs):
        seen.append(tbs)
        return ed25519.sign(_SEED, tbs)

    for n in (0, 23, 24, 255, 256, 4000):
        payload = bytes([n & 0xFF]) * n
        for kid in (None, b"", _kid()):
            seen.clear()
            msg = cose.encode_sign1(payload, signer, kid=kid)
            unprotected = {} if kid is None else {4: kid}
            sig = cbor.loads(msg).value[3]
            eq(msg, cbor.dumps(cbor.Tag(18, [unhex("a10127"), unprotected, payload, sig])), "msg")
            eq(seen[0], cbor.dumps(["Signature1", unhex("a10127"), b"", payload]), "tbs")
            if kid != b"":
                eq(cose.verify1(msg, _PUB), payload, "verifies")


def _refused(data, reason, pub=_PUB):
    e = raises(cose.CoseError, cose.verify1, data, pub)
    assert reason in str(e), "want %r in %r" % (reason, str(e))


def check_cose_refuses_tampering():
    payload = cbor.dumps({"seq": 7})
    msg = cose.sign1(payload, _SEED, kid=_kid())

    def set_payload(a):
        a[2] = cbor.dumps({"seq": 8})

    _refused(_rebuild(msg, set_payload), "bad signature")

    def set_protected(a):
        a[0] = cbor.dumps({1: -8, 3: "application/cbor"})

    _refused(_rebuild(msg, set_protected), "bad signature")

    def set_alg(a):
        a[0] = cbor.dumps({1: -7})

    _refused(_rebuild(msg, set_alg), "alg")

    def set_kid(a):
        a[1] = {4: b"\x00" * 8}

    _refused(_rebuild(msg, set_kid), "kid names another key")

    def set_sig(a):
        s = bytearray(a[3])
        s[10] ^= 4
        a[3] = bytes(s)

    _refused(_rebuild(msg, set_sig), "bad signature")
    other = ed25519.public_key(bytes(32))
    _refused(msg, "kid names another key", other)
    _refused(cose.sign1(payload, _SEED), "bad signature", other)
    _refused(cose.sign1(payload, bytes(32)), "bad signature")


def check_cose_refuses_malformed():
    payload = b"\xa1\x63seq\x07"
    msg = cose.sign1(payload, _SEED)
    arr = cbor.loads(msg).value
    _refused(cbor.dumps(arr), "not a tagged")
    _refused(cbor.dumps(cbor.Tag(98, arr)), "not a tagged")
    _refused(cbor.dumps(cbor.Tag(18, arr[:3])), "array of 4")
    _refused(cbor.dumps(cbor.Tag(18, arr + [b""])), "array of 4")
    _refused(cbor.dumps(cbor.Tag(18, {})), "array of 4")
    cases = (
        (0, {1: -8}, "bad protected header"),
        (0, b"", "alg"),
        (0, b"\xa1\x01", "bad CBOR"),
        (0, cbor.dumps([1, -8]), "bad protected header"),
        (0, cbor.dumps({1: -8, 2: [1]}), "crit"),
        (0, cbor.dumps({1: "EdDSA"}), "alg"),
        (0, b"\xa1\x01\xf5", "alg"),
        (0, b"\xa1\xf5\x27", "bad protected header"),
        (0, cbor.dumps({1: -8, 4: b"k"}), "kid must be an unprotected"),
        (1, {1: -8}, "both buckets"),
        (1, {2: [1]}, "crit"),
        (1, [], "bad unprotected header"),
        (1, {4: "kid"}, "kid must be an unprotected"),
        (2, None, "payload is not a bstr"),
        (2, "text", "payload is not a bstr"),
        (3, arr[3][:63], "64 bytes"),
        (3, None, "64 bytes"),
    )
    for i, value, reason in cases:
        changed = list(arr)
        changed[i] = value
        _refused(cbor.dumps(cbor.Tag(18, changed)), reason)
    _refused(b"", "bad CBOR")
    _refused(msg[:-1], "bad CBOR")
    _refused(msg + b"\x00", "bad CBOR")
    _refused(b"\xff\x00\x13", "bad CBOR")
    _refused(None, "not bytes")
    _refused("text", "not bytes")
    _refused(bytes(cose.MAX_SIZE + 1), "over")
    _refused(msg, "public key", _PUB[:31])
    raises(cose.CoseError, cose.peek_kid, b"\x00")
    raises(cose.CoseError, cose.sign1, "text", _SEED)
    raises(cose.CoseError, cose.sign1, b"", _SEED, kid="k")
    raises(cose.CoseError, cose.encode_sign1, b"", lambda tbs: b"short")
    raises(cose.CoseError, cose.sign1, bytes(cose.MAX_SIZE), _SEED)

    def broken(pub, tbs, sig):
        raise RuntimeError("verifier broke")

    e = raises(cose.CoseError, cose.verify1, msg, _PUB, verify=broken)
    assert "bad signature" in str(e)
