"""sipmesh capserver over real HTTPS (trustme certificates, aiohttp client):
WebFinger (RFC 7033 §4), the client credentials token endpoint (RFC 6749 §4.4,
§5), capability sets behind bearer tokens (RFC 6750, RFC 10006 §4.6) with
ETags, hot-replaced documents validated before serving, configuration errors
and the ``serve()`` entry point."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import shutil
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

import aiohttp
import pytest
import trustme
from multidict import CIMultiDictProxy

from sipmesh.autopeer.capserver import CapServer, CapServerConfigError, load_config, serve
from sipmesh.autopeer.validate import Validator


def basic(client_id: str, secret: str) -> dict[str, str]:
    """HTTP Basic as RFC 6749 §2.3.1 has it: each part form-urlencoded first."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


DATA = Path(__file__).resolve().parent / "data" / "autopeer"
EXAMPLE_CONFIG = DATA / "capserver-example.toml"
VALID = (DATA / "example-capset-rfc10006.json").read_bytes()
INVALID = (DATA / "example-capset-draft36-obsolete.json").read_bytes()
ACME = basic("acme-sbc", "acme-secret")
RELS = ("sip-trunking-capability", "sipTrunkingCapability")
LOGGER = "sipmesh.autopeer.capserver"


class Clock:
    """An injected clock: tests move time instead of waiting for it."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def revised(location: str) -> bytes:
    """A second valid capability set, different from the RFC §9.1 example."""
    doc = json.loads(VALID)
    doc["ietf-sip-auto-peering:sip-auto-peering"]["revision"]["location"] = location
    return json.dumps(doc, indent=2).encode()


def replace(path: Path, data: bytes, tick: int) -> None:
    """Rewrite a document with a distinct mtime, as an operator's edit would."""
    before = path.stat().st_mtime_ns
    path.write_bytes(data)
    stamp = before + tick * 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def config_dir(tmp_path: Path, ca: trustme.CA, edit=lambda text: text) -> Path:
    """The example configuration copied next to a fresh certificate, key and secret."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "capserver-key.pem"))
    (tmp_path / "capserver-cert.pem").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    (tmp_path / "acme.secret").write_text("acme-secret\n")
    shutil.copy(DATA / "example-capset-rfc10006.json", tmp_path)
    (tmp_path / "globex.json").write_bytes(VALID)
    path = tmp_path / "capserver.toml"
    path.write_text(edit(EXAMPLE_CONFIG.read_text()))
    return path


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def server(tmp_path, ca, validator, clock):
    srv = CapServer(load_config(config_dir(tmp_path, ca)), validator=validator, clock=clock)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def client(ca):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        yield session


async def webfinger(client, server, params) -> tuple[int, dict, str]:
    url = f"{server.base_url}/.well-known/webfinger"
    async with client.get(url, params=params) as r:
        return r.status, r.headers, await r.text()


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


async def fetch(client, url, token=None, **headers) -> Reply:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with client.get(url, headers=headers, allow_redirects=False) as r:
        return Reply(r.status, r.headers, await r.read())



async def post_token(client, server, data, auth=None) -> tuple[int, dict, dict]:
    async with client.post(server.token_url, data=data, headers=auth) as r:
        return r.status, r.headers, await r.json()


# --- configuration -----------------------------------------------------------


def test_example_config_loads(tmp_path, ca) -> None:
    config = load_config(config_dir(tmp_path, ca))
    assert (config.host, config.port, config.validate) == ("127.0.0.1", 0, True)
    assert (config.token_lifetime, config.webfinger_rel) == (3600, "sip-trunking-capability")
    assert config.base_url is None
    acme, globex = config.enterprises
    assert (acme.name, acme.client_id, acme.client_secret) == ("acme", "acme-sbc", "acme-secret")
    assert acme.documents == {"capdoc.json": tmp_path.resolve() / "example-capset-rfc10006.json"}
    assert acme.redirects == {"old.json": "capdoc.json"}
    assert acme.webfinger_document == "capdoc.json"
    assert globex.static_tokens == ("globex-static-token-for-tests",)
    assert config.ssl_context().minimum_version == ssl.TLSVersion.TLSv1_2


def _set(old: str, new: str):
    return lambda text: text.replace(old, new, 1)


BAD_CONFIGS = [
    (_set("listen =", "listn = 1\nlisten ="), "listn: unknown key"),
    (_set('"127.0.0.1:0"', '"localhost"'), "listen: must be HOST:PORT"),
    (_set("token_lifetime = 3600", "token_lifetime = 0"), "token_lifetime: must be a positive"),
    (_set("token_lifetime = 3600", 'token_lifetime = "1h"'), "token_lifetime: must be a int"),
    (_set('webfinger_rel = "sip-trunking-capability"', 'webfinger_rel = "x"'),
     "webfinger_rel: must be one of"),
    (_set('"capserver-cert.pem"', '"nope.pem"'), "certificate: no such file"),
    (_set('"capserver-key.pem"', '"acme.secret"'), "certificate/private_key: cannot load"),
    (_set('name = "globex"', 'name = "../globex"'),
     "enterprise[1].name: '../globex' is not a safe"),
    (_set('name = "globex"', 'name = "acme"'), "'acme'.name: names two [[enterprise]] tables"),
    (_set('client_id = "globex-sbc"', 'client_id = "acme-sbc"'),
     "enterprise 'globex'.client_id: 'acme-sbc' is also used by 'acme'"),
    (_set('"acct:trunk@globex.example"', '"https://ACME.example/"'),
     "enterprise 'globex'.resources: 'https://acme.example/' is also used by 'acme'"),
    (_set('"acct:trunk@globex.example"', '"acct:globex.example"'), "resources: 'acct:globex"),
    (_set('"acct:trunk@globex.example"', '"mailto:a@globex.example"'),
     "only acct: and https: resources"),
    (_set('documents = { "capdoc.json" = "globex.json" }', "documents = {}"),
     "enterprise 'globex'.documents: at least one document"),
    (_set('"globex.json"', '"missing.json"'), "documents.capdoc.json: no such file"),
    (_set('"globex.json"', '"globex.json", "../x" = "globex.json"'),
     "documents.../x: is not a safe URL path segment"),
    (_set('webfinger_document = "capdoc.json"', 'webfinger_document = "rev2.json"'),
     "webfinger_document: 'rev2.json' is not one of the documents"),
    (_set('{ "old.json" = "capdoc.json" }', '{ "old.json" = "gone.json" }'),
     "redirects.old.json: must name a document or an absolute https URL"),
    (_set('{ "old.json" = "capdoc.json" }', '{ "old.json" = "http://acme.example/x" }'),
     "redirects.old.json: must name a document"),
    (_set('client_secret_file = "acme.secret"', 'client_secret = "x"\nclient_secret_file = "a"'),
     "client_secret_file: give client_secret or client_secret_file"),
    (_set('client_secret = "globex: s3cret+for tests"', ""),
     "client_secret: client_id needs client_secret"),
    (_set("validate = true", "validate = true\nvalidate = false"), "not valid TOML"),
]


@pytest.mark.parametrize("edit,message", BAD_CONFIGS)
def test_bad_config(tmp_path, ca, edit, message) -> None:
    path = config_dir(tmp_path, ca, edit)
    with pytest.raises(CapServerConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: ")
    assert message in str(e.value)


def test_missing_config_file(tmp_path) -> None:
    with pytest.raises(CapServerConfigError, match="nothere.toml: cannot read"):
        load_config(tmp_path / "nothere.toml")


# --- WebFinger (RFC 7033 §4, RFC 10006 §4.5) ---------------------------------


@pytest.mark.parametrize("resource", ["acct:trunk@acme.example", "https://acme.example",
                                      "https://ACME.example/", "acct:trunk@ACME.EXAMPLE"])
async def test_webfinger_finds_the_capability_set(server, client, resource) -> None:
    status, headers, text = await webfinger(
        client, server, [("resource", resource), *(("rel", r) for r in RELS)])
    assert status == 200
    assert headers["Content-Type"] == "application/jrd+json"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert json.loads(text) == {
        "subject": resource,
        "links": [{"rel": "sip-trunking-capability",
                   "href": server.url("acme", "capdoc.json")}],
    }
    assert server.url("acme", "capdoc.json") == f"{server.base_url}/capserver/acme/capdoc.json"


async def test_webfinger_authority_placeholder(server, client) -> None:
    status, _, text = await webfinger(client, server, {"resource": f"{server.base_url}/acme"})
    assert status == 200
    assert json.loads(text)["links"][0]["href"].endswith("/capserver/acme/capdoc.json")


async def test_webfinger_rel_filter(server, client) -> None:
    resource = ("resource", "acct:trunk@globex.example")
    _, _, text = await webfinger(client, server, [resource])
    assert [link["rel"] for link in json.loads(text)["links"]] == ["sip-trunking-capability"]
    _, _, text = await webfinger(client, server, [resource, ("rel", "http://x.example/rel")])
    assert json.loads(text) == {"subject": "acct:trunk@globex.example", "links": []}
    _, _, text = await webfinger(client, server, [resource, ("rel", "sipTrunkingCapability")])
    assert json.loads(text)["links"] == []


async def test_webfinger_old_rel_spelling(tmp_path, ca, validator, client) -> None:
    path = config_dir(tmp_path, ca, _set('"sip-trunking-capability"', '"sipTrunkingCapability"'))
    srv = CapServer(load_config(path), validator=validator)
    await srv.start()
    try:
        resource = ("resource", "https://acme.example")
        _, _, text = await webfinger(client, srv, [resource, *(("rel", r) for r in RELS)])
        assert json.loads(text)["links"] == [
            {"rel": "sipTrunkingCapability", "href": srv.url("acme", "capdoc.json")}]
        _, _, text = await webfinger(client, srv, [resource, ("rel", RELS[0])])
        assert json.loads(text)["links"] == []
    finally:
        await srv.stop()


@pytest.mark.parametrize("params,status,text", [
    ([], 400, "exactly one resource"),
    ([("rel", RELS[0])], 400, "exactly one resource"),
    ([("resource", "acct:trunk@acme.example")] * 2, 400, "exactly one resource"),
    ([("resource", "acme.example")], 400, "malformed resource"),
    ([("resource", "acct:acme.example")], 400, "malformed resource"),
    ([("resource", "https:///x")], 400, "malformed resource"),
    ([("resource", "acct:trunk@acme.example"), ("format", "xml")], 400,
     "unknown query parameter 'format'"),
    ([("resource", "acct:nobody@acme.example")], 404, "no information"),
    ([("resource", "https://other.example")], 404, "no information"),
    ([("resource", "mailto:trunk@acme.example")], 404, "no information"),
])
async def test_webfinger_errors(server, client, params, status, text) -> None:
    got, headers, body = await webfinger(client, server, params)
    assert (got, headers["Access-Control-Allow-Origin"]) == (status, "*")
    assert text in body


# --- token endpoint (RFC 6749 §4.4, §5) -------------------------------------


async def test_token_with_basic_auth(server, client) -> None:
    status, headers, body = await post_token(client, server, {"grant_type": "client_credentials"},
                                             ACME)
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"].startswith("application/json")
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert len(body["access_token"]) >= 32
    r = await fetch(client, server.url("acme", "capdoc.json"), body["access_token"])
    assert r.status == 200


async def test_token_with_form_credentials(server, client) -> None:
    form = {"grant_type": "client_credentials", "client_id": "globex-sbc",
            "client_secret": "globex: s3cret+for tests", "scope": "capset read"}
    status, _, body = await post_token(client, server, form)
    assert status == 200
    r = await fetch(client, server.url("globex", "capdoc.json"), body["access_token"])
    assert r.status == 200
    second = (await post_token(client, server, form))[2]["access_token"]
    assert second != body["access_token"]
    basic_auth = basic("globex-sbc", "globex: s3cret+for tests")
    status, _, _ = await post_token(client, server, {"grant_type": "client_credentials"},
                                    basic_auth)
    assert status == 200


@pytest.mark.parametrize("data,auth,status,error", [
    ({"grant_type": "client_credentials"}, basic("acme-sbc", "wrong"),
     401, "invalid_client"),
    ({"grant_type": "client_credentials"}, basic("nobody", "acme-secret"),
     401, "invalid_client"),
    ({"grant_type": "client_credentials", "client_id": "acme-sbc", "client_secret": "x"}, None,
     401, "invalid_client"),
    ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
    ({"grant_type": "password"}, ACME, 400, "unsupported_grant_type"),
    ({"grant_type": "authorization_code", "code": "x"}, ACME, 400, "unsupported_grant_type"),
    ({}, ACME, 400, "invalid_request"),
    ({"grant_type": "client_credentials", "scope": 'a"b'}, ACME, 400, "invalid_scope"),
    ({"grant_type": "client_credentials", "client_id": "acme-sbc"}, ACME, 400, "invalid_request"),
])
async def test_token_errors(server, client, data, auth, status, error) -> None:
    got, headers, body = await post_token(client, server, data, auth)
    assert (got, body["error"]) == (status, error)
    assert body["error_description"]
    assert headers["Cache-Control"] == "no-store"
    if status == 401:
        assert headers["WWW-Authenticate"] == 'Basic realm="capserver"'


async def test_token_request_shape(server, client) -> None:
    async with client.post(server.token_url, json={"grant_type": "client_credentials"},
                           headers=ACME) as r:
        assert (r.status, (await r.json())["error"]) == (400, "invalid_request")
    body = "grant_type=client_credentials&grant_type=client_credentials"
    headers = {"Content-Type": "application/x-www-form-urlencoded", **ACME}
    async with client.post(server.token_url, data=body, headers=headers) as r:
        assert "repeated" in (await r.json())["error_description"]
    big = {"grant_type": "client_credentials", "scope": "x" * 9000}
    async with client.post(server.token_url, data=big, headers=ACME) as r:
        assert r.status == 413
    async with client.get(server.token_url) as r:
        assert r.status == 405


async def test_token_expires_by_the_clock(server, client, clock) -> None:
    _, _, body = await post_token(client, server, {"grant_type": "client_credentials"}, ACME)
    url = server.url("acme", "capdoc.json")
    clock.now += 3599
    assert (await fetch(client, url, body["access_token"])).status == 200
    clock.now += 1
    r = await fetch(client, url, body["access_token"])
    assert r.status == 403
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    fresh = server.issue_token("acme")
    assert (await fetch(client, url, fresh)).status == 200


# --- capability set documents (RFC 10006 §4.4-4.6, §5) ----------------------


async def test_document_with_etag(server, client) -> None:
    r = await fetch(client, server.url("acme", "capdoc.json"), server.issue_token("acme"))
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Cache-Control"] == "no-cache"
    assert r.headers["ETag"] == f'"{hashlib.sha256(VALID).hexdigest()[:32]}"'
    assert r.body == VALID


@pytest.mark.parametrize("header,status", [
    ("{etag}", 304),
    ("*", 304),
    ('"0123", W/{etag}', 304),
    ('"0123", "4567"', 200),
])
async def test_conditional_get(server, client, header, status) -> None:
    url, token = server.url("acme", "capdoc.json"), server.issue_token("acme")
    etag = (await fetch(client, url, token)).headers["ETag"]
    r = await fetch(client, url, token, **{"If-None-Match": header.format(etag=etag)})
    assert r.status == status
    assert r.headers["ETag"] == etag
    assert r.body == (b"" if status == 304 else VALID)


async def test_document_refusals(server, client) -> None:
    url = server.url("acme", "capdoc.json")
    r = await fetch(client, url)
    assert r.status == 401
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="capserver"'
    assert (await fetch(client, url, Authorization="Basic YTpi")).status == 401
    for header in ("Bearer", "Bearer a b", "Bearer t@ken", "Bearer  "):
        r = await fetch(client, url, Authorization=header)
        assert r.status == 400, header
        assert "malformed Authorization header" in r.text
    token = server.issue_token("acme")
    r = await fetch(client, f"{url}?trunkid=trunkent1456", token)
    assert r.status == 400
    assert "query parameter" in r.text
    r = await fetch(client, url, "not-a-token")
    assert r.status == 403
    assert "does not permit viewing the capability set" in r.text
    r = await fetch(client, url, server.issue_token("globex"))
    assert r.status == 403
    assert "issued to another enterprise" in r.text
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    r = await fetch(client, url, "globex-static-token-for-tests")
    assert r.status == 403
    r = await fetch(client, server.url("globex", "capdoc.json"), "globex-static-token-for-tests")
    assert r.status == 200


async def test_not_found(server, client) -> None:
    token = server.issue_token("acme")
    assert (await fetch(client, server.url("acme", "rev9.json"), token)).status == 404
    assert (await fetch(client, server.url("initech", "capdoc.json"), token)).status == 404
    for path in ("/", "/capserver/acme", "/capserver/acme/capdoc.json/x", "/robots.txt"):
        assert (await fetch(client, server.base_url + path, token)).status == 404, path


async def test_redirect(server, client) -> None:
    r = await fetch(client, server.url("acme", "old.json"), server.issue_token("acme"))
    assert r.status == 301
    assert r.headers["Location"] == server.url("acme", "capdoc.json")


async def test_plain_http_is_not_served(server, client) -> None:
    plain = server.base_url.replace("https://", "http://")
    with pytest.raises(aiohttp.ClientError):
        await fetch(client, f"{plain}/.well-known/webfinger?resource=https://acme.example")


async def test_replaced_documents(server, client, tmp_path, caplog) -> None:
    url, token = server.url("acme", "capdoc.json"), server.issue_token("acme")
    first = await fetch(client, url, token)
    path = tmp_path / "example-capset-rfc10006.json"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        replace(path, INVALID, 1)
        r = await fetch(client, url, token)
    assert (r.status, r.headers["ETag"], r.body) == (200, first.headers["ETag"], VALID)
    warning = "\n".join(m.getMessage() for m in caplog.records)
    assert "acme/capdoc.json" in warning and "is not a valid capability set" in warning
    assert "/ietf-sip-auto-peering:sip-auto-peering/revision/not-before" in warning
    caplog.clear()
    assert (await fetch(client, url, token)).status == 200
    assert caplog.records == []
    rev2 = revised("https://capserver.example.org/capserver/rev2.json")
    replace(path, rev2, 2)
    r = await fetch(client, url, token)
    assert (r.status, r.body) == (200, rev2)
    assert r.headers["ETag"] not in (first.headers["ETag"], None)
    assert r.headers["ETag"] == f'"{hashlib.sha256(rev2).hexdigest()[:32]}"'
    r = await fetch(client, url, token, **{"If-None-Match": first.headers["ETag"]})
    assert r.status == 200
    path.unlink()
    assert (await fetch(client, url, token)).status == 200


async def test_never_valid_document_is_503(tmp_path, ca, validator, client, caplog) -> None:
    path = config_dir(tmp_path, ca)
    (tmp_path / "globex.json").write_bytes(INVALID)
    srv = CapServer(load_config(path), validator=validator)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await srv.start()
    try:
        assert "globex/capdoc.json" in caplog.text
        r = await fetch(client, srv.url("globex", "capdoc.json"), srv.issue_token("globex"))
        assert r.status == 503
        assert "no valid version" in r.text
        assert (await fetch(client, srv.url("acme", "capdoc.json"),
                            srv.issue_token("acme"))).status == 200
    finally:
        await srv.stop()


async def test_validate_false_serves_files_as_they_are(tmp_path, ca, client) -> None:
    path = config_dir(tmp_path, ca, _set("validate = true", "validate = false"))
    (tmp_path / "globex.json").write_bytes(INVALID)
    srv = CapServer(load_config(path))
    await srv.start()
    try:
        r = await fetch(client, srv.url("globex", "capdoc.json"), srv.issue_token("globex"))
        assert (r.status, r.body) == (200, INVALID)
        replace(tmp_path / "globex.json", b"not json", 1)
        r = await fetch(client, srv.url("globex", "capdoc.json"), srv.issue_token("globex"))
        assert (r.status, r.body) == (200, b"not json")
    finally:
        await srv.stop()


# --- serve() ----------------------------------------------------------------


class LineWatcher:
    """A stdout stand-in that wakes the test when a full line was printed."""

    def __init__(self) -> None:
        self.text = ""
        self.line = asyncio.get_running_loop().create_future()

    def write(self, s: str) -> int:
        self.text += s
        if "\n" in self.text and not self.line.done():
            self.line.set_result(self.text.split("\n", 1)[0])
        return len(s)

    def flush(self) -> None:
        pass


async def _serving(tmp_path, ca, client, monkeypatch) -> tuple[asyncio.Task, str]:
    watcher = LineWatcher()
    monkeypatch.setattr(sys, "stdout", watcher)
    task = asyncio.create_task(serve(config_dir(tmp_path, ca)))
    line = await asyncio.wait_for(asyncio.shield(watcher.line), 60)
    assert line.startswith("capserver listening on https://127.0.0.1:")
    url = line.removeprefix("capserver listening on ")
    async with client.get(f"{url}/.well-known/webfinger",
                          params={"resource": "acct:trunk@acme.example"}) as r:
        assert r.status == 200
    return task, url


async def test_serve_until_cancelled(tmp_path, ca, client, monkeypatch) -> None:
    task, url = await _serving(tmp_path, ca, client, monkeypatch)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(aiohttp.ClientConnectionError):
        await fetch(client, f"{url}/.well-known/webfinger?resource=https://acme.example")


async def test_serve_stops_on_sigterm(tmp_path, ca, client, monkeypatch) -> None:
    task, _ = await _serving(tmp_path, ca, client, monkeypatch)
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 60) is None
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
