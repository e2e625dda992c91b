"""The board's bounded HTTP/1.1 reader (RFC 9112) and the push request handling.

Everything read is bounded: a line of at most 512 bytes, at most 32 header
fields, a body of at most 8 KiB, a deadline on the request. A peer that
breaks a limit gets a 4xx answer and a closed connection; nothing it sends
can stop the listener. The reader (``_line``, ``_headers``, ``_body``: a
malformed input raises ValueError) is also what fw_lan reads responses with.

Nothing here is resident (heap budget, issue 6): ``fw_push.serve_push``
imports this module for the connections it serves and drops it after the
last one, and fw_lan's pull or heartbeat (an ``App.task``) for its round.
Runs on MicroPython's asyncio and on CPython's.
"""

import asyncio

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MAX_LINE = const(512)
_MAX_HEADERS = const(32)
# Same bound as a serial frame: a signed configuration fits with room to spare.
_MAX_BODY = const(8192)
# More connections at once are answered 503, so idle sockets cannot take the heap.
_MAX_CLIENTS = const(2)


async def _fill(s, mv):
    """Read into mv; 0 at EOF. CPython's StreamReader has no readinto, so it copies."""
    try:
        return await s.readinto(mv) or 0
    except AttributeError:
        d = await s.read(len(mv))
        mv[: len(d)] = d
        return len(d)


async def _line(r):
    """One line of reader r ``[stream, buf, start, end]`` without CRLF; EOF is an error.

    RFC 9112 §2.2 lets a recipient take a bare LF as the line end.
    """
    b = r[1]
    while True:
        s = r[2]
        e = r[3]
        i = b.find(b"\n", s, e)
        if (i if i >= 0 else e) - s > _MAX_LINE:
            raise ValueError("too long")
        if i >= 0:
            r[2] = i + 1
            if i > s and b[i - 1] == 13:
                i -= 1
            return bytes(memoryview(b)[s:i])
        if s:
            e -= s
            for k in range(e):
                b[k] = b[s + k]
            r[2] = 0
        got = await _fill(r[0], memoryview(b)[e:])
        if not got:
            raise ValueError("request cut short")
        r[3] = e + got


async def _headers(r):
    """(header fields {lower-case name: value} as bytes, Content-Length or -1).

    At most 32 fields (RFC 9112 §5). Obsolete line folding is refused
    (RFC 9112 §5.2), and so is a second Content-Length with another value
    (RFC 9112 §6.3).
    """
    f = {}
    for _ in range(_MAX_HEADERS + 1):
        ln = await _line(r)
        if not ln:
            # Content-Length (RFC 9110 §8.6: digits only), or -1 when absent.
            v = f.get(b"content-length")
            if v is None:
                return f, -1
            if not v.isdigit() or len(v) > 9:
                raise ValueError("malformed")
            return f, int(v)
        i = ln.find(b":")
        if i <= 0 or ln[0] < 33 or ln[i - 1] < 33:
            raise ValueError("malformed")
        k = ln[:i].lower()
        v = ln[i + 1 :].strip()
        if k == b"content-length" and f.get(k, v) != v:
            raise ValueError("malformed")
        f[k] = v
    raise ValueError("too long")


async def _body(r, n):
    """Exactly n bytes, or (n < 0) all up to EOF; at most 8 KiB either way."""
    if n > _MAX_BODY:
        raise ValueError("too long")
    s = r[2]
    out = bytearray(n if n >= 0 else _MAX_BODY + 1)
    mv = memoryview(out)
    pos = min(r[3] - s, len(out))
    mv[:pos] = memoryview(r[1])[s : s + pos]
    r[2] = s + pos
    while pos < len(out):
        got = await _fill(r[0], mv[pos:])
        if not got:
            if n < 0:
                break
            raise ValueError("request cut short")
        pos += got
    if pos > _MAX_BODY:
        raise ValueError("too long")
    return bytes(mv[:pos])


async def _incoming(rd, w):
    """(status, reason) to answer, or (0, body) for a POST /config."""
    r = [rd, bytearray(1024), 0, 0]
    try:
        p = (await _line(r)).split()
        if len(p) != 3 or not p[2].startswith(b"HTTP/1."):
            return 400, "malformed"
        f, n = await _headers(r)
        if p[1] != b"/config":
            return 404, ""
        if p[0] != b"POST":
            return 405, ""
        if b"transfer-encoding" in f:
            return 400, "malformed"
        if n < 0:
            return 411, ""
        if n > _MAX_BODY:
            return 413, "too long"
        if b"expect" in f:
            # RFC 9110 §10.1.1: curl asks before sending a larger body.
            w.write(("HTTP/1.1 %d \r\n%s\r\n" % (100, "")).encode())
            await w.drain()
        return 0, await _body(r, n)
    except ValueError as e:
        return 400, str(e)


async def _answer(w, st, text):
    """The status line and a one-line text/plain reason, control characters blanked.

    A 204 has no body nor Content-Length (RFC 9110 §8.6); Allow, which a 405
    must carry, may go in any answer (RFC 9110 §10.2.1). The reason phrase
    is optional (RFC 9112 §4) and left out.
    """
    b = bytearray(text.encode())
    for i in range(len(b)):
        if b[i] < 32:
            b[i] = 32
    h = "Connection: close\r\n"
    if st != 204:
        h += (
            "Allow: POST\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
            % len(b)
        )
    w.write(("HTTP/1.1 %d \r\n%s\r\n" % (st, h)).encode())
    if st != 204:
        w.write(b)
    await w.drain()


async def receive(rd, w, busy, timeout):
    """Read one push request (see ``fw_push.serve_push``); busy: connections now open.

    Returns (0, body) for a POST /config, else (status, reason) to answer.
    Never raises.
    """
    if busy > _MAX_CLIENTS:
        return 503, "busy"
    try:
        return await asyncio.wait_for(_incoming(rd, w), timeout)
    except asyncio.TimeoutError:
        return 408, "request timeout"
    except Exception as e:  # noqa: BLE001 - one bad peer must never stop the listener
        return 400, repr(e)


async def reply(rd, w, st, text, note, log):
    """Answer (st, text), drain what the peer still sends, close; log note
    (the outcome on_config did not give). Never raises."""
    try:
        await _answer(w, st, text)
        # Unread input would make close() send RST (RFC 9293 §3.6) and could
        # destroy the answer; MicroPython sockets have no shutdown().
        n = 0
        try:
            while n < 16384:
                d = await asyncio.wait_for(rd.read(512), 0.1)
                if not d:
                    break
                n += len(d)
        except Exception:  # noqa: BLE001 - idle or reset: close now either way
            pass
    except Exception as e:  # noqa: BLE001 - one bad peer must never stop the listener
        note = note or repr(e)
    finally:
        try:
            w.close()
            await w.wait_closed()
        except Exception:  # noqa: BLE001 - the peer may already be gone
            pass
    if note and log:
        try:
            log("push: " + note)
        except Exception:  # noqa: BLE001 - logging must not break the listener
            pass
