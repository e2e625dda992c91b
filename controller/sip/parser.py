"""Bytes to SIP messages: one datagram at a time, or a TCP/TLS byte stream.

RFC 3261 §7 (message format), §7.5 (CRLFs before the start line are
ignored on streams), §18.3 (framing: Content-Length on streams; on
datagrams the body ends at Content-Length or the datagram's end) and RFC
5626 §3.5.1 (a double CRLF on a stream is a keep-alive ping answered by a
single CRLF). Only the start line and the header rows are parsed here;
typed header values are parsed when first used (see message.py).
"""

from __future__ import annotations

from sipmesh.sip.errors import SIPParseError
from sipmesh.sip.grammar import TOKEN_CHARS
from sipmesh.sip.headers import canonical_key
from sipmesh.sip.message import Message, Request, Response

# A datagram cannot exceed 65,535 bytes, and no sane message over a stream
# comes near that either; Kamailio's default buffer is the same size.
MAX_MESSAGE = 65535
# Real INVITEs carry 15-40 rows; 256 leaves room for long Via/Record-Route
# chains while bounding the work per message.
MAX_HEADER_ROWS = 256


def parse_message(data: bytes, *, max_size: int = MAX_MESSAGE) -> Request | Response:
    """Parse one complete message (a UDP datagram, or a framed stream message).

    Raises SIPParseError; ``error.message`` holds the partly parsed message
    when the start line and header rows could be read, so that a server can
    still answer a bad request (RFC 3261 §8.2).
    """
    if len(data) > max_size:
        err = SIPParseError(f"message of {len(data)} bytes exceeds {max_size}", status=513)
        end = data.find(b"\r\n\r\n", 0, max_size)
        if end > 0:
            try:
                err.message = parse_head(data, 0, end)
            except SIPParseError as e:
                err.message = e.message
        raise err
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SIPParseError("no empty line after the header section", offset=len(data))
    msg = parse_head(data, start, end)
    rest = data[end + 4 :]
    if msg.get("content-length") is None:
        msg.body = rest
        return msg
    try:
        length = msg.content_length
    except SIPParseError as e:
        e.message = msg
        raise
    assert length is not None
    if len(rest) < length:
        err = SIPParseError(
            f"body has {len(rest)} bytes, Content-Length says {length}",
            header="Content-Length",
        )
        msg.body = rest
        err.message = msg
        raise err
    msg.body = rest[:length]
    return msg


def parse_head(data: bytes, start: int, end: int) -> Request | Response:
    """Parse the start line and header rows in data[start:end] (no final CRLF CRLF)."""
    problem: SIPParseError | None = None
    try:
        head = data[start:end].decode("utf-8")
    except UnicodeDecodeError as e:
        problem = SIPParseError("header section is not valid UTF-8", offset=start + e.start)
        head = data[start:end].decode("utf-8", "replace")
    lines = head.split("\r\n")
    if len(lines) > MAX_HEADER_ROWS + 1:
        raise SIPParseError(f"more than {MAX_HEADER_ROWS} header rows", offset=start)
    crlf = len(lines) - 1
    if head.count("\n") == crlf and head.count("\r") == crlf:
        rows, bad_row = _rows_fast(lines, start)
    else:
        rows, bad_row = _rows(lines, start)
    problem = problem or bad_row
    first = lines[0]
    if first[:4].upper() == "SIP/":
        msg: Request | Response = _response(first, rows, start)
    else:
        msg = _request(first, rows, start)
    if problem is not None:
        # The rows that did parse are kept so that a server can still answer.
        problem.message = msg
        raise problem
    return msg


# Header names seen before, as written (with any space before the colon),
# mapped to their canonical key: names repeat in every message, so each is
# validated once. Bounded so that hostile traffic cannot grow it.
_NAMES: dict[str, str] = {}
_NAMES_MAX = 2048


def _rows_fast(
    lines: list[str], start: int
) -> tuple[list[tuple[str, str, str]], SIPParseError | None]:
    """Header rows when no bare CR or LF is present: one partition per row."""
    rows: list[tuple[str, str, str]] = []
    names = _NAMES
    for line in lines[1:]:
        first = line[:1]
        if first == " " or first == "\t" or not first:
            return _rows(lines, start)
        name, sep, value = line.partition(":")
        if not sep:
            return _rows(lines, start)
        key = names.get(name)
        if key is None:
            stripped = name.rstrip(" \t")
            if not stripped or any(c not in TOKEN_CHARS for c in stripped):
                return _rows(lines, start)
            key = canonical_key(stripped)
            if len(names) < _NAMES_MAX:
                names[name] = key
            name = stripped
        elif name[-1:] in (" ", "\t"):
            name = name.rstrip(" \t")
        rows.append((name, key, value.strip(" \t")))
    return rows, None


def _rows(
    lines: list[str], start: int
) -> tuple[list[tuple[str, str, str]], SIPParseError | None]:
    """Header rows with folding undone, and the first bad row's error (it is skipped)."""
    rows: list[tuple[str, str, str]] = []
    problem: SIPParseError | None = None
    offset = start + len(lines[0]) + 2
    for line in lines[1:]:
        bad: SIPParseError | None = None
        if "\n" in line or "\r" in line:
            at = line.find("\n") if "\n" in line else line.find("\r")
            bad = SIPParseError("bare CR or LF inside a header row", offset=offset + at)
        elif line[:1] in (" ", "\t"):
            if rows:
                name, key, value = rows[-1]
                more = line.strip(" \t")
                rows[-1] = (name, key, f"{value} {more}" if value and more else value or more)
            else:
                bad = SIPParseError("continuation line before any header", offset=offset)
        else:
            colon = line.find(":")
            name = line[:colon].rstrip(" \t") if colon >= 0 else ""
            if colon < 0:
                bad = SIPParseError(f"header row without a colon: {line[:40]!r}",
                                    offset=offset)
            elif not name or any(c not in TOKEN_CHARS for c in name):
                bad = SIPParseError(f"bad header name {name!r}", offset=offset)
            else:
                rows.append((name, canonical_key(name), line[colon + 1 :].strip(" \t")))
        if bad is not None and problem is None:
            problem = bad
        offset += len(line) + 2
    return rows, problem


def _version_error(version: str, offset: int) -> SIPParseError:
    v = version.upper()
    if v.startswith("SIP/") and v[4:].replace(".", "", 1).isdigit():
        return SIPParseError(f"SIP version {version} is not supported", status=505,
                             offset=offset)
    return SIPParseError(f"bad SIP version {version!r}", offset=offset)


def _request(first: str, rows: list[tuple[str, str, str]], start: int) -> Request:
    parts = first.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SIPParseError("request line is not 'METHOD SP Request-URI SP SIP/2.0'",
                            offset=start)
    method, uri, version = parts
    if any(c not in TOKEN_CHARS for c in method):
        raise SIPParseError(f"method {method!r} is not a token", offset=start)
    req = Request(method, uri, version=version)
    req.headers = rows
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        err = _version_error(version, start + len(method) + len(uri) + 2)
        err.message = req
        raise err
    return req


def _response(first: str, rows: list[tuple[str, str, str]], start: int) -> Response:
    parts = first.split(" ", 2)
    version = parts[0]
    if version.upper() != "SIP/2.0":
        raise _version_error(version, start)
    if len(parts) < 2:
        raise SIPParseError("status line has no status code", offset=start)
    code = parts[1]
    if len(code) != 3 or not code.isdigit() or not "100" <= code <= "699":
        raise SIPParseError(f"status code {code!r} is not 100-699", offset=start + 8)
    reason = parts[2] if len(parts) > 2 else ""
    resp = Response(int(code), reason, version=version)
    resp.headers = rows
    return resp


class KeepAlive:
    """A CRLF keep-alive on a stream (RFC 5626 §3.5.1); ``ping`` needs a CRLF answer."""

    __slots__ = ("ping",)

    def __init__(self, ping: bool) -> None:
        self.ping = ping

    def __repr__(self) -> str:
        return "KeepAlive(ping)" if self.ping else "KeepAlive(pong)"


class StreamParser:
    """Sans-I/O framing of SIP over TCP/TLS: bytes in, messages (and errors) out.

    ``feed()`` returns, in order, parsed messages, ``KeepAlive`` events and
    ``SIPParseError`` instances for messages that framed correctly but did
    not parse (the connection goes on). When framing itself is lost (no
    usable Content-Length, or a header section over ``max_size``) the error
    is returned, ``broken`` becomes True and the connection should close.
    """

    def __init__(self, max_size: int = MAX_MESSAGE) -> None:
        self.max_size = max_size
        self.broken = False
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Request | Response | KeepAlive | SIPParseError]:
        if self.broken:
            return []
        self._buf += data
        out: list[Request | Response | KeepAlive | SIPParseError] = []
        buf = self._buf
        while buf:
            if buf.startswith(b"\r\n"):
                if buf.startswith(b"\r\n\r\n"):
                    out.append(KeepAlive(ping=True))
                    del buf[:4]
                    continue
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                    break  # could still become a ping
                out.append(KeepAlive(ping=False))
                del buf[:2]
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_size:
                    out.append(self._break(
                        f"header section longer than {self.max_size} bytes", 513))
                break
            try:
                msg = parse_head(bytes(buf), 0, end)
            except SIPParseError as e:
                # The length of what follows is unknown: framing is lost.
                out.append(self._break_with(e))
                break
            raw_cl = msg.get("content-length")
            if raw_cl is None:
                err = SIPParseError("Content-Length is required on stream transports",
                                    header="Content-Length")
                err.message = msg
                out.append(self._break_with(err))
                break
            try:
                length = msg.content_length
            except SIPParseError as e:
                e.message = msg
                out.append(self._break_with(e))
                break
            assert length is not None
            total = end + 4 + length
            if total > self.max_size:
                e = SIPParseError(f"message of {total} bytes exceeds {self.max_size}",
                                  status=513)
                e.message = msg
                out.append(self._break_with(e))
                break
            if len(buf) < total:
                break
            msg.body = bytes(buf[end + 4 : total])
            del buf[:total]
            out.append(msg)
        return out

    def _break(self, reason: str, status: int = 400) -> SIPParseError:
        return self._break_with(SIPParseError(reason, status=status))

    def _break_with(self, err: SIPParseError) -> SIPParseError:
        self.broken = True
        self._buf.clear()
        return err


__all__ = ["KeepAlive", "Message", "StreamParser", "parse_head", "parse_message"]
