"""SIP, SIPS and tel URIs: RFC 3261 §19.1 examples, §19.1.4 comparison, RFC 3966."""

from __future__ import annotations

import pickle
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipmesh.sip.errors import SIPParseError
from sipmesh.sip.uri import MAX_URI_LENGTH, URI, parse_uri

# RFC 3261 §19.1.3, with the components each must parse into:
# (scheme, user, password, host, port, params, headers).
RFC_EXAMPLES = [
    ("sip:alice@atlanta.com", ("sip", "alice", None, "atlanta.com", None, (), ())),
    (
        "sip:alice:secretword@atlanta.com;transport=tcp",
        ("sip", "alice", "secretword", "atlanta.com", None, (("transport", "tcp"),), ()),
    ),
    (
        "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
        ("sips", "alice", None, "atlanta.com", None, (),
         (("subject", "project x"), ("priority", "urgent"))),
    ),
    (
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        ("sip", "+1-212-555-1212", "1234", "gateway.com", None, (("user", "phone"),), ()),
    ),
    ("sips:1212@gateway.com", ("sips", "1212", None, "gateway.com", None, (), ())),
    ("sip:alice@192.0.2.4", ("sip", "alice", None, "192.0.2.4", None, (), ())),
    (
        "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
        ("sip", None, None, "atlanta.com", None, (("method", "REGISTER"),),
         (("to", "alice@atlanta.com"),)),
    ),
    ("sip:alice;day=tuesday@atlanta.com",
     ("sip", "alice;day=tuesday", None, "atlanta.com", None, (), ())),
    # §19.1.1 (ttl) and §19.1.6 (tel converted to sip).
    (
        "sip:alice@atlanta.com;maddr=239.255.255.1;ttl=15",
        ("sip", "alice", None, "atlanta.com", None,
         (("maddr", "239.255.255.1"), ("ttl", "15")), ()),
    ),
    (
        "sip:+358-555-1234567;postd=pp22@foo.com;user=phone",
        ("sip", "+358-555-1234567;postd=pp22", None, "foo.com", None, (("user", "phone"),), ()),
    ),
]


@pytest.mark.parametrize(("text", "parts"), RFC_EXAMPLES, ids=[t for t, _ in RFC_EXAMPLES])
def test_rfc3261_examples_parse_into_components(text: str, parts: tuple) -> None:
    u = parse_uri(text)
    assert (u.scheme, u.user, u.password, u.host, u.port, u.params, u.headers) == parts
    assert u.number is None
    assert str(u) == text


def test_convenience_accessors() -> None:
    u = parse_uri("sip:alice@atlanta.com;Transport=TCP;lr;maddr=239.255.255.1;ttl=15;"
                  "user=Phone;method=REGISTER;x=%41b")
    assert u.transport == "tcp"
    assert u.lr is True
    assert u.maddr == "239.255.255.1"
    assert u.ttl == 15
    assert u.user_param == "phone"
    assert u.method_param == "REGISTER"
    assert u.get_param("X") == "Ab"
    assert u.get_param("LR") is None and u.has_param("LR")
    assert u.get_param("absent", "dflt") == "dflt" and not u.has_param("absent")
    bare = parse_uri("sip:bob@biloxi.com")
    assert (bare.transport, bare.lr, bare.maddr, bare.ttl, bare.user_param,
            bare.method_param) == (None, False, None, None, None, None)


# RFC 3261 §19.1.4: "The URIs within each of the following sets are equivalent".
EQUAL_SETS = [
    ["sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"],
    ["sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5",
     "sip:carol@chicago.com;security=on"],
    ["sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"],
    ["sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"],
]

# "The URIs within each of the following sets are not equivalent", then the
# non-transitivity example and the two sip forms of equivalent tel URLs (§19.1.6).
UNEQUAL_PAIRS = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    ("sip:+358-555-1234567;postd=pp22@foo.com;user=phone",
     "sip:+358-555-1234567;POSTD=PP22@foo.com;user=phone"),
    ("sip:+358-555-1234567;postd=pp22;isub=1411@foo.com;user=phone",
     "sip:+358-555-1234567;isub=1411;postd=pp22@foo.com;user=phone"),
]


@pytest.mark.parametrize("group", EQUAL_SETS, ids=[g[0] for g in EQUAL_SETS])
def test_rfc3261_equivalent_sets(group: list[str]) -> None:
    uris = [parse_uri(t) for t in group]
    for a in uris:
        for b in uris:
            assert a == b, (str(a), str(b))
            assert hash(a) == hash(b)


@pytest.mark.parametrize(("a", "b"), UNEQUAL_PAIRS, ids=[a for a, _ in UNEQUAL_PAIRS])
def test_rfc3261_not_equivalent(a: str, b: str) -> None:
    assert parse_uri(a) != parse_uri(b)
    assert parse_uri(b) != parse_uri(a)


def test_equality_is_not_transitive() -> None:
    base, on, off = (parse_uri(t) for t in (
        "sip:carol@chicago.com", "sip:carol@chicago.com;security=on",
        "sip:carol@chicago.com;security=off"))
    assert base == on and base == off and on != off


@pytest.mark.parametrize(("a", "b", "equal"), [
    # A SIP and SIPS URI are never equivalent.
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com", False),
    ("SIPS:alice@atlanta.com", "sips:alice@atlanta.com", True),
    # Userinfo is case-sensitive, passwords and telephone-subscribers included.
    ("sip:alice:Secret@atlanta.com", "sip:alice:secret@atlanta.com", False),
    ("sip:alice:secret@atlanta.com", "sip:alice@atlanta.com", False),
    ("sip:alice:@atlanta.com", "sip:alice@atlanta.com", False),
    ("sip:atlanta.com", "sip:alice@atlanta.com", False),
    # Non-reserved characters equal their escapes (hex case irrelevant) ...
    ("sip:%61%6C%69%63%65@atlanta.com", "sip:alice@atlanta.com", True),
    ("sip:a%2fb@atlanta.com", "sip:a%2Fb@atlanta.com", True),
    ("sip:a%20b@atlanta.com", "sip:a%20b@atlanta.com", True),
    ("sip:alice@atlanta.com;x=%5Bv%5D", "sip:alice@atlanta.com;x=[v]", True),
    ("sip:alice@atlanta.com?h=%7e", "sip:alice@atlanta.com?h=~", True),
    # ... reserved ones do not.
    ("sip:a%3Bb@atlanta.com", "sip:a;b@atlanta.com", False),
    ("sip:%2B1234@gw.example.com", "sip:+1234@gw.example.com", False),
    ("sip:alice@atlanta.com;x=a%3Ab", "sip:alice@atlanta.com;x=a:b", False),
    ("sip:a%253B@atlanta.com", "sip:a%3B@atlanta.com", False),
    ("sip:a%25@atlanta.com", "sip:a%25@atlanta.com", True),
    # Host: case-insensitive; parsed address for IP literals.
    ("sip:[::1]", "sip:[0:0:0:0:0:0:0:1]", True),
    ("sip:[2001:DB8::1]:5060", "sip:[2001:db8:0::1]:5060", True),
    ("sip:[2001:db8::1]", "sip:[2001:db8::2]", False),
    ("sip:alice@atlanta.com.", "sip:alice@atlanta.com", False),
    # Port: explicit default differs from absent.
    ("sip:alice@atlanta.com:5060", "sip:alice@atlanta.com:05060", True),
    ("sips:alice@atlanta.com:5061", "sips:alice@atlanta.com", False),
    # user, ttl, method, maddr, transport in one URI only never match.
    ("sip:alice@atlanta.com;user=ip", "sip:alice@atlanta.com", False),
    ("sip:alice@atlanta.com;ttl=1", "sip:alice@atlanta.com", False),
    ("sip:alice@atlanta.com;method=INVITE", "sip:alice@atlanta.com", False),
    ("sip:alice@atlanta.com;maddr=10.0.0.1", "sip:alice@atlanta.com", False),
    ("sip:alice@atlanta.com;transport=udp", "sip:alice@atlanta.com", False),
    ("sip:alice@atlanta.com;maddr=[::1]", "sip:alice@atlanta.com;maddr=[0::1]", True),
    ("sip:alice@atlanta.com;ttl=015", "sip:alice@atlanta.com;ttl=15", True),
    # Other parameters: ignored in one only, compared case-insensitively in both.
    ("sip:alice@atlanta.com;lr", "sip:alice@atlanta.com", True),
    ("sip:alice@atlanta.com;FOO=Bar", "sip:alice@atlanta.com;foo=bAR", True),
    ("sip:alice@atlanta.com;lr", "sip:alice@atlanta.com;lr=on", False),
    # Headers: never ignored; names and values case-insensitive (RFC 3261 §7.3.1).
    ("sip:alice@atlanta.com?Subject=Hi", "sip:alice@atlanta.com?subject=hi", True),
    ("sip:alice@atlanta.com?a=1&a=2", "sip:alice@atlanta.com?a=2&a=1", True),
    ("sip:alice@atlanta.com?a=1&a=2", "sip:alice@atlanta.com?a=1", False),
    ("sip:alice@atlanta.com?a=", "sip:alice@atlanta.com", False),
])
def test_comparison_rules(a: str, b: str, equal: bool) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert (ua == ub) is equal
    assert (ub == ua) is equal
    if equal:
        assert hash(ua) == hash(ub)


def test_uri_is_not_equal_to_other_types() -> None:
    u = parse_uri("sip:alice@atlanta.com")
    assert u != "sip:alice@atlanta.com"
    assert len({u, parse_uri("sip:alice@ATLANTA.com"), parse_uri("sip:alice@atlanta.com;lr")}) == 1


def test_escaping_round_trips() -> None:
    # §19.1.2: "j@s0n" must have at least the @ sign encoded.
    u = URI("sip", "example.com", user="j@s0n")
    assert str(u) == "sip:j%40s0n@example.com"
    assert parse_uri(str(u)).user == "j@s0n"
    # Only what each component's ABNF excludes is escaped.
    u = URI("sip", "example.com", user="a;b?c/d&e=f+g$h,i:j", password="p@ss:w;rd",
            params=[("p", "a b;c=d?e@f[g]/h:i&j+k$l")], headers=[("h", "a b&c=d?e[f]/g:h+i$j@")])
    assert str(u) == (
        "sip:a;b?c/d&e=f+g$h,i%3Aj:p%40ss%3Aw%3Brd@example.com"
        ";p=a%20b%3Bc%3Dd%3Fe%40f[g]/h:i&j+k$l?h=a%20b%26c%3Dd?e[f]/g:h+i$j%40")
    back = parse_uri(str(u))
    assert back == u
    assert (back.user, back.password, back.params, back.headers) == (
        u.user, u.password, u.params, u.headers)
    # Non-ASCII as UTF-8, bytes that are not UTF-8 preserved.
    u = parse_uri("sip:J%C3%B6rg%FF@example.com")
    assert u.user == "J\xf6rg\udcff"
    assert str(URI("sip", "example.com", user=u.user)) == "sip:J%C3%B6rg%FF@example.com"


def test_text_is_kept_byte_identical() -> None:
    # Uppercase scheme, lowercase hex, needless escapes: forwarded as received.
    for text in ("SIP:%61lice@AtLanTa.CoM;Transport=TCP", "sip:a%3bb@x.example.com",
                 "sip:alice@atlanta.com:05060"):
        assert str(parse_uri(text)) == text


CANONICAL = [
    "sip:alice@atlanta.com",
    "sip:alice@atlanta.com;transport=tcp",
    "sips:bob:secret@biloxi.example.com:5061;transport=tcp;lr",
    "sip:proxy.example.com;lr",
    "sip:+12125551212@gw.example.com;user=phone",
    "sip:[2001:db8::10]:5070;transport=udp",
    "sip:alice@[::ffff:192.0.2.4]",
    "sip:192.0.2.4:5060;maddr=239.255.255.1;ttl=15",
    "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
    "sip:carol@chicago.com;security=on;newparam=5",
    "sip:j%40s0n@example.com",
    "sip:alice@atlanta.com.",
    "sip:a-b.c-d.example",
    "sip:x@h;p=[a]/b:c&d+e$f",
    "sip:x@h?h=[a]/b?c:d+e$f",
    "tel:+1-212-555-1212",
    "tel:+1(212)555.1212;ext=123;isub=12a",
    "tel:7042;phone-context=example.com",
    "tel:*99#;phone-context=+1-212",
    "tel:+358-555-1234567;postd=pp22",
]


@pytest.mark.parametrize("text", CANONICAL)
def test_canonical_uris_serialize_unchanged(text: str) -> None:
    u = parse_uri(text)
    assert str(u) == text
    assert parse_uri(str(u)) == u
    # A copy rebuilt from the components serializes identically too.
    if u.scheme == "tel":
        rebuilt = URI("tel", number=u.number, params=u.params)
    else:
        rebuilt = URI(u.scheme, u.host, user=u.user, password=u.password, port=u.port,
                      params=u.params, headers=u.headers)
    assert str(rebuilt) == text
    assert rebuilt == u


@pytest.mark.parametrize(("text", "host", "port"), [
    ("sip:[2001:db8::1]", "[2001:db8::1]", None),
    ("sip:alice@[2001:db8::1]:5070;transport=tcp", "[2001:db8::1]", 5070),
    ("sip:[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]", None),
    ("sip:[::]:0", "[::]", 0),
    ("sips:[FE80::1]:65535", "[FE80::1]", 65535),
])
def test_ipv6_references(text: str, host: str, port: int | None) -> None:
    u = parse_uri(text)
    assert (u.host, u.port) == (host, port)
    assert str(u) == text


def test_build_brackets_a_bare_ipv6_host() -> None:
    assert str(URI("sip", "2001:db8::1", port=5060)) == "sip:[2001:db8::1]:5060"


def test_tel_uris() -> None:
    u = parse_uri("tel:+1-212-555-1212;ext=12;isub=a%2Fb;Foo=Bar")
    assert (u.scheme, u.number, u.host, u.user, u.port) == (
        "tel", "+1-212-555-1212", "", None, None)
    assert u.params == (("ext", "12"), ("isub", "a/b"), ("Foo", "Bar"))
    assert u.get_param("foo") == "Bar"
    local = parse_uri("TEL:7042;phone-context=example.com")
    assert (local.scheme, local.number, local.get_param("phone-context")) == (
        "tel", "7042", "example.com")
    assert str(local) == "TEL:7042;phone-context=example.com"


@pytest.mark.parametrize(("a", "b", "equal"), [
    # RFC 3966 §4: visual separators are ignored.
    ("tel:+1-212-555-1212", "tel:+12125551212", True),
    ("tel:+1.212.555.1212", "tel:+1(212)555-1212", True),
    ("tel:+12125551212", "tel:+12125551213", False),
    # RFC 3261 §19.1.6: tel comparison is case-insensitive and order-free.
    ("tel:+358-555-1234567;postd=pp22", "tel:+358-555-1234567;POSTD=PP22", True),
    ("tel:+358-555-1234567;postd=pp22;isub=1411", "tel:+358-555-1234567;isub=1411;postd=pp22",
     True),
    # Every parameter must be in both.
    ("tel:+1234", "tel:+1234;ext=5", False),
    ("tel:+1234;foo=1", "tel:+1234", False),
    ("tel:+1234;ext=1-2", "tel:+1234;ext=12", True),
    ("tel:+1234;ext=12", "tel:+1234;ext=13", False),
    ("tel:7042;phone-context=example.com", "tel:70-42;phone-context=EXAMPLE.com", True),
    ("tel:7042;phone-context=example.com", "tel:7042;phone-context=example.org", False),
    ("tel:1234;phone-context=+1-212", "tel:1234;phone-context=+1212", True),
    ("tel:12ab;phone-context=x.example", "tel:12AB;phone-context=x.example", True),
    ("tel:*99%23;phone-context=x.example", "tel:*99#;phone-context=x.example", True),
    # A local number never equals a global one, nor does tel equal sip.
    ("tel:1234;phone-context=+1", "tel:+11234", False),
    ("tel:+1234", "sip:+1234@gw.example.com;user=phone", False),
])
def test_tel_comparison(a: str, b: str, equal: bool) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert (ua == ub) is equal
    assert (ub == ua) is equal
    if equal:
        assert hash(ua) == hash(ub)


INVALID_400 = [
    "",
    "alice@atlanta.com",  # no scheme
    ":alice@atlanta.com",
    "1sip:alice@atlanta.com",
    "sip:",
    "sip:@atlanta.com",
    "sip:alice@",
    "sip::pw@atlanta.com",
    "sip:alice@atlanta.com:",
    "sip:alice@atlanta.com:50x0",
    "sip:alice@atlanta.com:65536",
    "sip:alice@atlanta.com:99999999999",
    "sip:alice@[2001:db8::1",
    "sip:alice@[2001:db8:::1]",
    "sip:alice@[1:2:3:4:5:6:7:8:9]",
    "sip:alice@[::g]",
    "sip:alice@[]",
    "sip:alice@2001:db8::1",
    "sip:al ice@atlanta.com",
    " sip:alice@atlanta.com",
    "sip:alice@atlanta.com ",
    "sip:alice@atlanta.com\r\n",
    "sip:alice\x00@atlanta.com",
    "sip:alice@atl\tanta.com",
    "sip:%G1ice@atlanta.com",
    "sip:alice%4@atlanta.com",
    "sip:alice@atlanta.com;x=%4",
    "sip:alice@atlanta.com?h=%",
    "sip:alice@atlanta%2ecom",
    "sip:alice@-atlanta.com",
    "sip:alice@atlanta-.com",
    "sip:alice@atlanta..com",
    "sip:alice@.atlanta.com",
    "sip:alice@atlanta.123",
    "sip:alice@256.1.1.1",
    "sip:alice@1.2.3",
    "sip:alice@1.2.3.4.",
    "sip:alice@1.2.3.4.5",
    "sip:alice@atl_anta.com",
    "sip:j@s0n@atlanta.com",
    "sip:alice:pass:word@atlanta.com",
    "sip:alice:p;w@atlanta.com",
    "sip:ali<ce@atlanta.com",
    "sip:jörg@atlanta.com",
    "sip:alice@atlanta.com#frag",
    "sip:alice@atlanta.com;",
    "sip:alice@atlanta.com;=x",
    "sip:alice@atlanta.com;foo=",
    "sip:alice@atlanta.com;a=b=c",
    "sip:alice@atlanta.com;lr;LR",
    "sip:alice@atlanta.com;ttl=256",
    "sip:alice@atlanta.com;ttl=x",
    "sip:alice@atlanta.com;ttl",
    "sip:alice@atlanta.com;maddr=bad_host",
    "sip:alice@atlanta.com;maddr=[::1",
    "sip:alice@atlanta.com;p=\"q\"",
    "sip:alice@atlanta.com?",
    "sip:alice@atlanta.com?subject",
    "sip:alice@atlanta.com?=x",
    "sip:alice@atlanta.com?a=1&",
    "sip:alice@atlanta.com?a=b=c",
    "tel:",
    "tel:1234",
    "tel:+",
    "tel:+-()",
    "tel:+12a4",
    "tel:+1 234",
    "tel:+1234;ext=12a",
    "tel:+1234;ext",
    "tel:+1234;;x=1",
    "tel:+1234;ext=1;EXT=2",
    "tel:+1234;x_y=1",
    "tel:1234;phone-context=",
    "tel:1234;phone-context=-bad-.com",
    "tel:+1234;x=%zz",
    "tel:+1234?x=1",
    "http//example.com",
]

INVALID_416 = [
    "http://example.com/",
    "HTTPS://example.com/a?b=c",
    "mailto:alice@atlanta.com",
    "im:alice@atlanta.com",
    "pres:bob@biloxi.com",
    "urn:service:sos",
    "h323:alice@example.com",
    "sip.x:alice@atlanta.com",
]


@pytest.mark.parametrize("text", INVALID_400)
def test_invalid_uris_raise_400(text: str) -> None:
    with pytest.raises(SIPParseError) as info:
        parse_uri(text)
    e = info.value
    assert e.status == 400
    assert e.reason
    assert e.offset is not None and 0 <= e.offset <= len(text)


@pytest.mark.parametrize("text", INVALID_416)
def test_other_schemes_raise_416(text: str) -> None:
    with pytest.raises(SIPParseError) as info:
        parse_uri(text)
    assert info.value.status == 416


@pytest.mark.parametrize(("text", "offset", "words"), [
    ("sip:al ice@atlanta.com", 6, "space"),
    ("sip:alice@atlanta.com:50x0", 24, "character 'x'"),
    ("sip:%G1ice@atlanta.com", 4, "escape"),
    ("sip:alice@atlanta.com:65536", 22, "port"),
    ("sip:alice@[2001:db8::1", 10, "IPv6"),
    ("sip:alice@atlanta.com;lr;lr", 25, "twice"),
    ("tel:1234", 4, "phone-context"),
])
def test_errors_name_the_problem_and_where(text: str, offset: int, words: str) -> None:
    with pytest.raises(SIPParseError) as info:
        parse_uri(text)
    assert info.value.offset == offset
    assert words in info.value.reason
    assert f"offset {offset}" in str(info.value)


def test_length_limit() -> None:
    head = "sip:alice@atlanta.com;x="
    ok = head + "a" * (MAX_URI_LENGTH - len(head))
    assert str(parse_uri(ok)) == ok
    with pytest.raises(SIPParseError) as info:
        parse_uri(ok + "a")
    assert info.value.status == 414


def test_pathological_inputs_stay_fast() -> None:
    import time

    texts = ["sip:" + "a;" * 1000 + "x", "sip:" + "a" * 2040 + "!", "sip:a@" + "a-" * 1000,
             "sip:" + "a:" * 1000, "tel:+" + "-" * 2000 + "x", "sip:a@b" + ";x" * 1000]
    start = time.perf_counter()
    for text in texts:
        with pytest.raises(SIPParseError):
            parse_uri(text)
    assert time.perf_counter() - start < 0.5


def test_uris_are_immutable_values() -> None:
    u = parse_uri("sip:alice@atlanta.com")
    with pytest.raises(AttributeError):
        u.host = "biloxi.com"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        u.extra = 1  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(u)) == u
    assert repr(u) == "URI('sip:alice@atlanta.com')"


def test_derived_uris() -> None:
    u = parse_uri("sip:a%3Bb@atlanta.com;transport=UDP;lr?subject=x")
    assert str(u.replace(port=5070)) == "sip:a%3Bb@atlanta.com:5070;transport=UDP;lr?subject=x"
    # The untouched user keeps its escaped reserved character, so it still compares equal.
    assert u.replace(port=5070).replace(port=None) == u
    assert str(u.with_param("transport", "tcp")) == (
        "sip:a%3Bb@atlanta.com;transport=tcp;lr?subject=x")
    assert str(u.with_param("maddr", "10.0.0.1")).endswith(";lr;maddr=10.0.0.1?subject=x")
    assert str(u.without_param("LR")) == "sip:a%3Bb@atlanta.com;transport=UDP?subject=x"
    assert u.without_param("absent") is u
    assert str(u.replace(scheme="SIPS", user=None, headers=())) == (
        "sips:atlanta.com;transport=UDP;lr")
    assert str(u.replace(params=[("x", "a b")])) == "sip:a%3Bb@atlanta.com;x=a%20b?subject=x"
    with pytest.raises(SIPParseError):
        u.replace(host="bad host")
    with pytest.raises(SIPParseError):
        u.replace(port=70000)
    tel = parse_uri("tel:+1-212-555-1212")
    assert str(tel.with_param("ext", "7")) == "tel:+1-212-555-1212;ext=7"
    assert str(tel.replace(number="+44-20")) == "tel:+44-20"


# ---------------------------------------------------------------- properties

_TEXT = st.text(
    st.one_of(st.sampled_from([chr(c) for c in range(0x20, 0x7F)]),
              st.characters(exclude_categories=("Cs",))),
    min_size=1, max_size=8,
)
_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,5}[a-z0-9])?", fullmatch=True)
_TOP = st.from_regex(r"[a-z]([a-z0-9-]{0,5}[a-z0-9])?", fullmatch=True)
_HOSTNAME = st.builds(
    lambda labels, top, dot: ".".join([*labels, top]) + dot,
    st.lists(_LABEL, max_size=3), _TOP, st.sampled_from(["", "", "."]),
)
_HOST = st.one_of(
    _HOSTNAME,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
_PARAMS = st.lists(
    st.tuples(_TEXT.filter(lambda n: n.lower() not in ("ttl", "maddr")),
              st.none() | _TEXT),
    max_size=4, unique_by=lambda p: p[0].lower(),
)
_HEADERS = st.lists(st.tuples(_TEXT, st.text(max_size=6)), max_size=3)


@st.composite
def _sip_uris(draw: st.DrawFn) -> URI:
    user = draw(st.none() | _TEXT)
    return URI(
        draw(st.sampled_from(["sip", "sips"])),
        draw(_HOST),
        user=user,
        password=None if user is None else draw(st.none() | st.text(max_size=6)),
        port=draw(st.none() | st.integers(0, 65535)),
        params=draw(_PARAMS),
        headers=draw(_HEADERS),
    )


@settings(max_examples=600)
@given(_sip_uris())
def test_property_build_serialize_parse(u: URI) -> None:
    text = str(u)
    back = parse_uri(text)
    assert back == u and hash(back) == hash(u)
    assert (back.scheme, back.user, back.password, back.host, back.port, back.params,
            back.headers) == (u.scheme, u.user, u.password, u.host, u.port, u.params, u.headers)
    assert str(back) == text
    assert text.isascii() and " " not in text


_UNRESERVED = re.compile(r"[A-Za-z0-9\-_.!~*'()]")
_TOKEN = re.compile(r"%[0-9A-Fa-f]{2}|.", re.S)


def _variant(raw: str, draw: st.DrawFn, *, fold: bool) -> str:
    """An equivalent spelling of an escaped component (RFC 3261 §19.1.4): unreserved
    characters optionally escaped, hex in either case, letters in either case if
    the component compares case-insensitively."""
    out = []
    for tok in _TOKEN.findall(raw):
        if len(tok) == 3:
            tok = "%" + "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in tok[1:])
        elif _UNRESERVED.fullmatch(tok) and draw(st.booleans()):
            tok = "%" + draw(st.sampled_from([f"{ord(tok):02x}", f"{ord(tok):02X}"]))
        elif fold and tok.isalpha():
            tok = draw(st.sampled_from([tok.lower(), tok.upper()]))
        out.append(tok)
    return "".join(out)


@settings(max_examples=600)
@given(_sip_uris(), st.data())
def test_property_equivalent_spellings_compare_equal(u: URI, data: st.DataObject) -> None:
    draw = data.draw
    text = str(u)
    _, _, rest = text.partition(":")
    m = re.fullmatch(
        r"(?:([^:@]*)(?::([^@]*))?@)?(\[[^\]]*\]|[^:;?]*)(?::(\d+))?((?:;[^?]*)?)(?:\?(.*))?",
        rest)
    assert m is not None
    user, password, host, port, params, headers = m.groups()
    scheme = draw(st.sampled_from([u.scheme, u.scheme.upper(), u.scheme.capitalize()]))
    spelled = scheme + ":"
    if user is not None:
        spelled += _variant(user, draw, fold=False)
        if password is not None:
            spelled += ":" + _variant(password, draw, fold=False)
        spelled += "@"
    upper = draw(st.lists(st.booleans(), min_size=len(host), max_size=len(host)))
    spelled += "".join(c.upper() if up else c for c, up in zip(host, upper, strict=True))
    if port is not None:
        spelled += ":" + port
    plist = [_variant(p, draw, fold=True) for p in params.split(";")[1:]]
    hlist = [_variant(h, draw, fold=True) for h in headers.split("&")] if headers else []
    spelled += "".join(";" + p for p in draw(st.permutations(plist)))
    if hlist:
        spelled += "?" + "&".join(draw(st.permutations(hlist)))
    other = parse_uri(spelled)
    assert str(other) == spelled
    assert other == u and u == other
    assert hash(other) == hash(u)
    assert other.user == u.user and other.password == u.password


@settings(max_examples=500)
@given(
    st.lists(st.sampled_from("0123456789"), min_size=1, max_size=12),
    st.data(),
)
def test_property_tel_visual_separators(digits: list[str], data: st.DataObject) -> None:
    plain = "tel:+" + "".join(digits)
    spaced = "tel:+" + "".join(
        d + data.draw(st.sampled_from(["", "", "-", ".", "(", ")"])) for d in digits)
    assert parse_uri(spaced) == parse_uri(plain)
    assert str(parse_uri(spaced)) == spaced
