"""Finding a provider's capability server with WebFinger (RFC 10006 §4.5, RFC 7033 §4).

The resource is ``acct:user@host`` (RFC 7565; the host part names the
WebFinger server) or an ``https:`` URI (its authority names the server, as
in the RFC 10006 §4.5 example). The query asks for the RFC 9409 link
relation ``sip-trunking-capability`` and the older ``sipTrunkingCapability``
that RFC 10006 §4.5 still shows (RFC 7033 §4.3: several ``rel`` parameters
are allowed), and the answer's first https: link with either relation is
the capability-set URL.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import aiohttp
from yarl import URL

from sipmesh.autopeer.errors import AutopeerError
from sipmesh.autopeer.https import REDIRECTS, https_url, read_body, redirect_target, request

RELS = ("sip-trunking-capability", "sipTrunkingCapability")
# RFC 7033 §10.2: application/jrd+json; plain application/json is common in the wild.
JRD_TYPES = ("application/jrd+json", "application/json")
# A JRD naming a few links is a few hundred bytes; 64 KiB leaves room for any real one.
MAX_JRD = 64 * 1024


def webfinger_host(resource: str) -> str:
    """The host (and port, for https: resources) whose WebFinger service knows ``resource``.

    RFC 7565 §4: an acct: URI's host is the part after its last "@" and has no
    port; to reach a test server on a loopback port pass ``host=`` to
    :func:`webfinger_url` or :func:`discover` instead.
    """
    scheme, sep, rest = resource.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("acct", "https"):
        raise AutopeerError(
            f"the resource {resource!r} is neither an acct: nor an https: URI (RFC 10006 §4.5)")
    if scheme == "https":
        parsed = https_url(resource, "the resource")
        return parsed.raw_authority.rpartition("@")[2]
    user, at, host = rest.rpartition("@")
    if not at or not user or not host:
        raise AutopeerError(f"the resource {resource!r} is not of the form acct:user@host")
    if any(c in host for c in ":/?#[]@ ") or not host.isprintable():
        raise AutopeerError(
            f"the host {host!r} of {resource!r} is not a host name "
            "(an acct: URI has no port, RFC 7565 §4)")
    return host


def webfinger_url(resource: str, *, host: str | None = None) -> str:
    """The RFC 7033 §4 query URL for ``resource`` asking for both capability link relations;
    ``host`` ("name" or "name:port") overrides the host taken from the resource."""
    target = webfinger_host(resource)
    if host is not None:
        if not host or any(c in host for c in "/?#@ ") or not host.isprintable():
            raise AutopeerError(f"the WebFinger host {host!r} is not host[:port]")
        target = host
    query = "&".join(
        [f"resource={quote(resource, safe='')}"] + [f"rel={quote(r, safe='')}" for r in RELS])
    return f"https://{target}/.well-known/webfinger?{query}"


def capability_link(jrd: object, url: str) -> str:
    """The href of the first link whose rel is one of RELS (RFC 8288 §2.1.1: registered
    relation types compare case-insensitively) and whose href is an https: URL."""
    if not isinstance(jrd, dict):
        raise AutopeerError(f"the WebFinger answer from {url} is not a JSON object (RFC 7033 §4.4)",
                            url=url)
    links = jrd.get("links")
    if not isinstance(links, list) or not links:
        raise AutopeerError(f"the WebFinger answer from {url} has no links", url=url)
    wanted = {r.lower() for r in RELS}
    matching = [
        link.get("href") for link in links
        if isinstance(link, dict) and isinstance(link.get("rel"), str)
        and link["rel"].lower() in wanted
    ]
    if not matching:
        raise AutopeerError(
            f"the WebFinger answer from {url} has no {RELS[0]} link (RFC 9409)", url=url)
    for href in matching:
        if isinstance(href, str) and URL(href).scheme == "https" and URL(href).host:
            return href
    raise AutopeerError(
        f"the WebFinger answer from {url} has {RELS[0]} links but none to an https: URL "
        f"(found {matching[0]!r}; RFC 10006 §4.2 requires HTTPS)", url=url)


async def discover(
    session: aiohttp.ClientSession,
    resource: str,
    *,
    host: str | None = None,
    max_redirects: int = 5,
) -> str:
    """The capability-set URL for ``resource``, asked from its WebFinger service.

    Redirects are followed up to ``max_redirects`` hops, each to an https:
    URL with the certificate checked again (RFC 7033 §4.2). ``host``
    overrides the WebFinger host (see :func:`webfinger_url`).
    """
    url = webfinger_url(resource, host=host)
    target: str | URL = URL(url, encoded=True)
    for _ in range(max_redirects + 1):
        async with request(
            session, "GET", target, headers={"Accept": JRD_TYPES[0]}
        ) as resp:
            if resp.status in REDIRECTS:
                url = target = redirect_target(resp, url)
                continue
            if resp.status != 200:
                raise AutopeerError(
                    f"WebFinger at {url} answered {resp.status} {resp.reason} for {resource}",
                    url=url, status=resp.status)
            if resp.content_type not in JRD_TYPES:
                raise AutopeerError(
                    f"the WebFinger answer from {url} has content type {resp.content_type}, "
                    f"not {JRD_TYPES[0]} (RFC 7033 §10.2)", url=url, status=resp.status)
            body = await read_body(resp, MAX_JRD, url)
        try:
            jrd = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise AutopeerError(f"the WebFinger answer from {url} is not JSON", url=url) from None
        return capability_link(jrd, url)
    raise AutopeerError(
        f"WebFinger for {resource} redirected more than {max_redirects} times (last: {url})",
        url=url)
