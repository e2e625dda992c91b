"""Authorization, Proxy-Authorization, WWW-Authenticate and Proxy-Authenticate values.

RFC 3261 §20.7, §20.27, §20.28, §20.44 and §25.1: a scheme followed by
comma-separated auth-params whose values may be quoted strings holding
commas, which is why these headers are never split as lists (§7.3.1).
"""

from __future__ import annotations

from sipmesh.sip.errors import SIPParseError
from sipmesh.sip.grammar import TOKEN_CHARS, quoted_string_end, skip_ws, unquote


class AuthValue:
    """A credentials or challenge value: scheme and ordered auth-params (quotes kept)."""

    __slots__ = ("scheme", "params")

    def __init__(self, scheme: str, params: list[tuple[str, str]]) -> None:
        self.scheme = scheme
        self.params = params

    @classmethod
    def parse(cls, value: str, header: str) -> AuthValue:
        v = value.strip()
        n = len(v)
        i = 0
        while i < n and v[i] in TOKEN_CHARS:
            i += 1
        scheme = v[:i]
        if not scheme:
            raise SIPParseError("missing auth scheme", header=header)
        params: list[tuple[str, str]] = []
        seen: set[str] = set()
        i = skip_ws(v, i)
        while i < n:
            j = i
            while j < n and v[j] in TOKEN_CHARS:
                j += 1
            name = v[i:j]
            if not name:
                raise SIPParseError("expected an auth-param name", offset=i, header=header)
            j = skip_ws(v, j)
            if j >= n or v[j] != "=":
                raise SIPParseError(f"auth-param {name!r} has no value", offset=j, header=header)
            j = skip_ws(v, j + 1)
            if j < n and v[j] == '"':
                end = quoted_string_end(v, j, header)
            else:
                end = j
                while end < n and v[end] in TOKEN_CHARS:
                    end += 1
                if end == j:
                    raise SIPParseError(f"auth-param {name!r} has no value", offset=j,
                                        header=header)
            if name.lower() in seen:
                raise SIPParseError(f"auth-param {name!r} given twice", header=header)
            seen.add(name.lower())
            params.append((name, v[j:end]))
            i = skip_ws(v, end)
            if i < n:
                if v[i] != ",":
                    raise SIPParseError("auth-params must be separated by ','", offset=i,
                                        header=header)
                i = skip_ws(v, i + 1)
        return cls(scheme, params)

    def get(self, name: str) -> str | None:
        """An auth-param's value, unquoted, by case-insensitive name."""
        key = name.lower()
        for k, v in self.params:
            if k.lower() == key:
                return unquote(v) if v.startswith('"') else v
        return None

    def __str__(self) -> str:
        return self.scheme + " " + ", ".join(f"{k}={v}" for k, v in self.params)
