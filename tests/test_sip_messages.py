"""The hand-written message set: each message gets its expected outcome.

For requests, "what a server does" is: parse, run the UAS (or proxy)
checks, then answer with the error response or drop the message. The
expected status and the words of the reason phrase are asserted, and the
answer itself must be a well-formed response that our parser reads back.
"""

from __future__ import annotations

import pytest
from sip_cases import CASES, SUPPORTED, Case

from sipmesh.sip.errors import SIPParseError
from sipmesh.sip.message import Request, Response
from sipmesh.sip.parser import parse_message
from sipmesh.sip.reject import check_request, error_response


def judge(case: Case) -> tuple[object, Response | None, Request | None]:
    """(outcome, answer, request as parsed) as a server would decide for the raw message."""
    try:
        msg = parse_message(case.raw)
        err = None
    except SIPParseError as e:
        msg, err = e.message, e
    if isinstance(msg, Response) or msg is None:
        if err is not None or msg is None or msg.validate():
            return "drop", None, None
        return "ok", None, None
    assert isinstance(msg, Request)
    if err is None:
        err = check_request(msg, SUPPORTED, proxy=case.proxy)
        if err is None:
            return "ok", None, msg
    answer = error_response(msg, err)
    if answer is None:
        return "drop", None, msg
    return err.status, answer, msg


def test_the_set_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case) -> None:
    outcome, answer, req = judge(case)
    if case.expect in ("ok", "drop"):
        assert outcome == case.expect
        return
    status, words = case.expect
    assert outcome == status
    assert answer is not None
    again = parse_message(answer.to_bytes())
    assert isinstance(again, Response) and again.status == status
    assert words in again.reason
    assert not again.validate()
    assert req is not None
    assert again.call_id == req.call_id
    assert again.cseq == req.cseq
    assert [str(v) for v in again.via] == [str(v) for v in req.via]
    assert again.to.tag  # a tag is added to the To of every final answer
    if status == 420:
        assert again.unsupported


def test_valid_messages_survive_serialization() -> None:
    for case in CASES:
        if case.expect != "ok":
            continue
        msg = parse_message(case.raw)
        again = parse_message(msg.to_bytes())
        assert again.equivalent(msg), case.name
        assert again.to_bytes() == msg.to_bytes(), case.name


def test_compact_and_folded_values_are_read() -> None:
    by_name = {c.name: c for c in CASES}
    m = parse_message(by_name["compact-forms"].raw)
    assert m.call_id == "abc@host"
    assert m.content_type.mime == "application/sdp"
    assert m.supported == ["timer"]
    assert m.get("subject") == "compact"
    assert m.content_length == len(m.body) > 0
    f = parse_message(by_name["folded-rows"].raw)
    assert f.get("Subject") == "I know you're there, pick up the phone"
    assert f.supported == ["timer", "100rel"]


def test_via_details() -> None:
    by_name = {c.name: c for c in CASES}
    m = parse_message(by_name["many-vias"].raw)
    assert [v.branch for v in m.via] == ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3"]
    assert m.via[1].sent_by == ("p2.example.com", 5070)
    assert m.via[1].transport == "TCP"
    s = parse_message(by_name["via-spaced-slashes"].raw).top_via
    assert (s.transport, s.host, s.port) == ("UDP", "pc33.atlanta.example.com", 5060)
    v6 = parse_message(by_name["via-ipv6-rport"].raw).top_via
    assert v6.host == "[2001:db8::9:1]" and v6.port == 6050
    assert v6.param("rport") == "" and v6.param("received") == "2001:db8::9:255"


def test_addresses() -> None:
    by_name = {c.name: c for c in CASES}
    m = parse_message(by_name["quoted-display-escapes"].raw)
    assert m.from_.display == 'Alice "the" \\ Smith'
    assert m.from_.tag == "88"
    m = parse_message(by_name["unquoted-multiword-display"].raw)
    assert m.to.display == "Bob Q Public"
    m = parse_message(by_name["addr-spec-with-tag"].raw)
    assert m.from_.tag == "xyz" and m.from_.uri.get_param("tag") is None
    m = parse_message(by_name["contact-list-with-params"].raw)
    assert [c.param("q") for c in m.contact] == ["0.7", "0.1"]
    assert m.contact[0].param("expires") == "3600"
    m = parse_message(by_name["register-contact-star"].raw)
    assert m.contact[0].wildcard and m.expires == 0


def test_unknown_headers_are_kept_verbatim() -> None:
    by_name = {c.name: c for c in CASES}
    raw = by_name["unknown-headers-kept"].raw
    m = parse_message(raw)
    assert m.get("x-weird") == "a,,b;;c"
    assert m.get("NewFangledHeader") == "newfangled value"
    assert b"X-Weird: a,,b;;c\r\n" in m.to_bytes()


def test_datagram_framing() -> None:
    by_name = {c.name: c for c in CASES}
    m = parse_message(by_name["extra-bytes-after-body"].raw)
    assert not m.body.endswith(b"junk")
    m = parse_message(by_name["no-content-length-datagram"].raw)
    assert m.body.startswith(b"v=0") and m.get("content-length") is None
