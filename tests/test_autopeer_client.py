"""The Auto Peer client (RFC 10006 §4, RFC 7033, RFC 6749/6750) against small aiohttp
stub servers over real HTTPS on loopback, with certificates made by trustme."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import warnings
from dataclasses import dataclass
from urllib.parse import unquote_plus

import pytest
import trustme
from aiohttp import web

from sipmesh.autopeer.discovery import RELS, discover, webfinger_url
from sipmesh.autopeer.errors import AutopeerError
from sipmesh.autopeer.fetch import fetch_capset
from sipmesh.autopeer.https import client_ssl_context, open_session
from sipmesh.autopeer.token import ClientCredentials, StaticToken
from sipmesh.autopeer.validate import MAX_DOCUMENT

DOC = b'{"ietf-sip-auto-peering:peering-info": {}}'


@dataclass
class Tls:
    ca: trustme.CA
    server_ctx: ssl.SSLContext
    ca_file: str


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Tls:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return Tls(ca, server_context(ca), str(path))


@pytest.fixture
async def serve(tls):
    """start(routes, ctx=None) -> "https://127.0.0.1:PORT", one server per call."""
    runners = []

    async def start(routes, ctx: ssl.SSLContext | None = None) -> str:
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock, ssl_context=ctx or tls.server_ctx).start()
        return f"https://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def session(tls):
    async with open_session(tls.ca_file) as s:
        yield s


def capset_handler(seen: list, *, etag: str = '"abc123"'):
    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=DOC, content_type="application/json", headers={"ETag": etag})
    return handler


# --- https.py ------------------------------------------------------------------------------

def test_context_policy(tls):
    ctx = client_ssl_context(tls.ca_file)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_unreadable_ca_file(tmp_path):
    with pytest.raises(AutopeerError, match="cannot read the CA bundle .*missing.pem"):
        client_ssl_context(str(tmp_path / "missing.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(AutopeerError, match="no usable PEM certificate"):
        client_ssl_context(str(junk))


async def test_right_ca_works(serve, session):
    seen: list = []
    base = await serve([web.get("/doc", capset_handler(seen))])
    result = await fetch_capset(session, base + "/doc", StaticToken("t"))
    assert result.status == 200 and result.body == DOC


async def test_certificate_from_another_ca_refused(serve, session):
    base = await serve([web.get("/doc", capset_handler([]))], ctx=server_context(trustme.CA()))
    with pytest.raises(AutopeerError) as err:
        await fetch_capset(session, base + "/doc", StaticToken("t"))
    assert "certificate of " + base + "/doc could not be verified" in str(err.value)
    assert err.value.url == base + "/doc"


async def test_certificate_for_another_host_refused(tls, serve, session):
    base = await serve([web.get("/doc", capset_handler([]))],
                       ctx=server_context(tls.ca, "other.example"))
    with pytest.raises(AutopeerError, match="could not be verified.*(?i:hostname|IP address)"):
        await fetch_capset(session, base + "/doc", StaticToken("t"))


async def test_tls11_server_refused(tls, serve, session):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        tls.ca.issue_cert("127.0.0.1").configure_cert(old)
        base = await serve([web.get("/doc", capset_handler([]))], ctx=old)
        # The server really speaks TLS 1.1 to a client that allows it...
        lax = ssl.create_default_context(cafile=tls.ca_file)
        lax.minimum_version = ssl.TLSVersion.TLSv1
        lax.set_ciphers("DEFAULT:@SECLEVEL=0")
    port = int(base.rsplit(":", 1)[1])
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=lax)
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.1"
    writer.close()
    # ...and ours refuses it.
    with pytest.raises(AutopeerError, match=r"reach https://127.*TLS 1\.2 or later"):
        await fetch_capset(session, base + "/doc", StaticToken("t"))


# --- discovery.py --------------------------------------------------------------------------

def test_webfinger_url_acct():
    assert webfinger_url("acct:trunk@acme.example") == (
        "https://acme.example/.well-known/webfinger?resource=acct%3Atrunk%40acme.example"
        "&rel=sip-trunking-capability&rel=sipTrunkingCapability")


def test_webfinger_url_https_and_host_override():
    assert webfinger_url("https://127.0.0.1:8443") == (
        "https://127.0.0.1:8443/.well-known/webfinger?resource=https%3A%2F%2F127.0.0.1%3A8443"
        "&rel=sip-trunking-capability&rel=sipTrunkingCapability")
    assert webfinger_url("acct:trunk@acme.example", host="127.0.0.1:9").startswith(
        "https://127.0.0.1:9/.well-known/webfinger?resource=acct%3Atrunk%40acme.example&")


@pytest.mark.parametrize("resource", [
    "mailto:trunk@acme.example", "http://acme.example", "acme.example", "acct:acme.example",
    "acct:@acme.example", "acct:trunk@acme.example:8443", "acct:trunk@acme.example/x",
])
def test_webfinger_url_refuses(resource):
    with pytest.raises(AutopeerError, match="resource|host"):
        webfinger_url(resource)


def webfinger_app(answer, *, seen: list | None = None, content_type="application/jrd+json",
                  status=200):
    async def handler(request: web.Request) -> web.Response:
        if seen is not None:
            seen.append(request)
        body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        return web.Response(status=status, body=body, content_type=content_type)
    return [web.get("/.well-known/webfinger", handler)]


def jrd(*links):
    return {"subject": "x", "links": [{"rel": r, "href": h} for r, h in links]}


async def test_discover_acct(serve, session):
    seen: list = []
    href = "https://capserver.example/capserver/acme/capdoc.json"
    base = await serve(webfinger_app(jrd(("sip-trunking-capability", href)), seen=seen))
    host = base.removeprefix("https://")
    assert await discover(session, "acct:trunk@acme.example", host=host) == href
    assert seen[0].query["resource"] == "acct:trunk@acme.example"
    assert seen[0].query.getall("rel") == list(RELS)
    assert seen[0].headers["Accept"] == "application/jrd+json"


async def test_discover_https_resource_old_rel_and_plain_json(serve, session):
    seen: list = []
    href = "https://capserver.example/capdoc.json"
    base = await serve(webfinger_app(jrd(("http://other/rel", "https://x/"),
                                         ("sipTrunkingCapability", href)),
                                     seen=seen, content_type="application/json"))
    assert await discover(session, base) == href
    assert seen[0].query["resource"] == base


async def test_discover_skips_http_link(serve, session):
    base = await serve(webfinger_app(jrd(("sip-trunking-capability", "http://insecure/doc"),
                                         ("sip-trunking-capability", "https://secure/doc"))))
    assert await discover(session, base) == "https://secure/doc"


@pytest.mark.parametrize(("answer", "message"), [
    (jrd(("sip-trunking-capability", "http://insecure/doc")), "none to an https: URL"),
    (jrd(("author", "https://x/")), "no sip-trunking-capability link"),
    ({"subject": "x"}, "has no links"),
    ({"subject": "x", "links": []}, "has no links"),
    (["links"], "is not a JSON object"),
    (b"<html>", "is not JSON"),
])
async def test_discover_bad_jrd(serve, session, answer, message):
    base = await serve(webfinger_app(answer))
    with pytest.raises(AutopeerError, match=message) as err:
        await discover(session, base)
    assert err.value.url.startswith(base + "/.well-known/webfinger?")


async def test_discover_wrong_content_type(serve, session):
    base = await serve(webfinger_app(jrd(("sip-trunking-capability", "https://x/")),
                                     content_type="text/html"))
    with pytest.raises(AutopeerError, match="content type text/html, not application/jrd"):
        await discover(session, base)


async def test_discover_not_found(serve, session):
    base = await serve(webfinger_app({}, status=404))
    with pytest.raises(AutopeerError, match="answered 404 Not Found for acct:x@y") as err:
        await discover(session, "acct:x@y", host=base.removeprefix("https://"))
    assert err.value.status == 404


async def test_discover_follows_redirect(serve, session):
    href = "https://capserver.example/doc"
    target = await serve(
        [web.get("/hosted/webfinger", webfinger_app(jrd(("sip-trunking-capability", href)))[0]
                 .handler)])

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(target + "/hosted/webfinger?" + request.query_string)
    base = await serve([web.get("/.well-known/webfinger", moved)])
    assert await discover(session, base) == href


async def test_discover_refuses_http_redirect(serve, session):
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.1:1/.well-known/webfinger")
    base = await serve([web.get("/.well-known/webfinger", moved)])
    with pytest.raises(AutopeerError, match="to http://127.0.0.1:1/.* is not an https: URL"):
        await discover(session, base)


async def test_discover_redirect_limit(serve, session):
    count = []

    async def loop(request: web.Request) -> web.Response:
        count.append(1)
        raise web.HTTPFound("/.well-known/webfinger?again")
    base = await serve([web.get("/.well-known/webfinger", loop)])
    with pytest.raises(AutopeerError, match="redirected more than 2 times"):
        await discover(session, base, max_redirects=2)
    assert len(count) == 3


# --- token.py ------------------------------------------------------------------------------

CLIENT_ID = "acme branch:1"
SECRET = "s3cr/t+&=é"


def token_app(answers: list, seen: list):
    """Answers the queued (status, json) pairs in turn, recording each request."""
    async def handler(request: web.Request) -> web.Response:
        form = await request.post()
        seen.append((request.headers.get("Authorization"), dict(form)))
        status, answer = answers.pop(0) if len(answers) > 1 else answers[0]
        body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        return web.Response(status=status, body=body, content_type="application/json",
                            headers={"Cache-Control": "no-store"})
    return [web.post("/oauth/token", handler)]


def bearer(token: str, expires_in: int | None = 3600, token_type: str = "Bearer"):
    answer = {"access_token": token, "token_type": token_type}
    if expires_in is not None:
        answer["expires_in"] = expires_in
    return 200, answer


async def test_static_token():
    tokens = StaticToken("abc.DEF-123~+/==")
    assert await tokens.get(None) == "abc.DEF-123~+/=="
    tokens.invalidate()
    assert await tokens.get(None) == "abc.DEF-123~+/=="
    assert "abc" not in repr(tokens)
    with pytest.raises(AutopeerError, match="not a bearer token"):
        StaticToken("two words")


async def test_client_credentials_request(serve, session):
    seen: list = []
    base = await serve(token_app([bearer("tok1")], seen))
    tokens = ClientCredentials(base + "/oauth/token", CLIENT_ID, SECRET, scope="capset")
    assert await tokens.get(session) == "tok1"
    auth, form = seen[0]
    scheme, _, encoded = auth.partition(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(encoded).decode("ascii").partition(":")
    assert (unquote_plus(user), unquote_plus(password)) == (CLIENT_ID, SECRET)
    assert form == {"grant_type": "client_credentials", "scope": "capset"}
    assert SECRET not in repr(tokens)


async def test_client_credentials_cache_and_renewal(serve, session):
    seen: list = []
    base = await serve(token_app([bearer("tok1", 300), bearer("tok2", 300)], seen))
    now = [1000.0]
    tokens = ClientCredentials(base + "/oauth/token", CLIENT_ID, SECRET,
                               clock=lambda: now[0], margin=30.0)
    assert await tokens.get(session) == "tok1"
    now[0] = 1000.0 + 269
    assert await tokens.get(session) == "tok1"
    assert len(seen) == 1
    now[0] = 1000.0 + 270
    assert await tokens.get(session) == "tok2"
    assert len(seen) == 2


async def test_client_credentials_without_expiry_until_invalidated(serve, session):
    seen: list = []
    base = await serve(token_app([bearer("tok1", None), bearer("tok2", None)], seen))
    now = [0.0]
    tokens = ClientCredentials(base + "/oauth/token", CLIENT_ID, SECRET, clock=lambda: now[0])
    assert await tokens.get(session) == "tok1"
    now[0] = 1e9
    assert await tokens.get(session) == "tok1"
    tokens.invalidate()
    assert await tokens.get(session) == "tok2"
    assert len(seen) == 2


async def test_client_credentials_concurrent_gets_share_one_request(serve, session):
    seen: list = []
    base = await serve(token_app([bearer("tok1", None)], seen))
    tokens = ClientCredentials(base + "/oauth/token", CLIENT_ID, SECRET)
    got = await asyncio.gather(*(tokens.get(session) for _ in range(5)))
    assert got == ["tok1"] * 5
    assert len(seen) == 1


async def test_token_type_lowercase_accepted_other_refused(serve, session):
    answers = [bearer("t1", token_type="bearer"), bearer("t2", token_type="mac")]
    base = await serve(token_app(answers, []))
    tokens = ClientCredentials(base + "/oauth/token", CLIENT_ID, SECRET)
    assert await tokens.get(session) == "t1"
    tokens.invalidate()
    with pytest.raises(AutopeerError, match="type 'mac', not Bearer"):
        await tokens.get(session)


@pytest.mark.parametrize(("status", "answer", "message"), [
    (401, {"error": "invalid_client", "error_description": f"bad secret {SECRET}"},
     r"refused our client credentials \(401 invalid_client: bad secret <secret>\)"),
    (400, {"error": "invalid_scope", "error_description": "no such scope"},
     r"refused our token request \(400 invalid_scope: no such scope\)"),
    (400, b"oops", r"\(400 no OAuth error code\)"),
    (200, b"<html>not json</html>", "did not answer a JSON object"),
    (200, {"token_type": "Bearer"}, "access_token .* is not a bearer token"),
    (200, {"access_token": "t", "token_type": "Bearer", "expires_in": "soon"},
     "expires_in 'soon', not a positive number"),
])
async def test_token_endpoint_errors(serve, session, status, answer, message):
    base = await serve(token_app([(status, answer)], []))
    tokens = ClientCredentials(base + "/oauth/token", CLIENT_ID, SECRET)
    with pytest.raises(AutopeerError, match=message) as err:
        await tokens.get(session)
    assert err.value.status == status
    assert SECRET not in str(err.value)


def test_token_endpoint_must_be_https():
    with pytest.raises(AutopeerError, match="token endpoint http://a/token is not an https"):
        ClientCredentials("http://a/token", CLIENT_ID, SECRET)


# --- fetch.py ------------------------------------------------------------------------------

async def test_fetch_and_conditional_get(serve, session):
    seen: list = []
    base = await serve([web.get("/capserver/acme/capdoc.json", capset_handler(seen))])
    url = base + "/capserver/acme/capdoc.json"
    first = await fetch_capset(session, url, StaticToken("tok"))
    assert (first.status, first.body, first.etag, first.url) == (200, DOC, '"abc123"', url)
    again = await fetch_capset(session, url, StaticToken("tok"), etag=first.etag)
    assert (again.status, again.body, again.etag) == (304, None, '"abc123"')
    assert seen == ["Bearer tok", "Bearer tok"]


async def test_fetch_refuses_http_url(session):
    with pytest.raises(AutopeerError, match="capability-set URL http://x/doc is not an https"):
        await fetch_capset(session, "http://x/doc", StaticToken("tok"))


async def test_redirects_keep_token_only_on_same_origin(serve, session):
    here: list = []
    there: list = []
    other = await serve([web.get("/doc", capset_handler(there))])

    async def away(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(other + "/doc")

    async def inside(request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("../final")
    base = await serve([web.get("/a/b", inside), web.get("/final", capset_handler(here)),
                        web.get("/away", away)])
    result = await fetch_capset(session, base + "/a/b", StaticToken("tok"))
    assert (result.status, result.url, here) == (200, base + "/final", ["Bearer tok"])
    result = await fetch_capset(session, base + "/away", StaticToken("tok"))
    assert (result.status, result.url, there) == (200, other + "/doc", [None])


@pytest.mark.parametrize(("location", "message"), [
    ("http://127.0.0.1:1/doc", "is not an https: URL"),
    ("/loop", "redirected more than 5 times"),
    (None, "answered 302 Found without a Location header"),
])
async def test_bad_redirects(serve, session, location, message):
    async def moved(request: web.Request) -> web.Response:
        headers = {"Location": location} if location else {}
        return web.Response(status=302, headers=headers)
    base = await serve([web.get("/loop", moved)])
    with pytest.raises(AutopeerError, match=message):
        await fetch_capset(session, base + "/loop", StaticToken("tok"))


async def test_refused_token_is_renewed_once(serve, session):
    seen: list = []
    granted: list = []

    async def capset(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer tok2":
            return web.Response(status=403, text="token tok1 has expired")
        return web.Response(body=DOC, content_type="application/json")
    base = await serve([web.get("/doc", capset)]
                       + token_app([bearer("tok1"), bearer("tok2")], granted))
    tokens = ClientCredentials(base + "/oauth/token", CLIENT_ID, SECRET)
    result = await fetch_capset(session, base + "/doc", tokens)
    assert result.status == 200
    assert seen == ["Bearer tok1", "Bearer tok2"]
    assert len(granted) == 2


async def test_refused_again_is_an_error(serve, session):
    seen: list = []

    async def capset(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=403, text="token issued to another enterprise")
    base = await serve([web.get("/doc", capset)]
                       + token_app([bearer("tok1"), bearer("tok2")], []))
    tokens = ClientCredentials(base + "/oauth/token", CLIENT_ID, SECRET)
    with pytest.raises(AutopeerError, match="the provider refused our token: .*403 Forbidden: "
                       "token issued to another enterprise") as err:
        await fetch_capset(session, base + "/doc", tokens)
    assert err.value.status == 403
    assert seen == ["Bearer tok1", "Bearer tok2"]


async def test_static_token_refused_is_not_retried(serve, session):
    seen: list = []

    async def capset(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer realm="capserver"'})
    base = await serve([web.get("/doc", capset)])
    with pytest.raises(AutopeerError, match="refused our token.*401 Unauthorized") as err:
        await fetch_capset(session, base + "/doc", StaticToken("tok"))
    assert (err.value.status, seen) == (401, ["Bearer tok"])


async def test_bad_request_shows_server_text(serve, session):
    async def capset(request: web.Request) -> web.Response:
        return web.Response(status=400, text="unknown query parameter " + "x" * 500)
    base = await serve([web.get("/doc", capset)])
    with pytest.raises(AutopeerError, match="rejected the request .*unknown query parameter x")\
            as err:
        await fetch_capset(session, base + "/doc", StaticToken("tok"))
    assert err.value.status == 400
    text = str(err.value).split(": ", 1)[1]
    assert len(text) == 200


@pytest.mark.parametrize(("status", "etag", "message"), [
    (304, None, "answered 304 to a request without If-None-Match"),
    (404, '"x"', "answered 404 Not Found"),
])
async def test_unexpected_status(serve, session, status, etag, message):
    async def capset(request: web.Request) -> web.Response:
        return web.Response(status=status)
    base = await serve([web.get("/doc", capset)])
    with pytest.raises(AutopeerError, match=message) as err:
        await fetch_capset(session, base + "/doc", StaticToken("tok"), etag=etag)
    assert err.value.status == status


async def test_wrong_content_type(serve, session):
    async def capset(request: web.Request) -> web.Response:
        return web.Response(text="<html>", content_type="text/html")
    base = await serve([web.get("/doc", capset)])
    with pytest.raises(AutopeerError, match="content type text/html, not application/json"):
        await fetch_capset(session, base + "/doc", StaticToken("tok"))


@pytest.mark.parametrize("chunked", [True, False])
async def test_body_limit(serve, session, chunked):
    big = b" " * (MAX_DOCUMENT + 1)

    async def capset(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=big, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            for i in range(0, len(big), 65536):
                await resp.write(big[i:i + 65536])
        except ConnectionError:
            pass
        return resp
    base = await serve([web.get("/doc", capset)])
    with pytest.raises(AutopeerError, match=f"larger than {MAX_DOCUMENT} bytes"):
        await fetch_capset(session, base + "/doc", StaticToken("tok"))


async def test_connection_refused(session):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        url = f"https://127.0.0.1:{sock.getsockname()[1]}/doc"
        with pytest.raises(AutopeerError, match=f"cannot reach {url}: .*refused") as err:
            await fetch_capset(session, url, StaticToken("tok"))
    assert err.value.url == url


async def test_timeout(tls):
    held: list = []
    server = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/doc"
    try:
        async with open_session(tls.ca_file, timeout=0.2) as s:
            with pytest.raises(AutopeerError, match=f"cannot reach {url}: no answer"):
                await fetch_capset(s, url, StaticToken("tok"))
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()
