"""Property tests: serialize(parse(x)) parses to an equal message; streams frame anything.

Messages are generated with the variations real equipment produces:
compact and mixed-case names, folding, odd whitespace around colons,
several values per row or one row per value, unknown headers, bodies.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipmesh.sip.message import Message
from sipmesh.sip.parser import KeepAlive, StreamParser, parse_message

TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
                min_size=1, max_size=12)
HOST = st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,3}", fullmatch=True)
USER = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}", fullmatch=True)
PORT = st.one_of(st.none(), st.integers(min_value=1, max_value=65535))


@st.composite
def sip_uri(draw) -> str:
    host = draw(HOST)
    port = draw(PORT)
    user = draw(st.one_of(st.none(), USER))
    params = draw(st.lists(st.sampled_from([";transport=tcp", ";lr", ";user=phone",
                                            ";maddr=192.0.2.1", ";x-y=z"]),
                           unique=True, max_size=3))
    return (f"sip:{user + '@' if user else ''}{host}{':' + str(port) if port else ''}"
            + "".join(params))


def name(draw, full: str, compact: str | None = None) -> str:
    choices = [full, full.lower(), full.upper()] + ([compact] if compact else [])
    return draw(st.sampled_from(choices))


def sep(draw) -> str:
    return draw(st.sampled_from([": ", ":", " : ", "\t:\t", ":  "]))


@st.composite
def message(draw) -> bytes:
    method = draw(st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "BYE", "MESSAGE", "FOO"]))
    rows = []
    vias = draw(st.lists(st.tuples(st.sampled_from(["UDP", "TCP", "TLS"]), HOST, PORT,
                                   st.text("abcdef0123456789", min_size=1, max_size=10)),
                         min_size=1, max_size=4))
    via_texts = [f"SIP/2.0/{t} {h}{':' + str(p) if p else ''};branch=z9hG4bK{b}"
                 for t, h, p, b in vias]
    if draw(st.booleans()):
        rows.append(name(draw, "Via", "v") + sep(draw) + ", ".join(via_texts))
    else:
        rows += [name(draw, "Via", "v") + sep(draw) + v for v in via_texts]
    display = draw(st.one_of(st.none(), st.just('"Alice A."'), st.just("Bob"),
                             st.just('"Q \\" uote"')))
    to = f"{display + ' ' if display else ''}<{draw(sip_uri())}>"
    rows.append(name(draw, "To", "t") + sep(draw) + to)
    rows.append(name(draw, "From", "f") + sep(draw) + f"<{draw(sip_uri())}>;tag={draw(TOKEN)}")
    rows.append(name(draw, "Call-ID", "i") + sep(draw) + draw(TOKEN) + "@" + draw(HOST))
    rows.append(name(draw, "CSeq") + sep(draw)
                + f"{draw(st.integers(0, 2**31 - 1))} {method}")
    rows.append(name(draw, "Max-Forwards") + sep(draw) + str(draw(st.integers(0, 255))))
    for _ in range(draw(st.integers(0, 3))):
        rows.append(name(draw, "Contact", "m") + sep(draw) + f"<{draw(sip_uri())}>;q=0.5")
    for _ in range(draw(st.integers(0, 3))):
        rows.append("X-" + draw(TOKEN) + sep(draw) + draw(st.text(
            alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), max_size=30)))
    if draw(st.booleans()):
        opts = draw(st.lists(TOKEN, min_size=1, max_size=4))
        rows.append(name(draw, "Supported", "k") + sep(draw) + ",\r\n " .join(opts))
    rows = draw(st.permutations(rows)) if draw(st.booleans()) else rows
    body = draw(st.binary(max_size=200))
    if body:
        rows.append(name(draw, "Content-Type", "c") + sep(draw) + "application/octet-stream")
    rows.append(name(draw, "Content-Length", "l") + sep(draw) + str(len(body)))
    start = f"{method} {draw(sip_uri())} SIP/2.0"
    return ("\r\n".join([start, *rows]) + "\r\n\r\n").encode() + body


def typed(m: Message) -> tuple:
    return (
        [str(v) for v in m.via], m.from_, m.to, m.call_id, m.cseq, m.max_forwards,
        m.contact, m.supported, m.content_length, m.body,
    )


@settings(max_examples=600, deadline=None)
@given(message())
def test_serialize_parse_round_trip(raw: bytes) -> None:
    m = parse_message(raw)
    assert m.validate() == []
    again = parse_message(m.to_bytes())
    assert again.equivalent(m)
    assert typed(again) == typed(m)
    assert again.to_bytes() == m.to_bytes()


@settings(max_examples=200, deadline=None)
@given(st.lists(message(), min_size=1, max_size=5), st.data())
def test_stream_framing_any_chunking(raws: list[bytes], data) -> None:
    """Messages and keep-alives split at random points come out whole and in order."""
    stream = b""
    for raw in raws:
        stream += raw + draw_keepalive(data)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    parser = StreamParser()
    out = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out += parser.feed(stream[last:cut])
        last = cut
    msgs = [m for m in out if isinstance(m, Message)]
    assert not parser.broken
    assert [m.to_bytes() for m in msgs] == [parse_message(r).to_bytes() for r in raws]
    assert all(isinstance(o, Message | KeepAlive) for o in out)


def draw_keepalive(data) -> bytes:
    return data.draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]))


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_raises_anything_else(raw: bytes) -> None:
    from sipmesh.sip.errors import SIPParseError

    try:
        m = parse_message(raw)
    except SIPParseError:
        return
    m.validate()
    StreamParser().feed(raw)


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_mutated_messages_are_answered_or_dropped(data) -> None:
    """Damaged real messages: the server path never raises anything but SIPParseError."""
    from sip_cases import CASES, SUPPORTED

    from sipmesh.sip.errors import SIPParseError
    from sipmesh.sip.message import Request
    from sipmesh.sip.reject import check_request, error_response

    raw = bytearray(data.draw(st.sampled_from(CASES)).raw[:3000])
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = data.draw(st.sampled_from(b" \t\r\n:;,<>\"@=\\/%[]0aZ\xff"))
        if op == "flip":
            raw[i] = byte
        elif op == "insert":
            raw.insert(i, byte)
        else:
            del raw[i]
    try:
        msg = parse_message(bytes(raw))
        err = None
    except SIPParseError as e:
        msg, err = e.message, e
    if not isinstance(msg, Request):
        return
    msg.validate()
    err = err or check_request(msg, SUPPORTED)
    if err is not None:
        answer = error_response(msg, err)
        if answer is not None:
            again = parse_message(answer.to_bytes())
            assert again.status == err.status
