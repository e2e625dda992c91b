"""Hand-written SIP messages, valid-but-strange and invalid, each with its expected outcome.

Written for this project in the spirit of RFC 4475's torture tests.
``expect`` is "ok" (parses, passes a UAS's checks), "drop" (nothing can be
answered: responses, or requests without a usable Via/From/To/Call-ID/CSeq)
or (status, words): the status a server answers and words its reason
phrase must contain (for 400s). ``proxy`` cases are judged as a proxy
would (Max-Forwards, Proxy-Require).
"""

from __future__ import annotations

from dataclasses import dataclass

SUPPORTED = ("100rel", "timer", "path")

SDP = (
    "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n"
    "c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)

BASE = [
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.example.com>",
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com>",
]


@dataclass
class Case:
    name: str
    raw: bytes
    expect: object
    proxy: bool = False


def msg(start: str, rows: list[str], body: str = "", *, length: int | None = -1) -> bytes:
    """A message from a start line and rows; Content-Length added unless length is None."""
    rows = list(rows)
    if length is not None:
        rows.append(f"Content-Length: {len(body.encode()) if length == -1 else length}")
    return ("\r\n".join([start, *rows]) + "\r\n\r\n" + body).encode()


def replace(rows: list[str], prefix: str, new: str | None) -> list[str]:
    """rows with the row starting with prefix replaced (or removed when new is None)."""
    out = []
    for r in rows:
        if r.startswith(prefix):
            if new is not None:
                out.append(new)
        else:
            out.append(r)
    return out


INV = "INVITE sip:bob@biloxi.example.com SIP/2.0"
SDP_ROWS = [*BASE, "Content-Type: application/sdp"]


def reg(rows: list[str]) -> list[str]:
    return [r.replace("314159 INVITE", "1 REGISTER") for r in rows]


CASES = [
    # --- valid, some of them strange --------------------------------------
    Case("invite-with-sdp", msg(INV, SDP_ROWS, SDP), "ok"),
    Case("compact-forms", msg(INV, [
        "v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
        "Max-Forwards: 70", "t: <sip:bob@biloxi.example.com>",
        "f: <sip:alice@atlanta.example.com>;tag=1", "i: abc@host", "CSeq: 1 INVITE",
        "m: <sip:alice@pc33.atlanta.example.com>", "c: application/sdp", "k: timer",
        "s: compact", "l: " + str(len(SDP))], SDP, length=None), "ok"),
    Case("folded-rows", msg(INV, [*BASE, "Subject: I know you're there,\r\n pick up the phone",
                                  "Supported: timer,\r\n\t100rel"]), "ok"),
    Case("spaces-around-colons", msg(INV, [*BASE[:-1], "Contact   :   <sip:a@b.example>",
                                           "Subject\t:\tlunch"]), "ok"),
    Case("mixed-case-names", msg(INV, [r.replace("Call-ID", "cALL-iD").replace("CSeq", "cseq")
                                       for r in BASE]), "ok"),
    Case("many-vias", msg(INV, [
        "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/TCP p2.example.com:5070"
        ";branch=z9hG4bK2", "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK3",
        *BASE[1:]]), "ok"),
    Case("via-spaced-slashes", msg(INV, [
        "Via: SIP / 2.0 / UDP  pc33.atlanta.example.com : 5060 ;branch=z9hG4bKspace",
        *BASE[1:]]), "ok"),
    Case("via-ipv6-rport", msg(INV, [
        "Via: SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKv6;rport;received=2001:db8::9:255",
        *BASE[1:]]), "ok"),
    Case("escaped-request-uri", msg(
        "INVITE sip:%61lice@atlanta.example.com;transport=TCP SIP/2.0", BASE), "ok"),
    Case("quoted-display-escapes", msg(INV, [
        *replace(BASE, "From:", 'From: "Alice \\"the\\" \\\\ Smith" <sip:alice@a.example>'
                 ";tag=88")]), "ok"),
    Case("unquoted-multiword-display", msg(INV, [
        *replace(BASE, "To:", "To: Bob  Q  Public <sip:bob@biloxi.example.com>")]), "ok"),
    Case("addr-spec-with-tag", msg(INV, [
        *replace(BASE, "From:", "From: sip:alice@atlanta.example.com;tag=xyz")]), "ok"),
    Case("register-contact-star", msg("REGISTER sip:registrar.example.com SIP/2.0", [
        *replace(reg(BASE), "Contact:", "Contact: *"), "Expires: 0"]), "ok"),
    Case("contact-list-with-params", msg("REGISTER sip:registrar.example.com SIP/2.0", [
        *replace(reg(BASE), "Contact:", 'Contact: <sip:a@192.0.2.4>;q=0.7;expires=3600, '
                 '"Mr. Watson" <mailto:watson@bell.example>;q=0.1')]), "ok"),
    Case("unknown-method", msg("NEWMETHOD sip:bob@biloxi.example.com SIP/2.0",
                               [r.replace("INVITE", "NEWMETHOD") for r in BASE]), "ok"),
    Case("unknown-headers-kept", msg(INV, [*BASE, "X-Weird: a,,b;;c", "Y: =\"\"",
                                           "NewFangledHeader:   newfangled value"]), "ok"),
    Case("leading-crlfs", b"\r\n\r\n" + msg(INV, BASE), "ok"),
    Case("empty-subject", msg(INV, [*BASE, "Subject:"]), "ok"),
    Case("tel-request-uri", msg("INVITE tel:+1-201-555-0123 SIP/2.0", BASE), "ok"),
    Case("sips-request-uri", msg("INVITE sips:bob@biloxi.example.com SIP/2.0", BASE), "ok"),
    Case("no-content-length-datagram", msg(INV, SDP_ROWS, SDP, length=None), "ok"),
    Case("extra-bytes-after-body", msg(INV, SDP_ROWS, SDP, length=len(SDP)) + b"junk", "ok"),
    Case("authorization-quoted-commas", msg(INV, [*BASE,
         'Authorization: Digest username="al,ice", realm="atlanta.example.com", '
         'nonce="84a4cc6f3082121f32b42a2187831a9e", uri="sip:bob@biloxi.example.com", '
         'response="7587245234b3434cc3412213e5f113a5", algorithm=MD5, qop=auth, nc=00000001, '
         'cnonce="0a4f113b"']), "ok"),
    Case("route-set", msg(INV, [*BASE, "Route: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>",
                                "Route: <sip:p3.example.com;lr>"]), "ok"),
    Case("max-forwards-0-uas", msg("OPTIONS sip:bob@biloxi.example.com SIP/2.0", [
        *replace([r.replace("INVITE", "OPTIONS") for r in BASE], "Max-Forwards:",
                 "Max-Forwards: 0")]), "ok"),
    Case("require-supported-option", msg(INV, [*BASE, "Require: 100rel"]), "ok"),
    Case("call-id-word-chars", msg(INV, replace(
        BASE, "Call-ID:", "Call-ID: ~%!*_+`'()<>:\\\"/[]?{}@h-1.example")), "ok"),
    Case("cseq-max", msg(INV, replace(BASE, "CSeq:", "CSeq: 2147483647 INVITE")), "ok"),
    Case("ipv6-request-uri", msg("INVITE sip:bob@[2001:db8::10]:5070 SIP/2.0", BASE), "ok"),
    Case("utf8-display-name", msg(INV, replace(
        BASE, "To:", 'To: "Zoë Dupont" <sip:zoe@biloxi.example.com>')), "ok"),
    Case("lowercase-version", msg("INVITE sip:bob@biloxi.example.com sip/2.0", BASE), "ok"),
    Case("header-params-case", msg(INV, [*replace(
        BASE, "Contact:", "CONTACT: <sip:alice@atlanta.example.com>;ExPiReS=3600")]), "ok"),
    Case("accept-list", msg("OPTIONS sip:bob@biloxi.example.com SIP/2.0", [
        *[r.replace("INVITE", "OPTIONS") for r in BASE],
        "Accept: application/sdp, text/plain;charset=utf-8"]), "ok"),
    Case("response-200-register", msg("SIP/2.0 200 OK", [
        "Via: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7;received=192.0.2.4",
        "To: Bob <sip:bob@biloxi.example.com>;tag=2493k59kd",
        "From: Bob <sip:bob@biloxi.example.com>;tag=456248", "Call-ID: 843817637684230@998sdasdh09",
        "CSeq: 1826 REGISTER", "Contact: <sip:bob@192.0.2.4>;expires=7200", "Expires: 7200"]),
        "ok"),
    Case("response-empty-reason", msg("SIP/2.0 200 ", reg(BASE)), "ok"),
    Case("response-utf8-reason", msg("SIP/2.0 486 Occupé ici", BASE), "ok"),
    Case("response-custom-code", msg("SIP/2.0 299 Something New", BASE), "ok"),
    # --- invalid requests that must be answered ---------------------------
    Case("missing-call-id", msg(INV, replace(BASE, "Call-ID:", None)), "drop"),
    Case("missing-from", msg(INV, replace(BASE, "From:", None)), "drop"),
    Case("missing-to", msg(INV, replace(BASE, "To:", None)), "drop"),
    Case("missing-cseq", msg(INV, replace(BASE, "CSeq:", None)), "drop"),
    Case("missing-via", msg(INV, replace(BASE, "Via:", None)), "drop"),
    Case("missing-max-forwards", msg(INV, replace(BASE, "Max-Forwards:", None)),
         (400, "Max-Forwards")),
    Case("cseq-method-mismatch", msg(INV, replace(BASE, "CSeq:", "CSeq: 1 BYE")),
         (400, "CSeq method")),
    Case("cseq-not-numeric", msg(INV, replace(BASE, "CSeq:", "CSeq: one INVITE")), "drop"),
    Case("cseq-too-big", msg(INV, replace(BASE, "CSeq:", "CSeq: 2147483648 INVITE")), "drop"),
    Case("two-call-ids", msg(INV, [*BASE, "Call-ID: second@host"]), "drop"),
    Case("body-shorter-than-content-length", msg(INV, SDP_ROWS, SDP, length=len(SDP) + 50),
         (400, "Content-Length")),
    Case("content-length-negative", msg(INV, BASE, length=None).replace(
        b"\r\n\r\n", b"\r\nContent-Length: -1\r\n\r\n"), (400, "Content-Length")),
    Case("version-7", msg("INVITE sip:bob@biloxi.example.com SIP/7.0", BASE), (505, "")),
    Case("version-garbled", msg("INVITE sip:bob@biloxi.example.com SIP/2.0x", BASE),
         (400, "version")),
    Case("http-request-uri", msg("INVITE http://www.example.com/bob SIP/2.0", BASE), (416, "")),
    Case("im-request-uri", msg("MESSAGE im:bob@biloxi.example.com SIP/2.0",
                               [r.replace("INVITE", "MESSAGE") for r in BASE]), (416, "")),
    Case("unknown-require", msg(INV, [*BASE, "Require: nothingweknow, 100rel"]), (420, "")),
    Case("max-forwards-0-proxy", msg(INV, replace(BASE, "Max-Forwards:", "Max-Forwards: 0")),
         (483, ""), proxy=True),
    Case("unknown-proxy-require", msg(INV, [*BASE, "Proxy-Require: foo"]), (420, ""),
         proxy=True),
    Case("too-large", msg(INV, SDP_ROWS, SDP + "a=x-pad:" + "p" * 70000 + "\r\n"), (513, "")),
    Case("row-without-colon", msg(INV, [*BASE, "This line has no colon"]), (400, "colon")),
    Case("bad-header-name", msg(INV, [*BASE, "Bad Name: x"]), (400, "header name")),
    Case("invalid-utf8", msg(INV, BASE).replace(b"Contact: <", b"Contact: \xff<"),
         (400, "UTF-8")),
    Case("unterminated-display-name", msg(INV, replace(
        BASE, "To:", 'To: "Bob <sip:bob@biloxi.example.com>')), "drop"),
    Case("to-without-closing-bracket", msg(INV, replace(
        BASE, "Contact:", "Contact: <sip:alice@pc33.atlanta.example.com")), (400, "Contact")),
    Case("contact-star-in-invite", msg(INV, replace(BASE, "Contact:", "Contact: *")),
         (400, "Contact")),
    Case("contact-star-with-expires", msg("REGISTER sip:registrar.example.com SIP/2.0", [
        *replace(reg(BASE), "Contact:", "Contact: *"), "Expires: 3600"]), (400, "Contact")),
    Case("duplicate-to-tag", msg(INV, [*replace(BASE, "Contact:", "Contact: <sip:a@b.example>"
                                                ";expires=1;EXPIRES=2")]), (400, "given twice")),
    Case("max-forwards-300", msg(INV, replace(BASE, "Max-Forwards:", "Max-Forwards: 300")),
         (400, "Max-Forwards")),
    Case("expires-not-numeric", msg(INV, [*BASE, "Expires: soon"]), (400, "Expires")),
    Case("request-uri-bad-port", msg("INVITE sip:bob@biloxi.example.com:99999 SIP/2.0", BASE),
         (400, "Request-URI")),
    Case("request-uri-empty-host", msg("INVITE sip:bob@ SIP/2.0", BASE), (400, "Request-URI")),
    Case("content-type-no-slash", msg(INV, [*BASE, "Content-Type: applicationsdp"]),
         (400, "Content-Type")),
    Case("authorization-unterminated", msg(INV, [*BASE, 'Authorization: Digest username="a']),
         (400, "Authorization")),
    Case("call-id-empty", msg(INV, replace(BASE, "Call-ID:", "Call-ID:")), "drop"),
    Case("folded-before-any-header", msg(INV, [" continued", *BASE]), (400, "continuation")),
    # --- invalid requests that cannot be answered -------------------------
    Case("via-bad-protocol", msg(INV, replace(
        BASE, "Via:", "Via: SIP/2.0 UDP pc33.atlanta.example.com;branch=z9hG4bK1")), "drop"),
    Case("via-bad-rport", msg(INV, replace(
        BASE, "Via:", "Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1;rport=abc")), "drop"),
    Case("request-line-four-parts", msg("INVITE sip:bob@biloxi.example.com extra SIP/2.0",
                                        BASE), "drop"),
    Case("method-not-token", msg("INV@ITE sip:bob@biloxi.example.com SIP/2.0", BASE), "drop"),
    Case("bare-lf-lines", msg(INV, BASE).replace(b"\r\n", b"\n"), "drop"),
    Case("no-blank-line", msg(INV, BASE)[:-4], "drop"),
    Case("ack-bad-cseq", msg("ACK sip:bob@biloxi.example.com SIP/2.0", BASE), "drop"),
    # --- invalid responses are dropped ------------------------------------
    Case("response-code-999", msg("SIP/2.0 999 Nope", BASE), "drop"),
    Case("response-code-short", msg("SIP/2.0 20 OK", BASE), "drop"),
    Case("response-missing-cseq", msg("SIP/2.0 200 OK", replace(BASE, "CSeq:", None)), "drop"),
    Case("response-version-3", msg("SIP/3.0 200 OK", BASE), "drop"),
]
