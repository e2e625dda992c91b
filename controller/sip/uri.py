"""SIP, SIPS and tel URIs: parsing, serialization and comparison.

Syntax is RFC 3261 §25.1 (SIP-URI, SIPS-URI) and RFC 3966 §3 (tel);
escaping follows RFC 3261 §19.1.2: each component may carry unescaped
exactly the characters its ABNF allows, everything else is ``%HH``.
Comparison is RFC 3261 §19.1.4 for sip/sips and RFC 3966 §4 for tel.

A ``URI`` is an immutable value object. Component attributes hold
unescaped text; the text as received is kept and is what ``str()`` gives
back, so forwarding a URI never rewrites it. Derived URIs come from
``replace``, ``with_param`` and ``without_param``.

``parse_uri`` raises ``SIPParseError``: status 400 for malformed text,
416 for a well-formed absoluteURI of another scheme (RFC 3261 §8.2.2.1),
414 for text over ``MAX_URI_LENGTH``.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote, unquote

from .errors import SIPParseError

__all__ = ["MAX_URI_LENGTH", "URI", "parse_uri"]

# No legitimate URI comes near this (real ones are under 200 characters);
# the cap bounds the work one hostile header can cause. Proxies cap URIs
# too: Kamailio's MAX_URI_SIZE, for URIs it rewrites, is 1024.
MAX_URI_LENGTH = 2048

# Character classes of RFC 3261 §25.1, as regex class bodies. "%" is let
# through here and escapes are checked separately (cheaper than an
# alternation inside every repetition).
_UNRES = r"A-Za-z0-9\-_.!~*'()"
_USER_C = _UNRES + r"%&=+$,;?/"
_PASS_C = _UNRES + r"%&=+$,"
_PARAM_C = _UNRES + r"%\[\]/:&+$"
_HDR_C = _UNRES + r"%\[\]/?:+$"
_HOST_C = r"A-Za-z0-9.\-"
_V6_C = r"0-9A-Fa-f:."
# RFC 3966 isdn-subaddress = 1*uric; ";" ends the parameter.
_ISUB_C = _UNRES + r"%/?:@&=+$,"

# The same sets as ``quote`` safe strings (alnum and "_.-~" are always safe).
_USER_SAFE = "!*'()&=+$,;?/"
_PASS_SAFE = "!*'()&=+$,"
_PARAM_SAFE = "!*'()[]/:&+$"
_HDR_SAFE = "!*'()[]/?:+$"

# RFC 2396 "reserved": escaped and unescaped forms differ (RFC 3261 §19.1.4).
# "%" is kept escaped too, so that a normalized form is never ambiguous.
_KEEP_ESCAPED = frozenset(";/?:@&=+$,%")

_TAIL = (
    rf"(?P<host>\[[{_V6_C}]+\]|[{_HOST_C}]+)(?::(?P<port>[0-9]+))?"
    rf"(?P<params>(?:;[{_PARAM_C}]+(?:=[{_PARAM_C}]+)?)*)"
    rf"(?:\?(?P<headers>[{_HDR_C}]+=[{_HDR_C}]*(?:&[{_HDR_C}]+=[{_HDR_C}]*)*))?"
)
# Two shapes, chosen by whether "@" occurs: each is then deterministic (the
# classes either side of every delimiter exclude it), so no backtracking.
_SIP_WITH_USER = re.compile(rf"(?P<user>[{_USER_C}]+)(?::(?P<pw>[{_PASS_C}]*))?@" + _TAIL)
_SIP_NO_USER = re.compile(_TAIL)

_HOST_TEXT = re.compile(rf"\[[{_V6_C}]+\]|[{_HOST_C}]+")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_ABSOLUTE_REST = re.compile(rf"[{_UNRES}%;/?:@&=+$,\[\]]+")

_TEL_GLOBAL = re.compile(r"\+[\-.()]*[0-9][0-9\-.()]*")
_TEL_LOCAL = re.compile(r"[\-.()]*(?:[0-9A-Fa-f*#]|%23)(?:[0-9A-Fa-f*#\-.()]|%23)*")
_TEL_PNAME = re.compile(r"[A-Za-z0-9\-]+")
_TEL_EXT = re.compile(r"[0-9\-.()]+")
_VISUAL = str.maketrans("", "", "-.()")


def _scanner(chars: str):
    return re.compile(f"[{chars}]*").match


_scan_user = _scanner(_USER_C)
_scan_pass = _scanner(_PASS_C)
_scan_param = _scanner(_PARAM_C)
_scan_hdr = _scanner(_HDR_C)
_scan_host = _scanner(_HOST_C)
_scan_v6 = _scanner(_V6_C)
_scan_digits = _scanner("0-9")
_scan_tel_number = _scanner(r"0-9A-Fa-f*#%\-.()+")
_scan_isub = _scanner(_ISUB_C)

# RFC 3261 §19.1.4: present in one URI only, these make URIs differ.
_MUST_MATCH = frozenset(("user", "ttl", "method", "maddr", "transport"))
_ABSENT = object()


class _Unset(enum.Enum):
    UNSET = 0


_UNSET = _Unset.UNSET

Param = tuple[str, str | None]


class URI:
    """A sip:, sips: or tel: URI (RFC 3261 §19.1, RFC 3966).

    ``scheme`` is lowercased; ``user``, ``password``, parameter and header
    names and values are unescaped; ``host`` is as written (brackets kept
    for IPv6); ``port`` is an int or None. For tel URIs ``number`` is the
    telephone-subscriber digits as written, ``host`` is "" and ``user``,
    ``password``, ``port`` are None.

    ``URI(...)`` builds from unescaped components, escaping each as its
    ABNF requires, and validates the result by parsing it.
    Equality and hashing follow RFC 3261 §19.1.4 / RFC 3966 §4; note that
    §19.1.4 equality is not transitive (parameters present in one URI only
    are ignored).
    """

    __slots__ = (
        "_scheme", "_user", "_password", "_host", "_port", "_params", "_headers",
        "_number", "_text", "_ruser", "_rpassword", "_rparams", "_rheaders",
        "_hkey", "_key",
    )

    def __new__(
        cls,
        scheme: str,
        host: str = "",
        *,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        params: Iterable[Param] = (),
        headers: Iterable[tuple[str, str]] = (),
        number: str | None = None,
    ) -> URI:
        return parse_uri(_compose(
            scheme.lower(),
            None if user is None else _escape(user, _USER_SAFE),
            None if password is None else _escape(password, _PASS_SAFE),
            host, port, _escape_params(params), _escape_headers(headers), number,
        ))

    @property
    def scheme(self) -> str:
        """"sip", "sips" or "tel", lowercased."""
        return self._scheme

    @property
    def user(self) -> str | None:
        """The user part, unescaped; None when the URI has no userinfo."""
        return self._user

    @property
    def password(self) -> str | None:
        """The password, unescaped; None when absent ("" when empty after ':')."""
        return self._password

    @property
    def host(self) -> str:
        """The host as written (IPv6 in brackets); "" for tel."""
        return self._host

    @property
    def port(self) -> int | None:
        """The explicit port; None when absent (RFC 3261 §19.1.4: 5060 is not absent)."""
        return self._port

    @property
    def params(self) -> tuple[Param, ...]:
        """URI parameters in order: (name, value or None), both unescaped."""
        return self._params

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """URI headers in order: (name, value), both unescaped."""
        return self._headers

    @property
    def number(self) -> str | None:
        """tel: the telephone-subscriber digits as written, without parameters."""
        return self._number

    def get_param(self, name: str, default: str | None = None) -> str | None:
        """Value of URI parameter ``name`` (case-insensitive, RFC 3261 §19.1.4);
        None for a parameter without value ("lr"), ``default`` if absent."""
        key = name.lower()
        for n, v in self._params:
            if n.lower() == key:
                return v
        return default

    def has_param(self, name: str) -> bool:
        """Whether URI parameter ``name`` is present (case-insensitive)."""
        key = name.lower()
        return any(n.lower() == key for n, _ in self._params)

    @property
    def transport(self) -> str | None:
        """The transport parameter, lowercased (RFC 3261 §19.1.1); None if absent."""
        v = self.get_param("transport")
        return None if v is None else v.lower()

    @property
    def lr(self) -> bool:
        """Whether the loose-routing flag is present (RFC 3261 §19.1.1, §16.4)."""
        return self.has_param("lr")

    @property
    def maddr(self) -> str | None:
        """The maddr parameter (a host, checked at parse time); None if absent."""
        return self.get_param("maddr")

    @property
    def ttl(self) -> int | None:
        """The ttl parameter as an int 0..255 (checked at parse time); None if absent."""
        v = self.get_param("ttl")
        return None if v is None else int(v)

    @property
    def user_param(self) -> str | None:
        """The user parameter ("phone", "ip", ...), lowercased; None if absent."""
        v = self.get_param("user")
        return None if v is None else v.lower()

    @property
    def method_param(self) -> str | None:
        """The method parameter as written (methods are case-sensitive, RFC 3261 §7.1)."""
        return self.get_param("method")

    def replace(
        self,
        *,
        scheme: str | _Unset = _UNSET,
        user: str | None | _Unset = _UNSET,
        password: str | None | _Unset = _UNSET,
        host: str | _Unset = _UNSET,
        port: int | None | _Unset = _UNSET,
        params: Iterable[Param] | _Unset = _UNSET,
        headers: Iterable[tuple[str, str]] | _Unset = _UNSET,
        number: str | None | _Unset = _UNSET,
    ) -> URI:
        """A new URI with the given components (unescaped values) changed.

        Untouched components keep their original escaping, so the result
        compares as the original would where they are concerned (escaped
        reserved characters are significant, RFC 3261 §19.1.4).
        """
        return parse_uri(_compose(
            self._scheme if scheme is _UNSET else scheme.lower(),
            self._ruser if user is _UNSET else (
                None if user is None else _escape(user, _USER_SAFE)),
            self._rpassword if password is _UNSET else (
                None if password is None else _escape(password, _PASS_SAFE)),
            self._host if host is _UNSET else host,
            self._port if port is _UNSET else port,
            self._rparams if params is _UNSET else _escape_params(params),
            self._rheaders if headers is _UNSET else _escape_headers(headers),
            self._number if number is _UNSET else number,
        ))

    def with_param(self, name: str, value: str | None = None) -> URI:
        """A new URI with parameter ``name`` set to ``value`` (None: no value, as "lr").

        An existing parameter of that name (case-insensitive) is replaced in
        place; otherwise the parameter is appended.
        """
        key = name.lower()
        new = (_escape(name, _PARAM_SAFE), None if value is None else _escape(value, _PARAM_SAFE))
        out, done = [], False
        for p, (n, _) in zip(self._rparams, self._params, strict=True):
            if n.lower() == key:
                if not done:
                    out.append(new)
                    done = True
            else:
                out.append(p)
        if not done:
            out.append(new)
        return self._with_raw_params(out)

    def without_param(self, name: str) -> URI:
        """A new URI without parameter ``name`` (case-insensitive); self if absent."""
        key = name.lower()
        kept = [p for p, (n, _) in zip(self._rparams, self._params, strict=True)
                if n.lower() != key]
        return self if len(kept) == len(self._params) else self._with_raw_params(kept)

    def _with_raw_params(self, rparams: list[Param]) -> URI:
        return parse_uri(_compose(
            self._scheme, self._ruser, self._rpassword, self._host, self._port,
            rparams, self._rheaders, self._number,
        ))

    def _cmp(self) -> tuple:
        k = self._key
        if k is None:
            k = self._key = _compare_key(self)
        return k

    def __eq__(self, other: object) -> bool:
        """RFC 3261 §19.1.4 for sip/sips, RFC 3966 §4 for tel."""
        if not isinstance(other, URI):
            return NotImplemented
        if self is other:
            return True
        ident, pa, ha = self._cmp()
        ident_b, pb, hb = other._cmp()
        if ident != ident_b or ha != hb:
            return False
        if self._scheme == "tel":
            return pa == pb
        for name, v in pa.items():
            w = pb.get(name, _ABSENT)
            if w is _ABSENT:
                if name in _MUST_MATCH:
                    return False
            elif w != v:
                return False
        return all(name in pa or name not in _MUST_MATCH for name in pb)

    def __hash__(self) -> int:
        # Only what always takes part in equality: scheme, userinfo, host, port.
        return hash(self._cmp()[0])

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"URI({self._text!r})"

    def __reduce__(self) -> tuple:
        return (parse_uri, (self._text,))


def parse_uri(text: str) -> URI:
    """Parse a sip:, sips: or tel: URI (RFC 3261 §25.1, RFC 3966 §3).

    Schemes are case-insensitive (RFC 3261 §19.1.4). Raises
    ``SIPParseError``: 400 with the reason and offset of the first problem
    found; 416 for a well-formed URI of another scheme, which a server
    answers with 416 Unsupported URI Scheme (RFC 3261 §8.2.2.1); 414 for
    text longer than ``MAX_URI_LENGTH`` (RFC 3261 §21.4.12).
    """
    if len(text) > MAX_URI_LENGTH:
        raise SIPParseError(
            f"URI longer than {MAX_URI_LENGTH} characters", status=414, offset=MAX_URI_LENGTH)
    colon = text.find(":")
    if colon < 0:
        raise SIPParseError("URI has no scheme (expected 'sip:', 'sips:' or 'tel:')", offset=0)
    scheme = text[:colon].lower()
    if scheme == "sip" or scheme == "sips":
        return _parse_sip(text, scheme, colon + 1)
    if scheme == "tel":
        return _parse_tel(text, colon + 1)
    if (_SCHEME.fullmatch(text, 0, colon) and _ABSOLUTE_REST.fullmatch(text, colon + 1)
            and _BAD_ESCAPE.search(text) is None):
        raise SIPParseError(f"unsupported URI scheme {text[:colon]!r}", status=416, offset=0)
    if not _SCHEME.fullmatch(text, 0, colon):
        raise SIPParseError(f"invalid URI scheme {text[:colon]!r}", offset=0)
    raise SIPParseError(f"malformed {text[:colon]!r} URI", offset=colon + 1)


def _parse_sip(text: str, scheme: str, pos: int) -> URI:
    if text.find("@", pos) >= 0:
        m = _SIP_WITH_USER.fullmatch(text, pos)
        if m is None:
            raise _sip_syntax_error(text, pos)
        ruser, rpassword, host, sport, sparams, sheaders = m.groups()
    else:
        m = _SIP_NO_USER.fullmatch(text, pos)
        if m is None:
            raise _sip_syntax_error(text, pos)
        host, sport, sparams, sheaders = m.groups()
        ruser = rpassword = None
    escaped = "%" in text
    if escaped:
        bad = _BAD_ESCAPE.search(text, pos)
        if bad is not None:
            raise _escape_error(text, bad.start())
    hkey = _host_key(host)
    if hkey is None:
        raise SIPParseError(_host_problem(host) or "invalid host", offset=m.start("host"))
    port = None
    if sport is not None:
        port = int(sport)
        if port > 65535:
            raise SIPParseError(f"port {sport} out of range 0..65535", offset=m.start("port"))
    if sparams:
        params, rparams = _split_params(text, m.start("params") + 1, sparams[1:])
    else:
        params = rparams = ()
    if sheaders is not None:
        rheaders = tuple(tuple(h.partition("=")[::2]) for h in sheaders.split("&"))
        headers = rheaders if "%" not in sheaders else tuple(
            (_unescape(n), _unescape(v)) for n, v in rheaders)
    else:
        headers = rheaders = ()
    u = object.__new__(URI)
    u._scheme = scheme
    u._ruser = ruser
    u._rpassword = rpassword
    if escaped:
        u._user = None if ruser is None else _unescape(ruser)
        u._password = None if rpassword is None else _unescape(rpassword)
    else:
        u._user = ruser
        u._password = rpassword
    u._host = host
    u._hkey = hkey
    u._port = port
    u._params = params
    u._rparams = rparams
    u._headers = headers
    u._rheaders = rheaders
    u._number = None
    u._text = text
    u._key = None
    return u


def _split_params(text: str, off: int, body: str) -> tuple[tuple[Param, ...], tuple[Param, ...]]:
    """Split "a=1;lr;b=2" (at ``off`` in ``text``); reject duplicates (RFC 3261
    §19.1.1) and malformed ttl/maddr values, which §19.1.1 gives a meaning."""
    raw = []
    seen = set()
    for item in body.split(";"):
        name, eq, value = item.partition("=")
        key = _normalize(name).lower()
        if key in seen:
            raise SIPParseError(f"URI parameter {name!r} appears twice", offset=off)
        seen.add(key)
        v = value if eq else None
        if key == "ttl" or key == "maddr":
            _check_special_param(key, v, off + len(name) + len(eq))
        raw.append((name, v))
        off += len(item) + 1
    rparams = tuple(raw)
    if "%" not in body:
        return rparams, rparams
    return tuple((_unescape(n), None if v is None else _unescape(v)) for n, v in raw), rparams


def _check_special_param(key: str, value: str | None, off: int) -> None:
    if key == "ttl":
        if value is None or not value.isdigit() or len(value) > 3 or int(value) > 255:
            raise SIPParseError("ttl parameter must be 0..255 (RFC 3261 §25.1)", offset=off)
    elif value is None or not _HOST_TEXT.fullmatch(value) or _host_key(value) is None:
        raise SIPParseError("maddr parameter must be a host (RFC 3261 §25.1)", offset=off)


def _sip_syntax_error(text: str, pos: int) -> SIPParseError:
    """Locate why the fast pattern did not match: the earliest of the first
    structural problem and the first bad escape."""
    err = _sip_structure_error(text, pos)
    bad = _BAD_ESCAPE.search(text, pos)
    if bad is not None and (err.offset is None or bad.start() <= err.offset):
        return _escape_error(text, bad.start())
    return err


def _sip_structure_error(text: str, pos: int) -> SIPParseError:
    n = len(text)
    i = pos
    at = text.find("@", pos)
    if at >= 0:
        colon = text.find(":", pos, at)
        uend = at if colon < 0 else colon
        if uend == pos:
            return SIPParseError("empty user part before '@' (RFC 3261 §19.1.1)", offset=pos)
        j = _scan_user(text, pos, uend).end()
        if j < uend:
            return _char_error(text, j, "the user part")
        if colon >= 0:
            j = _scan_pass(text, colon + 1, at).end()
            if j < at:
                return _char_error(text, j, "the password")
        i = at + 1
    if i == n or text[i] in ":;?":
        return SIPParseError("empty host", offset=i)
    if text[i] == "[":
        j = _scan_v6(text, i + 1, n).end()
        if j == n:
            return SIPParseError("unterminated IPv6 reference", offset=i)
        if text[j] != "]" or j == i + 1:
            return _char_error(text, j, "an IPv6 reference")
        i = j + 1
    else:
        j = _scan_host(text, i, n).end()
        if j == i:
            return _char_error(text, i, "the host")
        i = j
    if i < n and text[i] == ":":
        j = _scan_digits(text, i + 1, n).end()
        if j == i + 1:
            return SIPParseError("port must be digits", offset=i + 1)
        i = j
    while i < n and text[i] == ";":
        j = _scan_param(text, i + 1, n).end()
        if j == i + 1:
            return SIPParseError("empty URI parameter name", offset=i + 1)
        if j < n and text[j] == "=":
            k = _scan_param(text, j + 1, n).end()
            if k == j + 1:
                return SIPParseError("empty URI parameter value after '='", offset=j + 1)
            j = k
        i = j
    if i < n and text[i] == "?":
        while True:
            j = _scan_hdr(text, i + 1, n).end()
            if j == i + 1:
                return SIPParseError("empty header name in URI headers", offset=i + 1)
            if j == n or text[j] != "=":
                return SIPParseError("URI header needs 'name=value'", offset=j)
            i = _scan_hdr(text, j + 1, n).end()
            if i == n or text[i] != "&":
                break
    if i < n:
        return _char_error(text, i, "a SIP URI here")
    return SIPParseError("malformed SIP URI", offset=pos)


def _char_error(text: str, i: int, where: str) -> SIPParseError:
    c = text[i]
    what = "space" if c == " " else "control character" if c < " " or c == "\x7f" else "character"
    return SIPParseError(f"{what} {c!r} not allowed in {where} (escape it as %HH)", offset=i)


def _escape_error(text: str, i: int) -> SIPParseError:
    return SIPParseError(
        f"bad escape {text[i:i + 3]!r}: '%' must be followed by two hex digits", offset=i)


def _parse_tel(text: str, pos: int) -> URI:
    """RFC 3966 §3 telephone-uri: global-number, or local-number with phone-context."""
    n = len(text)
    semi = text.find(";", pos)
    end = n if semi < 0 else semi
    number = text[pos:end]
    j = _scan_tel_number(text, pos, end).end()
    if j < end:
        raise _char_error(text, j, "a telephone number")
    if not number:
        raise SIPParseError("empty telephone number", offset=pos)
    is_global = number[0] == "+"
    if not (_TEL_GLOBAL if is_global else _TEL_LOCAL).fullmatch(number):
        raise SIPParseError(
            "telephone number must be '+' digits or local digits, with visual separators "
            "'-.()' only (RFC 3966 §3)", offset=pos)
    bad = _BAD_ESCAPE.search(text, pos)
    if bad is not None:
        raise _escape_error(text, bad.start())
    raw: list[Param] = []
    seen = set()
    i = end
    while i < n:
        start = i + 1
        semi = text.find(";", start)
        stop = n if semi < 0 else semi
        eq = text.find("=", start, stop)
        name_end = stop if eq < 0 else eq
        name = text[start:name_end]
        if not _TEL_PNAME.fullmatch(name):
            raise SIPParseError(f"bad tel parameter name {name!r}", offset=start)
        key = name.lower()
        if key in seen:
            raise SIPParseError(f"tel parameter {name!r} appears twice", offset=start)
        seen.add(key)
        value = None if eq < 0 else text[eq + 1:stop]
        _check_tel_param(text, key, value, eq + 1, stop)
        raw.append((name, value))
        i = stop
    if not is_global and "phone-context" not in seen:
        raise SIPParseError("local tel number needs ';phone-context=' (RFC 3966 §5.1.5)",
                            offset=pos)
    rparams = tuple(raw)
    params = rparams if "%" not in text else tuple(
        (n_, None if v is None else _unescape(v)) for n_, v in raw)
    u = object.__new__(URI)
    u._scheme = "tel"
    u._user = u._password = u._ruser = u._rpassword = None
    u._host = u._hkey = ""
    u._port = None
    u._params = params
    u._rparams = rparams
    u._headers = u._rheaders = ()
    u._number = number
    u._text = text
    u._key = None
    return u


def _check_tel_param(text: str, key: str, value: str | None, vstart: int, stop: int) -> None:
    if value is None:
        if key in ("ext", "isub", "phone-context"):
            raise SIPParseError(f"tel parameter {key!r} needs a value", offset=stop)
        return
    if not value:
        raise SIPParseError("empty tel parameter value after '='", offset=vstart)
    if key == "ext":
        if not _TEL_EXT.fullmatch(value):
            raise SIPParseError("ext must be digits and visual separators", offset=vstart)
    elif key == "phone-context":
        if value[0] == "+":
            ok = _TEL_GLOBAL.fullmatch(value) is not None
        else:
            ok = _scan_host(value).end() == len(value) and _is_hostname(value)
        if not ok:
            raise SIPParseError(
                "phone-context must be a domain name or '+' digits (RFC 3966 §3)", offset=vstart)
    else:
        scan = _scan_isub if key == "isub" else _scan_param
        j = scan(text, vstart, stop).end()
        if j < stop:
            raise _char_error(text, j, f"tel parameter {key!r}")


@lru_cache(maxsize=4096)
def _host_key(host: str) -> str | None:
    """Comparison form of a host, None if invalid: names lowercased, IPv4
    octets as numbers, IPv6 compressed (RFC 3261 §19.1.4: compare addresses)."""
    if host[0] == "[":
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    if _host_problem(host) is not None:
        return None
    last = host.rstrip(".").rpartition(".")[2]
    if last[0].isdigit():
        return ".".join(str(int(o)) for o in host.split("."))
    return host.lower()


def _host_problem(host: str) -> str | None:
    """Why ``host`` (already limited to the host characters) is not an RFC 3261
    §25.1 hostname, IPv4address or IPv6reference; None if it is one."""
    if host[0] == "[":
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host!r} is not a valid IPv6 reference"
        return None
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    if any(not label for label in labels):
        return f"empty label in host name {host!r}"
    if labels[-1][0].isdigit():
        if (host[-1] == "." or len(labels) != 4
                or not all(o.isdigit() and len(o) <= 3 and int(o) <= 255 for o in labels)):
            return (f"{host!r} is neither an IPv4 address nor a host name "
                    "(a top label starts with a letter)")
        return None
    for label in labels:
        if label[0] == "-" or label[-1] == "-":
            return f"host name label {label!r} starts or ends with '-'"
    return None


def _is_hostname(value: str) -> bool:
    if not value or _host_problem(value) is not None:
        return False
    return not value.rstrip(".").rpartition(".")[2][0].isdigit()


def _unescape(s: str) -> str:
    # surrogateescape: bytes that are not UTF-8 survive a round trip.
    return unquote(s, errors="surrogateescape") if "%" in s else s


def _escape(s: str, safe: str) -> str:
    return quote(s, safe=safe, errors="surrogateescape")


def _escape_params(params: Iterable[Param]) -> list[Param]:
    return [(_escape(n, _PARAM_SAFE), None if v is None else _escape(v, _PARAM_SAFE))
            for n, v in params]


def _escape_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(_escape(n, _HDR_SAFE), _escape(v, _HDR_SAFE)) for n, v in headers]


def _normalize_escape(m: re.Match[str]) -> str:
    c = chr(int(m.group(1), 16))
    return c if c < "\x80" and c not in _KEEP_ESCAPED else "%" + m.group(1).upper()


def _normalize(raw: str) -> str:
    """Decode escapes that RFC 3261 §19.1.4 makes equivalent to the character;
    keep reserved (and non-ASCII) ones escaped with uppercase hex."""
    return _ESCAPE.sub(_normalize_escape, raw) if "%" in raw else raw


def _compose(
    scheme: str,
    ruser: str | None,
    rpassword: str | None,
    host: str,
    port: int | None,
    rparams: Iterable[Param],
    rheaders: Iterable[tuple[str, str]],
    number: str | None,
) -> str:
    """Text of a URI from already-escaped components (validated by the caller's parse)."""
    parts = [scheme, ":"]
    if scheme == "tel":
        parts.append(number or "")
    else:
        if ruser is not None:
            parts.append(ruser)
            if rpassword is not None:
                parts += (":", rpassword)
            parts.append("@")
        parts.append(f"[{host}]" if ":" in host and host[:1] != "[" else host)
        if port is not None:
            parts += (":", str(port))
    for name, value in rparams:
        parts += (";", name) if value is None else (";", name, "=", value)
    for k, (name, value) in enumerate(rheaders):
        parts += ("&" if k else "?", name, "=", value)
    return "".join(parts)


def _compare_key(u: URI) -> tuple:
    """(identity, {param: value}, sorted headers) in the forms compared by
    RFC 3261 §19.1.4 (userinfo case-sensitive, the rest case-insensitive) or
    RFC 3966 §4 (visual separators ignored, all case-insensitive)."""
    pmap: dict[str, str | None] = {}
    if u._scheme == "tel":
        number = u._number.replace("%23", "#").translate(_VISUAL).lower()
        for name, value in u._rparams:
            key = name.lower()
            if value is not None:
                if key == "ext" or (key == "phone-context" and value[0] == "+"):
                    value = value.translate(_VISUAL)
                value = _normalize(value).lower()
            pmap[key] = value
        return ("tel", number), pmap, ()
    for name, value in u._rparams:
        key = _normalize(name).lower()
        if value is not None:
            if key == "maddr":
                value = _host_key(value)
            elif key == "ttl":
                value = str(int(value))
            else:
                value = _normalize(value).lower()
        pmap[key] = value
    headers = tuple(sorted(
        (_normalize(n).lower(), _normalize(v).lower()) for n, v in u._rheaders))
    ident = (
        u._scheme,
        None if u._ruser is None else _normalize(u._ruser),
        None if u._rpassword is None else _normalize(u._rpassword),
        u._hkey,
        u._port,
    )
    return ident, pmap, headers
