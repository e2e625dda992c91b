"""OAuth 2.0 access tokens for the capability server (RFC 10006 §4.3, RFC 6749, RFC 6750).

RFC 10006 §4.3 makes OAuth 2.0 mandatory but names no grant type. An edge
element has no person at hand, so two sources serve it: a token the
provider issued and the operator configured (:class:`StaticToken`), and the
client-credentials grant (RFC 6749 §4.4) against the provider's token
endpoint (:class:`ClientCredentials`), cached until shortly before it
expires and renewed when the capability server refuses it. Neither the
client secret nor a token ever appears in an error message or a repr.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import quote_plus

import aiohttp

from sipmesh.autopeer.errors import AutopeerError
from sipmesh.autopeer.https import TEXT_LIMIT, https_url, read_body, request

# RFC 6750 §2.1: the b64token syntax of a bearer credential.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# A token response is a small JSON object (RFC 6749 §5.1); real ones are under 4 KiB.
MAX_TOKEN_RESPONSE = 64 * 1024


class TokenSource(Protocol):
    """What :func:`sipmesh.autopeer.fetch.fetch_capset` needs from a token source."""

    async def get(self, session: aiohttp.ClientSession) -> str: ...

    def invalidate(self) -> None: ...


def check_token(token: object, what: str, *, url: str | None = None,
                status: int | None = None) -> str:
    """``token`` if it is a b64token (RFC 6750 §2.1), which also keeps it header-safe."""
    if not isinstance(token, str) or not _B64TOKEN.fullmatch(token):
        raise AutopeerError(f"{what} is not a bearer token (RFC 6750 §2.1 b64token syntax)",
                            url=url, status=status)
    return token


class StaticToken:
    """A bearer token configured by the operator; there is nothing to renew, so a refusal
    by the server is reported rather than retried."""

    def __init__(self, token: str):
        self._token = check_token(token, "the configured access token")

    async def get(self, session: aiohttp.ClientSession) -> str:
        """The configured token."""
        return self._token

    def invalidate(self) -> None:
        """Nothing to do: the same token is all there is."""

    def __repr__(self) -> str:
        return "StaticToken(<hidden>)"


class ClientCredentials:
    """The client-credentials grant (RFC 6749 §4.4) with HTTP Basic client authentication
    (§2.3.1). The token is cached until ``expires_in - margin`` seconds by ``clock``
    (§5.1; without ``expires_in`` until :meth:`invalidate`); concurrent :meth:`get` calls
    share one request."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        margin: float = 30.0,
    ):
        https_url(token_url, "the token endpoint")
        if not client_id:
            raise AutopeerError("the OAuth client id is empty")
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self.margin = margin
        self._clock = clock
        self._token: str | None = None
        self._expiry: float | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ClientCredentials({self.token_url!r}, {self.client_id!r}, <hidden>)"

    def invalidate(self) -> None:
        """Forget the cached token (the capability server refused it, RFC 6750 §3.1)."""
        self._token = self._expiry = None

    async def get(self, session: aiohttp.ClientSession) -> str:
        """The cached token, or a new one from the token endpoint."""
        async with self._lock:
            if self._token is not None and (self._expiry is None or self._clock() < self._expiry):
                return self._token
            now = self._clock()
            token, lifetime = await self._request(session)
            self._token = token
            # A short lifetime still caches the token for half of it rather than not at all.
            self._expiry = (
                None if lifetime is None else now + max(lifetime - self.margin, lifetime / 2))
            return token

    async def _request(self, session: aiohttp.ClientSession) -> tuple[str, float | None]:
        url = self.token_url
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        pair = f"{quote_plus(self.client_id)}:{quote_plus(self._secret)}"
        headers = {
            "Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii"),
            "Accept": "application/json",
        }
        async with request(session, "POST", url, data=form, headers=headers) as resp:
            status, reason = resp.status, resp.reason
            body = await read_body(resp, MAX_TOKEN_RESPONSE, url)
        if status in (400, 401):
            raise self._refused(status, body)
        if status != 200:
            raise AutopeerError(f"the token endpoint {url} answered {status} {reason}",
                                url=url, status=status)
        answer = _json_object(body)
        if answer is None:
            raise AutopeerError(f"the token endpoint {url} did not answer a JSON object "
                                "(RFC 6749 §5.1)", url=url, status=status)
        token = check_token(answer.get("access_token"), f"the access_token from {url}",
                            url=url, status=status)
        token_type = answer.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise AutopeerError(
                f"the token endpoint {url} issued a token of type {self._clean(token_type)!r}, "
                "not Bearer (RFC 6750 §6.1.1; RFC 6749 §5.1)", url=url, status=status)
        return token, self._lifetime(answer.get("expires_in"), url)

    def _lifetime(self, value: object, url: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise AutopeerError(f"the token endpoint {url} sent expires_in "
                                f"{self._clean(value)!r}, not a positive number of seconds "
                                "(RFC 6749 §5.1)", url=url, status=200)
        return float(value)

    def _refused(self, status: int, body: bytes) -> AutopeerError:
        """RFC 6749 §5.2: the error code and description, for the operator."""
        answer = _json_object(body) or {}
        code = self._clean(answer.get("error")) or "no OAuth error code"
        description = self._clean(answer.get("error_description"))
        detail = f"{code}: {description}" if description else code
        what = "client credentials" if status == 401 else "token request"
        return AutopeerError(
            f"the token endpoint {self.token_url} refused our {what} ({status} {detail})",
            url=self.token_url, status=status)

    def _clean(self, value: object) -> str:
        """A server-supplied string made printable, short and free of our secret."""
        if value is None:
            return ""
        text = "".join(c for c in str(value) if c.isprintable())
        if self._secret:
            text = text.replace(self._secret, "<secret>")
        return text[:TEXT_LIMIT]


def _json_object(body: bytes) -> dict | None:
    try:
        answer = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None
