"""The Auto Peer fetcher against ``sipmesh capserver`` over real HTTPS.

Discovery (RFC 7033 WebFinger, RFC 9409 link relation), the OAuth 2.0
client-credentials token (RFC 6749 §4.4), the capability set GET with its
ETag (RFC 10006 §5), revisions (§7.2 revision/not-before and location),
redirects and the 400/403 answers (§4.6), and the rule that a provider
which is down or serves an invalid document never changes the trunk in
force (§8). Certificates come from a throwaway CA made by trustme; the
clock of the fetcher is injected, so nothing waits for time to pass.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
import trustme

from sipmesh.autopeer.capserver import CapServer, load_config
from sipmesh.autopeer.https import client_ssl_context
from sipmesh.autopeer.options import AutopeerOptions
from sipmesh.autopeer.service import AutoPeer
from sipmesh.autopeer.store import TrunkStore
from sipmesh.autopeer.validate import Validator

DATA = Path(__file__).parent / "data" / "autopeer"
EXAMPLE = json.loads((DATA / "example-capset-rfc10006.json").read_text())
ROOT = "ietf-sip-auto-peering:sip-auto-peering"
T0 = 1_800_000_000.0  # 2027-01-15, after the example's not-before (2026-06-15)


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator()


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def capset(location: str, *, not_before: str = "2026-06-15T10:30:00Z", **changes) -> dict:
    """The RFC 10006 §9.1 example with its revision pointed at our server."""
    doc = json.loads(json.dumps(EXAMPLE))
    body = doc[ROOT]
    body["revision"] = {"not-before": not_before, "location": location}
    for path, value in changes.items():
        node = body
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k.replace("_", "-")]
        node[keys[-1].replace("_", "-")] = value
    return doc


class Provider:
    """A capserver with two enterprises, its files in a temporary folder."""

    def __init__(self, folder: Path, validator: Validator, *, validate: bool = True) -> None:
        self.folder = folder
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_pem.write_to_path(str(folder / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(str(folder / "cert.pem"), append=True)
        ca.cert_pem.write_to_path(str(folder / "ca.pem"))
        self.ca_file = folder / "ca.pem"
        (folder / "acme.secret").write_text("acme-secret\n")
        (folder / "wrong.secret").write_text("not-the-secret\n")
        (folder / "globex.token").write_text("globex-static-token\n")
        for name in ("acme.json", "acme-rev2.json", "globex.json"):
            self.write(name, capset("https://127.0.0.1/placeholder"))
        (folder / "capserver.toml").write_text(f"""
listen = "127.0.0.1:0"
certificate = "cert.pem"
private_key = "key.pem"
validate = {"true" if validate else "false"}
token_lifetime = 600

[[enterprise]]
name = "acme"
client_id = "acme-sbc"
client_secret_file = "acme.secret"
resources = ["acct:trunk@acme.example", "https://acme.example"]
documents = {{ "capdoc.json" = "acme.json", "rev2.json" = "acme-rev2.json" }}
redirects = {{ "old.json" = "capdoc.json" }}

[[enterprise]]
name = "globex"
client_id = "globex-sbc"
client_secret = "globex-secret"
static_tokens = ["globex-static-token"]
resources = ["acct:trunk@globex.example"]
documents = {{ "capdoc.json" = "globex.json" }}
""")
        self.server = CapServer(load_config(folder / "capserver.toml"), validator=validator)
        self.base = ""

    def write(self, name: str, doc: dict | str) -> None:
        text = doc if isinstance(doc, str) else json.dumps(doc, indent=1)
        path = self.folder / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)

    def url(self, document: str, enterprise: str = "acme") -> str:
        return f"{self.base}/capserver/{enterprise}/{document}"

    async def start(self) -> None:
        self.base = await self.server.start()
        self.write("acme.json", capset(self.url("capdoc.json")))
        self.write("globex.json", capset(self.url("capdoc.json", "globex")))

    def options(self, **kw) -> AutopeerOptions:
        defaults = dict(
            enabled=True, resource="acct:trunk@acme.example",
            webfinger_host=self.base.removeprefix("https://"),
            token_url=f"{self.base}/oauth/token", client_id="acme-sbc",
            client_secret_file=self.folder / "acme.secret", ca_file=self.ca_file)
        defaults.update(kw)
        return AutopeerOptions(**defaults)


class Recorder:
    """Every request the fetcher makes, as (method, path, status)."""

    def __init__(self, ca_file: Path) -> None:
        self.seen: list[tuple[str, str, int]] = []
        self.ca_file = ca_file

    def __call__(self) -> aiohttp.ClientSession:
        trace = aiohttp.TraceConfig()

        async def on_end(session, ctx, params) -> None:
            self.seen.append((params.method, params.url.path, params.response.status))

        trace.on_request_end.append(on_end)
        connector = aiohttp.TCPConnector(ssl=client_ssl_context(str(self.ca_file)))
        return aiohttp.ClientSession(connector=connector, trace_configs=[trace])

    def statuses(self) -> Counter:
        return Counter((m, p.rsplit("/", 1)[-1], s) for m, p, s in self.seen)


@pytest.fixture
async def provider(tmp_path, validator):
    p = Provider(tmp_path, validator)
    await p.start()
    yield p
    await p.server.stop()


def make_peer(provider: Provider, tmp_path: Path, validator: Validator, clock: Clock,
              state: str = "autopeer", **kw) -> tuple[AutoPeer, Recorder]:
    rec = Recorder(provider.ca_file)
    store = TrunkStore(tmp_path / "state" / f"{state}.sqlite")
    return AutoPeer(provider.options(**kw), store, validator=validator, clock=clock,
                    session_factory=rec), rec


async def test_discovery_token_fetch_and_304(provider, tmp_path, validator):
    peer, rec = make_peer(provider, tmp_path, validator, Clock())
    outcome = await peer.refresh()
    assert outcome.result == "applied", outcome
    assert outcome.url == provider.url("capdoc.json")
    trunk = peer.trunk()
    assert [(r.host, r.port) for r in trunk.registrars] == [
        ("registrar1.voip.example.com", 5060), ("registrar2.voip.example.com", 5060)]
    assert [c.name for c in trunk.codecs] == ["PCMU", "G729"]
    assert peer.store.get_meta("discovered_url") == provider.url("capdoc.json")
    assert rec.seen[0][1] == "/.well-known/webfinger"
    assert ("POST", "/oauth/token", 200) in rec.seen
    assert ("GET", "/capserver/acme/capdoc.json", 200) in rec.seen

    again = await peer.refresh()
    assert again.result == "unchanged"
    counts = rec.statuses()
    assert counts[("GET", "capdoc.json", 304)] == 1
    assert counts[("POST", "token", 200)] == 1, "the cached token is reused"
    assert [e.event for e in peer.store.history()] == ["discovered", "applied"]


async def test_configured_url_and_redirect(provider, tmp_path, validator):
    peer, rec = make_peer(provider, tmp_path, validator, Clock(), resource="",
                          capset_url=provider.url("old.json"))
    outcome = await peer.refresh()
    assert outcome.result == "applied"
    assert outcome.url == provider.url("capdoc.json")
    paths = [(p.rsplit("/", 1)[-1], s) for _, p, s in rec.seen if "capserver" in p]
    assert paths == [("old.json", 301), ("capdoc.json", 200)]


async def test_refresh_on_revision_not_before_and_location(provider, tmp_path, validator):
    clock = Clock()
    later = "2027-01-15T09:00:00Z"  # T0 + 1 h
    provider.write("acme.json", capset(provider.url("rev2.json")))
    rev2 = capset(provider.url("rev2.json"), not_before=later)
    rev2[ROOT]["media"]["media-type-audio"].reverse()
    rev2[ROOT]["dtmf"]["payload-number"] = 96
    provider.write("acme-rev2.json", rev2)
    peer, rec = make_peer(provider, tmp_path, validator, clock)

    assert (await peer.refresh()).result == "applied"
    assert peer.due() == T0 + 24 * 3600

    clock.now += 60
    outcome = await peer.refresh()
    assert outcome.result == "candidate"
    assert outcome.url == provider.url("rev2.json")
    assert [c.name for c in peer.trunk().codecs] == ["PCMU", "G729"], "not yet in force"
    assert peer.due() == T0 + 3600  # revision/not-before of rev2

    clock.now = peer.due()
    outcome = await peer.refresh()
    assert outcome.result == "applied"
    assert [c.name for c in peer.trunk().codecs] == ["G729", "PCMU"]
    assert peer.trunk().dtmf.payload_type == 96
    assert any("DTMF" in line and "101" in line and "96" in line for line in outcome.lines)
    assert ("GET", "rev2.json", 200) in rec.statuses()


async def test_forbidden_and_bad_request_keep_the_trunk(provider, tmp_path, validator):
    peer, _ = make_peer(provider, tmp_path, validator, Clock())
    assert (await peer.refresh()).result == "applied"
    before = peer.trunk()

    wrong, _ = make_peer(provider, tmp_path, validator, Clock(), "wrong",
                         client_secret_file=provider.folder / "wrong.secret")
    outcome = await wrong.refresh()
    assert outcome.result == "error" and outcome.status in (400, 401)
    assert "invalid_client" in outcome.lines[0]

    other, _ = make_peer(provider, tmp_path, validator, Clock(), "other", resource="",
                         capset_url=provider.url("capdoc.json"), token_url="", client_id="",
                         client_secret_file=None, token_file=provider.folder / "globex.token")
    outcome = await other.refresh()
    assert outcome.result == "error" and outcome.status == 403
    assert "403" in outcome.lines[0] or "refused" in outcome.lines[0]

    bad, _ = make_peer(provider, tmp_path, validator, Clock(), "bad", resource="",
                       capset_url=provider.url("capdoc.json") + "?trunkid=x")
    outcome = await bad.refresh()
    assert outcome.result == "error" and outcome.status == 400
    assert "400" in outcome.lines[0] and "trunkid" in outcome.lines[0]
    assert peer.trunk() == before
    for failed in (wrong, other, bad):
        assert failed.trunk() is None
        assert [e.event for e in failed.store.history()][-1] == "error"


async def test_static_token_of_the_right_enterprise(provider, tmp_path, validator):
    peer, rec = make_peer(provider, tmp_path, validator, Clock(),
                          resource="acct:trunk@globex.example", token_url="", client_id="",
                          client_secret_file=None, token_file=provider.folder / "globex.token")
    assert (await peer.refresh()).result == "applied"
    assert not any(p == "/oauth/token" for _, p, _ in rec.seen)


async def test_server_down_keeps_the_trunk_and_retries_sooner(provider, tmp_path, validator):
    clock = Clock()
    peer, _ = make_peer(provider, tmp_path, validator, clock)
    assert (await peer.refresh()).result == "applied"
    before = peer.trunk()
    await provider.server.stop()
    clock.now += 24 * 3600
    outcome = await peer.refresh()
    assert outcome.result == "error"
    assert "cannot reach" in outcome.lines[0]
    assert peer.trunk() == before
    assert peer.due() == clock.now + 300
    clock.now += 300
    await peer.refresh()
    assert peer.due() == clock.now + 600, "back-off doubles"

    again = AutoPeer(peer.options, TrunkStore(tmp_path / "state" / "autopeer.sqlite"),
                     validator=validator, clock=clock)
    assert again.trunk() == before, "state survives a restart"


async def test_invalid_document_is_refused_with_paths(tmp_path, validator):
    provider = Provider(tmp_path, validator, validate=False)
    await provider.start()
    try:
        peer, _ = make_peer(provider, tmp_path, validator, Clock())
        assert (await peer.refresh()).result == "applied"
        before = peer.trunk()
        broken = capset(provider.url("capdoc.json"))
        broken[ROOT]["dtmf"]["payload-number"] = 300
        broken[ROOT]["transport-info"]["transport"] = ["ietf-sip-auto-peering:carrier-pigeon"]
        provider.write("acme.json", broken)
        outcome = await peer.refresh()
        assert outcome.result == "rejected"
        paths = {i.path for i in outcome.issues}
        assert f"/{ROOT}/dtmf/payload-number" in paths
        assert any(p.startswith(f"/{ROOT}/transport-info/transport") for p in paths)
        assert peer.trunk() == before
        history = peer.store.history()
        assert history[-1].event == "rejected"
        assert any("payload-number" in line for line in history[-1].lines)

        provider.write("acme.json", "{not json")
        assert (await peer.refresh()).result == "rejected"
        assert peer.trunk() == before
    finally:
        await provider.server.stop()


async def test_validating_server_keeps_serving_the_last_valid_set(provider, tmp_path,
                                                                  validator):
    peer, _ = make_peer(provider, tmp_path, validator, Clock())
    assert (await peer.refresh()).result == "applied"
    broken = capset(provider.url("capdoc.json"))
    del broken[ROOT]["variant"]
    provider.write("acme.json", broken)
    assert (await peer.refresh()).result == "unchanged"
    changed = capset(provider.url("capdoc.json"))
    changed[ROOT]["call-spec"]["early-media"] = False
    provider.write("acme.json", changed)
    outcome = await peer.refresh()
    assert outcome.result == "applied"
    assert peer.trunk().early_media is False
    assert any("early media" in line for line in outcome.lines)


async def test_revision_location_on_another_server_is_not_followed(provider, tmp_path,
                                                                   validator):
    provider.write("acme.json", capset("https://capserver.example.org/capserver/capdoc.json"))
    peer, rec = make_peer(provider, tmp_path, validator, Clock())
    assert (await peer.refresh()).result == "applied"
    assert peer.store.get_meta("poll_url") is None
    assert (await peer.refresh()).result == "unchanged"
    hosts = {host for host in (p for _, p, _ in rec.seen)}
    assert all(p.startswith(("/capserver/acme/", "/.well-known/", "/oauth/")) for p in hosts)


async def test_poll_loop_applies_then_waits_for_the_next_due_time(provider, tmp_path,
                                                                  validator):
    import asyncio

    clock = Clock()
    peer, _ = make_peer(provider, tmp_path, validator, clock)
    seen: asyncio.Queue = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(peer.run(stop, seen.put_nowait))
    first = await asyncio.wait_for(seen.get(), 30)
    assert first.result == "applied"
    assert peer.due() == T0 + 24 * 3600
    peer.wake()
    second = await asyncio.wait_for(seen.get(), 30)
    assert second.result == "unchanged"
    stop.set()
    await asyncio.wait_for(task, 30)
    assert peer.trunk() is not None
