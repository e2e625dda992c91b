"""Portable checks of sipmesh.proto.reload (RFC 6940 framing and message envelope).

The two hand-built vectors below were written byte by byte from the RFC's
structures (sections 6.6.2, 6.3.2, 6.3.2.2, 6.3.2.3, 6.3.3, 6.3.3.1,
6.3.4, 6.5.3), not produced by the encoder. Randomness is a fixed-seed
xorshift32 so both runtimes run the same cases.
"""

from portable import Rng, damage, eq, raises, unhex

from sipmesh.proto import reload as R
from sipmesh.proto.reload import ReloadDecodeError, ReloadEncodeError

NODE = "00112233445566778899aabbccddeeff"
HASH32 = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
SIG64 = "5a" * 64

# Vector 1: a signed Ping request to one node, 175 bytes.
PING_HEADER = "".join([
    "d2454c4f",  # relo_token
    "12345678",  # overlay
    "0003",  # configuration_sequence = 3
    "0a",  # version 1.0
    "64",  # ttl = 100
    "c0000000",  # fragment: historic bit + last fragment, offset 0
    "000000af",  # length = 175 (whole message)
    "0102030405060708",  # transaction_id
    "00000000",  # max_response_length
    "0000",  # via_list_length = 0 bytes
    "0012",  # destination_list_length = 18 bytes
    "0000",  # options_length = 0 bytes
    "0110" + NODE,  # Destination: node(1), length 16, Node-ID
])  # fmt: skip
PING_CONTENTS = "".join([
    "0017",  # message_code = ping_req (23)
    "00000002" "0000",  # message_body: PingReq with empty padding<0..2^16-1>
    "00000000",  # extensions: none
])  # fmt: skip
PING_IDENTITY = "".join([
    "01" "0022",  # SignerIdentity: cert_hash(1), length 34
    "04" "20" + HASH32,  # hash_alg sha256(4), certificate_hash<0..255> of 32 bytes
])  # fmt: skip
PING_SECURITY = "".join([
    "0000",  # certificates<0..2^16-1>: none
    "08" "07",  # SignatureAndHashAlgorithm: intrinsic(8) / ed25519(7)
    PING_IDENTITY,
    "0040" + SIG64,  # signature_value<0..2^16-1>: 64 bytes
])  # fmt: skip
PING = PING_HEADER + PING_CONTENTS + PING_SECURITY

# Vector 2: an Error response with every list filled, 123 bytes.
ERR_HEADER = "".join([
    "d2454c4f" "12345678" "0003" "0a" "64" "c0000000",  # as above
    "0000007b",  # length = 123
    "1112131415161718",  # transaction_id
    "00000000",  # max_response_length
    "0014",  # via_list_length = 20 bytes
    "000e",  # destination_list_length = 14 bytes
    "0006",  # options_length = 6 bytes
    "8001",  # via[0]: compressed 16-bit opaque id 0x8001
    "01" "10" + NODE,  # via[1]: node
    "02" "05" "04" "deadbeef",  # dest[0]: resource(2), length 5, ResourceId<0..255> deadbeef
    "03" "03" "02" "abcd",  # dest[1]: opaque_id_type(3), length 3, opaque<0..255> abcd
    "8123",  # dest[2]: compressed opaque id 0x8123
    "01" "04" "0002" "0102",  # option: type 1, flags RESPONSE_COPY, length 2, value
])  # fmt: skip
ERR_CONTENTS = "".join([
    "ffff",  # message_code = error
    "00000007",  # message_body length 7:
    "0014" "0003" "616263",  # ErrorResponse: Error_Invalid_Message, error_info "abc"
    "0000000a",  # extensions length 10:
    "0001" "01" "00000003" "78797a",  # type 1, critical = true, contents "xyz"
])  # fmt: skip
ERR_SECURITY = "".join([
    "0005" "00" "0002" "3082",  # certificates: one X.509(0) cert of 2 bytes
    "08" "07",  # SignatureAndHashAlgorithm
    "02" "0004" "04" "02" "aabb",  # cert_hash_node_id(2), length 4: sha256, hash aabb
    "0000",  # signature_value: empty
])  # fmt: skip
ERR = ERR_HEADER + ERR_CONTENTS + ERR_SECURITY



def _err(data, code=R.ERROR_INVALID_MESSAGE):
    e = raises(ReloadDecodeError, R.decode_message, data)
    eq(e.code, code, "error code of %s" % e)
    return e


def _patch(h, offset, new_hex):
    b = bytearray(unhex(h))
    nb = unhex(new_hex)
    b[offset : offset + len(nb)] = nb
    return bytes(b)


def check_vector_lengths():
    eq(len(unhex(PING)), 175, "ping vector")
    eq(len(unhex(ERR)), 123, "error vector")


def check_vector_ping_fields():
    m = R.decode_message(unhex(PING))
    h = m.header
    eq(h.overlay, 0x12345678, "overlay")
    eq(h.configuration_sequence, 3, "config seq")
    eq(h.version, 10, "version")
    eq(h.ttl, 100, "ttl")
    eq(h.fragment, 0xC0000000, "fragment")
    assert h.is_last_fragment()
    eq(h.fragment_offset(), 0, "fragment offset")
    eq(h.length, 175, "length")
    eq(h.transaction_id, 0x0102030405060708, "transaction id")
    eq(h.max_response_length, 0, "max response")
    eq(h.via, [], "via")
    eq(h.destinations, [R.Destination.node(unhex(NODE))], "destinations")
    eq(h.options, [], "options")
    eq(m.contents.code, R.PING_REQ, "code")
    assert m.contents.is_request()
    eq(R.decode_ping_req(m.contents.body), R.PingReq(b""), "ping body")
    eq(m.contents.extensions, [], "extensions")
    s = m.security
    eq(s.certificates, [], "certs")
    eq(s.signature.hash_alg, 8, "hash alg")
    eq(s.signature.sig_alg, 7, "sig alg")
    eq(s.signature.identity, R.SignerIdentity(R.ID_CERT_HASH, 4, unhex(HASH32)), "identity")
    eq(s.signature.value, unhex(SIG64), "signature")
    eq(m.encode().hex(), PING, "re-encode")


def check_vector_ping_built_from_objects():
    m = R.Message(
        R.ForwardingHeader(
            0x12345678,
            0x0102030405060708,
            [R.Destination.node(unhex(NODE))],
            configuration_sequence=3,
        ),
        R.MessageContents(R.PING_REQ, R.PingReq().encode()),
        R.SecurityBlock(
            R.Signature(
                R.SignerIdentity(R.ID_CERT_HASH, R.HASH_SHA256, unhex(HASH32)), unhex(SIG64)
            )
        ),
    )
    eq(m.encode().hex(), PING, "encoding")
    eq(m.header.length, 175, "length filled in")


def check_vector_error_fields():
    m = R.decode_message(unhex(ERR))
    h = m.header
    eq(h.transaction_id, 0x1112131415161718, "transaction id")
    eq(h.via, [R.Destination.compressed_id(0x8001), R.Destination.node(unhex(NODE))], "via")
    eq(h.via[0].type, R.DEST_OPAQUE, "compressed is opaque_id_type")
    eq(h.via[0].value, b"\x80\x01", "compressed value is the 2 bytes")
    eq(
        h.destinations,
        [
            R.Destination.resource(unhex("deadbeef")),
            R.Destination.opaque(b"\xab\xcd"),
            R.Destination.compressed_id(0x8123),
        ],
        "destinations",
    )
    eq(h.options, [R.ForwardingOption(1, R.RESPONSE_COPY, b"\x01\x02")], "options")
    c = m.contents
    eq(c.code, R.ERROR, "code")
    assert not c.is_request()
    eq(R.decode_error(c.body), R.ErrorResponse(R.ERROR_INVALID_MESSAGE, b"abc"), "error body")
    eq(c.extensions, [R.MessageExtension(1, True, b"xyz")], "extensions")
    eq(c.extensions[0].offset, 78 + 2 + 4 + 7 + 4, "extension offset")
    s = m.security
    eq(s.certificates, [R.GenericCertificate(0, b"\x30\x82")], "certs")
    eq(s.signature.identity, R.SignerIdentity(R.ID_CERT_HASH_NODE_ID, 4, b"\xaa\xbb"), "identity")
    eq(s.signature.value, b"", "signature")
    eq(m.encode().hex(), ERR, "re-encode")


def check_signed_bytes():
    m = R.decode_message(unhex(PING))
    want = "12345678" + "0102030405060708" + PING_CONTENTS + PING_IDENTITY
    eq(R.message_signed_bytes(m).hex(), want, "signature input")
    eq(
        R.signed_bytes(
            0x12345678, 0x0102030405060708, unhex(PING_CONTENTS), unhex(PING_IDENTITY)
        ).hex(),
        want,
        "from bytes",
    )


def check_bodies():
    eq(
        R.PingAns(0x0102030405060708, 1700000000000).encode().hex(),
        "01020304050607080000018bcfe56800",
        "PingAns",
    )
    eq(
        R.decode_ping_ans(unhex("01020304050607080000018bcfe56800")),
        R.PingAns(0x0102030405060708, 1700000000000),
        "PingAns decode",
    )
    eq(R.PingReq(b"\x00" * 3).encode().hex(), "0003000000", "PingReq padding")
    eq(R.ErrorResponse(R.ERROR_NOT_FOUND, b"").encode().hex(), "00030000", "ErrorResponse")
    for fn, good in (
        (R.decode_ping_ans, "01020304050607080000018bcfe56800"),
        (R.decode_ping_req, "0003000000"),
        (R.decode_error, "00140003616263"),
    ):
        b = unhex(good)
        for i in range(len(b)):
            raises(ReloadDecodeError, fn, b[:i])
        raises(ReloadDecodeError, fn, b + b"\x00")


def check_error_message_builder():
    req = R.decode_message(unhex(ERR)).header
    m = R.error_message(req, R.ERROR_UNKNOWN_EXTENSION, b"ext 1")
    back = R.decode_message(m.encode())
    eq(back.header.transaction_id, req.transaction_id, "transaction id")
    eq(back.header.destinations, list(reversed(req.via)), "route back along via")
    eq(R.decode_error(back.contents.body), R.ErrorResponse(13, b"ext 1"), "body")


def check_frames_encode():
    msg = unhex(PING)
    eq(R.encode_data_frame(0, msg).hex(), "80000000000000af" + PING, "data frame")
    eq(R.encode_ack_frame(5, 0x80000001).hex(), "810000000580000001", "ack frame")
    eq(R.decode_frame(unhex("810000000580000001")), R.AckFrame(5, 0x80000001), "ack decode")
    eq(R.decode_frame(R.encode_data_frame(7, msg)), R.DataFrame(7, msg), "data decode")
    e = raises(ReloadDecodeError, R.decode_frame, unhex("82000000000000"))
    eq(e.code, None, "unknown frame type")
    raises(ReloadDecodeError, R.decode_frame, R.encode_data_frame(7, msg) + b"\x00")
    e = raises(ReloadDecodeError, R.decode_frame, R.encode_data_frame(7, msg), 100)
    eq(e.code, R.ERROR_MESSAGE_TOO_LARGE, "oversize frame")
    raises(ReloadEncodeError, R.encode_data_frame, -1, b"")


def check_frame_stream_chunks():
    rng = Rng(7)
    frames = []
    wire = b""
    for i in range(40):
        if rng.below(3) == 0:
            f = R.AckFrame(i, rng.next())
        else:
            f = R.DataFrame(i, rng.bytes(rng.below(300)))
        frames.append(f)
        wire += f.encode()
    for seed in (1, 2, 3):
        rng = Rng(seed)
        d = R.FrameDecoder()
        got = []
        pos = 0
        while pos < len(wire):
            n = 1 + rng.below(40)
            chunk = wire[pos : pos + n]
            if rng.below(2):
                chunk = memoryview(bytearray(chunk))
            got.extend(d.feed(chunk))
            pos += n
        eq(got, frames, "frames of seed %d" % seed)
        eq(d.pending(), 0, "nothing pending")


def check_frame_stream_errors():
    d = R.FrameDecoder(max_frame=100)
    ok = R.encode_ack_frame(1, 0)
    got = d.feed(ok + R.encode_data_frame(2, b"x" * 101))
    eq(got, [R.AckFrame(1, 0)], "frame before the error is delivered")
    e = raises(ReloadDecodeError, d.feed, b"")
    eq(e.code, R.ERROR_MESSAGE_TOO_LARGE, "oversize")
    eq(e.offset, 9 + 5, "offset of the length field in the stream")
    raises(ReloadDecodeError, d.feed, ok)
    d = R.FrameDecoder()
    eq(d.feed(ok[:4]), [], "partial")
    eq(d.feed(ok[4:] + b"\x42"), [R.AckFrame(1, 0)], "frame before the bad byte")
    e = raises(ReloadDecodeError, d.feed, b"")
    eq(e.offset, 9, "offset of the bad type byte")
    eq(e.code, None, "no RELOAD answer on a broken stream")


def _random_dest(rng):
    k = rng.below(5)
    if k == 0:
        return R.Destination.node(rng.bytes(16))
    if k == 1:
        return R.Destination.resource(rng.bytes(rng.below(40)))
    if k == 2:
        return R.Destination.opaque(rng.bytes(rng.below(10)))
    if k == 3:
        return R.Destination.compressed_id(0x8000 | rng.below(0x8000))
    return R.Destination(4 + rng.below(124), rng.bytes(rng.below(20)))


def _random_message(rng):
    h = R.ForwardingHeader(
        rng.next(),
        (rng.next() << 32) | rng.next(),
        destinations=[_random_dest(rng) for _ in range(1 + rng.below(4))],
        via=[_random_dest(rng) for _ in range(rng.below(4))],
        options=[
            R.ForwardingOption(1 + rng.below(255), rng.below(8), rng.bytes(rng.below(6)))
            for _ in range(rng.below(3))
        ],
        configuration_sequence=rng.below(65536),
        ttl=rng.below(101),
        fragment=R.FRAGMENT_UNFRAGMENTED,
        max_response_length=rng.below(3) * 1000,
    )
    exts = [
        R.MessageExtension(1 + rng.below(65535), rng.below(2), rng.bytes(rng.below(8)))
        for _ in range(rng.below(3))
    ]
    c = R.MessageContents(1 + rng.below(34), rng.bytes(rng.below(120)), exts)
    k = rng.below(3)
    if k == 0:
        ident = R.SignerIdentity(R.ID_CERT_HASH, R.HASH_SHA256, rng.bytes(32))
    elif k == 1:
        ident = R.SignerIdentity(R.ID_CERT_HASH_NODE_ID, R.HASH_SHA256, rng.bytes(32))
    else:
        ident = R.SignerIdentity(R.ID_NONE)
    certs = [
        R.GenericCertificate(rng.below(3), rng.bytes(rng.below(50))) for _ in range(rng.below(3))
    ]
    return R.Message(h, c, R.SecurityBlock(R.Signature(ident, rng.bytes(64)), certs))


def check_round_trip_random():
    rng = Rng(11)
    for _ in range(60):
        m = _random_message(rng)
        b = m.encode()
        back = R.decode_message(b)
        assert back == m, "round trip"
        eq(back.encode(), b, "re-encode")
        h, off = R.decode_header(b)
        assert h == m.header
        eq(b[off : off + 2], m.contents.encode()[:2], "contents offset")


def check_every_truncation():
    rng = Rng(5)
    samples = [unhex(PING), unhex(ERR)] + [_random_message(rng).encode() for _ in range(3)]
    for b in samples:
        for i in range(len(b)):
            raises(ReloadDecodeError, R.decode_message, b[:i])
        raises(ReloadDecodeError, R.decode_message, b + b"\x00")


def check_random_mutations():
    # Anything decoded from damaged bytes must re-encode to the very same
    # bytes (one encoding per value); anything else is ReloadDecodeError.
    rng = Rng(3)
    base = [unhex(PING), unhex(ERR)] + [_random_message(rng).encode() for _ in range(4)]
    decoded = 0
    for n in range(1500):
        b = damage(rng, base[n % len(base)], ops=3)
        if rng.below(2):
            # keep the length field right so the damage reaches deeper fields
            n2 = len(b)
            if n2 >= 20:
                b[16:20] = bytes(
                    [(n2 >> 24) & 0xFF, (n2 >> 16) & 0xFF, (n2 >> 8) & 0xFF, n2 & 0xFF]
                )
        try:
            m = R.decode_message(bytes(b))
        except ReloadDecodeError as e:
            assert 0 <= e.offset <= len(b), "offset in range"
            continue
        decoded += 1
        eq(m.encode(), bytes(b), "decoded mutation re-encodes identically")
    assert decoded > 20, "some mutations decode (%d)" % decoded


def check_random_garbage():
    rng = Rng(9)
    for n in range(300):
        b = rng.bytes(rng.below(80))
        if n % 2 and len(b) >= 20:
            b = unhex("d2454c4f12345678 0003 0a 64 c0000000") + bytes([0, 0, 0, len(b)]) + b[20:]
        raises(ReloadDecodeError, R.decode_message, b)


def check_bad_token_version_length():
    e = _err(_patch(PING, 0, "d2454c4e"), None)
    eq(e.offset, 0, "token offset")
    e = _err(_patch(PING, 10, "0b"))
    eq(e.offset, 10, "version offset")
    e = _err(_patch(PING, 16, "000000b0"))
    eq(e.offset, 16, "length offset")
    _err(_patch(PING, 16, "000000ae"))
    _err(unhex(PING)[:-1])
    _err(unhex(PING) + b"\x00")
    e = raises(ReloadDecodeError, R.decode_message, unhex(PING), 100)
    eq(e.code, R.ERROR_MESSAGE_TOO_LARGE, "over max_message")


def check_list_lengths_inconsistent():
    # via_list_length 21 (one byte into the destination list): the resource
    # destination that starts there overruns the via list.
    bad = _patch(ERR, 32, "0015")
    _err(bad)
    # destination_list_length one short: dest[2] (compressed) is cut in half.
    _err(_patch(ERR, 34, "000d"))
    # options_length covering less than the option
    _err(_patch(ERR, 36, "0005"))
    # lists together longer than the message
    _err(_patch(ERR, 32, "ff00"))


def check_destination_types():
    # type 0 is invalidDestinationType
    e = _err(_patch(PING, 38, "00"))
    eq(e.offset, 38, "offset of the destination")
    # a node destination must be 16 bytes
    _err(_patch(PING, 38, "0110"[:2] + "0f"))
    # resource: outer length 5 but ResourceId claims 3 bytes
    _err(_patch(ERR, 60, "03"))
    # unknown TLV type 5 with 16 bytes of data is kept raw and re-encodes
    b = _patch(PING, 38, "05")
    m = R.decode_message(b)
    eq(m.header.destinations, [R.Destination(5, unhex(NODE))], "unknown type kept")
    eq(m.encode(), b, "unknown type re-encodes")
    raises(ReloadEncodeError, R.Destination(0, b"").encode)
    raises(ReloadEncodeError, R.Destination(DEST_TOO_BIG, b"").encode)
    raises(ReloadEncodeError, R.Destination.node(b"\x00" * 15).encode)


DEST_TOO_BIG = 128


def check_compressed_destinations():
    d = R.Destination.compressed_id(0xFFFF)
    eq(d.encode().hex(), "ffff", "compressed encoding")
    raises(ReloadEncodeError, R.Destination.compressed_id, 0x7FFF)
    raises(ReloadEncodeError, R.Destination(R.DEST_OPAQUE, b"\x00\x01", True).encode)
    raises(ReloadEncodeError, R.Destination(R.DEST_OPAQUE, b"\x80\x01\x02", True).encode)
    # the same opaque id written as a TLV is a different (uncompressed) encoding
    eq(R.Destination.opaque(b"\x80\x01").encode().hex(), "0303028001", "TLV form")
    assert R.Destination.opaque(b"\x80\x01") != d
    # a compressed destination cut at the list boundary
    _err(_patch(ERR, 34, "000d"))


def check_extension_critical():
    m = R.decode_message(unhex(ERR))
    e = raises(ReloadDecodeError, m.contents.check_extensions)
    eq(e.code, R.ERROR_UNKNOWN_EXTENSION, "unknown critical extension")
    eq(e.offset, 95, "extension offset")
    m.contents.check_extensions(known=(1,))
    # critical = false: may be ignored
    m2 = R.decode_message(_patch(ERR, 97, "00"))
    eq(m2.contents.extensions[0].critical, False, "non-critical")
    m2.contents.check_extensions()
    # Boolean other than 0/1 is invalid
    _err(_patch(ERR, 97, "02"))
    # extension type 0 is invalid
    _err(_patch(ERR, 95, "0000"))


def check_security_block_rules():
    # identity length disagreeing with its hash
    _err(_patch(PING, 38 + 18 + 12 + 4 + 1, "0021"))
    # invalid identity type 0
    _err(_patch(PING, 38 + 18 + 12 + 4, "00"))
    # none(3) must carry no value
    _err(_patch(PING, 38 + 18 + 12 + 4, "03"))
    # certificates length running past the message
    _err(_patch(PING, 38 + 18 + 12, "ffff"))
    # a future identity type keeps its bytes
    b = _patch(PING, 38 + 18 + 12 + 4, "07")
    m = R.decode_message(b)
    eq(m.security.signature.identity.type, 7, "future identity type")
    eq(m.encode(), b, "re-encode")


def check_message_code_zero():
    _err(_patch(PING, 56, "0000"))


def check_limits():
    h = R.ForwardingHeader(
        1, 2, [R.Destination.compressed_id(0x8000 + i) for i in range(R.MAX_DESTINATIONS + 1)]
    )
    m = R.Message(
        h,
        R.MessageContents(R.PING_REQ, b""),
        R.SecurityBlock(R.Signature(R.SignerIdentity(R.ID_NONE))),
    )
    _err(m.encode())
    h.destinations.pop()
    R.decode_message(m.encode())
    raises(
        ReloadEncodeError, R.Message(R.ForwardingHeader(1, 2**64), m.contents, m.security).encode
    )
