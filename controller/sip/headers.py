"""Header names (full and compact forms), list rules, and the small typed header values.

RFC 3261 §7.3: names are case-insensitive and some have compact forms
(§7.3.3, §20). Only headers whose grammar is a comma-separated list may be
split or combined (§7.3.1); the authorization headers are lists in no
sense, so they are never split.
"""

from __future__ import annotations

import re

from sipmesh.sip.errors import SIPParseError
from sipmesh.sip.grammar import (
    TOKEN_CHARS,
    WORD_CHARS,
    check_token,
    format_params,
    parse_params,
    skip_ws,
    split_list,
    token_list,
)

# Compact forms: RFC 3261 §7.3.3 (i m e l c f s k t v) and the registered
# ones of later RFCs that real equipment sends.
COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",  # RFC 6665
    "u": "allow-events",  # RFC 6665
    "r": "refer-to",  # RFC 3515
    "b": "referred-by",  # RFC 3892
    "x": "session-expires",  # RFC 4028
    "a": "accept-contact",  # RFC 3841
    "j": "reject-contact",  # RFC 3841
    "d": "request-disposition",  # RFC 3841
    "y": "identity",  # RFC 8224
}

# How each known header is written when sipmesh creates it.
CANONICAL = {
    "accept": "Accept",
    "accept-encoding": "Accept-Encoding",
    "accept-language": "Accept-Language",
    "alert-info": "Alert-Info",
    "allow": "Allow",
    "authentication-info": "Authentication-Info",
    "authorization": "Authorization",
    "call-id": "Call-ID",
    "call-info": "Call-Info",
    "contact": "Contact",
    "content-disposition": "Content-Disposition",
    "content-encoding": "Content-Encoding",
    "content-language": "Content-Language",
    "content-length": "Content-Length",
    "content-type": "Content-Type",
    "cseq": "CSeq",
    "date": "Date",
    "error-info": "Error-Info",
    "expires": "Expires",
    "from": "From",
    "in-reply-to": "In-Reply-To",
    "max-forwards": "Max-Forwards",
    "mime-version": "MIME-Version",
    "min-expires": "Min-Expires",
    "organization": "Organization",
    "priority": "Priority",
    "proxy-authenticate": "Proxy-Authenticate",
    "proxy-authorization": "Proxy-Authorization",
    "proxy-require": "Proxy-Require",
    "record-route": "Record-Route",
    "reply-to": "Reply-To",
    "require": "Require",
    "retry-after": "Retry-After",
    "route": "Route",
    "server": "Server",
    "subject": "Subject",
    "supported": "Supported",
    "timestamp": "Timestamp",
    "to": "To",
    "unsupported": "Unsupported",
    "user-agent": "User-Agent",
    "via": "Via",
    "warning": "Warning",
    "www-authenticate": "WWW-Authenticate",
}

# Headers whose value is a comma-separated list (RFC 3261 §20, "#" rules).
LIST_HEADERS = frozenset({
    "accept", "accept-encoding", "accept-language", "alert-info", "allow", "allow-events",
    "call-info", "contact", "content-encoding", "content-language", "error-info",
    "in-reply-to", "proxy-require", "record-route", "require", "route", "supported",
    "unsupported", "via", "warning", "accept-contact", "reject-contact",
    "request-disposition", "path", "service-route",
})

# At most one row; a second one is a malformed message (§20 grammar, §8.2.2).
SINGLE_HEADERS = frozenset({
    "call-id", "content-length", "content-type", "cseq", "from", "to", "max-forwards",
    "expires", "min-expires", "content-disposition", "mime-version", "date", "timestamp",
    "subject", "priority", "organization", "retry-after", "reply-to", "server", "user-agent",
})


def canonical_key(name: str) -> str:
    """Lower-case full name for lookups: compact forms expanded."""
    key = name.lower()
    return COMPACT.get(key, key) if len(key) == 1 else key


def display_name(key: str) -> str:
    """How sipmesh writes a header given its key (unknown ones in Title-Case)."""
    return CANONICAL.get(key) or "-".join(p.capitalize() for p in key.split("-"))


class CSeq:
    """CSeq (RFC 3261 §20.16): sequence number (< 2**31) and method."""

    __slots__ = ("seq", "method")

    def __init__(self, seq: int, method: str) -> None:
        self.seq = seq
        self.method = method

    @classmethod
    def parse(cls, value: str) -> CSeq:
        parts = value.split()
        if len(parts) != 2:
            raise SIPParseError("CSeq must be a number and a method", header="CSeq")
        num, method = parts
        if not num.isdigit() or len(num) > 10 or int(num) >= 2**31:
            raise SIPParseError(f"CSeq number {num!r} is not below 2**31", header="CSeq")
        check_token(method, "CSeq method", "CSeq")
        return cls(int(num), method)

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CSeq) and (self.seq, self.method) == (other.seq, other.method)

    def __hash__(self) -> int:
        return hash((self.seq, self.method))

    def __repr__(self) -> str:
        return f"CSeq({self.seq}, {self.method!r})"


def parse_uint(value: str, header: str, limit: int = 2**32 - 1) -> int:
    """A header holding one non-negative decimal (Content-Length, Expires, Max-Forwards)."""
    v = value.strip()
    if not v.isdigit() or not v.isascii():
        raise SIPParseError(f"{v!r} is not a non-negative integer", header=header)
    if len(v) > 10 or int(v) > limit:
        raise SIPParseError(f"{v} exceeds {limit}", header=header)
    return int(v)


_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID = re.compile(f"{_WORD}(?:@{_WORD})?")


def parse_call_id(value: str) -> str:
    """Call-ID (§20.8): word [ "@" word ]; compared byte for byte."""
    v = value.strip()
    if _CALL_ID.fullmatch(v):
        return v
    left, _, right = v.partition("@")
    if not left or ("@" in v and not right) or "@" in right:
        raise SIPParseError(f"Call-ID {v!r} is not word[@word]", header="Call-ID")
    for c in v:
        if c not in WORD_CHARS and c != "@":
            raise SIPParseError(f"Call-ID has the character {c!r}", header="Call-ID")
    return v


def parse_token_list(value: str, header: str) -> list[str]:
    """Require, Supported, Unsupported, Proxy-Require, Allow: lists of tokens."""
    fast = token_list(value)
    if fast is not None:
        return fast
    return [check_token(t, "option", header) for t in split_list(value, header)]


class MediaType:
    """Content-Type / Accept element (§20.15): type/subtype with parameters."""

    __slots__ = ("type", "subtype", "params")

    def __init__(self, type_: str, subtype: str, params: list[tuple[str, str | None]]) -> None:
        self.type = type_
        self.subtype = subtype
        self.params = params

    @classmethod
    def parse(cls, value: str, header: str = "Content-Type") -> MediaType:
        v = value.strip()
        i = 0
        n = len(v)
        while i < n and v[i] in TOKEN_CHARS:
            i += 1
        type_ = v[:i]
        i = skip_ws(v, i)
        if i >= n or v[i] != "/":
            raise SIPParseError(f"media type {v!r} lacks '/'", header=header)
        i = skip_ws(v, i + 1)
        j = i
        while j < n and v[j] in TOKEN_CHARS:
            j += 1
        subtype = v[i:j]
        check_token(type_, "media type", header)
        check_token(subtype, "media subtype", header)
        params, end = parse_params(v, j, header)
        if end != n:
            raise SIPParseError(f"unexpected text after media type: {v[end:]!r}", header=header)
        return cls(type_, subtype, params)

    @property
    def mime(self) -> str:
        """type/subtype in lower case, for comparisons."""
        return f"{self.type}/{self.subtype}".lower()

    def __str__(self) -> str:
        return f"{self.type}/{self.subtype}{format_params(self.params)}"
