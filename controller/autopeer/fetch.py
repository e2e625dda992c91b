"""Fetching a capability set over HTTPS with a bearer token (RFC 10006 §4.4-§4.6, §5).

One GET with ``Authorization: Bearer`` (RFC 6750 §2.1) and, when a previous
copy is held, ``If-None-Match`` with its ETag (RFC 10006 §5, RFC 9110
§13.1.2), so an unchanged document costs a 304. Redirects (RFC 10006 §4.6)
are followed by hand: each hop must be https:, and the token goes only to
the origin it was configured for (RFC 6750 §5.3: do not leak bearer
tokens). A 401/403 on a token that may have been revoked or expired
renews it once. The body is returned unvalidated: the caller checks it
against the YANG module.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from sipmesh.autopeer.errors import AutopeerError
from sipmesh.autopeer.https import (
    REDIRECTS,
    https_url,
    read_body,
    redirect_target,
    request,
    same_origin,
    server_text,
)
from sipmesh.autopeer.token import TokenSource
from sipmesh.autopeer.validate import MAX_DOCUMENT


@dataclass(frozen=True)
class FetchResult:
    """The outcome of one fetch."""

    status: int
    """200 (new document in ``body``) or 304 (the copy with ``etag`` is still current)."""
    body: bytes | None
    """The capability set as received (at most MAX_DOCUMENT bytes); None on 304."""
    etag: str | None
    """The server's ETag, verbatim, to send back as If-None-Match; None if it sent none."""
    url: str
    """The URL that answered, after redirects."""


async def fetch_capset(
    session: aiohttp.ClientSession,
    url: str,
    tokens: TokenSource,
    *,
    etag: str | None = None,
    max_redirects: int = 5,
) -> FetchResult:
    """GET the capability set at ``url``; AutopeerError for anything but 200 or 304."""
    https_url(url, "the capability-set URL")
    token = await tokens.get(session)
    renewed = False
    hops = 0
    current = url
    while True:
        headers = {"Accept": "application/json"}
        with_token = same_origin(current, url)
        if with_token:
            headers["Authorization"] = f"Bearer {token}"
        if etag is not None:
            headers["If-None-Match"] = etag
        async with request(session, "GET", current, headers=headers) as resp:
            status = resp.status
            if status in REDIRECTS:
                hops += 1
                if hops > max_redirects:
                    raise AutopeerError(
                        f"the capability server redirected more than {max_redirects} times "
                        f"(last from {current})", url=current, status=status)
                current = redirect_target(resp, current)
                continue
            if status in (401, 403):
                text = await server_text(resp)
                if with_token and not renewed:
                    tokens.invalidate()
                    fresh = await tokens.get(session)
                    renewed = True
                    if fresh != token:
                        token = fresh
                        continue
                raise _refused(current, status, resp.reason, text, with_token)
            if status == 304:
                if etag is None:
                    raise AutopeerError(f"{current} answered 304 to a request without "
                                        "If-None-Match", url=current, status=status)
                return FetchResult(304, None, resp.headers.get("ETag", etag), current)
            if status == 400:
                text = await server_text(resp)
                raise AutopeerError(
                    f"the capability server at {current} rejected the request "
                    f"(400 Bad Request, RFC 10006 §4.6): {text or 'no explanation given'}",
                    url=current, status=status)
            if status != 200:
                raise AutopeerError(
                    f"the capability server at {current} answered {status} {resp.reason}",
                    url=current, status=status)
            if resp.content_type != "application/json":
                raise AutopeerError(
                    f"the capability set at {current} has content type {resp.content_type}, "
                    "not application/json (RFC 10006 §4.4)", url=current, status=status)
            body = await read_body(resp, MAX_DOCUMENT, current)
            return FetchResult(200, body, resp.headers.get("ETag"), current)


def _refused(url: str, status: int, reason: str | None, text: str,
             with_token: bool) -> AutopeerError:
    """RFC 10006 §4.6 / RFC 6750 §3.1: the server does not accept our token."""
    if not with_token:
        why = ("after a redirect to another origin, where our token is not sent "
               "(RFC 6750 §5.3)")
    else:
        why = "the provider refused our token"
    return AutopeerError(f"{why}: {url} answered {status} {reason}"
                         + (f": {text}" if text else ""), url=url, status=status)
