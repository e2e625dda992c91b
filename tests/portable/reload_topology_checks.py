"""Portable checks of sipmesh.proto.reload_topology (RFC 6940 6.4.2, 6.5.1,
6.5.2, 6.5.4, 10.7, 10.8 bodies).

The hex vectors below were written byte by byte from the RFC's structures,
not produced by the encoder. Randomness is a fixed-seed xorshift32 so both
runtimes run the same cases.
"""

from portable import Rng, eq, mutations_decode_or_fail, raises, truncations_fail, unhex

from sipmesh.proto import reload as R
from sipmesh.proto import reload_topology as T
from sipmesh.proto.reload import ReloadDecodeError, ReloadEncodeError

N1 = "00112233445566778899aabbccddeeff"
N2 = "102132435465768798a9bacbdcedfe0f"
N3 = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
N4 = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
V6 = "20010db8000000000000000000000001"

# Vector 1: AttachReq (AttachReqAns, 6.5.1.1), 83 bytes.
ATTACH = "".join([
    "04" "61626364",  # ufrag<0..2^8-1> "abcd"
    "03" "707764",  # password<0..2^8-1> "pwd"
    "07" "70617373697665",  # role<0..2^8-1> "passive"
    "003f",  # candidates<0..2^16-1>: 63 bytes
    # candidate 1: host, IPv4 -- 18 bytes
    "01" "06" "c0000201" "17c4",  # IpAddressPort ipv4(1), length 6, 192.0.2.1:6084
    "01",  # overlay_link DTLS-UDP-SR(1)
    "01" "31",  # foundation<0..255> "1"
    "7e0000ff",  # priority 2113929471
    "01",  # type host(1): no rel_addr_port
    "0000",  # extensions<0..2^16-1>: none
    # candidate 2: srflx, IPv6 -- 45 bytes
    "02" "12" + V6 + "13c4",  # ipv6(2), length 18, 2001:db8::1 port 5060
    "01",  # overlay_link DTLS-UDP-SR(1)
    "01" "32",  # foundation "2"
    "64ffffff",  # priority 1694498815
    "02",  # type srflx(2)
    "01" "06" "0a000005" "17c4",  # rel_addr_port ipv4 10.0.0.5:6084
    "0007",  # extensions<0..2^16-1>: 7 bytes
    "0001" "78" "0002" "797a",  # IceExtension name "x", value "yz"
    "01",  # send_update True
])  # fmt: skip

# Vector 2: JoinReq (6.4.2.1), 20 bytes.
JOIN = "".join([
    N1,  # joining_peer_id (16-byte Node-ID)
    "0002" "abcd",  # overlay_specific_data<0..2^16-1>
])  # fmt: skip

# Vector 3: UpdateReq with a full ChordUpdate (10.7), 75 bytes.
UPDATE = "".join([
    "00000e10",  # uptime 3600 s
    "03",  # type full(3)
    "0010" + N1,  # predecessors NodeId<0..2^16-1>: one
    "0020" + N2 + N3,  # successors: two
    "0010" + N4,  # fingers: one
])  # fmt: skip

# Small vectors
ROUTE_Q = "010110" + N2 + "0000"  # send_update, Destination node, no data
ROUTE_Q_COMPRESSED = "0080010001ff"  # compressed destination 0x8001
PROBE_REQ = "03010203"  # requested_info<0..2^8-1>: 1, 2, 3
PROBE_ANS = "000a030400000e100902abcd"  # uptime 3600, unknown type 9
APP_ATTACH = "016101621592066163747061730000"  # app 5522, "actpas"
CONFIG_KIND = "020000000a00000700026b31000132"  # two KindDescriptions
CONFIG_DOC = "01000000060000033c612f"  # config_data "<a/"



def _patch(h, offset, new_hex):
    b = bytearray(unhex(h))
    nb = unhex(new_hex)
    b[offset : offset + len(nb)] = nb
    return bytes(b)


def _err(fn, data, code=R.ERROR_INVALID_MESSAGE):
    e = raises(ReloadDecodeError, fn, data)
    eq(e.code, code, "error code of %s" % e)
    return e


def _host4():
    return T.IceCandidate(
        T.IpAddressPort(T.ADDR_IPV4, unhex("c0000201"), 6084), 1, b"1", 2113929471, T.CAND_HOST
    )


def _srflx6():
    return T.IceCandidate(
        T.IpAddressPort(T.ADDR_IPV6, unhex(V6), 5060),
        T.LINK_DTLS_UDP_SR,
        b"2",
        1694498815,
        T.CAND_SRFLX,
        T.IpAddressPort(T.ADDR_IPV4, unhex("0a000005"), 6084),
        [T.IceExtension(b"x", b"yz")],
    )


def check_vector_lengths():
    eq(len(unhex(ATTACH)), 83, "attach")
    eq(len(unhex(JOIN)), 20, "join")
    eq(len(unhex(UPDATE)), 75, "update")


def check_attach_fields():
    m = T.decode_attach(unhex(ATTACH))
    eq((m.ufrag, m.password, m.role), (b"abcd", b"pwd", b"passive"), "ICE strings")
    eq(m.send_update, True, "send_update")
    eq(len(m.candidates), 2, "candidates")
    c1, c2 = m.candidates
    eq(c1.addr_port, T.IpAddressPort(1, unhex("c0000201"), 6084), "host address")
    eq((c1.overlay_link, c1.foundation, c1.priority), (1, b"1", 2113929471), "host")
    eq((c1.type, c1.rel_addr_port, c1.extensions), (T.CAND_HOST, None, []), "host type")
    eq(c2.addr_port, T.IpAddressPort(2, unhex(V6), 5060), "srflx address")
    eq(c2.type, T.CAND_SRFLX, "srflx type")
    eq(c2.rel_addr_port, T.IpAddressPort(1, unhex("0a000005"), 6084), "rel_addr_port")
    eq(c2.extensions, [T.IceExtension(b"x", b"yz")], "extensions")
    eq(m.encode().hex(), ATTACH, "re-encode")
    built = T.AttachReqAns(b"abcd", b"pwd", b"passive", [_host4(), _srflx6()], True)
    eq(built.encode().hex(), ATTACH, "built from objects")
    eq(built, m, "equal objects")


def check_join_leave_fields():
    m = T.decode_join_req(unhex(JOIN))
    eq(m, T.JoinReq(unhex(N1), unhex("abcd")), "JoinReq")
    eq(m.encode().hex(), JOIN, "re-encode")
    lv = T.decode_leave_req(unhex(JOIN))
    assert isinstance(lv, T.LeaveReq) and lv != m, "LeaveReq is not a JoinReq"
    eq(lv.encode().hex(), JOIN, "leave re-encode")
    eq(T.decode_join_ans(unhex("0000")), T.JoinAns(), "empty JoinAns")
    eq(T.JoinAns(b"\x01").encode().hex(), "000101", "JoinAns")
    T.decode_empty(b"", "LeaveAns")
    _err(T.decode_empty, b"\x00")


def check_update_fields():
    m = T.decode_chord_update(unhex(UPDATE))
    eq((m.uptime, m.type), (3600, T.CHORD_FULL), "uptime, type")
    eq(m.predecessors, [unhex(N1)], "predecessors")
    eq(m.successors, [unhex(N2), unhex(N3)], "successors")
    eq(m.fingers, [unhex(N4)], "fingers")
    eq(m.encode().hex(), UPDATE, "re-encode")
    built = T.ChordUpdate(3600, 3, [unhex(N1)], [unhex(N2), unhex(N3)], [unhex(N4)])
    eq(built, m, "built")
    eq(T.ChordUpdate(5, T.CHORD_PEER_READY).encode().hex(), "0000000501", "peer_ready")
    nb = T.ChordUpdate(5, T.CHORD_NEIGHBORS, [unhex(N1)]).encode().hex()
    eq(nb, "00000005020010" + N1 + "0000", "neighbors")
    # peer_ready with trailing lists, neighbors with fingers, unknown type
    _err(T.decode_chord_update, unhex("00000005010000"))
    _err(T.decode_chord_update, unhex(nb + "0000"))
    e = _err(T.decode_chord_update, unhex("0000000504"))
    eq(e.offset, 4, "offset of the type")
    # a Node-ID list that is not a multiple of 16 bytes
    _err(T.decode_chord_update, _patch(UPDATE, 5, "000f"))


def check_small_bodies():
    q = T.decode_route_query_req(unhex(ROUTE_Q))
    eq(q, T.RouteQueryReq(True, R.Destination.node(unhex(N2))), "RouteQueryReq")
    eq(q.encode().hex(), ROUTE_Q, "re-encode")
    q = T.decode_route_query_req(unhex(ROUTE_Q_COMPRESSED))
    eq(q, T.RouteQueryReq(False, R.Destination.compressed_id(0x8001), b"\xff"), "compressed")
    eq(q.encode().hex(), ROUTE_Q_COMPRESSED, "compressed re-encode")
    res = T.RouteQueryReq(0, R.Destination.resource(b"\x01\x02")).encode()
    eq(res.hex(), "0002030201020000", "resource destination")
    eq(T.decode_route_query_req(res).destination.value, b"\x01\x02", "resource id")
    a = T.decode_chord_route_query_ans(unhex(N3))
    eq(a, T.ChordRouteQueryAns(unhex(N3)), "ChordRouteQueryAns")
    eq(a.encode().hex(), N3, "re-encode")
    p = T.decode_probe_req(unhex(PROBE_REQ))
    eq(p, T.ProbeReq([1, 2, 3]), "ProbeReq")
    eq(p.encode().hex(), PROBE_REQ, "re-encode")
    pa = T.decode_probe_ans(unhex(PROBE_ANS))
    want = T.ProbeAns([T.ProbeInformation(3, 3600), T.ProbeInformation(9, b"\xab\xcd")])
    eq(pa, want, "ProbeAns")
    eq(pa.encode().hex(), PROBE_ANS, "re-encode")
    _err(T.decode_probe_ans, _patch(PROBE_ANS, 3, "05"))  # u32 type with length 5
    _err(T.decode_probe_req, unhex("0100"))  # invalid type 0
    aa = T.decode_app_attach(unhex(APP_ATTACH))
    eq(aa, T.AppAttach(b"a", b"b", 5522, b"actpas"), "AppAttach")
    eq(aa.encode().hex(), APP_ATTACH, "re-encode")
    ck = T.decode_config_update_req(unhex(CONFIG_KIND))
    eq(ck, T.ConfigUpdateReq(T.CONFIG_KIND, [b"k1", b"2"]), "kinds")
    eq(ck.encode().hex(), CONFIG_KIND, "re-encode")
    cd = T.decode_config_update_req(unhex(CONFIG_DOC))
    eq(cd, T.ConfigUpdateReq(T.CONFIG_CONFIG, b"<a/"), "config")
    eq(cd.encode().hex(), CONFIG_DOC, "re-encode")
    _err(T.decode_config_update_req, _patch(CONFIG_DOC, 4, "07"))
    _err(T.decode_config_update_req, _patch(CONFIG_DOC, 7, "02"))
    _err(T.decode_config_update_req, _patch(CONFIG_DOC, 0, "00"))
    other = T.ConfigUpdateReq(7, b"xyz").encode()
    eq(other.hex(), "070000000378797a", "unknown type kept raw")
    eq(T.decode_config_update_req(other).data, b"xyz", "raw data")


# ---------------------------------------------------------------- random


def _rand_addr(rng):
    k = rng.below(5)
    if k == 0:
        return T.IpAddressPort(9, rng.bytes(rng.below(5)))
    if k < 3:
        return T.IpAddressPort(T.ADDR_IPV4, rng.bytes(4), rng.below(65536))
    return T.IpAddressPort(T.ADDR_IPV6, rng.bytes(16), rng.below(65536))


def _rand_cand(rng):
    t = (T.CAND_HOST, T.CAND_SRFLX, T.CAND_RELAY)[rng.below(3)]
    rel = None if t == T.CAND_HOST else _rand_addr(rng)
    ext = [
        T.IceExtension(rng.bytes(rng.below(4)), rng.bytes(rng.below(4)))
        for _ in range(rng.below(3))
    ]
    return T.IceCandidate(
        _rand_addr(rng), 1 + rng.below(4), rng.bytes(rng.below(5)), rng.next(), t, rel, ext
    )


def _rand_nodes(rng):
    return [rng.bytes(16) for _ in range(rng.below(4))]


def _rand_body(rng):
    k = rng.below(10)
    if k == 0:
        cands = [_rand_cand(rng) for _ in range(rng.below(4))]
        return T.AttachReqAns(rng.bytes(rng.below(6)), rng.bytes(8), b"active", cands, rng.below(2))
    if k == 1:
        cands = [_rand_cand(rng) for _ in range(rng.below(3))]
        return T.AppAttach(rng.bytes(4), rng.bytes(rng.below(9)), rng.below(65536), b"", cands)
    if k == 2:
        return (T.JoinReq, T.LeaveReq)[rng.below(2)](rng.bytes(16), rng.bytes(rng.below(6)))
    if k == 3:
        return T.JoinAns(rng.bytes(rng.below(6)))
    if k == 4:
        t = 1 + rng.below(3)
        if t == 1:
            return T.ChordUpdate(rng.next(), t)
        f = _rand_nodes(rng) if t == 3 else ()
        return T.ChordUpdate(rng.next(), t, _rand_nodes(rng), _rand_nodes(rng), f)
    if k == 5:
        d = (
            R.Destination.node(rng.bytes(16)),
            R.Destination.resource(rng.bytes(rng.below(20))),
            R.Destination.opaque(rng.bytes(rng.below(5))),
            R.Destination.compressed_id(0x8000 | rng.below(0x8000)),
        )[rng.below(4)]
        return T.RouteQueryReq(rng.below(2), d, rng.bytes(rng.below(3)))
    if k == 6:
        return T.ChordRouteQueryAns(rng.bytes(16))
    if k == 7:
        return T.ProbeReq([1 + rng.below(255) for _ in range(rng.below(4))])
    if k == 8:
        return T.ProbeAns(
            [
                T.ProbeInformation(t, rng.next() if t <= 3 else rng.bytes(rng.below(4)))
                for t in [1 + rng.below(6) for _ in range(rng.below(4))]
            ]
        )
    t = 1 + rng.below(3)
    if t == 2:
        return T.ConfigUpdateReq(t, [rng.bytes(rng.below(5)) for _ in range(rng.below(3))])
    return T.ConfigUpdateReq(t, rng.bytes(rng.below(8)))


_DECODERS = (
    (T.AttachReqAns, T.decode_attach),
    (T.AppAttach, T.decode_app_attach),
    (T.LeaveReq, T.decode_leave_req),
    (T.JoinReq, T.decode_join_req),
    (T.JoinAns, T.decode_join_ans),
    (T.ChordUpdate, T.decode_chord_update),
    (T.RouteQueryReq, T.decode_route_query_req),
    (T.ChordRouteQueryAns, T.decode_chord_route_query_ans),
    (T.ProbeReq, T.decode_probe_req),
    (T.ProbeAns, T.decode_probe_ans),
    (T.ConfigUpdateReq, T.decode_config_update_req),
)


def _decoder(obj):
    for cls, fn in _DECODERS:
        if type(obj) is cls:
            return fn
    raise AssertionError("no decoder for %r" % (obj,))


def _vectors():
    return [
        (unhex(ATTACH), T.decode_attach),
        (unhex(JOIN), T.decode_join_req),
        (unhex(UPDATE), T.decode_chord_update),
        (unhex(ROUTE_Q), T.decode_route_query_req),
        (unhex(ROUTE_Q_COMPRESSED), T.decode_route_query_req),
        (unhex(PROBE_REQ), T.decode_probe_req),
        (unhex(PROBE_ANS), T.decode_probe_ans),
        (unhex(APP_ATTACH), T.decode_app_attach),
        (unhex(CONFIG_KIND), T.decode_config_update_req),
        (unhex(CONFIG_DOC), T.decode_config_update_req),
    ]


def check_round_trip_random():
    rng = Rng(11)
    for _ in range(300):
        m = _rand_body(rng)
        b = m.encode()
        back = _decoder(m)(b)
        assert back == m, "round trip of %r" % (m,)
        eq(back.encode(), b, "re-encode")


def check_every_truncation():
    rng = Rng(5)
    samples = _vectors()
    for _ in range(12):
        m = _rand_body(rng)
        samples.append((m.encode(), _decoder(m)))
    truncations_fail(samples, ReloadDecodeError)


def check_random_mutations():
    # Anything decoded from damaged bytes must re-encode to the very same
    # bytes (one encoding per value); anything else is ReloadDecodeError.
    rng = Rng(3)
    base = _vectors()
    for _ in range(6):
        m = _rand_body(rng)
        base.append((m.encode(), _decoder(m)))
    decoded = mutations_decode_or_fail(rng, base, ReloadDecodeError, 1000)
    assert decoded > 20, "some mutations decode (%d)" % decoded


# ---------------------------------------------------------------- rules


def check_boolean_not_0_1():
    e = _err(T.decode_attach, _patch(ATTACH, 82, "02"))
    eq(e.offset, 82, "offset of send_update")
    _err(T.decode_attach, _patch(ATTACH, 82, "ff"))
    eq(T.decode_attach(_patch(ATTACH, 82, "00")).send_update, False, "False decodes")
    e = _err(T.decode_route_query_req, _patch(ROUTE_Q, 0, "02"))
    eq(e.offset, 0, "offset of send_update")


def check_address_type_length_mismatch():
    # candidate 1's IpAddressPort starts at offset 19: ipv4 with length 18
    e = _err(T.decode_attach, _patch(ATTACH, 20, "12"))
    eq(e.offset, 20, "offset of the length")
    _err(T.decode_attach, _patch(ATTACH, 20, "05"))
    # candidate 2's ipv6 address (offset 37) with length 6
    _err(T.decode_attach, _patch(ATTACH, 38, "06"))
    # ipv4 type on the 18-byte IPv6 address
    _err(T.decode_attach, _patch(ATTACH, 37, "01"))
    # address type 0
    _err(T.decode_attach, _patch(ATTACH, 19, "00"))
    raises(ReloadEncodeError, T.IpAddressPort(T.ADDR_IPV4, bytes(16), 1).encode)
    raises(ReloadEncodeError, T.IpAddressPort(T.ADDR_IPV6, bytes(4), 1).encode)
    raises(ReloadEncodeError, T.IpAddressPort(0, b"").encode)


def check_candidate_rules():
    # candidate type 3 (RESERVED) and 5 are rejected; host with rel_addr_port
    e = _err(T.decode_attach, _patch(ATTACH, 34, "03"))
    eq(e.offset, 34, "offset of the candidate type")
    _err(T.decode_attach, _patch(ATTACH, 34, "05"))
    _err(T.decode_attach, _patch(ATTACH, 27, "00"))  # overlay_link 0
    c = _host4()
    c.rel_addr_port = c.addr_port
    raises(ReloadEncodeError, c.encode)
    c = _srflx6()
    c.rel_addr_port = None
    raises(ReloadEncodeError, c.encode)
    c.type = 3
    raises(ReloadEncodeError, c.encode)
    # relay carries a rel_addr_port like srflx
    c = _srflx6()
    c.type = T.CAND_RELAY
    b = T.AttachReqAns(b"", b"", b"", [c]).encode()
    eq(T.decode_attach(b).candidates[0], c, "relay")


def check_encode_errors():
    raises(ReloadEncodeError, T.JoinReq(b"\x00" * 15).encode)
    raises(ReloadEncodeError, T.AttachReqAns(b"x" * 256, b"", b"").encode)
    raises(ReloadEncodeError, T.AppAttach(b"", b"", 65536, b"").encode)
    raises(ReloadEncodeError, T.ChordUpdate(0, 4).encode)
    raises(ReloadEncodeError, T.ChordUpdate(0, 1, [bytes(16)]).encode)
    raises(ReloadEncodeError, T.ChordUpdate(0, 2, (), (), [bytes(16)]).encode)
    raises(ReloadEncodeError, T.ChordUpdate(0, 3, [bytes(15)]).encode)
    raises(ReloadEncodeError, T.ProbeReq([0]).encode)
    raises(ReloadEncodeError, T.ProbeInformation(1, 2**32).encode)
    raises(ReloadEncodeError, T.ConfigUpdateReq(0, b"").encode)


def check_limits():
    c = T.AttachReqAns(b"", b"", b"", [_host4()] * T.MAX_CANDIDATES)
    T.decode_attach(c.encode())
    c.candidates.append(_host4())
    _err(T.decode_attach, c.encode())
    _err(T.decode_chord_update, T.ChordUpdate(0, 2, [bytes(16)] * (T.MAX_NODES + 1)).encode())


def check_repr():
    r = repr(T.JoinReq(bytes(16)))
    assert r.startswith("JoinReq(") and "peer_id=" in r, r


def check_chord_leave_data():
    # ChordLeaveData (10.9): type from_succ(1) | successors<0..2^16-1>.
    v = unhex("01" "0020" + N1 + N2)
    d = T.decode_chord_leave_data(v)
    eq(d.type, T.LEAVE_FROM_SUCC)
    eq([x.hex() for x in d.successors], [N1, N2])
    eq(d.predecessors, [])
    eq(d.encode(), v)
    v = unhex("02" "0010" + N3)
    d = T.decode_chord_leave_data(v)
    eq([x.hex() for x in d.predecessors], [N3])
    eq(d.encode(), v)
    eq(T.ChordLeaveData(2).encode(), unhex("020000"))
    raises(ReloadDecodeError, T.decode_chord_leave_data, unhex("000000"))
    raises(ReloadDecodeError, T.decode_chord_leave_data, unhex("01000f" + N1[:30]))
    raises(ReloadDecodeError, T.decode_chord_leave_data, unhex("010010" + N1 + "00"))
    raises(ReloadEncodeError, T.ChordLeaveData(1, predecessors=[unhex(N1)]).encode)
    raises(ReloadEncodeError, T.ChordLeaveData(2, successors=[unhex(N1)]).encode)
    raises(ReloadEncodeError, T.ChordLeaveData(3).encode)
    truncations_fail([(unhex("01" "0020" + N1 + N2), T.decode_chord_leave_data)], ReloadDecodeError)
