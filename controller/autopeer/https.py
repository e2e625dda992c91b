"""The HTTPS client that Auto Peer discovery, token and fetch share (RFC 10006 §4.2).

RFC 10006 §4.2 requires HTTPS with TLS 1.2 or later; RFC 7033 §4.2 and
§9.1 require certificate validation on every WebFinger request and every
redirect. So one policy lives here: a verifying TLS context, https: URLs
only, redirects resolved and checked hop by hop by the caller (aiohttp's
own following would not check the scheme or drop the token), response
bodies read under a size limit, and every transport failure turned into an
:class:`AutopeerError` naming the URL.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from yarl import URL

from sipmesh.autopeer.errors import AutopeerError

# RFC 9110 §15.4: the redirections that carry a Location to follow (300, 304, 305 do not).
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Error bodies are for the operator's log line, not for storage.
TEXT_LIMIT = 200
_TEXT_READ = 4096


def client_ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A context that verifies the server certificate and host name, with TLS >= 1.2
    (RFC 10006 §4.2); trust anchors from ``ca_file`` (PEM) or else the system store."""
    if ca_file is not None:
        try:
            with open(ca_file, "rb"):
                pass
        except OSError as e:
            raise AutopeerError(f"cannot read the CA bundle {ca_file}: {e.strerror}") from None
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as e:
        raise AutopeerError(
            f"the CA bundle {ca_file} holds no usable PEM certificate ({e.reason})"
        ) from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def open_session(ca_file: str | None = None, *, timeout: float = 10.0) -> aiohttp.ClientSession:
    """A client session using :func:`client_ssl_context`; ``timeout`` bounds each request
    in seconds. Call it with an event loop running; the caller closes the session."""
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(ca_file))
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False
    )


def https_url(url: str, what: str) -> URL:
    """``url`` parsed, or AutopeerError unless it is an absolute https: URL with a host
    (RFC 10006 §4.2: the client never talks plain HTTP, nor sends a token over it)."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        raise AutopeerError(f"{what} {url!r} is not a URL", url=str(url)) from None
    if parsed.scheme != "https" or not parsed.host:
        raise AutopeerError(
            f"{what} {url} is not an https: URL (RFC 10006 §4.2 requires HTTPS)", url=str(url)
        )
    return parsed


def redirect_target(resp: aiohttp.ClientResponse, url: str) -> str:
    """The absolute https: URL a 3xx answer from ``url`` points to (RFC 9110 §10.2.2:
    a relative Location is resolved against the request URL)."""
    location = resp.headers.get("Location")
    if not location:
        raise AutopeerError(
            f"{url} answered {resp.status} {resp.reason} without a Location header",
            url=url, status=resp.status,
        )
    try:
        target = str(URL(url).join(URL(location)))
    except (TypeError, ValueError):
        raise AutopeerError(
            f"{url} redirects to {location!r}, which is not a URL", url=url, status=resp.status
        ) from None
    https_url(target, f"the redirect from {url} to")
    return target


def same_origin(a: str, b: str) -> bool:
    """RFC 6454 §5: same scheme, host and port (default port filled in)."""
    ua, ub = URL(a), URL(b)
    return (ua.scheme, (ua.host or "").lower(), ua.port) == (
        ub.scheme, (ub.host or "").lower(), ub.port)


@asynccontextmanager
async def request(
    session: aiohttp.ClientSession, method: str, url: str | URL, **kwargs: Any
) -> AsyncIterator[aiohttp.ClientResponse]:
    """One request without automatic redirects; transport and TLS failures, here or while
    the body is read inside the block, become AutopeerError naming the URL."""
    shown = str(url)
    try:
        async with session.request(method, url, allow_redirects=False, **kwargs) as resp:
            yield resp
    except aiohttp.ClientConnectorCertificateError as e:
        raise AutopeerError(
            f"the certificate of {shown} could not be verified: {e.certificate_error}", url=shown
        ) from None
    except aiohttp.ClientSSLError as e:
        raise AutopeerError(
            f"no TLS connection to {shown}: {e.os_error} "
            "(TLS 1.2 or later is required, RFC 10006 §4.2)", url=shown,
        ) from None
    except aiohttp.ClientConnectorError as e:
        raise AutopeerError(f"cannot reach {shown}: {_reason(e.os_error)}", url=shown) from None
    except TimeoutError:
        raise AutopeerError(f"cannot reach {shown}: no answer before the timeout",
                            url=shown) from None
    except aiohttp.ClientError as e:
        raise AutopeerError(f"the exchange with {shown} failed: {e}", url=shown) from None


def _reason(err: OSError) -> str:
    if isinstance(err, ConnectionResetError):
        # What a server that only speaks TLS 1.1 or older does to our TLS 1.2+ ClientHello.
        return ("the connection was reset during the TLS handshake "
                "(does the server support TLS 1.2 or later? RFC 10006 §4.2)")
    if err.errno:
        return os.strerror(err.errno)
    return str(err) or type(err).__name__


async def read_body(resp: aiohttp.ClientResponse, limit: int, url: str) -> bytes:
    """The response body, read chunk by chunk and refused as soon as it passes ``limit``
    bytes (after content decoding), so a hostile server cannot fill memory."""
    def too_big() -> AutopeerError:
        return AutopeerError(
            f"the answer from {url} is larger than {limit} bytes", url=url, status=resp.status)

    if resp.content_length is not None and resp.content_length > limit:
        raise too_big()
    data = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise too_big()
    return bytes(data)


async def server_text(resp: aiohttp.ClientResponse) -> str:
    """The start of an error body as one printable line of at most TEXT_LIMIT characters."""
    data = bytearray()
    while len(data) < _TEXT_READ:
        chunk = await resp.content.read(_TEXT_READ - len(data))
        if not chunk:
            break
        data += chunk
    text = " ".join(data.decode("utf-8", "replace").split())
    return "".join(c for c in text if c.isprintable())[:TEXT_LIMIT]
