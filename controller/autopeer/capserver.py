"""``sipmesh capserver``: the provider side of SIP Auto Peer (RFC 10006 §4, §5).

One HTTPS server (TLS 1.2 or later, RFC 10006 §4.2) with three resources:

- ``/.well-known/webfinger``: RFC 7033 §4 discovery of an enterprise's
  capability set URL under the RFC 9409 link relation (RFC 10006 §4.5);
- ``/oauth/token``: the OAuth 2.0 client credentials grant (RFC 6749 §4.4),
  clients authenticated by HTTP Basic or form fields (§2.3.1);
- ``/capserver/<enterprise>/<document>``: the capability set, behind a
  bearer token (RFC 6750 §2.1), 400/403 as RFC 10006 §4.6 requires, with a
  strong ETag so clients poll with If-None-Match (RFC 10006 §5).

Documents are files an operator edits while the server runs: each request
stats the file and re-reads it when it changed. With ``validate`` on, a
document that fails the YANG module (RFC 10006 §7, §11.3) is never served;
the last valid version stays, as RFC 10006 §8 asks of the consumer too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from aiohttp import web

from sipmesh.autopeer.capserver_config import (
    AUTHORITY,
    CapServerConfig,
    CapServerConfigError,
    Enterprise,
    canonical_resource,
    load_config,
)
from sipmesh.autopeer.validate import Validator

__all__ = ["CapServer", "CapServerConfig", "CapServerConfigError", "load_config", "serve"]

log = logging.getLogger(__name__)

# A client credentials request is a few hundred bytes; 8 KiB leaves room for
# long client ids and scopes while refusing anything that is not a token request.
MAX_FORM = 8 * 1024
# validate = false serves files as they are (to test clients' own 1 MiB limit),
# but never reads more than this into memory.
MAX_FILE = 16 << 20
# Live tokens kept per enterprise; the oldest goes first. A client renews
# about once per token lifetime, so this only bounds a misbehaving one.
MAX_TOKENS = 1000
REALM = "capserver"
JRD = "application/jrd+json"
_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*) *", re.IGNORECASE)
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*")
_ETAG = re.compile(r'(?:W/)?"([^"]*)"')


@dataclass(frozen=True)
class _Version:
    body: bytes
    etag: str


class _Document:
    """One document file, re-read when its (mtime_ns, size) changes."""

    def __init__(self, enterprise: str, name: str, path: Path):
        self.label = f"{enterprise}/{name} ({path})"
        self.path = path
        self.stamp: tuple[int, int] | None = None
        self.served: _Version | None = None


class CapServer:
    """The capability server for the enterprises of one configuration.

    ``validator`` lets servers share one loaded YANG model (loading takes a
    fraction of a second); ``clock`` decides token expiry, so tests move
    time instead of waiting for it.
    """

    def __init__(
        self,
        config: CapServerConfig,
        *,
        validator: Validator | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self._clock = clock
        self._validator = (validator or Validator()) if config.validate else None
        self._enterprises = {e.name: e for e in config.enterprises}
        self._clients = {e.client_id: e for e in config.enterprises if e.client_id}
        self._static = {_digest(t): e.name for e in config.enterprises for t in e.static_tokens}
        self._issued: dict[str, dict[bytes, float]] = {e.name: {} for e in config.enterprises}
        self._documents = {
            (e.name, n): _Document(e.name, n, p)
            for e in config.enterprises
            for n, p in e.documents.items()
        }
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = config.base_url
        self._resources: dict[str, Enterprise] = {}
        if self.base_url:
            self._map_resources(urlsplit(self.base_url).netloc)
        self.app = web.Application(client_max_size=MAX_FORM)
        self.app.router.add_get("/.well-known/webfinger", self._webfinger)
        self.app.router.add_post("/oauth/token", self._token)
        self.app.router.add_get("/capserver/{enterprise}/{document}", self._document)

    async def start(self) -> str:
        """Listen on the configured address over TLS; the base URL actually bound."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.config.host, self.config.port,
            ssl_context=self.config.ssl_context(),
        )
        await site.start()
        port = self._runner.addresses[0][1]
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        self.base_url = self.config.base_url or f"https://{host}:{port}"
        self._map_resources(urlsplit(self.base_url).netloc)
        for document in self._documents.values():
            self._current(document)
        return self.base_url

    async def stop(self) -> None:
        """Close the listener and the open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def token_url(self) -> str:
        """The token endpoint (RFC 6749 §3.2)."""
        return f"{self._base()}/oauth/token"

    def url(self, enterprise: str, document: str) -> str:
        """The https URL of one enterprise's document."""
        return f"{self._base()}/capserver/{enterprise}/{document}"

    def issue_token(self, enterprise: str) -> str:
        """A new bearer token for ``enterprise``, valid for ``token_lifetime`` seconds."""
        issued = self._issued[enterprise]
        now = self._clock()
        for key in [k for k, expires in issued.items() if expires <= now]:
            del issued[key]
        while len(issued) >= MAX_TOKENS:
            del issued[next(iter(issued))]
        token = secrets.token_urlsafe(32)
        issued[_digest(token)] = now + self.config.token_lifetime
        return token

    def _base(self) -> str:
        if self.base_url is None:
            raise RuntimeError("capserver not started and no base_url configured")
        return self.base_url

    def _map_resources(self, authority: str) -> None:
        self._resources = {
            canonical_resource(r.replace(AUTHORITY, authority)): e
            for e in self.config.enterprises
            for r in e.resources
        }

    async def _webfinger(self, request: web.Request) -> web.Response:
        """RFC 7033 §4.2: one resource, any number of rel filters (§4.3)."""
        cors = {"Access-Control-Allow-Origin": "*"}
        unknown = sorted(set(request.query) - {"resource", "rel"})
        if unknown:
            return _text(400, f"unknown query parameter {unknown[0]!r}", cors)
        resources = request.query.getall("resource", [])
        if len(resources) != 1:
            return _text(400, "exactly one resource parameter is required (RFC 7033 §4.2)", cors)
        try:
            enterprise = self._resources.get(canonical_resource(resources[0]))
        except ValueError as e:
            return _text(400, f"malformed resource: {e}", cors)
        if enterprise is None:
            return _text(404, "no information about this resource", cors)
        links = [{"rel": self.config.webfinger_rel,
                  "href": self.url(enterprise.name, enterprise.webfinger_document)}]
        rels = request.query.getall("rel", [])
        if rels:
            links = [link for link in links if link["rel"] in rels]
        body = json.dumps({"subject": resources[0], "links": links}).encode()
        return web.Response(body=body, content_type=JRD, headers=cors)

    async def _token(self, request: web.Request) -> web.Response:
        """RFC 6749 §4.4.2 request, §5.1 success, §5.2 errors."""
        if request.query_string:
            return _oauth(400, "invalid_request", "parameters belong in the body, not the URI")
        if request.content_type != "application/x-www-form-urlencoded":
            return _oauth(400, "invalid_request", "body must be application/x-www-form-urlencoded")
        try:
            pairs = parse_qsl((await request.read()).decode("utf-8"), keep_blank_values=True,
                              strict_parsing=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            return _oauth(400, "invalid_request", "malformed form body")
        form = dict(pairs)
        if len(form) != len(pairs):
            return _oauth(400, "invalid_request", "a parameter is repeated (RFC 6749 §3.2)")
        credentials = _client_credentials(request, form)
        if isinstance(credentials, web.Response):
            return credentials
        client_id, secret = credentials
        client = self._clients.get(client_id)
        expected = client.client_secret if client and client.client_secret else secrets.token_hex()
        if not hmac.compare_digest(secret.encode(), expected.encode()) or client is None:
            return _oauth(401, "invalid_client", "unknown client or wrong secret")
        grant = form.get("grant_type")
        if not grant:
            return _oauth(400, "invalid_request", "grant_type is missing")
        if grant != "client_credentials":
            return _oauth(400, "unsupported_grant_type", "only client_credentials is supported")
        if "scope" in form and not _SCOPE.fullmatch(form["scope"]):
            return _oauth(400, "invalid_scope", "malformed scope (RFC 6749 §3.3)")
        body = {"access_token": self.issue_token(client.name), "token_type": "Bearer",
                "expires_in": self.config.token_lifetime}
        return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def _document(self, request: web.Request) -> web.Response:
        """RFC 10006 §4.4-4.6 and §9.2: the capability set behind a bearer token."""
        name = request.match_info["enterprise"]
        enterprise = self._enterprises.get(name)
        if request.query_string:
            return _text(400, "this request has a query parameter the server does not know "
                         "(RFC 10006 §4.6)")
        if enterprise is None:
            return _text(404, "no such document")
        refusal = self._check_bearer(request, name)
        if refusal is not None:
            return refusal
        document = request.match_info["document"]
        target = enterprise.redirects.get(document)
        if target is not None:
            location = self.url(name, target) if target in enterprise.documents else target
            return web.Response(status=301, headers={"Location": location})
        if document not in enterprise.documents:
            return _text(404, "no such document")
        version = self._current(self._documents[name, document])
        if version is None:
            return _text(503, "this capability set is not available: no valid version yet")
        headers = {"ETag": version.etag, "Cache-Control": "no-cache"}
        if _matches(request.headers.getall("If-None-Match", []), version.etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=version.body, content_type="application/json", headers=headers)

    def _check_bearer(self, request: web.Request, enterprise: str) -> web.Response | None:
        """RFC 6750 §2.1 header; 403 rather than 401 for a bad token (RFC 10006 §4.6)."""
        values = request.headers.getall("Authorization", [])
        challenge = f'Bearer realm="{REALM}"'
        if not values or values[0].split(" ", 1)[0].lower() != "bearer":
            return _text(401, "a bearer token is required (RFC 6750 §2.1)",
                         {"WWW-Authenticate": challenge})
        match = _BEARER.fullmatch(values[0])
        if len(values) > 1 or match is None:
            return _text(400, "malformed Authorization header (RFC 6750 §2.1)",
                         {"WWW-Authenticate": f'{challenge}, error="invalid_request"'})
        key = _digest(match.group(1))
        owner = self._static.get(key)
        if owner is None:
            now = self._clock()
            owner = next((e for e, issued in self._issued.items() if issued.get(key, 0) > now),
                         None)
        if owner is None:
            return _text(403, "this token is unknown or has expired: it does not permit "
                         "viewing the capability set document",
                         {"WWW-Authenticate": f'{challenge}, error="invalid_token"'})
        if owner != enterprise:
            return _text(403, "this token was issued to another enterprise: it does not "
                         "permit viewing this capability set document",
                         {"WWW-Authenticate": f'{challenge}, error="insufficient_scope"'})
        return None

    def _current(self, document: _Document) -> _Version | None:
        """The version to serve, re-reading the file when its stat changed."""
        try:
            st = os.stat(document.path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == document.stamp:
                return document.served
            with open(document.path, "rb") as f:
                body = f.read(MAX_FILE + 1)
        except OSError as e:
            if document.stamp != (-1, -1):
                log.warning("capserver: cannot read %s: %s; still serving the last valid "
                            "version", document.label, e.strerror or e)
            document.stamp = (-1, -1)
            return document.served
        document.stamp = stamp
        if len(body) > MAX_FILE:
            log.warning("capserver: %s is larger than %d bytes; not served",
                        document.label, MAX_FILE)
            return document.served
        if self._validator is not None:
            issues = self._validator.issues(body)
            if issues:
                log.warning("capserver: %s is not a valid capability set (%s); still serving "
                            "the last valid version", document.label,
                            "; ".join(str(i) for i in issues))
                return document.served
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        document.served = _Version(body, etag)
        return document.served


def _client_credentials(
    request: web.Request, form: dict[str, str]
) -> tuple[str, str] | web.Response:
    """Client authentication, RFC 6749 §2.3.1: HTTP Basic or body fields, not both."""
    values = request.headers.getall("Authorization", [])
    in_form = "client_id" in form or "client_secret" in form
    if not values:
        if "client_id" not in form:
            return _oauth(401, "invalid_client", "no client authentication")
        return form["client_id"], form.get("client_secret", "")
    if len(values) > 1 or in_form:
        return _oauth(400, "invalid_request", "more than one client authentication (§2.3)")
    scheme, _, encoded = values[0].strip().partition(" ")
    if scheme.lower() != "basic":
        return _oauth(401, "invalid_client", "clients authenticate with HTTP Basic")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return _oauth(400, "invalid_request", "malformed Basic credentials")
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return _oauth(400, "invalid_request", "malformed Basic credentials")
    return unquote_plus(client_id), unquote_plus(secret)


def _matches(values: list[str], etag: str) -> bool:
    """If-None-Match with the weak comparison of RFC 9110 §13.1.2, ``*`` included."""
    opaque = etag.strip('"')
    for value in values:
        if value.strip() == "*":
            return True
        if any(m.group(1) == opaque for m in _ETAG.finditer(value)):
            return True
    return False


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


def _oauth(status: int, error: str, description: str) -> web.Response:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if status == 401:
        headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
    body = {"error": error, "error_description": description}
    return web.json_response(body, status=status, headers=headers)


async def serve(config_path: str | Path) -> None:
    """Run ``sipmesh capserver --config FILE`` until cancelled or SIGTERM."""
    server = CapServer(load_config(config_path))
    url = await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        handled = True
    except (NotImplementedError, RuntimeError, ValueError):
        handled = False
    try:
        print(f"capserver listening on {url}", flush=True)
        await stopping.wait()
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGTERM)
        await server.stop()
