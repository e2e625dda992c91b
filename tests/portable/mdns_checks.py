"""Portable checks of sipmesh.proto.mdns (RFC 1035 §4 with RFC 6762 §18 bits).

The hand-written vectors are checked byte for byte; malformed inputs must
raise MdnsError and nothing else, on both runtimes.
"""

from portable import Rng, damage, eq, raises, unhex

from sipmesh.proto import mdns
from sipmesh.proto.mdns import MdnsError, Message, Question, Record

SVC = "_sipmesh-board._tcp.local"
INST = "sm-0123456789ab." + SVC
HOST = "sm-0123456789ab.local"


def _announce():
    return Message(0, mdns.FLAG_QR | mdns.FLAG_AA, answers=[
        Record(SVC, mdns.TYPE_PTR, INST, 4500),
        Record(INST, mdns.TYPE_SRV, (0, 0, 7381, HOST), 120, True),
        Record(INST, mdns.TYPE_TXT, [b"v=1", b"id=sm-0123456789ab", b"name="], 4500, True),
        Record(HOST, mdns.TYPE_A, "10.77.0.2", 120, True),
    ], additional=[
        Record(HOST, mdns.TYPE_NSEC, (HOST, [mdns.TYPE_A]), 120, True),
        Record(INST, mdns.TYPE_NSEC, (INST, [mdns.TYPE_TXT, mdns.TYPE_SRV]), 4500, True),
    ])


def _same(a, b):
    eq(len(a.records()), len(b.records()), "record count")
    for x, y in zip(a.records(), b.records()):
        eq((x.name, x.rtype, x.data, x.ttl, x.flush, x.rclass),
           (y.name, y.rtype, y.data, y.ttl, y.flush, y.rclass), "record")


def check_query_vector_with_qu_bit():
    q = Message(0, 0, [Question("_http._tcp.local", mdns.TYPE_PTR, unicast=True)])
    want = unhex("0000 0000 0001 0000 0000 0000"
                 "05 5f68747470 04 5f746370 05 6c6f63616c 00 000c 8001")
    eq(q.encode(), want, "query bytes")
    m = mdns.decode(want)
    eq((m.questions[0].name, m.questions[0].qtype, m.questions[0].qclass,
        m.questions[0].unicast), ("_http._tcp.local", 12, 1, True), "question")
    eq(m.is_response(), False, "is a query")


def check_response_vector_compression_and_flush():
    m = Message(0, 0x8400, answers=[
        Record("a.local", mdns.TYPE_A, "192.0.2.1", 120, True),
        Record("b.a.local", mdns.TYPE_PTR, "a.local", 4500),
    ])
    want = unhex("0000 8400 0000 0002 0000 0000"
                 "01 61 05 6c6f63616c 00 0001 8001 00000078 0004 c0000201"
                 "01 62 c00c 000c 0001 00001194 0002 c00c")
    eq(m.encode(), want, "response bytes")
    d = mdns.decode(want)
    eq([(r.name, r.data, r.flush) for r in d.answers],
       [("a.local", "192.0.2.1", True), ("b.a.local", "a.local", False)], "records")


def check_announcement_round_trip():
    m = _announce()
    b = m.encode()
    d = mdns.decode(b)
    _same(m, d)
    eq(d.flags, 0x8400, "flags")
    eq(d.additional[1].data, (INST, [mdns.TYPE_TXT, mdns.TYPE_SRV]), "NSEC types sorted")
    eq(d.encode(), b, "re-encodes identically")
    eq(len(b) < 230, True, "names are compressed (%d bytes)" % len(b))


def check_names_compare_case_insensitively_and_compress_so():
    m = Message(answers=[Record("Foo.LOCAL", mdns.TYPE_A, "1.2.3.4"),
                         Record("bar.foo.local", mdns.TYPE_A, "1.2.3.5")])
    b = m.encode()
    eq(b.count(b"local"), 0, "case-folded compression reuses LOCAL")
    eq(mdns.same_name("Foo.LOCAL", "foo.local"), True, "same name")
    eq(m.answers[0].same(Record("foo.local", mdns.TYPE_A, "1.2.3.4", 4500, True)), True, "same")


def check_dots_and_backslashes_in_instance_labels():
    name = "Branch 1\\.0 con\\\\troller._sipmesh._tcp.local"
    m = Message(answers=[Record("_sipmesh._tcp.local", mdns.TYPE_PTR, name)])
    b = m.encode()
    eq(b"\x16Branch 1.0 con\\troller" in b, True, "one label with a dot and a backslash")
    eq(mdns.decode(b).answers[0].data, name, "escapes read back")


def check_txt_helpers():
    items = mdns.txt_items({"v": 1, "id": "sm-1", "flag": None, "raw": b"\x00\xff"})
    eq(items, [b"flag", b"id=sm-1", b"raw=\x00\xff", b"v=1"], "sorted items")
    eq(mdns.txt_dict(items + [b"V=2", b"=x"]),
       {"flag": None, "id": "sm-1", "raw": b"\x00\xff", "v": "1"}, "first key wins")
    raises(MdnsError, mdns.txt_items, {"a=b": "c"})
    raises(MdnsError, mdns.txt_items, {"k": "x" * 300})
    empty = Message(answers=[Record("x.local", mdns.TYPE_TXT, [])]).encode()
    eq(empty[-3:], b"\x00\x01\x00", "empty TXT is one zero-length string (RFC 6763 §6.1)")
    eq(mdns.decode(empty).answers[0].data, [], "decodes to []")


def check_unknown_types_keep_raw_rdata():
    m = Message(answers=[Record("h.local", mdns.TYPE_AAAA, bytes(range(16)))])
    eq(mdns.decode(m.encode()).answers[0].data, bytes(range(16)), "AAAA raw")
    raises(MdnsError, Message(answers=[Record("h.local", 99, "text")]).encode)


def check_pointer_loops_and_forward_pointers_refused():
    head = unhex("0000 0000 0001 0000 0000 0000")
    raises(MdnsError, mdns.decode, head + unhex("c00c 000c 0001"))  # points at itself
    raises(MdnsError, mdns.decode, head + unhex("c00e 00 000c 0001"))  # forward
    # a -> pointer back to a label sequence that leads to the same pointer
    raises(MdnsError, mdns.decode, head + unhex("01 61 c00c 000c 0001"))
    ok = head[:5] + b"\x02" + head[6:] + unhex("01 61 00 000c 0001 01 62 c00c 000c 0001")
    eq([q.name for q in mdns.decode(ok).questions], ["a", "b.a"], "backward pointer")


def check_label_and_name_limits():
    raises(MdnsError, Message(questions=[Question("x" * 64 + ".local", 1)]).encode)
    raises(MdnsError, Message(questions=[Question("a..local", 1)]).encode)
    long = ".".join(["x" * 63] * 4)
    raises(MdnsError, Message(questions=[Question(long, 1)]).encode)
    ok = ".".join(["x" * 63] * 3 + ["x" * 61])
    back = mdns.decode(Message(questions=[Question(ok, 1)]).encode())
    eq(back.questions[0].name, ok, "253 chars")
    head = unhex("0000 0000 0001 0000 0000 0000")
    raises(MdnsError, mdns.decode, head + b"\x40" + b"x" * 64 + unhex("00 0001 0001"))
    wire = b"".join(b"\x3f" + b"x" * 63 for _ in range(4)) + b"\x00"
    raises(MdnsError, mdns.decode, head + wire + unhex("0001 0001"))
    raises(MdnsError, mdns.decode, head + unhex("01 ff 00 0001 0001"))  # not UTF-8


def check_count_and_size_limits():
    qs = [Question("q%d.local" % i, 1) for i in range(mdns.MAX_ENTRIES + 1)]
    raises(MdnsError, Message(questions=qs).encode)
    raises(MdnsError, mdns.decode, unhex("0000 0000 0065 0000 0000 0000") + bytes(600))
    big = [Record("t%d.local" % i, mdns.TYPE_TXT, [b"x" * 250] * 4) for i in range(9)]
    raises(MdnsError, Message(answers=big).encode)
    raises(MdnsError, mdns.decode, bytes(mdns.MAX_MESSAGE + 1))


def check_truncations_raise():
    b = _announce().encode()
    mdns.decode(b)
    for i in range(len(b)):
        raises(MdnsError, mdns.decode, b[:i])
    raises(MdnsError, mdns.decode, b + b"\x00")


def check_damaged_messages_decode_or_raise_mdns_error():
    rng = Rng(0x6762)
    base = _announce().encode()
    decoded = 0
    for _ in range(300):
        b = bytes(damage(rng, base))
        try:
            mdns.decode(b)
        except MdnsError:
            continue
        decoded += 1
    eq(decoded > 0, True, "some damaged messages still decode")


def check_bad_rdata_refused():
    head = unhex("0000 8400 0000 0001 0000 0000 01 61 00")
    raises(MdnsError, mdns.decode, head + unhex("0001 0001 00000078 0003 010203"))
    raises(MdnsError, mdns.decode, head + unhex("0010 0001 00000078 0002 0561"))
    raises(MdnsError, mdns.decode, head + unhex("0021 0001 00000078 0006 000000000000"))
    raises(MdnsError, mdns.decode, head + unhex("002f 0001 00000078 0004 c00c 0000"))
    raises(MdnsError, mdns.decode, head + unhex("000c 0001 00000078 0003 c00c 00"))


def check_decode_keep_materialises_only_chosen_records():
    b = _announce().encode()
    m = mdns.decode(b, lambda name: name == HOST)
    eq([(r.rtype, r.data) for r in m.records()],
       [(mdns.TYPE_A, "10.77.0.2"), (mdns.TYPE_NSEC, (HOST, [mdns.TYPE_A]))], "host records")
    raises(MdnsError, mdns.decode, b[:-1], lambda name: False)
