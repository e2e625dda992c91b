"""Configuration of ``sipmesh capserver``, the provider side of SIP Auto Peer.

A TOML file lists the enterprises a service provider peers with: each one's
OAuth 2.0 client (RFC 6749 §2.3.1), the WebFinger resources that lead to it
(RFC 7033 §4, RFC 10006 §4.5) and its capability set documents (RFC 10006
§4.3 G: one document per enterprise network). Everything is checked when
the file is loaded, so a running server never meets a half-valid setting;
the one error type names the file and the key at fault.
"""

from __future__ import annotations

import re
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from sipmesh.autopeer.discovery import RELS

AUTHORITY = "{authority}"
MAX_RESOURCE = 2048
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,63}")
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_TOP_KEYS = {
    "listen", "certificate", "private_key", "base_url", "validate",
    "token_lifetime", "webfinger_rel", "enterprise",
}
_ENTERPRISE_KEYS = {
    "name", "client_id", "client_secret", "client_secret_file", "static_tokens",
    "resources", "documents", "webfinger_document", "redirects",
}


class CapServerConfigError(ValueError):
    """A capserver configuration that cannot be used; the message names file and key."""


@dataclass(frozen=True)
class Enterprise:
    """One enterprise network the provider serves (RFC 10006 §4.3 G)."""

    name: str
    client_id: str | None
    client_secret: str | None
    static_tokens: tuple[str, ...]
    resources: tuple[str, ...]
    documents: dict[str, Path]
    webfinger_document: str
    redirects: dict[str, str]


@dataclass(frozen=True)
class CapServerConfig:
    """A loaded, checked configuration (see tests/data/autopeer/capserver-example.toml)."""

    path: Path
    host: str
    port: int
    certificate: Path
    private_key: Path
    base_url: str | None
    validate: bool
    token_lifetime: int
    webfinger_rel: str
    enterprises: tuple[Enterprise, ...] = field(default_factory=tuple)

    def ssl_context(self) -> ssl.SSLContext:
        """The server's TLS context: TLS 1.2 or later (RFC 10006 §4.2)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.certificate, self.private_key)
        except (OSError, ssl.SSLError) as e:
            raise CapServerConfigError(
                f"{self.path}: certificate/private_key: cannot load "
                f"{self.certificate} with {self.private_key}: {e}"
            ) from e
        return ctx


def canonical_resource(resource: str) -> str:
    """The form WebFinger resources are compared in (RFC 7033 §4.1, RFC 7565 §7).

    ``acct:user@host`` or ``https://host[/path]``; the host is lower-cased
    and an empty https path is ``/``. Any other well-formed URI comes back
    unchanged (it can only be unknown); ValueError when malformed.
    """
    if not resource or len(resource) > MAX_RESOURCE:
        raise ValueError("resource is empty or too long")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in resource):
        raise ValueError("resource contains white space or control characters")
    scheme, sep, rest = resource.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise ValueError("resource is not a URI (no scheme)")
    scheme = scheme.lower()
    if scheme == "acct":
        user, at, host = rest.rpartition("@")
        if not at or not user or not host or re.search(r"[/?#\[\]]", host):
            raise ValueError("acct: resource is not user@host (RFC 7565)")
        return f"acct:{user}@{host.lower()}"
    if scheme == "https":
        parts = urlsplit(resource)
        if not rest.startswith("//") or not parts.hostname or parts.fragment:
            raise ValueError("https: resource has no host or has a fragment")
        if "@" in parts.netloc:
            raise ValueError("https: resource carries user information")
        netloc = parts.netloc.lower().removesuffix(":443")
        query = f"?{parts.query}" if parts.query else ""
        return f"https://{netloc}{parts.path or '/'}{query}"
    return resource


def load_config(path: str | Path) -> CapServerConfig:
    """Read and check a capserver TOML file; CapServerConfigError on any fault."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CapServerConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CapServerConfigError(f"{path}: not valid TOML: {e}") from e
    r = _Reader(path)
    r.unknown(raw, _TOP_KEYS, "")
    host, port = _listen(r, r.get(raw, "listen", str, "listen", "127.0.0.1:8443"))
    base_url = r.get(raw, "base_url", str, "base_url", None)
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
            r.fail("base_url", f"must be https://HOST[:PORT] with no path, not {base_url!r}")
        base_url = base_url.rstrip("/")
    lifetime = r.get(raw, "token_lifetime", int, "token_lifetime", 3600)
    if lifetime <= 0:
        r.fail("token_lifetime", "must be a positive number of seconds")
    rel = r.get(raw, "webfinger_rel", str, "webfinger_rel", RELS[0])
    if rel not in RELS:
        r.fail("webfinger_rel", f"must be one of {', '.join(RELS)}")
    tables = r.get(raw, "enterprise", list, "enterprise", [])
    if not tables:
        r.fail("enterprise", "at least one [[enterprise]] table is needed")
    enterprises = tuple(_enterprise(r, t, i) for i, t in enumerate(tables))
    _unique(r, enterprises)
    config = CapServerConfig(
        path=path,
        host=host,
        port=port,
        certificate=r.file(raw, "certificate"),
        private_key=r.file(raw, "private_key"),
        base_url=base_url,
        validate=r.get(raw, "validate", bool, "validate", True),
        token_lifetime=lifetime,
        webfinger_rel=rel,
        enterprises=enterprises,
    )
    config.ssl_context()
    return config


class _Reader:
    """Typed access to the parsed TOML with errors naming the file and the key."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, message: str) -> NoReturn:
        raise CapServerConfigError(f"{self.path}: {key}: {message}")

    def unknown(self, table: dict, known: set[str], where: str) -> None:
        for key in sorted(set(table) - known):
            self.fail(f"{where}{key}", "unknown key (a typo?)")

    def get(self, table: dict, key: str, kind: type, label: str, default: Any = ...) -> Any:
        if key not in table:
            if default is ...:
                self.fail(label, "is required")
            return default
        value = table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(label, f"must be a {kind.__name__}, not {type(value).__name__}")
        return value

    def file(self, table: dict, key: str, label: str | None = None) -> Path:
        label = label or key
        name = self.get(table, key, str, label)
        target = (self.path.parent / name).resolve()
        if not target.is_file():
            self.fail(label, f"no such file {target}")
        return target

    def strings(self, table: dict, key: str, label: str) -> tuple[str, ...]:
        values = self.get(table, key, list, label, [])
        if not all(isinstance(v, str) and v for v in values):
            self.fail(label, "must be a list of non-empty strings")
        return tuple(values)

    def mapping(self, table: dict, key: str, label: str) -> dict[str, str]:
        values = self.get(table, key, dict, label, {})
        for name, value in values.items():
            if not _SEGMENT.fullmatch(name):
                self.fail(f"{label}.{name}", "is not a safe URL path segment")
            if not isinstance(value, str) or not value:
                self.fail(f"{label}.{name}", "must be a non-empty string")
        return dict(values)


def _listen(r: _Reader, listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        r.fail("listen", f"must be HOST:PORT (port 0 lets the system pick), not {listen!r}")
    return host, int(port)


def _enterprise(r: _Reader, table: Any, index: int) -> Enterprise:
    where = f"enterprise[{index}]"
    if not isinstance(table, dict):
        r.fail(where, "must be a table ([[enterprise]])")
    name = r.get(table, "name", str, f"{where}.name")
    if not _SEGMENT.fullmatch(name):
        r.fail(f"{where}.name", f"{name!r} is not a safe URL path segment")
    where = f"enterprise {name!r}."
    r.unknown(table, _ENTERPRISE_KEYS, where)
    client_id = r.get(table, "client_id", str, f"{where}client_id", None)
    secret = r.get(table, "client_secret", str, f"{where}client_secret", None)
    if "client_secret_file" in table:
        if secret is not None:
            r.fail(f"{where}client_secret_file", "give client_secret or client_secret_file")
        secret_path = r.file(table, "client_secret_file", f"{where}client_secret_file")
        try:
            secret = secret_path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            r.fail(f"{where}client_secret_file", f"cannot read {secret_path}: {e}")
        if not secret:
            r.fail(f"{where}client_secret_file", f"{secret_path} is empty")
    static = r.strings(table, "static_tokens", f"{where}static_tokens")
    for token in static:
        if not _B64TOKEN.fullmatch(token):
            r.fail(f"{where}static_tokens", "a token must be b64token characters (RFC 6750 §2.1)")
    if client_id is not None and not secret:
        r.fail(f"{where}client_secret", "client_id needs client_secret or client_secret_file")
    if client_id is None and secret is not None:
        r.fail(f"{where}client_id", "a client secret without a client_id")
    if client_id is None and not static:
        r.fail(f"{where}client_id", "no client_id and no static_tokens: nobody could fetch")
    resources = r.strings(table, "resources", f"{where}resources")
    for resource in resources:
        try:
            canonical = canonical_resource(resource.replace(AUTHORITY, "host.invalid"))
        except ValueError as e:
            r.fail(f"{where}resources", f"{resource!r}: {e}")
        if not canonical.startswith(("acct:", "https:")):
            r.fail(f"{where}resources", f"{resource!r}: only acct: and https: resources")
    names = r.mapping(table, "documents", f"{where}documents")
    if not names:
        r.fail(f"{where}documents", "at least one document is needed")
    documents = {n: r.file(names, n, f"{where}documents.{n}") for n in names}
    webfinger = r.get(table, "webfinger_document", str, f"{where}webfinger_document", None)
    if webfinger is None:
        webfinger = next(iter(documents))
    elif webfinger not in documents:
        r.fail(f"{where}webfinger_document", f"{webfinger!r} is not one of the documents")
    redirects = r.mapping(table, "redirects", f"{where}redirects")
    for old, target in redirects.items():
        if old in documents:
            r.fail(f"{where}redirects.{old}", "is also a document name")
        absolute = urlsplit(target)
        if target not in documents and not (absolute.scheme == "https" and absolute.hostname):
            r.fail(f"{where}redirects.{old}", "must name a document or an absolute https URL")
    return Enterprise(
        name=name,
        client_id=client_id,
        client_secret=secret,
        static_tokens=static,
        resources=resources,
        documents=documents,
        webfinger_document=webfinger,
        redirects=redirects,
    )


def _unique(r: _Reader, enterprises: tuple[Enterprise, ...]) -> None:
    names = [e.name for e in enterprises]
    for name in names:
        if names.count(name) > 1:
            r.fail(f"enterprise {name!r}.name", "names two [[enterprise]] tables")
    seen: dict[tuple[str, str], str] = {}
    for e in enterprises:
        keys = [("client_id", e.client_id)] if e.client_id else []
        keys += [("static_tokens", t) for t in e.static_tokens]
        keys += [("resources", canonical_resource(x)) for x in e.resources]
        for kind, value in keys:
            other = seen.setdefault((kind, value), e.name)
            if other != e.name:
                r.fail(f"enterprise {e.name!r}.{kind}", f"{value!r} is also used by {other!r}")
