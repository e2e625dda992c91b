"""Scanning helpers for RFC 3261 §25 header-value grammar.

Header values are mixtures of tokens, separators, quoted strings and
angle-bracketed URIs. These helpers find the structure (list commas,
parameter semicolons, quoted strings) without regular expressions that
could backtrack on hostile input; every loop moves forward.
"""

from __future__ import annotations

import re

from sipmesh.sip.errors import SIPParseError

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
# word additionally allows these separators (used by Call-ID, §25.1).
WORD_CHARS = TOKEN_CHARS | frozenset('()<>:\\"/[]?{}')
WS = " \t"

_TOKEN_CLASS = r"A-Za-z0-9\-.!%*_+`'~"
_TOKEN_RE = re.compile(f"[{_TOKEN_CLASS}]+")
# The usual shape of a parameter list: ;name or ;name=value with token, host
# or IPv6 values and no quotes. Anything else takes the careful scanner.
_PARAMS_RE = re.compile(
    rf"(?:[ \t]*;[ \t]*[{_TOKEN_CLASS}]+(?:[ \t]*=[ \t]*[{_TOKEN_CLASS}\[\]:]+)?)*[ \t]*"
)
_TOKEN_LIST_RE = re.compile(rf"[{_TOKEN_CLASS}]+(?:[ \t]*,[ \t]*[{_TOKEN_CLASS}]+)*")


def is_token(text: str) -> bool:
    """True if text is a non-empty RFC 3261 token."""
    return _TOKEN_RE.fullmatch(text) is not None


def token_list(value: str) -> list[str] | None:
    """The tokens of a plain comma-separated token list, or None for anything else."""
    v = value.strip(" \t")
    if _TOKEN_LIST_RE.fullmatch(v) is None:
        return None
    return [t.strip(" \t") for t in v.split(",")]


def check_token(text: str, what: str, header: str | None = None) -> str:
    """Return text if it is a token, else raise SIPParseError naming what it should be."""
    if not is_token(text):
        raise SIPParseError(f"{what} {text!r} is not a token", header=header)
    return text


def skip_ws(text: str, i: int) -> int:
    """Index of the first non-SP/HTAB character at or after i."""
    n = len(text)
    while i < n and text[i] in WS:
        i += 1
    return i


def quoted_string_end(text: str, i: int, header: str | None = None) -> int:
    """Given text[i] == '"', return the index just past the closing quote (§25.1 quoted-pair)."""
    n = len(text)
    j = i + 1
    while j < n:
        c = text[j]
        if c == '"':
            return j + 1
        if c == "\\":
            if j + 1 >= n or text[j + 1] in "\r\n":
                break
            j += 2
            continue
        if c in "\r\n":
            break
        j += 1
    raise SIPParseError("unterminated quoted string", offset=i, header=header)


def unquote(text: str) -> str:
    """The content of a quoted string (with quotes), quoted-pairs resolved."""
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    out = []
    i = 0
    while i < len(inner):
        c = inner[i]
        if c == "\\" and i + 1 < len(inner):
            out.append(inner[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def quote(text: str) -> str:
    """A quoted string whose content is text (escapes '"' and '\\')."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_list(value: str, header: str | None = None) -> list[str]:
    """Split a comma-separated header value (§7.3), ignoring commas in quotes and <>.

    Empty elements (``a,,b``) are skipped, as RFC 2616 §2.1's #rule allows.
    """
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    if '"' not in value and "<" not in value:
        return [p for p in (part.strip() for part in value.split(",")) if p]
    parts: list[str] = []
    n = len(value)
    start = i = 0
    while i < n:
        c = value[i]
        if c == '"':
            i = quoted_string_end(value, i, header)
            continue
        if c == "<":
            j = value.find(">", i)
            if j < 0:
                raise SIPParseError("'<' without '>'", offset=i, header=header)
            i = j + 1
            continue
        if c == ",":
            part = value[start:i].strip()
            if part:
                parts.append(part)
            start = i + 1
        i += 1
    part = value[start:].strip()
    if part:
        parts.append(part)
    return parts


def parse_params(
    text: str, i: int, header: str | None = None
) -> tuple[list[tuple[str, str | None]], int]:
    """Parse ``*( SEMI name [EQUAL value] )`` from text[i:]; return (params, end index).

    Values are tokens, quoted strings (kept with their quotes so that they
    serialize unchanged) or bracketed IPv6 references. A name given twice
    is an error (§7.3.1).
    """
    m = _PARAMS_RE.match(text, i)
    if m is not None and m.end() == len(text):
        return _simple_params(text[i:], header), len(text)
    params: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    n = len(text)
    i = skip_ws(text, i)
    while i < n and text[i] == ";":
        i = skip_ws(text, i + 1)
        j = i
        while j < n and text[j] in TOKEN_CHARS:
            j += 1
        name = text[i:j]
        if not name:
            raise SIPParseError("empty parameter name", offset=i, header=header)
        key = name.lower()
        if key in seen:
            raise SIPParseError(f"parameter {name!r} given twice", offset=i, header=header)
        seen.add(key)
        j = skip_ws(text, j)
        value: str | None = None
        if j < n and text[j] == "=":
            j = skip_ws(text, j + 1)
            if j < n and text[j] == '"':
                end = quoted_string_end(text, j, header)
            elif j < n and text[j] == "[":
                end = text.find("]", j)
                if end < 0:
                    raise SIPParseError("'[' without ']'", offset=j, header=header)
                end += 1
            else:
                end = j
                while end < n and (text[end] in TOKEN_CHARS or text[end] in "[]:"):
                    end += 1
            value = text[j:end]
            if not value:
                raise SIPParseError(f"parameter {name!r} has '=' but no value", offset=j,
                                    header=header)
            j = end
        params.append((name, value))
        i = skip_ws(text, j)
    return params, i


def _simple_params(text: str, header: str | None) -> list[tuple[str, str | None]]:
    """Parameters of text already matched by _PARAMS_RE (no quotes anywhere)."""
    params: list[tuple[str, str | None]] = []
    for part in text.split(";")[1:]:
        name, eq, value = part.partition("=")
        name = name.strip(" \t")
        params.append((name, value.strip(" \t") if eq else None))
    if len(params) > 1:
        keys = [k.lower() for k, _ in params]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise SIPParseError(f"parameter {dup!r} given twice", header=header)
    return params


def get_param(params: list[tuple[str, str | None]], name: str) -> str | None:
    """Value of a parameter by case-insensitive name; '' for a flag; None if absent."""
    key = name.lower()
    for k, v in params:
        if k.lower() == key:
            return "" if v is None else (unquote(v) if v.startswith('"') else v)
    return None


def format_params(params: list[tuple[str, str | None]]) -> str:
    """``;name=value`` text for params, values as stored."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)
