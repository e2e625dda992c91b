"""RELOAD signatures and certificates (RFC 6940 6.3.4, 7.1, 11.3, 13)."""

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sipmesh.overlay import security as sec
from sipmesh.proto import reload as rl
from sipmesh.proto import reload_storage as rs

OVERLAY = "branch.example.com"
OVERLAY_HASH = 0x1234ABCD
NODE_A = bytes(range(16))
NODE_B = bytes(range(16, 32))
RESOURCE = bytes.fromhex("00112233445566778899aabbccddeeff")
KIND = 17
FORBIDDEN = rl.ERROR_FORBIDDEN


@pytest.fixture(scope="module")
def ca():
    return sec.make_ca(OVERLAY)


@pytest.fixture(scope="module")
def alice(ca):
    return sec.Identity.generate(ca, "alice@branch.example.com", NODE_A, OVERLAY)


def ping(tid=0x0102030405060708, padding=b"hello"):
    h = rl.ForwardingHeader(
        OVERLAY_HASH,
        tid,
        destinations=[rl.Destination.node(NODE_B)],
        via=[rl.Destination.node(NODE_A)],
    )
    c = rl.MessageContents(rl.PING_REQ, rl.PingReq(padding).encode())
    return rl.Message(h, c, rl.SecurityBlock(rl.Signature(rl.SignerIdentity(rl.ID_NONE))))


def stored(storage_time=1_700_000_000_000, value=b"sip:alice@10.0.0.1"):
    return rs.StoredData(
        storage_time, 3600, rs.DataValue(True, value), rl.Signature(rl.SignerIdentity(rl.ID_NONE))
    )


def expect_forbidden(fn, *a, **kw):
    with pytest.raises(sec.SecurityError) as ei:
        fn(*a, **kw)
    assert ei.value.code == FORBIDDEN == 2
    return ei.value


# ---------------------------------------------------------------- certificates


def test_certificate_sans_parse_back(ca, alice):
    info = sec.cert_info(alice.certificate)
    assert info.user_name == "alice@branch.example.com"
    assert info.node_ids == (NODE_A,)
    assert info.overlays == (OVERLAY,)
    san = alice.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    # RELOAD URI (14.15): one-entry Destination List (type 1, length 16), hex.
    assert uris == [f"reload://0110{NODE_A.hex()}@{OVERLAY}/"]
    assert san.get_values_for_type(x509.RFC822Name) == ["alice@branch.example.com"]
    assert sec.check_certificate(alice.certificate, ca).node_ids == (NODE_A,)


def test_node_id_uri_rejects_other_destinations():
    assert sec.parse_node_id_uri(f"reload://0210{NODE_A.hex()}@o/") is None
    assert sec.parse_node_id_uri(f"reload://01{NODE_A.hex()}@o/") is None
    assert sec.parse_node_id_uri("reload://zz@o/") is None
    assert sec.parse_node_id_uri("sip:alice@o") is None
    with pytest.raises(ValueError):
        sec.node_id_uri(b"short", OVERLAY)


def test_ca_is_self_signed(ca):
    ca.certificate.verify_directly_issued_by(ca.certificate)
    bc = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca


# ---------------------------------------------------------------- messages


def test_sign_verify_ping(ca, alice):
    msg = sec.sign_message(ping(), alice)
    s = msg.security.signature
    assert (s.hash_alg, s.sig_alg) == (8, 7)
    assert s.identity.type == rl.ID_CERT_HASH
    assert s.identity.hash_alg == 4
    assert s.identity.hash == hashlib.sha256(alice.cert_der).digest()
    assert msg.security.certificates == [rl.GenericCertificate(0, alice.cert_der)]
    assert len(s.value) == 64
    info = sec.verify_message(msg, ca, expected_node_id=NODE_A)
    assert info.user_name == alice.user_name
    # Also accepts the CA certificate alone (what a peer gets from the config).
    sec.verify_message(msg, ca.certificate)


def test_signed_message_codec_round_trip(ca, alice):
    msg = sec.sign_message(ping(), alice)
    data = msg.encode()
    back = rl.decode_message(data)
    assert back == msg
    assert back.encode() == data
    sec.verify_message(back, ca, expected_node_id=NODE_A)


def _flip(data, pos):
    b = bytearray(data)
    b[pos] ^= 0x01
    return bytes(b)


def test_tampering_any_signed_byte_fails(ca, alice):
    msg = sec.sign_message(ping(), alice)
    data = msg.encode()
    hdr_end = rl.decode_header(data)[1]
    contents_len = len(msg.contents.encode())
    ident = msg.security.signature.identity.encode()
    ident_pos = data.index(ident, hdr_end + contents_len)
    positions = (
        list(range(4, 8))  # overlay
        + list(range(20, 28))  # transaction_id
        + list(range(hdr_end, hdr_end + contents_len))  # MessageContents
        + list(range(ident_pos, ident_pos + len(ident)))  # SignerIdentity
    )
    checked = 0
    for pos in positions:
        try:
            back = rl.decode_message(_flip(data, pos))
        except rl.ReloadDecodeError:
            continue  # the codec rejects it first: never accepted either
        expect_forbidden(sec.verify_message, back, ca)
        checked += 1
    assert checked > len(positions) // 2


def test_tampering_fields_fails(ca, alice):
    for mutate in (
        lambda m: setattr(m.header, "overlay", m.header.overlay + 1),
        lambda m: setattr(m.header, "transaction_id", m.header.transaction_id ^ 1),
        lambda m: setattr(m.contents, "body", rl.PingReq(b"hellp").encode()),
        lambda m: setattr(m.contents, "code", rl.PING_ANS),
        lambda m: m.contents.extensions.append(rl.MessageExtension(9, 0, b"x")),
        lambda m: setattr(m.security.signature, "value", bytes(64)),
        lambda m: setattr(m.security.signature.identity, "hash", bytes(32)),
        lambda m: setattr(m.security.signature.identity, "type", rl.ID_NONE),
        lambda m: setattr(m.security.signature, "hash_alg", rl.HASH_SHA256),
        lambda m: setattr(m.security.signature, "sig_alg", 3),
        lambda m: setattr(m.security, "certificates", []),
        lambda m: setattr(m.security, "certificates", [rl.GenericCertificate(0, b"junk")]),
    ):
        msg = sec.sign_message(ping(), alice)
        mutate(msg)
        expect_forbidden(sec.verify_message, msg, ca)


def test_signature_by_other_key_with_same_cert_fails(ca, alice):
    mallory = sec.Identity.generate(ca, "mallory@branch.example.com", NODE_B, OVERLAY)
    msg = sec.sign_message(ping(), mallory)
    # Mallory claims Alice's certificate but signs with her own key.
    msg.security.certificates = [rl.GenericCertificate(0, alice.cert_der)]
    msg.security.signature.identity = alice.signer_identity()
    expect_forbidden(sec.verify_message, msg, ca)


def test_certificate_from_other_ca_fails(ca):
    other = sec.make_ca(OVERLAY)
    eve = sec.Identity.generate(other, "alice@branch.example.com", NODE_A, OVERLAY)
    msg = sec.sign_message(ping(), eve)
    sec.verify_message(msg, other)  # fine under its own CA
    e = expect_forbidden(sec.verify_message, msg, ca)
    assert "CA" in e.reason


def test_self_signed_peer_certificate_fails(ca, alice):
    # A peer certificate signed with its own key: issuer name is the CA's,
    # but the signature is not the CA's.
    fake_ca = sec.CA(alice.signing_key, ca.certificate, OVERLAY)
    cert = sec.issue(fake_ca, alice.signing_key.verify_key, "x@y", NODE_A, OVERLAY)
    forged = sec.Identity(alice.signing_key, cert, "x@y", NODE_A)
    expect_forbidden(sec.verify_message, sec.sign_message(ping(), forged), ca)


def test_expired_certificate_fails(ca):
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    old = sec.Identity.generate(ca, "old@branch.example.com", NODE_A, OVERLAY, days=1, now=past)
    msg = sec.sign_message(ping(), old)
    e = expect_forbidden(sec.verify_message, msg, ca)
    assert "validity" in e.reason
    # Valid at a time inside its validity period.
    sec.verify_message(msg, ca, now=past + datetime.timedelta(hours=1))


def test_not_yet_valid_certificate_fails(ca):
    future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    new = sec.Identity.generate(ca, "new@branch.example.com", NODE_A, OVERLAY, now=future)
    expect_forbidden(sec.verify_message, sec.sign_message(ping(), new), ca)


def test_wrong_node_id_fails(ca, alice):
    msg = sec.sign_message(ping(), alice)
    e = expect_forbidden(sec.verify_message, msg, ca, expected_node_id=NODE_B)
    assert "Node-ID" in e.reason


def test_error_response_carries_the_code(ca, alice):
    msg = sec.sign_message(ping(), alice)
    msg.header.transaction_id ^= 1
    with pytest.raises(sec.SecurityError) as ei:
        sec.verify_message(msg, ca)
    err = rl.error_message(msg.header, ei.value.code, ei.value.reason.encode())
    back = rl.decode_message(err.encode())
    assert rl.decode_error(back.contents.body).error_code == rl.ERROR_FORBIDDEN


# ---------------------------------------------------------------- stored data


def test_sign_verify_stored_data(ca, alice):
    sd = sec.sign_stored_data(stored(), RESOURCE, KIND, alice)
    assert (sd.signature.hash_alg, sd.signature.sig_alg) == (8, 7)
    certs = [rl.GenericCertificate(0, alice.cert_der)]
    info = sec.verify_stored_data(sd, RESOURCE, KIND, certs, ca, expected_node_id=NODE_A)
    assert info.node_ids == (NODE_A,)
    # x509 certificate objects are accepted too.
    sec.verify_stored_data(sd, RESOURCE, KIND, [alice.certificate], ca)


def test_stored_data_codec_round_trip(ca, alice):
    sd = sec.sign_stored_data(stored(), RESOURCE, KIND, alice)
    body = rs.FetchAns([rs.FetchKindResponse(KIND, 1, [sd])]).encode()
    back = rs.decode_fetch_ans(body, {KIND: rs.MODEL_SINGLE}).kind_responses[0].values[0]
    assert back == sd
    sec.verify_stored_data(back, RESOURCE, KIND, [alice.certificate], ca)


def test_stored_data_tampering_fails(ca, alice):
    certs = [alice.certificate]
    good = sec.sign_stored_data(stored(), RESOURCE, KIND, alice)
    expect_forbidden(sec.verify_stored_data, good, RESOURCE[:-1] + b"\0", KIND, certs, ca)
    expect_forbidden(sec.verify_stored_data, good, RESOURCE, KIND + 1, certs, ca)
    expect_forbidden(
        sec.verify_stored_data, good, RESOURCE, KIND, certs, ca, expected_node_id=NODE_B
    )
    expect_forbidden(sec.verify_stored_data, good, RESOURCE, KIND, [], ca)
    for mutate in (
        lambda s: setattr(s, "storage_time", s.storage_time + 1),
        lambda s: setattr(s, "value", rs.DataValue(True, b"sip:eve@10.0.0.9")),
        lambda s: setattr(s, "value", rs.DataValue(False, b"sip:alice@10.0.0.1")),
        lambda s: setattr(s.signature.identity, "hash", bytes(32)),
        lambda s: setattr(s.signature, "value", bytes(64)),
    ):
        sd = sec.sign_stored_data(stored(), RESOURCE, KIND, alice)
        mutate(sd)
        expect_forbidden(sec.verify_stored_data, sd, RESOURCE, KIND, certs, ca)
    # lifetime is not covered by the signature (7.1): changing it still verifies.
    sd = sec.sign_stored_data(stored(), RESOURCE, KIND, alice)
    sd.lifetime = 1
    sec.verify_stored_data(sd, RESOURCE, KIND, certs, ca)


def test_stored_data_from_other_ca_or_expired_fails(ca):
    other = sec.make_ca(OVERLAY)
    eve = sec.Identity.generate(other, "eve@x", NODE_A, OVERLAY)
    sd = sec.sign_stored_data(stored(), RESOURCE, KIND, eve)
    expect_forbidden(sec.verify_stored_data, sd, RESOURCE, KIND, [eve.certificate], ca)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    old = sec.Identity.generate(ca, "old@x", NODE_A, OVERLAY, days=1, now=past)
    sd = sec.sign_stored_data(stored(), RESOURCE, KIND, old)
    expect_forbidden(sec.verify_stored_data, sd, RESOURCE, KIND, [old.certificate], ca)


def test_cert_der_is_stable(alice):
    assert alice.cert_der == alice.certificate.public_bytes(serialization.Encoding.DER)
