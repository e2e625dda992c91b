"""The board's LAN client: pull the signed configuration, post heartbeats.

A board speaks just enough HTTP/1.1 (RFC 9112) to talk to its controller's
configuration endpoint, one request per connection (``Connection: close``,
RFC 9112 §9.6): no keep-alive, no pipelining, no chunked coding (a
response with Transfer-Encoding is refused; the controller always sends
Content-Length). fw_app imports this module for one pull or heartbeat and
drops it afterwards; the bounded reader it uses (a line of at most 512
bytes, at most 32 header fields, a body of at most 8 KiB) is fw_http's, the
push listener's, and the whole exchange has a deadline. Every failure is
one ``LanError``.

Runs on MicroPython's asyncio and on CPython's.
"""

import asyncio

from fw_http import _body, _headers, _line


class LanError(Exception):
    """The one error of this module: an HTTP exchange that failed.

    ``status`` is the HTTP status the peer answered, or 0 when there was no
    usable answer (connection, timeout, malformed response); ``text`` says why.
    """

    def __init__(self, status, text):
        super().__init__(status, text)
        self.status = status
        self.text = text


async def _exchange(host, port, head, body):
    """Send one request, read its response: (status, header fields, body bytes)."""
    rd, w = await asyncio.open_connection(host, port)
    try:
        w.write(head)
        if body:
            w.write(body)
        await w.drain()
        r = [rd, bytearray(1024), 0, 0]
        # 1xx answers are interim, the final one follows (RFC 9110 §15.2); a few at most.
        for _ in range(4):
            p = (await _line(r)).split(None, 2)
            if (
                len(p) < 2
                or not p[0].startswith(b"HTTP/1.")
                or len(p[1]) != 3
                or not p[1].isdigit()
            ):
                raise ValueError("malformed")
            st = int(p[1])
            f, n = await _headers(r)
            if st > 199:
                if f.get(b"transfer-encoding", b"identity").lower() != b"identity":
                    raise ValueError("chunked")
                # RFC 9112 §6.3: 204 and 304 have no body whatever the header says.
                return st, f, b"" if st in (204, 304) else await _body(r, n)
        raise ValueError("too many 1xx")
    finally:
        try:
            w.close()
            await w.wait_closed()
        except Exception:  # noqa: BLE001 - the answer (or error) is already decided
            pass


async def _request(method, host, port, board_id, what, extra, body, timeout):
    """One request to /boards/<board_id>/<what>: (status, header fields, body bytes)."""
    if (
        not isinstance(board_id, str)
        or not 0 < len(board_id) <= 64
        or board_id.strip("abcdefghijklmnopqrstuvwxyz0123456789-")
    ):
        raise LanError(0, "bad board id")
    head = "%s /boards/%s/%s HTTP/1.1\r\nHost: %s:%d\r\n%sConnection: close\r\n\r\n" % (
        method,
        board_id,
        what,
        host,
        port,
        extra,
    )
    try:
        return await asyncio.wait_for(_exchange(host, port, head.encode(), body), timeout)
    except asyncio.TimeoutError:
        raise LanError(0, "timeout") from None
    except (OSError, ValueError) as e:
        raise LanError(0, str(e)) from None


async def pull(host, port, board_id, seq, *, timeout=10):
    """The controller's signed configuration for this board if newer than seq, else None.

    ``GET /boards/<id>/config`` with ``If-None-Match: "<seq>"`` (RFC 9110
    §13.1.2): the entity tag is the seq the board holds, so an unchanged
    configuration costs a 304 (RFC 9110 §15.4.5) and no verification.
    A 200 must be ``application/cose`` (RFC 9052 §2); its body (the
    COSE_Sign1 bytes, unverified) is returned. Any other status raises
    LanError(status, text).
    """
    st, f, d = await _request(
        "GET",
        host,
        port,
        board_id,
        "config",
        'If-None-Match: "%d"\r\nAccept: application/cose\r\n' % seq,
        None,
        timeout,
    )
    if st == 304:
        return None
    if st != 200:
        try:
            d = d.decode()[:200]
        except UnicodeError:
            d = ""
        raise LanError(st, d)
    if f.get(b"content-type", b"").split(b";")[0].strip().lower() != b"application/cose":
        raise LanError(0, "not application/cose")
    return d


async def post_status(host, port, board_id, body, *, timeout=10):
    """POST a heartbeat body (application/cbor, RFC 8949 §9.5) and return the HTTP status.

    The controller answers 204, 403 (bad MAC) or 409 (replay); the caller
    decides what each means. Only a failed exchange raises LanError.
    """
    if len(body) > 8192:
        raise LanError(0, "too long")
    extra = "Content-Type: application/cbor\r\nContent-Length: %d\r\n" % len(body)
    return (await _request("POST", host, port, board_id, "status", extra, body, timeout))[0]
