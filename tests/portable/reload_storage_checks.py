"""Portable checks of sipmesh.proto.reload_storage (RFC 6940 section 7 bodies).

The hex vectors below were written byte by byte from the RFC's structures
(7, 7.2, 7.4.1, 7.4.2, 7.4.4, 6.3.4 for the Signature), not produced by the
encoder. Randomness is a fixed-seed xorshift32 so both runtimes run the
same cases.
"""

from portable import Rng, eq, mutations_decode_or_fail, raises, truncations_fail, unhex

from sipmesh.proto import reload as R
from sipmesh.proto import reload_storage as S
from sipmesh.proto.reload import ReloadDecodeError, ReloadEncodeError

NODE = "00112233445566778899aabbccddeeff"
HASH32 = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
SIG64 = "5a" * 64
MODELS = {1: S.MODEL_SINGLE, 2: S.MODEL_ARRAY, 3: S.MODEL_DICTIONARY}

IDENTITY = "0100220420" + HASH32  # SignerIdentity cert_hash(1), 34 bytes
# Signature: intrinsic(8) / ed25519(7), identity, signature_value<0..2^16-1>
SIGNATURE = "0807" + IDENTITY + "0040" + SIG64
# The synthetic "none" signature of 7.4.2.2: {0, 0}, identity none(3), no value
NO_SIG = "00000300000000"

# Vector 1: StoreReq of a single value, 155 bytes.
STORE_SINGLE = "".join([
    "04" "deadbeef",  # resource: ResourceId<0..2^8-1>
    "00",  # replica_number = 0 (original store)
    "00000091",  # kind_data<0..2^32-1>: 145 bytes
    "00000001",  # StoreKindData.kind = 1 (single value)
    "0000000000000005",  # generation_counter = 5
    "00000081",  # values<0..2^32-1>: 129 bytes
    "0000007d",  # StoredData.length = 125 (excluding itself)
    "0000018bcfe56800",  # storage_time = 1700000000000 ms
    "00000e10",  # lifetime = 3600 s
    "01" "00000003" "616263",  # DataValue: exists = True, value "abc"
    SIGNATURE,  # 105 bytes
])  # fmt: skip

# Vector 2: StoreReq of two array entries (replica 1), 92 bytes.
STORE_ARRAY = "".join([
    "04" "deadbeef",  # resource
    "01",  # replica_number = 1
    "00000052",  # kind_data: 82 bytes
    "00000002",  # kind = 2 (array)
    "0000000000000000",  # generation_counter = 0
    "00000042",  # values: 66 bytes
    "0000001e",  # StoredData.length = 30
    "0000000000000001" "0000003c",  # storage_time 1, lifetime 60
    "00000007" "01" "00000002" "6869",  # ArrayEntry index 7: exists, "hi"
    NO_SIG,
    "0000001c",  # StoredData.length = 28
    "0000000000000001" "0000003c",  # storage_time 1, lifetime 60
    "00000008" "00" "00000000",  # ArrayEntry index 8: exists = False (removal)
    NO_SIG,
])  # fmt: skip

# Vector 3: StoreReq of one dictionary entry, 60 bytes.
STORE_DICT = "".join([
    "04" "deadbeef" "00",  # resource, replica_number 0
    "00000032",  # kind_data: 50 bytes
    "00000003" "0000000000000002",  # kind = 3 (dictionary), generation 2
    "00000022",  # values: 34 bytes
    "0000001e",  # StoredData.length = 30
    "0000000000000002" "0000003c",  # storage_time 2, lifetime 60
    "0003" "6b6579" "01" "00000001" "76",  # DictionaryEntry key "key": exists, "v"
    NO_SIG,
])  # fmt: skip

# Vector 4: FetchReq with array, dictionary and single specifiers, 76 bytes.
FETCH = "".join([
    "04" "deadbeef",  # resource
    "0045",  # specifiers<0..2^16-1>: 69 bytes
    "00000002" "0000000000000000",  # kind 2 (array), generation 0
    "0012",  # length of the rest: 18
    "0010",  # ArrayRange indices<0..2^16-1>: 16 bytes
    "00000000" "00000003",  # first 0, last 3
    "0000000a" "ffffffff",  # first 10, last = final element
    "00000003" "0000000000000009",  # kind 3 (dictionary), generation 9
    "0009",  # length of the rest: 9
    "0007" "0003" "6b6579" "0000",  # keys<0..2^16-1>: "key" and the empty key
    "00000001" "0000000000000005" "0000",  # kind 1 (single), generation 5, length 0
])  # fmt: skip

# Vector 5: StoreAns, 32 bytes.
STORE_ANS = "".join([
    "001e",  # kind_responses<0..2^16-1>: 30 bytes
    "00000001" "0000000000000006",  # kind 1, generation_counter 6
    "0010" + NODE,  # replicas NodeId<0..2^16-1>: one Node-ID
])  # fmt: skip

# Vector 6: FindReq and FindAns.
FIND_REQ = "04deadbeef080000000100000002"  # kinds<0..2^8-1>: 1 and 2
FIND_ANS = "00090000000104cafebabe"  # one FindKindData: kind 1, closest

MSIG = R.Signature(R.SignerIdentity(R.ID_NONE), b"", 0, 0)



def _patch(h, offset, new_hex):
    b = bytearray(unhex(h))
    nb = unhex(new_hex)
    b[offset : offset + len(nb)] = nb
    return bytes(b)


def _store(b):
    return S.decode_store_req(b, MODELS)


def _fetch(b):
    return S.decode_fetch_req(b, MODELS)


def _stat(b):
    return S.decode_stat_req(b, MODELS)


def _fetch_ans(b):
    return S.decode_fetch_ans(b, MODELS)


def _stat_ans(b):
    return S.decode_stat_ans(b, MODELS)


def _err(fn, data, code=R.ERROR_INVALID_MESSAGE):
    e = raises(ReloadDecodeError, fn, data)
    eq(e.code, code, "error code of %s" % e)
    return e


def check_vector_lengths():
    eq(len(unhex(STORE_SINGLE)), 155, "single")
    eq(len(unhex(STORE_ARRAY)), 92, "array")
    eq(len(unhex(STORE_DICT)), 60, "dictionary")
    eq(len(unhex(FETCH)), 76, "fetch")
    eq(len(unhex(STORE_ANS)), 32, "store ans")


def check_store_single_fields():
    m = _store(unhex(STORE_SINGLE))
    eq(m.resource, unhex("deadbeef"), "resource")
    eq(m.replica_number, 0, "replica")
    eq(len(m.kind_data), 1, "kinds")
    kd = m.kind_data[0]
    eq((kd.kind, kd.generation_counter), (1, 5), "kind, generation")
    eq(len(kd.values), 1, "values")
    v = kd.values[0]
    eq(v.storage_time, 1700000000000, "storage_time")
    eq(v.lifetime, 3600, "lifetime")
    eq(v.value, S.DataValue(True, b"abc"), "value")
    eq(v.signature.identity, R.SignerIdentity(R.ID_CERT_HASH, 4, unhex(HASH32)), "identity")
    eq(v.signature.value, unhex(SIG64), "signature")
    eq(m.encode().hex(), STORE_SINGLE, "re-encode")
    built = S.StoreReq(
        unhex("deadbeef"),
        0,
        [
            S.StoreKindData(
                1,
                5,
                [
                    S.StoredData(
                        1700000000000,
                        3600,
                        S.DataValue(True, b"abc"),
                        R.Signature(
                            R.SignerIdentity(R.ID_CERT_HASH, R.HASH_SHA256, unhex(HASH32)),
                            unhex(SIG64),
                        ),
                    )
                ],
            )
        ],
    )
    eq(built.encode().hex(), STORE_SINGLE, "built from objects")
    eq(built, m, "equal objects")


def check_store_array_fields():
    m = _store(unhex(STORE_ARRAY))
    eq(m.replica_number, 1, "replica")
    kd = m.kind_data[0]
    eq((kd.kind, kd.generation_counter), (2, 0), "kind, generation")
    eq(
        [v.value for v in kd.values],
        [S.ArrayEntry(7, S.DataValue(True, b"hi")), S.ArrayEntry(8, S.DataValue(False))],
        "entries",
    )
    eq(kd.values[0].signature, MSIG, "none signature")
    eq(m.encode().hex(), STORE_ARRAY, "re-encode")
    built = S.StoreReq(
        unhex("deadbeef"),
        1,
        [
            S.StoreKindData(
                2,
                0,
                [
                    S.StoredData(1, 60, S.ArrayEntry(7, S.DataValue(1, b"hi")), MSIG),
                    S.StoredData(1, 60, S.ArrayEntry(8, S.DataValue(0)), MSIG),
                ],
            )
        ],
    )
    eq(built.encode().hex(), STORE_ARRAY, "built")


def check_store_dictionary_fields():
    m = _store(unhex(STORE_DICT))
    kd = m.kind_data[0]
    eq((kd.kind, kd.generation_counter), (3, 2), "kind, generation")
    eq(kd.values[0].value, S.DictionaryEntry(b"key", S.DataValue(True, b"v")), "entry")
    eq(kd.values[0].storage_time, 2, "storage time")
    eq(m.encode().hex(), STORE_DICT, "re-encode")


def check_fetch_fields():
    m = _fetch(unhex(FETCH))
    eq(m.resource, unhex("deadbeef"), "resource")
    eq(
        m.specifiers,
        [
            S.StoredDataSpecifier(2, 0, S.MODEL_ARRAY, [(0, 3), (10, S.ARRAY_LAST)]),
            S.StoredDataSpecifier(3, 9, S.MODEL_DICTIONARY, [b"key", b""]),
            S.StoredDataSpecifier(1, 5, S.MODEL_SINGLE),
        ],
        "specifiers",
    )
    eq(m.encode().hex(), FETCH, "re-encode")
    st = _stat(unhex(FETCH))
    assert isinstance(st, S.StatReq)
    eq(st.specifiers, m.specifiers, "StatReq has the same shape")
    eq(st.encode().hex(), FETCH, "stat re-encode")
    assert st != m, "StatReq is not a FetchReq"


def check_small_bodies():
    a = S.decode_store_ans(unhex(STORE_ANS))
    eq(a, S.StoreAns([S.StoreKindResponse(1, 6, [unhex(NODE)])]), "StoreAns")
    eq(a.encode().hex(), STORE_ANS, "StoreAns re-encode")
    f = S.decode_find_req(unhex(FIND_REQ))
    eq(f, S.FindReq(unhex("deadbeef"), [1, 2]), "FindReq")
    eq(f.encode().hex(), FIND_REQ, "FindReq re-encode")
    fa = S.decode_find_ans(unhex(FIND_ANS))
    eq(fa, S.FindAns([S.FindKindData(1, unhex("cafebabe"))]), "FindAns")
    eq(fa.encode().hex(), FIND_ANS, "FindAns re-encode")
    eq(S.StatAns().encode().hex(), "00000000", "empty StatAns")
    eq(S.FetchAns().encode().hex(), "00000000", "empty FetchAns")
    # StatAns by hand: one kind 1 response with one single-value StoredMetaData
    stat = "".join([
        "0000002b",  # kind_responses: 43 bytes
        "00000001" "0000000000000005",  # kind 1, generation 5
        "0000001b",  # values: 27 bytes
        "00000007" "0000018bcfe56800" "00000e10",  # value_length, storage_time, lifetime
        "01" "00000003" "04" "04" "01020304",  # MetaData: exists, length 3, sha256, hash
    ])  # fmt: skip
    sa = _stat_ans(unhex(stat))
    eq(
        sa,
        S.StatAns(
            [
                S.StatKindResponse(
                    1,
                    5,
                    [
                        S.StoredMetaData(
                            7, 1700000000000, 3600, S.MetaData(True, 3, 4, b"\x01\x02\x03\x04")
                        )
                    ],
                )
            ]
        ),
        "StatAns",
    )
    eq(sa.encode().hex(), stat, "StatAns re-encode")


def check_signed_bytes():
    m = _store(unhex(STORE_SINGLE))
    v = m.kind_data[0].values[0]
    want = "deadbeef000000010000018bcfe568000100000003616263" + IDENTITY
    got = S.stored_data_signed_bytes(m.resource, 1, v.storage_time, v.value, v.signature.identity)
    eq(got.hex(), want, "signature input")
    got = S.stored_data_signed_bytes(
        unhex("deadbeef"), 1, 1700000000000, unhex("0100000003616263"), unhex(IDENTITY)
    )
    eq(got.hex(), want, "from bytes")
    a = _store(unhex(STORE_ARRAY)).kind_data[0].values[0]
    got = S.stored_data_signed_bytes(b"\x01", 2, 1, a.value, a.signature.identity)
    # 7.4.2.2: an array entry is signed with its index (7 here) set to zero.
    eq(got.hex(), "010000000200000000000000010000000001000000026869030000", "array")
    got = S.stored_data_signed_bytes(b"\x01", 2, 1, a.value.encode(), a.signature.identity)
    eq(got.hex(), "010000000200000000000000010000000701000000026869030000", "array bytes")


# ---------------------------------------------------------------- random


def _rand_value(rng, model, meta=False):
    if meta:
        leaf = S.MetaData(rng.below(2), rng.next(), rng.below(9), rng.bytes(rng.below(33)))
    else:
        leaf = S.DataValue(rng.below(2), rng.bytes(rng.below(20)))
    if model == S.MODEL_SINGLE:
        return leaf
    if model == S.MODEL_ARRAY:
        return S.ArrayEntry(rng.next(), leaf)
    return S.DictionaryEntry(rng.bytes(rng.below(6)), leaf)


def _rand_sig(rng):
    if rng.below(2):
        return MSIG
    return R.Signature(
        R.SignerIdentity(R.ID_CERT_HASH, R.HASH_SHA256, rng.bytes(32)), rng.bytes(64)
    )


def _rand_stored(rng, model):
    t = (rng.next() << 16) | rng.below(65536)
    return S.StoredData(t, rng.next(), _rand_value(rng, model), _rand_sig(rng))


def _rand_kinds(rng):
    ks = [1, 2, 3]
    out = []
    for _ in range(1 + rng.below(3)):
        out.append(ks.pop(rng.below(len(ks))))
    return out


def _rand_store(rng):
    kd = [
        S.StoreKindData(k, rng.next(), [_rand_stored(rng, MODELS[k]) for _ in range(rng.below(4))])
        for k in _rand_kinds(rng)
    ]
    return S.StoreReq(rng.bytes(rng.below(33)), rng.below(4), kd)


def _rand_spec(rng, k):
    m = MODELS[k]
    items = ()
    if m == S.MODEL_ARRAY:
        items = []
        for _ in range(rng.below(4)):
            a = rng.next()
            items.append((a, a + rng.below(0x100000000 - a)))
    elif m == S.MODEL_DICTIONARY:
        items = [rng.bytes(rng.below(5)) for _ in range(rng.below(4))]
    return S.StoredDataSpecifier(k, rng.next(), m, items)


def _rand_fetch(rng, cls=S.FetchReq):
    return cls(rng.bytes(rng.below(33)), [_rand_spec(rng, k) for k in _rand_kinds(rng)])


def _rand_fetch_ans(rng):
    return S.FetchAns(
        [
            S.FetchKindResponse(
                k, rng.next(), [_rand_stored(rng, MODELS[k]) for _ in range(rng.below(3))]
            )
            for k in _rand_kinds(rng)
        ]
    )


def _rand_stat_ans(rng):
    return S.StatAns(
        [
            S.StatKindResponse(
                k,
                rng.next(),
                [
                    S.StoredMetaData(
                        rng.next(), rng.next(), rng.next(), _rand_value(rng, MODELS[k], True)
                    )
                    for _ in range(rng.below(3))
                ],
            )
            for k in _rand_kinds(rng)
        ]
    )


def _rand_store_ans(rng):
    return S.StoreAns(
        [
            S.StoreKindResponse(k, rng.next(), [rng.bytes(16) for _ in range(rng.below(3))])
            for k in _rand_kinds(rng)
        ]
    )


def _rand_find(rng):
    if rng.below(2):
        return S.FindReq(rng.bytes(rng.below(20)), _rand_kinds(rng))
    return S.FindAns(
        [S.FindKindData(rng.next(), rng.bytes(rng.below(20))) for _ in range(rng.below(4))]
    )


def _decoder(obj):
    t = type(obj)
    if t is S.StoreReq:
        return _store
    if t is S.StatReq:
        return _stat
    if t is S.FetchReq:
        return _fetch
    if t is S.FetchAns:
        return _fetch_ans
    if t is S.StatAns:
        return _stat_ans
    if t is S.StoreAns:
        return S.decode_store_ans
    if t is S.FindReq:
        return S.decode_find_req
    return S.decode_find_ans


def _rand_body(rng):
    k = rng.below(7)
    if k == 0:
        return _rand_store(rng)
    if k == 1:
        return _rand_fetch(rng)
    if k == 2:
        return _rand_fetch(rng, S.StatReq)
    if k == 3:
        return _rand_fetch_ans(rng)
    if k == 4:
        return _rand_stat_ans(rng)
    if k == 5:
        return _rand_store_ans(rng)
    return _rand_find(rng)


def _vectors():
    return [
        (unhex(STORE_SINGLE), _store),
        (unhex(STORE_ARRAY), _store),
        (unhex(STORE_DICT), _store),
        (unhex(FETCH), _fetch),
        (unhex(STORE_ANS), S.decode_store_ans),
        (unhex(FIND_REQ), S.decode_find_req),
        (unhex(FIND_ANS), S.decode_find_ans),
    ]


def check_round_trip_random():
    rng = Rng(11)
    for _ in range(150):
        m = _rand_body(rng)
        b = m.encode()
        back = _decoder(m)(b)
        assert back == m, "round trip of %r" % (m,)
        eq(back.encode(), b, "re-encode")


def check_every_truncation():
    rng = Rng(5)
    samples = _vectors()
    for _ in range(8):
        m = _rand_body(rng)
        samples.append((m.encode(), _decoder(m)))
    truncations_fail(samples, ReloadDecodeError)


def check_random_mutations():
    # Anything decoded from damaged bytes must re-encode to the very same
    # bytes (one encoding per value); anything else is ReloadDecodeError.
    rng = Rng(3)
    base = _vectors()
    for _ in range(5):
        m = _rand_body(rng)
        base.append((m.encode(), _decoder(m)))
    decoded = mutations_decode_or_fail(rng, base, ReloadDecodeError, 1000)
    assert decoded > 20, "some mutations decode (%d)" % decoded


# ---------------------------------------------------------------- rules


def check_lengths_inconsistent():
    # StoredData.length one more / one less than its contents
    _err(_store, _patch(STORE_SINGLE, 26, "0000007e"))
    e = _err(_store, _patch(STORE_SINGLE, 26, "0000007c"))
    eq(e.offset < 155, True, "offset inside")
    # values list one byte longer than the StoredData it holds
    _err(_store, _patch(STORE_SINGLE, 22, "00000082"))
    _err(_store, _patch(STORE_SINGLE, 22, "00000080"))
    # kind_data length off
    _err(_store, _patch(STORE_SINGLE, 6, "00000090"))
    _err(_store, _patch(STORE_SINGLE, 6, "00000092"))
    # a huge list length
    _err(_store, _patch(STORE_SINGLE, 6, "ffffffff"))
    # DataValue length running past its StoredData
    _err(_store, _patch(STORE_SINGLE, 43, "00000004"))
    # FetchReq: the specifier length, the indices length, the specifiers length
    _err(_fetch, _patch(FETCH, 19, "0011"))
    _err(_fetch, _patch(FETCH, 19, "0013"))
    _err(_fetch, _patch(FETCH, 21, "000f"))
    _err(_fetch, _patch(FETCH, 5, "0044"))
    # single-value specifier must have length 0
    b = bytearray(unhex(FETCH))
    b[5:7] = b"\x00\x46"
    b[-2:] = b"\x00\x01"
    b.append(0)
    _err(_fetch, bytes(b))
    # StoreAns replicas list not a multiple of 16 bytes
    _err(S.decode_store_ans, _patch(STORE_ANS, 14, "000f"))
    # FindReq kinds not a multiple of 4 bytes
    _err(S.decode_find_req, _patch(FIND_REQ, 5, "07"))


def check_unknown_kind():
    e = _err(lambda b: S.decode_store_req(b, {1: S.MODEL_SINGLE}), unhex(STORE_ARRAY), 0x0C)
    eq(R.ERROR_UNKNOWN_KIND, 0x0C, "Error_Unknown_Kind (14.9)")
    eq(e.kinds, [2], "unknown kinds")
    eq(e.offset, 10, "offset of the kind")
    eq(e.error_info.hex(), "0400000002", "error_info KindId unknown_kinds<0..2^8-1>")
    # two unknown kinds in one request are both reported
    two = S.StoreReq(
        b"\x01",
        0,
        [
            S.StoreKindData(7, 0, [_rand_stored(Rng(1), S.MODEL_SINGLE)]),
            S.StoreKindData(1, 0),
            S.StoreKindData(9, 0),
        ],
    ).encode()
    e = _err(_store, two, 0x0C)
    eq(e.kinds, [7, 9], "both unknown kinds")
    eq(e.error_info.hex(), "080000000700000009", "error_info")
    # a malformed body is an invalid message even if a kind is unknown
    _err(lambda b: S.decode_store_req(b, {}), unhex(STORE_ARRAY)[:-1])
    # unknown kinds in Fetch, Stat and the answers
    e = _err(lambda b: S.decode_fetch_req(b, {1: S.MODEL_SINGLE}), unhex(FETCH), 0x0C)
    eq(e.kinds, [2, 3], "fetch unknown kinds")
    _err(lambda b: S.decode_stat_req(b, {}), unhex(FETCH), 0x0C)
    ans = S.FetchAns([S.FetchKindResponse(5, 0)]).encode()
    _err(_fetch_ans, ans, 0x0C)
    _err(_stat_ans, ans, 0x0C)
    eq(S.unknown_kinds_info([]).hex(), "00", "empty list")
    raises(ReloadEncodeError, S.unknown_kinds_info, list(range(64)))


def check_boolean_not_0_1():
    e = _err(_store, _patch(STORE_SINGLE, 42, "02"))
    eq(e.offset, 42, "offset of exists")
    _err(_store, _patch(STORE_SINGLE, 42, "ff"))
    _err(_store, _patch(STORE_ARRAY, 46, "02"))
    # StoredData exists = False decodes
    m = _store(_patch(STORE_SINGLE, 42, "00"))
    eq(m.kind_data[0].values[0].value.exists, False, "exists false")
    meta = S.StoredMetaData(0, 0, 0, S.MetaData(True, 0, 0)).encode()
    stat = S.StatAns([S.StatKindResponse(1, 0)]).encode()
    good = stat[:-4] + R._u32(len(meta)) + meta
    good = R._u32(len(good) - 4) + good[4:]
    _stat_ans(good)
    bad = bytearray(good)
    bad[len(good) - len(meta) + 16] = 2
    _err(_stat_ans, bytes(bad))


def check_duplicate_kinds():
    d = S.StoreReq(b"", 0, [S.StoreKindData(1, 0), S.StoreKindData(1, 1)]).encode()
    e = _err(_store, d)
    eq(e.offset, 1 + 1 + 4 + 16, "offset of the repeated kind")
    _err(S.decode_find_req, S.FindReq(b"", [2, 2]).encode())
    # FetchReq may name a kind twice (the RFC does not forbid it)
    f = S.FetchReq(b"", [S.StoredDataSpecifier(1, 0, S.MODEL_SINGLE)] * 2).encode()
    eq(_fetch(f).encode(), f, "fetch with a repeated kind")


def check_array_range_order():
    _err(_fetch, _patch(FETCH, 23, "00000004"))
    raises(ReloadEncodeError, S.StoredDataSpecifier(2, 0, S.MODEL_ARRAY, [(5, 4)]).encode)
    eq(
        S.StoredDataSpecifier(2, 0, S.MODEL_ARRAY, [(4, 4)]).encode().hex(),
        "000000020000000000000000000a00080000000400000004",
        "first == last",
    )


def check_encode_errors():
    raises(ReloadEncodeError, S.StoreReq(b"x" * 256).encode)
    raises(ReloadEncodeError, S.StoreReq(b"", 256).encode)
    raises(ReloadEncodeError, S.StoreKindResponse(1, 0, [b"\x00" * 15]).encode)
    raises(ReloadEncodeError, S.StoredDataSpecifier(1, 0, "tree").encode)
    raises(ReloadEncodeError, S.StoredDataSpecifier(1, 0, S.MODEL_SINGLE, [b"k"]).encode)
    raises(ReloadEncodeError, S.FindReq(b"", list(range(64))).encode)
    raises(ReloadEncodeError, S.MetaData(True, 0, 0, b"x" * 256).encode)
    raises(ReloadEncodeError, S.StoredData(-1, 0, S.DataValue(True), MSIG).encode)
    raises(ReloadEncodeError, S.ArrayEntry(2**32, S.DataValue(True)).encode)


def check_limits():
    kd = [S.StoreKindData(1, 0, [S.StoredData(0, 0, S.DataValue(False), MSIG)] * S.MAX_VALUES)]
    b = S.StoreReq(b"", 0, kd).encode()
    _store(b)
    kd[0].values.append(kd[0].values[0])
    _err(_store, S.StoreReq(b"", 0, kd).encode())
    spec = S.StoredDataSpecifier(3, 0, S.MODEL_DICTIONARY, [b""] * (S.MAX_ITEMS + 1))
    _err(_fetch, S.FetchReq(b"", [spec]).encode())


def check_repr():
    r = repr(S.DataValue(True, b"a"))
    assert r.startswith("DataValue(") and "exists=True" in r, r
