"""SIP requests and responses (RFC 3261 §7): header rows kept as written, typed on demand.

A message keeps every header row in order with its name as written and its
value (folding already replaced by one space, §7.3.1), so a proxy forwards
what it does not understand untouched and serialization of an unmodified
message changes nothing but folding. Typed values (Via, From, CSeq, ...)
are parsed on first access and cached: most messages are routed on a few
headers, and parsing the rest would be wasted work. ``validate()`` parses
every known header when a caller needs every error (``sipmesh sip lint``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sipmesh.sip.address import Address, parse_address_list
from sipmesh.sip.auth import AuthValue
from sipmesh.sip.errors import SIPParseError
from sipmesh.sip.grammar import split_list
from sipmesh.sip.headers import (
    SINGLE_HEADERS,
    CSeq,
    MediaType,
    canonical_key,
    display_name,
    parse_call_id,
    parse_token_list,
    parse_uint,
)
from sipmesh.sip.uri import URI, parse_uri
from sipmesh.sip.via import Via

Header = tuple[str, str, str]  # (name as written, canonical key, value)
_MISSING = object()

# Reason phrases of RFC 3261 §21 used when none is given.
REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


def _addr(single: bool, header: str, wildcard: bool = False) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        if single:
            return Address.parse(value, header)
        return parse_address_list(value, header, wildcard)

    return parse


# key -> (parser of one row's value, True if the result is a list to concatenate)
_PARSERS: dict[str, tuple[Callable[[str], Any], bool]] = {
    "via": (lambda v: [Via.parse(p) for p in split_list(v, "Via")], True),
    "from": (_addr(True, "From"), False),
    "to": (_addr(True, "To"), False),
    "reply-to": (_addr(True, "Reply-To"), False),
    "contact": (_addr(False, "Contact", wildcard=True), True),
    "route": (_addr(False, "Route"), True),
    "record-route": (_addr(False, "Record-Route"), True),
    "call-id": (parse_call_id, False),
    "cseq": (CSeq.parse, False),
    "max-forwards": (lambda v: parse_uint(v, "Max-Forwards", 255), False),
    "content-length": (lambda v: parse_uint(v, "Content-Length"), False),
    "expires": (lambda v: parse_uint(v, "Expires"), False),
    "min-expires": (lambda v: parse_uint(v, "Min-Expires"), False),
    "content-type": (lambda v: MediaType.parse(v), False),
    "accept": (lambda v: [MediaType.parse(p, "Accept") for p in split_list(v, "Accept")], True),
    "require": (lambda v: parse_token_list(v, "Require"), True),
    "proxy-require": (lambda v: parse_token_list(v, "Proxy-Require"), True),
    "supported": (lambda v: parse_token_list(v, "Supported"), True),
    "unsupported": (lambda v: parse_token_list(v, "Unsupported"), True),
    "allow": (lambda v: parse_token_list(v, "Allow"), True),
    "authorization": (lambda v: [AuthValue.parse(v, "Authorization")], True),
    "proxy-authorization": (lambda v: [AuthValue.parse(v, "Proxy-Authorization")], True),
    "www-authenticate": (lambda v: [AuthValue.parse(v, "WWW-Authenticate")], True),
    "proxy-authenticate": (lambda v: [AuthValue.parse(v, "Proxy-Authenticate")], True),
}


class Message:
    """Common part of requests and responses: header rows, body, typed access."""

    version: str = "SIP/2.0"

    def __init__(self, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        self.headers: list[Header] = [(n, canonical_key(n), v) for n, v in headers]
        self.body = body
        self._cache: dict[str, Any] = {}

    # --- raw rows ---------------------------------------------------------

    def get(self, name: str) -> str | None:
        """The first row's value of a header (compact names accepted), or None."""
        key = canonical_key(name)
        for _, k, v in self.headers:
            if k == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every row's value of a header, in order."""
        key = canonical_key(name)
        return [v for _, k, v in self.headers if k == key]

    def __contains__(self, name: str) -> bool:
        key = canonical_key(name)
        return any(k == key for _, k, _ in self.headers)

    def add(self, name: str, value: str, *, top: bool = False) -> None:
        """Add a row (at the top of the header section for Via and Record-Route)."""
        row = (name, canonical_key(name), value)
        if top:
            self.headers.insert(0, row)
        else:
            self.headers.append(row)
        self._forget(row[1])

    def set(self, name: str, value: str) -> None:
        """Replace every row of a header by one row, kept where the first one was."""
        key = canonical_key(name)
        for i, (n, k, _) in enumerate(self.headers):
            if k == key:
                self.headers[i] = (n, k, value)
                self.headers[i + 1 :] = [h for h in self.headers[i + 1 :] if h[1] != key]
                break
        else:
            self.headers.append((display_name(key) if len(name) == 1 else name, key, value))
        self._forget(key)

    def remove(self, name: str) -> int:
        """Remove every row of a header; return how many there were."""
        key = canonical_key(name)
        before = len(self.headers)
        self.headers = [h for h in self.headers if h[1] != key]
        self._forget(key)
        return before - len(self.headers)

    def pop_first(self, name: str) -> str | None:
        """Remove the first element of a list header (a Via, a Route) and return it."""
        key = canonical_key(name)
        for i, (n, k, v) in enumerate(self.headers):
            if k == key:
                parts = split_list(v, n)
                first = parts[0] if parts else None
                if len(parts) > 1:
                    self.headers[i] = (n, k, ", ".join(parts[1:]))
                else:
                    del self.headers[i]
                self._forget(key)
                return first
        return None

    def _forget(self, key: str) -> None:
        self._cache.pop(key, None)
        if key == "via":
            self._cache.pop("top-via", None)

    # --- typed values -----------------------------------------------------

    def typed(self, name: str) -> Any:
        """The parsed value of a known header: a list for list headers, else one value.

        Raises SIPParseError naming the header when a row is malformed, or
        when a single-valued header appears more than once.
        """
        value = self._cache.get(name, _MISSING)
        if value is not _MISSING:
            return value
        key = name if name in _PARSERS else canonical_key(name)
        return self._parse_rows(key, [v for _, k, v in self.headers if k == key])

    def _parse_rows(self, key: str, rows: list[str]) -> Any:
        parse, is_list = _PARSERS[key]
        value: Any
        if is_list:
            value: Any = []
            for row in rows:
                value.extend(parse(row))
        elif not rows:
            value = None
        elif len(rows) > 1 and key in SINGLE_HEADERS:
            raise SIPParseError(f"{len(rows)} rows of a single-valued header",
                                header=display_name(key))
        else:
            value = parse(rows[0])
        self._cache[key] = value
        return value

    @property
    def via(self) -> list[Via]:
        return self.typed("via")

    @property
    def top_via(self) -> Via | None:
        """The first Via, parsed alone: routing a response needs no other (§18.2.2)."""
        cache = self._cache
        vias = cache.get("via")
        if vias is not None:
            return vias[0] if vias else None
        top = cache.get("top-via", _MISSING)
        if top is _MISSING:
            row = self.get("via")
            if row is None:
                top = None
            else:
                first = split_list(row, "Via")[:1] if "," in row else [row.strip()]
                top = Via.parse(first[0]) if first and first[0] else None
            cache["top-via"] = top
        return top

    @property
    def from_(self) -> Address | None:
        return self.typed("from")

    @property
    def to(self) -> Address | None:
        return self.typed("to")

    @property
    def call_id(self) -> str | None:
        return self.typed("call-id")

    @property
    def cseq(self) -> CSeq | None:
        return self.typed("cseq")

    @property
    def max_forwards(self) -> int | None:
        return self.typed("max-forwards")

    @property
    def contact(self) -> list[Address]:
        return self.typed("contact")

    @property
    def route(self) -> list[Address]:
        return self.typed("route")

    @property
    def record_route(self) -> list[Address]:
        return self.typed("record-route")

    @property
    def content_length(self) -> int | None:
        return self.typed("content-length")

    @property
    def content_type(self) -> MediaType | None:
        return self.typed("content-type")

    @property
    def expires(self) -> int | None:
        return self.typed("expires")

    @property
    def require(self) -> list[str]:
        return self.typed("require")

    @property
    def proxy_require(self) -> list[str]:
        return self.typed("proxy-require")

    @property
    def supported(self) -> list[str]:
        return self.typed("supported")

    @property
    def unsupported(self) -> list[str]:
        return self.typed("unsupported")

    @property
    def allow(self) -> list[str]:
        return self.typed("allow")

    @property
    def authorization(self) -> list[AuthValue]:
        return self.typed("authorization")

    @property
    def proxy_authorization(self) -> list[AuthValue]:
        return self.typed("proxy-authorization")

    @property
    def www_authenticate(self) -> list[AuthValue]:
        return self.typed("www-authenticate")

    @property
    def proxy_authenticate(self) -> list[AuthValue]:
        return self.typed("proxy-authenticate")

    def validate(self) -> list[SIPParseError]:
        """Parse every known header and the start line; return every problem found."""
        return self._check_headers()[0]

    def _check_headers(self) -> tuple[list[SIPParseError], dict[str, list[str]]]:
        problems: list[SIPParseError] = []
        groups: dict[str, list[str]] = {}
        for _, key, value in self.headers:
            rows = groups.get(key)
            if rows is None:
                groups[key] = [value]
            else:
                rows.append(value)
        cache = self._cache
        for key, rows in groups.items():
            if key in _PARSERS:
                if key not in cache:
                    try:
                        self._parse_rows(key, rows)
                    except SIPParseError as e:
                        problems.append(e)
            elif len(rows) > 1 and key in SINGLE_HEADERS:
                problems.append(SIPParseError("header given twice", header=display_name(key)))
        length = cache.get("content-length")
        if length is not None and length != len(self.body):
            problems.append(SIPParseError(
                f"Content-Length {length} but the body has {len(self.body)} bytes",
                header="Content-Length"))
        return problems, groups

    # --- bytes ------------------------------------------------------------

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The message as sent: start line, header rows as stored, blank line, body."""
        lines = [self.start_line()]
        lines += [f"{n}: {v}" for n, _, v in self.headers]
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8") + self.body

    __bytes__ = to_bytes

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        """Replace the body, keeping Content-Length (and Content-Type if given) true."""
        self.body = body
        self.set("Content-Length", str(len(body)))
        if content_type is not None:
            self.set("Content-Type", content_type)
        elif not body:
            self.remove("Content-Type")

    def equivalent(self, other: Message) -> bool:
        """Same start line, same header rows (names case-insensitively) and body."""
        return (
            self.start_line() == other.start_line()
            and [(k, v) for _, k, v in self.headers] == [(k, v) for _, k, v in other.headers]
            and self.body == other.body
        )


class Request(Message):
    """A SIP request: method, Request-URI, headers, body."""

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.version = version
        if isinstance(uri, URI):
            self._uri: URI | None = uri
            self.uri_text = str(uri)
        else:
            self._uri = None
            self.uri_text = uri

    @property
    def uri(self) -> URI:
        """The Request-URI, parsed on first use (SIPParseError 416 for other schemes)."""
        if self._uri is None:
            self._uri = parse_uri(self.uri_text)
        return self._uri

    @uri.setter
    def uri(self, value: URI) -> None:
        self._uri = value
        self.uri_text = str(value)

    def start_line(self) -> str:
        return f"{self.method} {self.uri_text} {self.version}"

    def validate(self) -> list[SIPParseError]:
        problems = []
        try:
            self.uri  # noqa: B018 - parse for its errors
        except SIPParseError as e:
            problems.append(SIPParseError("Request-URI: " + e.reason, status=e.status))
        header_problems, present = self._check_headers()
        problems += header_problems
        cseq = None
        try:
            cseq = self.cseq
        except SIPParseError:
            pass
        if cseq is not None and cseq.method != self.method:
            problems.append(SIPParseError(
                f"CSeq method {cseq.method} does not match the request method {self.method}",
                header="CSeq"))
        for key in ("to", "from", "cseq", "call-id", "via", "max-forwards"):
            if key not in present:
                problems.append(SIPParseError(f"missing {display_name(key)} header",
                                              header=display_name(key)))
        try:
            contacts = self.contact
        except SIPParseError:
            contacts = []
        if any(c.wildcard for c in contacts):
            # §10.2.2: '*' only in REGISTER, alone, with Expires: 0.
            try:
                expires = self.expires
            except SIPParseError:
                expires = None
            if self.method != "REGISTER" or len(contacts) > 1 or expires != 0:
                problems.append(SIPParseError(
                    "Contact '*' is only allowed alone in a REGISTER with Expires: 0",
                    header="Contact"))
        return problems

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_text}>"


class Response(Message):
    """A SIP response: status code, reason phrase, headers, body."""

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = REASONS.get(status, "Unknown") if reason is None else reason
        self.version = version

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def validate(self) -> list[SIPParseError]:
        problems, present = self._check_headers()
        for key in ("to", "from", "cseq", "call-id", "via"):
            if key not in present:
                problems.append(SIPParseError(f"missing {display_name(key)} header",
                                              header=display_name(key)))
        return problems

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"
