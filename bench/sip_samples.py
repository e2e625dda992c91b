"""SIP messages for sip_bench.py, as they arrive off the wire (bytes, CRLF line ends).

Both are written for this benchmark (not captured from a device) to look
like what a branch-office proxy sees every day:

- ``INVITE``: a desk phone behind the proxy calls another extension; the
  proxy has already added its own Via on top, the phone's Via carries
  ``received``, and the SDP offers PCMU, PCMA and RFC 4733 DTMF (about
  900 bytes in all).
- ``REGISTER_200``: the registrar's 200 OK to a REGISTER from a phone behind
  NAT (Via with ``received`` and ``rport`` filled in, the binding echoed in
  Contact with its ``expires``, no body).

Every header row is written as ``Name: value`` with one space after the
colon, because pyVoIP (one of the anchors) splits rows on ``": "``.
"""

from __future__ import annotations

CRLF = b"\r\n"


def _message(head: list[bytes], body: bytes = b"") -> bytes:
    """Start line and rows, Content-Length made true, blank line, body."""
    return CRLF.join([*head, b"Content-Length: %d" % len(body), b"", b""]) + body


INVITE_SDP = CRLF.join([
    b"v=0",
    b"o=alice 2890844526 2890844526 IN IP4 192.168.10.23",
    b"s=-",
    b"c=IN IP4 192.168.10.23",
    b"t=0 0",
    b"m=audio 49170 RTP/AVP 0 8 101",
    b"a=rtpmap:0 PCMU/8000",
    b"a=rtpmap:8 PCMA/8000",
    b"a=rtpmap:101 telephone-event/8000",
    b"a=fmtp:101 0-16",
    b"a=ptime:20",
    b"a=sendrecv",
    b"",
])

INVITE = _message(
    [
        b"INVITE sip:bob@branch1.example.com SIP/2.0",
        b"Via: SIP/2.0/UDP 10.20.0.1:5060;branch=z9hG4bK7f3a91c0e2d4b5a6.0;rport",
        b"Via: SIP/2.0/UDP 192.168.10.23:5060;received=192.168.10.23;"
        b"branch=z9hG4bK3e1d0a5c8b7f42a9;rport=5060",
        b"Max-Forwards: 69",
        b'To: "Bob Jones" <sip:bob@branch1.example.com>',
        b'From: "Alice Smith" <sip:alice@branch1.example.com>;tag=9fxced76sl',
        b"Call-ID: 3848276298220188511@192.168.10.23",
        b"CSeq: 314159 INVITE",
        b"Contact: <sip:alice@192.168.10.23:5060;transport=udp>",
        b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, UPDATE, PRACK, INFO",
        b"Supported: replaces, timer, 100rel",
        b"User-Agent: Deskphone-X3 2.4.1.17",
        b"Content-Type: application/sdp",
    ],
    INVITE_SDP,
)

REGISTER_200 = _message([
    b"SIP/2.0 200 OK",
    b"Via: SIP/2.0/UDP 192.168.10.23:5060;branch=z9hG4bKnashds7a2f1;"
    b"received=203.0.113.7;rport=49152",
    b"To: <sip:alice@branch1.example.com>;tag=37GkEhwl6",
    b"From: <sip:alice@branch1.example.com>;tag=456248",
    b"Call-ID: 843817637684230@998sdasdh09",
    b"CSeq: 1826 REGISTER",
    b"Contact: <sip:alice@192.168.10.23:5060;transport=udp>;expires=3600",
    b"Expires: 3600",
    b"Date: Tue, 11 Mar 2025 09:41:27 GMT",
    b"Server: sipmesh/0.3",
])

# key -> (label, raw bytes), in the order the benchmark reports them
MESSAGES = {
    "invite": ("INVITE+SDP", INVITE),
    "register_200": ("200 OK (REGISTER)", REGISTER_200),
}
