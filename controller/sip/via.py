"""The Via header (RFC 3261 §20.42, §18.2.1) with rport (RFC 3581).

Responses are routed by the top Via (§18.2.2), so its sent-by, branch,
received and rport must be exact. The magic cookie ``z9hG4bK`` marks an
RFC 3261 branch (§8.1.1.7); other branches make the transaction layer
fall back to RFC 2543 matching (§17.2.3).
"""

from __future__ import annotations

import ipaddress
import re

from sipmesh.sip.errors import SIPParseError
from sipmesh.sip.grammar import (
    TOKEN_CHARS,
    check_token,
    format_params,
    get_param,
    parse_params,
    skip_ws,
)

MAGIC_COOKIE = "z9hG4bK"
# The shape nearly every Via has: SIP/2.0/TRANSPORT host[:port] then plain
# parameters. Other spellings (spaces around '/', quoted values) take the
# careful scanner below.
_FAST = re.compile(
    r"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*)"
)
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "sctp": 5060, "tls": 5061, "ws": 80, "wss": 443}


class Via:
    """One Via element: protocol, transport, sent-by host and port, parameters."""

    __slots__ = ("protocol", "version", "transport", "host", "port", "params")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: list[tuple[str, str | None]] | None = None,
        protocol: str = "SIP",
        version: str = "2.0",
    ) -> None:
        self.protocol = protocol
        self.version = version
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params or []

    @classmethod
    def parse(cls, value: str) -> Via:
        v = value.strip()
        m = _FAST.fullmatch(v)
        if m is not None:
            transport, host, port, ptext = m.groups()
            params: list[tuple[str, str | None]] = []
            if ptext:
                for part in ptext[1:].split(";"):
                    name, eq, val = part.partition("=")
                    params.append((name, val if eq else None))
            via = cls(transport, host, int(port) if port else None, params)
            if (len(params) > 1 and len({k.lower() for k, _ in params}) != len(params)) or (
                    host[0] == "[" or (port and int(port) > 65535)):
                return cls._parse_slow(v)
            via._check_values()
            return via
        return cls._parse_slow(v)

    def _check_values(self) -> None:
        for name in ("ttl", "rport"):
            val = self.param(name)
            if val and (not val.isdigit() or int(val) > (255 if name == "ttl" else 65535)):
                raise SIPParseError(f"bad {name} value {val!r}", header="Via")

    @classmethod
    def _parse_slow(cls, v: str) -> Via:
        n = len(v)
        parts = []
        i = 0
        for k in range(3):
            i = skip_ws(v, i)
            j = i
            while j < n and v[j] in TOKEN_CHARS:
                j += 1
            parts.append(v[i:j])
            i = skip_ws(v, j)
            if k < 2:
                if i >= n or v[i] != "/":
                    raise SIPParseError("sent-protocol must be SIP/2.0/TRANSPORT", header="Via")
                i += 1
        protocol, version, transport = parts
        for p in parts:
            check_token(p, "sent-protocol part", "Via")
        if i == j:
            raise SIPParseError("no whitespace between sent-protocol and sent-by", header="Via")
        if i < n and v[i] == "[":
            end = v.find("]", i)
            if end < 0:
                raise SIPParseError("unterminated IPv6 reference", offset=i, header="Via")
            host = v[i : end + 1]
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                raise SIPParseError(f"bad IPv6 address {host}", header="Via") from None
            j = end + 1
        else:
            j = i
            while j < n and (v[j].isalnum() or v[j] in "-."):
                j += 1
            host = v[i:j]
            if not host or not host.isascii():
                raise SIPParseError("sent-by has no host", offset=i, header="Via")
        j = skip_ws(v, j)
        port = None
        if j < n and v[j] == ":":
            j = skip_ws(v, j + 1)
            k = j
            while k < n and v[k].isdigit():
                k += 1
            if k == j or k - j > 5 or int(v[j:k]) > 65535:
                raise SIPParseError("bad sent-by port", offset=j, header="Via")
            port = int(v[j:k])
            j = k
        params, end = parse_params(v, j, header="Via")
        if end != n:
            raise SIPParseError(f"unexpected text {v[end:]!r}", offset=end, header="Via")
        via = cls(transport, host, port, params, protocol, version)
        via._check_values()
        return via

    def param(self, name: str) -> str | None:
        """A parameter by case-insensitive name ('' for a flag, None if absent)."""
        return get_param(self.params, name)

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def rfc3261_branch(self) -> bool:
        """True when the branch carries the §8.1.1.7 magic cookie."""
        b = self.branch
        return b is not None and b.startswith(MAGIC_COOKIE)

    @property
    def sent_by(self) -> tuple[str, int]:
        """(host, port) with the transport's default port filled in (§18.2.2)."""
        return self.host, self.port or DEFAULT_PORTS.get(self.transport.lower(), 5060)

    def set_param(self, name: str, value: str | None) -> None:
        """Set or replace a parameter (received, rport on the server side)."""
        key = name.lower()
        for idx, (k, _) in enumerate(self.params):
            if k.lower() == key:
                self.params[idx] = (k, value)
                return
        self.params.append((name, value))

    def __str__(self) -> str:
        hostport = self.host if self.port is None else f"{self.host}:{self.port}"
        return (f"{self.protocol}/{self.version}/{self.transport} {hostport}"
                f"{format_params(self.params)}")

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"
