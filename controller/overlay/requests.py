"""Requests a RELOAD peer originates: errors, answers and retransmission state
(RFC 6940 §6.2.1, §6.3.3.1)."""

from __future__ import annotations

import asyncio

from sipmesh.overlay.ids import ID_LEN
from sipmesh.proto import reload as rl

WILDCARD = b"\xff" * ID_LEN  # §6.1.1: the wildcard Node-ID
MAX_TRANSMISSIONS = 5  # §6.2.1: up to 4 retransmissions


class OverlayError(Exception):
    """A request failed: ``code`` is the RELOAD error code (§14.9) the peer
    answered with, or Error_Request_Timeout when nobody answered."""

    def __init__(self, code: int, reason: str = "", info: bytes = b""):
        super().__init__(reason or f"RELOAD error {code}")
        self.code = code
        self.reason = reason
        self.info = info


class Response:
    """An answer to one of our requests: code, body, the responder's Node-ID
    and the number of overlay hops the request took."""

    __slots__ = ("code", "body", "responder", "hops", "message")

    def __init__(self, code: int, body: bytes, responder: bytes, hops: int, message):
        self.code = code
        self.body = body
        self.responder = responder
        self.hops = hops
        self.message = message


class Pending:
    """One outstanding request of ours."""

    __slots__ = ("future", "dests", "code", "body", "link", "sent", "timer", "extra", "via_link")

    def __init__(self, future, dests, code, body, extra, via_link):
        self.future = future
        self.dests = dests
        self.code = code
        self.body = body
        self.extra = extra
        self.via_link = via_link
        self.link = None
        self.sent = 0
        self.timer = None


def dest_int(d: rl.Destination) -> int | None:
    if d.type in (rl.DEST_NODE, rl.DEST_RESOURCE) and len(d.value) == ID_LEN:
        return int.from_bytes(d.value, "big")
    return None


def error_body(e: OverlayError) -> bytes:
    info = e.info or e.reason.encode("utf-8", "replace")[:255]
    return rl.ErrorResponse(e.code, info).encode()


def ignore(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()
