"""name-addr / addr-spec with header parameters: From, To, Contact, Route, Record-Route, Reply-To.

RFC 3261 §20.10 and §25.1. Without angle brackets, everything after the
first semicolon is a header parameter, not a URI parameter, and the URI
may hold no comma, question mark or semicolon; with brackets the URI is
whatever lies between them.
"""

from __future__ import annotations

from sipmesh.sip.errors import SIPParseError
from sipmesh.sip.grammar import (
    TOKEN_CHARS,
    format_params,
    get_param,
    parse_params,
    quote,
    quoted_string_end,
    skip_ws,
    unquote,
)
from sipmesh.sip.uri import URI, parse_uri


class Address:
    """One name-addr or addr-spec with its header parameters (tag, expires, q, ...)."""

    __slots__ = ("display", "uri", "params", "wildcard", "_text")

    def __init__(
        self,
        uri: URI | OtherURI | None,
        display: str | None = None,
        params: list[tuple[str, str | None]] | None = None,
        *,
        wildcard: bool = False,
    ) -> None:
        self.uri = uri
        self.display = display
        self.params = params or []
        self.wildcard = wildcard
        self._text: str | None = None

    @classmethod
    def parse(cls, value: str, header: str = "Contact", allow_wildcard: bool = False) -> Address:
        """Parse one element; ``*`` only where the caller allows it (Contact in REGISTER)."""
        v = value.strip()
        if v == "*":
            if not allow_wildcard:
                raise SIPParseError("'*' is only allowed in Contact", header=header)
            addr = cls(None, wildcard=True)
            addr._text = v
            return addr
        n = len(v)
        i = 0
        display: str | None = None
        if v.startswith('"'):
            end = quoted_string_end(v, 0, header)
            display = unquote(v[:end])
            i = skip_ws(v, end)
            if i >= n or v[i] != "<":
                raise SIPParseError("display name not followed by <URI>", offset=i, header=header)
        else:
            lt = v.find("<")
            if lt > 0:
                name = v[:lt].strip()
                # display-name = *(token LWS): tokens separated by whitespace.
                if any(c not in TOKEN_CHARS and c not in " \t" for c in name):
                    raise SIPParseError(f"bad display name {name!r}", header=header)
                display = " ".join(name.split())
                i = lt
        if i < n and v[i] == "<":
            gt = v.find(">", i)
            if gt < 0:
                raise SIPParseError("'<' without '>'", offset=i, header=header)
            uri = _uri(v[i + 1 : gt], header)
            params, end = parse_params(v, gt + 1, header)
        else:
            semi = v.find(";")
            spec = v if semi < 0 else v[:semi]
            spec = spec.rstrip()
            if any(c in spec for c in ",? \t"):
                raise SIPParseError(
                    f"URI {spec!r} needs <> (it holds ',', '?' or spaces)", header=header
                )
            uri = _uri(spec, header)
            params, end = parse_params(v, len(spec), header)
        if end != n:
            raise SIPParseError(f"unexpected text {v[end:]!r}", offset=end, header=header)
        addr = cls(uri, display, params)
        addr._text = v
        return addr

    def param(self, name: str) -> str | None:
        """A header parameter by case-insensitive name ('' for a flag, None if absent)."""
        return get_param(self.params, name)

    @property
    def tag(self) -> str | None:
        """The tag parameter of From/To (§19.3)."""
        return self.param("tag")

    def with_param(self, name: str, value: str | None) -> Address:
        """A copy with the parameter set (replaced if present)."""
        key = name.lower()
        params = [(k, v) for k, v in self.params if k.lower() != key]
        params.append((name, value))
        return Address(self.uri, self.display, params, wildcard=self.wildcard)

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        if self.wildcard:
            return "*"
        text = f"<{self.uri}>"
        if self.display is not None:
            name = self.display
            plain = name and all(c in TOKEN_CHARS or c == " " for c in name)
            text = f"{name if plain else quote(name)} {text}"
        return text + format_params(self.params)

    def __repr__(self) -> str:
        return f"Address({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Address):
            return NotImplemented
        if self.wildcard or other.wildcard:
            return self.wildcard == other.wildcard
        mine = {k.lower(): v for k, v in self.params}
        theirs = {k.lower(): v for k, v in other.params}
        return self.uri == other.uri and mine == theirs

    def __hash__(self) -> int:
        return hash(self.uri)


class OtherURI:
    """An absoluteURI of another scheme (mailto:, http:, urn:) in a header (§25.1).

    Contact and the other name-addr headers may carry any absoluteURI; only
    the Request-URI must be SIP, SIPS or TEL (416 otherwise, §8.2.2.1).
    """

    __slots__ = ("scheme", "text")

    def __init__(self, text: str) -> None:
        scheme, sep, rest = text.partition(":")
        if (not sep or not rest or not scheme[:1].isalpha() or not scheme.isascii()
                or any(not (c.isalnum() or c in "+-.") for c in scheme)
                or any(c in " \t<>\"" or ord(c) < 33 for c in rest)):
            raise SIPParseError(f"{text!r} is not an absolute URI")
        self.scheme = scheme.lower()
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OtherURI) and (self.scheme, self.text.partition(":")[2]) == (
            other.scheme, other.text.partition(":")[2])

    def __hash__(self) -> int:
        return hash(self.text.partition(":")[2])

    def get_param(self, name: str, default: str | None = None) -> str | None:
        return default


def _uri(text: str, header: str) -> URI | OtherURI:
    text = text.strip()
    try:
        return parse_uri(text)
    except SIPParseError as e:
        if e.status == 416:
            try:
                return OtherURI(text)
            except SIPParseError:
                pass
        raise SIPParseError(e.reason, status=400, header=header) from None


def parse_address_list(value: str, header: str, allow_wildcard: bool = False) -> list[Address]:
    """All elements of a Contact / Route / Record-Route value."""
    from sipmesh.sip.grammar import split_list

    return [Address.parse(p, header, allow_wildcard) for p in split_list(value, header)]
