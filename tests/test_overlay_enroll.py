"""RELOAD enrollment and overlay configuration (RFC 6940 §11.1-§11.3) over
real HTTPS on 127.0.0.1, and our documents judged by the RFC's own RELAX NG
grammar (§11.1.1) with jing."""

from __future__ import annotations

import dataclasses
import datetime
import os
import secrets
import ssl
import stat
import subprocess
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from judges import require, self_signed_cert

from sipmesh.overlay import config_doc as cd
from sipmesh.overlay import enroll as en
from sipmesh.overlay import security as sec
from sipmesh.overlay.kinds import KindDef

OVERLAY = "branch.example.com"
DATA = Path(__file__).parent / "data"
USERS = {"alice@branch.example.com": "wonderland", "bob@branch.example.com": "builder",
         "carol@branch.example.com": "c4r0l"}
KINDS = (
    KindDef(1, "SIP-REGISTRATION", "dictionary", "USER-NODE-MATCH", 16, 1000),
    KindDef(0xF0000001, "DOOR-STATE", "array", "NODE-MULTIPLE", 22, 4, 3),
)


def soon(days: int = 30) -> datetime.datetime:
    t = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
    return t.replace(microsecond=0)


@pytest.fixture(scope="module")
def ca() -> sec.CA:
    return sec.make_ca(OVERLAY)


@pytest.fixture(scope="module")
def signer(ca) -> sec.Identity:
    return sec.Identity.generate(ca, "config@branch.example.com", secrets.token_bytes(16))


@pytest.fixture
def tls(tmp_path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key, cert = self_signed_cert(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


def base_config(sequence: int = 5) -> cd.OverlayConfig:
    return cd.OverlayConfig(
        instance_name=OVERLAY, sequence=sequence, expiration=soon(),
        bootstrap_nodes=(("127.0.0.1", 6084), ("::1", 16084)), kinds=KINDS,
        chord_ping_interval=20, chord_update_interval=400, max_message_size=4000,
        initial_ttl=30,
    )


def make_server(ca, signer, tls, data_dir: Path) -> en.EnrollmentServer:
    return en.EnrollmentServer(ca=ca, config=base_config(), signer=signer, data_dir=data_dir,
                               ssl_context=tls[0])


@pytest.fixture
async def server(ca, signer, tls, tmp_path):
    srv = make_server(ca, signer, tls, tmp_path / "server")
    for user, password in USERS.items():
        srv.add_user(user, password)
    await srv.start()
    yield srv
    await srv.stop()


def signed(config: cd.OverlayConfig, signer: sec.Identity) -> bytes:
    return cd.to_xml(config, signer)


# ---------------------------------------------------------------- document


async def test_configuration_fetched_over_https_and_verified(server, tls, ca, signer):
    config, document = await en.fetch_config(server.config_url, ssl_context=tls[1],
                                             trusted_signer=ca.certificate)
    assert document == server.document
    assert config == server.config
    assert config.enrollment_servers == (server.enroll_url,)
    assert config.root_certs == (ca.certificate,)
    assert config.configuration_signers == (signer.node_id,)
    assert config.bootstrap_nodes == (("127.0.0.1", 6084), ("::1", 16084))
    assert config.kinds == KINDS and config.kind(0xF0000001).max_node_multiple == 3
    assert (config.chord_ping_interval, config.chord_update_interval) == (20, 400)
    async with aiohttp.ClientSession() as s, s.get(server.config_url, ssl=tls[1]) as r:
        assert r.content_type == "application/p2p-overlay+xml"


def test_round_trip_keeps_every_field(ca, signer):
    config = dataclasses.replace(
        base_config(), root_certs=(ca.certificate,), enrollment_servers=("https://e.example/x",),
        configuration_signers=(signer.node_id,), kind_signers=(signer.node_id,),
        bad_nodes=(bytes(16),), self_signed_permitted=True, no_ice=True, turn_density=20,
        clients_permitted=False, chord_reactive=False, overlay_reliability_timer=2500,
        overlay_link_protocols=("TLS", "DTLS"),
    )
    assert cd.parse(signed(config, signer), trusted=[ca.certificate]) == config


def test_tampered_kind_max_size_is_refused(server, ca):
    doc = server.document
    assert doc.count(b"<max-size>1000</max-size>") == 1
    bad = doc.replace(b"<max-size>1000</max-size>", b"<max-size>1001</max-size>")
    with pytest.raises(cd.ConfigError, match="signature does not verify"):
        cd.parse(bad, trusted=[ca.certificate])
    assert cd.parse(doc, trusted=[ca.certificate]).kind(1).max_size == 1000


def test_sequence_lower_than_held_is_refused(server, ca, signer):
    held = cd.parse(signed(dataclasses.replace(server.config, sequence=6), signer),
                    trusted=[ca.certificate])
    with pytest.raises(cd.ConfigError, match="sequence 5 is lower than the held 6"):
        cd.parse(server.document, trusted=[ca.certificate], previous=held)
    newer = signed(dataclasses.replace(server.config, sequence=7), signer)
    assert cd.parse(newer, trusted=None, previous=held).sequence == 7


def test_signer_must_be_a_listed_configuration_signer(server, ca):
    other = sec.Identity.generate(ca, "mallory@branch.example.com", secrets.token_bytes(16))
    forged = signed(server.config, other)  # a valid certificate, but not a listed signer
    with pytest.raises(cd.ConfigError, match="not an allowed signer"):
        cd.parse(forged, trusted=[ca.certificate])
    stranger = sec.make_ca(OVERLAY)
    with pytest.raises(cd.ConfigError, match="does not chain to a trusted root"):
        cd.parse(server.document, trusted=[stranger.certificate])


def test_expired_document_is_refused(server, ca, signer):
    old = signed(dataclasses.replace(server.config, expiration=soon(-1)), signer)
    with pytest.raises(cd.ConfigError, match="expired"):
        cd.parse(old, trusted=[ca.certificate])


@pytest.mark.parametrize("prolog", [
    b'<!DOCTYPE overlay [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>\n',
    b'<!DOCTYPE overlay SYSTEM "file:///etc/passwd">\n',
])
def test_dtd_and_entities_are_refused(server, ca, prolog):
    decl, rest = server.document.split(b"\n", 1)
    with pytest.raises(cd.ConfigError, match="DTD"):
        cd.parse(decl + b"\n" + prolog + rest, trusted=[ca.certificate])


def test_malformed_oversized_and_foreign_documents_are_config_errors(server, ca):
    for bad in (b"", b"<overlay", server.document[:-40], b" " * (cd.MAX_DOCUMENT + 1),
                b'<?xml version="1.0" encoding="ISO-8859-1"?><overlay/>',
                b'<overlay xmlns="urn:other"/>', b"<a>" * 100 + b"</a>" * 100):
        with pytest.raises(cd.ConfigError):
            cd.parse(bad, trusted=[ca.certificate])


def test_unknown_foreign_elements_are_ignored(ca, signer):
    config = dataclasses.replace(base_config(), root_certs=(ca.certificate,),
                                 configuration_signers=(signer.node_id,),
                                 kind_signers=(signer.node_id,), kinds=())
    conf = cd._configuration_xml(config, signer).replace(
        b"<initial-ttl>", b'<ext:later xmlns:ext="urn:example:ext" ext:a="1"><ext:x/></ext:later>'
                          b"\n    <initial-ttl>")
    sig = cd._b64_lines(cd._security_block(conf, signer), "    ").encode()
    doc = (b'<?xml version="1.0" encoding="UTF-8"?>\n<overlay xmlns="' + cd.NS_BASE.encode()
           + b'" xmlns:chord="' + cd.NS_CHORD.encode() + b'">' + conf
           + b"<signature>" + sig + b"</signature></overlay>")
    assert cd.parse(doc, trusted=None) == config


# ---------------------------------------------------------------- RELAX NG judge


def jing(document: Path, grammar: Path = DATA / "reload-config.rnc") -> subprocess.CompletedProcess:
    tool = require("jing", "jing")
    return subprocess.run([tool, "-c", str(grammar), str(document)], capture_output=True,
                          text=True, timeout=120)


def test_generated_document_is_valid_by_the_rfc_grammar(server, tmp_path, signer):
    doc = tmp_path / "config.xml"
    timer = signed(dataclasses.replace(server.config, overlay_reliability_timer=2000,
                                       self_signed_permitted=True), signer)
    for body in (server.document, timer):
        doc.write_bytes(body)
        out = jing(doc)
        assert out.returncode == 0, out.stdout + out.stderr
    doc.write_bytes(server.document.replace(b"<max-count>22</max-count>", b""))
    out = jing(doc)  # the judge is awake: a kind without max-count is invalid
    assert out.returncode != 0 and "max-count" in out.stdout


def test_rfc_example_is_valid_by_our_grammar_copy():
    out = jing(DATA / "rfc6940-config-example.xml")
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------- enrollment


async def test_three_users_get_distinct_node_ids_and_valid_certificates(server, tls, ca, signer):
    got = []
    for user, password in USERS.items():
        e = await en.enroll(server.config_url, user, password, ssl_context=tls[1],
                            trusted_signer=ca.certificate)
        info = sec.check_certificate(e.identity.certificate, ca)
        assert info.user_name == user == e.identity.user_name
        assert info.node_ids == (e.identity.node_id,) == server.node_ids(user)
        assert info.overlays == (OVERLAY,)
        assert e.identity.certificate.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        ) == bytes(e.identity.signing_key.verify_key)
        assert e.config == server.config
        got.append(e.identity.node_id)
    assert len(set(got)) == 3 and signer.node_id not in got
    assert all(len(n) == 16 for n in got)


@pytest.mark.parametrize("user,password", [("alice@branch.example.com", "wrong"),
                                           ("nobody@branch.example.com", "wonderland")])
async def test_bad_credentials_are_refused_with_403(server, tls, user, password):
    with pytest.raises(en.EnrollmentError) as e:
        await en.enroll(server.config_url, user, password, ssl_context=tls[1])
    assert (e.value.status, e.value.token) == (403, "failed_authentication")
    assert server.node_ids(user) == ()


def _p256_csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def _broken_signature_csr() -> bytes:
    der = bytearray(en.make_csr(sec.make_ca("x").signing_key, "alice@branch.example.com"))
    der[-1] ^= 0x01  # last byte of the Ed25519 signature value
    return bytes(der)


@pytest.mark.parametrize("csr,token", [
    (b"not a certificate request", "bad_CSR"),
    (b"0\x03\x02\x01\x00", "bad_CSR"),
    ("p256", "bad_CSR"),
    ("broken", "bad_CSR"),
    ("other-name", "username_not_available"),
])
async def test_bad_csr_is_refused_with_403_token(server, tls, csr, token):
    key = sec.make_ca("x").signing_key
    csr = {"p256": _p256_csr, "broken": _broken_signature_csr,
           "other-name": lambda: en.make_csr(key, "bob@branch.example.com")}.get(csr, lambda: csr)()
    with pytest.raises(en.EnrollmentError) as e:
        await en.request_certificate(server.enroll_url, "alice@branch.example.com",
                                     "wonderland", csr, ssl_context=tls[1])
    assert (e.value.status, e.value.token) == (403, token)
    assert server.node_ids("alice@branch.example.com") == ()


async def test_form_errors_and_urlencoded_form(server, tls, ca):
    key = sec.make_ca("x").signing_key
    csr_pem = x509.load_der_x509_csr(en.make_csr(key, "carol@branch.example.com")).public_bytes(
        serialization.Encoding.PEM).decode()
    form = {"username": "carol@branch.example.com", "password": "c4r0l", "csr": csr_pem}
    async with aiohttp.ClientSession() as s:
        async with s.post(server.enroll_url, data={**form, "nodeids": "2"}, ssl=tls[1]) as r:
            assert (r.status, await r.text()) == (403, "Node-IDs_not_available")
        missing = {k: v for k, v in form.items() if k != "csr"}
        async with s.post(server.enroll_url, data=missing, ssl=tls[1]) as r:
            assert r.status == 400 and "csr" in await r.text()
        async with s.post(server.enroll_url, data=form, ssl=tls[1]) as r:
            assert r.status == 200 and r.content_type == "application/pkix-cert"
            cert = x509.load_der_x509_certificate(await r.read())
    assert sec.check_certificate(cert, ca).node_ids == server.node_ids("carol@branch.example.com")


async def test_restart_keeps_assignments_and_never_reuses_node_ids(ca, signer, tls, tmp_path):
    data = tmp_path / "server"
    first = make_server(ca, signer, tls, data)
    for user, password in USERS.items():
        first.add_user(user, password)
    await first.start()
    try:
        a = await en.enroll(first.config_url, "alice@branch.example.com", "wonderland",
                            ssl_context=tls[1])
        b = await en.enroll(first.config_url, "bob@branch.example.com", "builder",
                            ssl_context=tls[1])
        before = first.assigned_node_ids()
    finally:
        await first.stop()
    assert {a.identity.node_id, b.identity.node_id, signer.node_id} == before

    second = make_server(ca, signer, tls, data)  # users and Node-IDs come from the data folder
    await second.start()
    try:
        c = await en.enroll(second.config_url, "carol@branch.example.com", "c4r0l",
                            ssl_context=tls[1], trusted_signer=ca.certificate)
        again = await en.enroll(second.config_url, "alice@branch.example.com", "wonderland",
                                ssl_context=tls[1])
    finally:
        await second.stop()
    assert c.identity.node_id not in before
    assert again.identity.node_id == a.identity.node_id  # §11.3: a returning user keeps it
    assert again.identity.certificate != a.identity.certificate


async def test_enrollment_saved_and_loaded(server, tls, tmp_path):
    e = await en.enroll(server.config_url, "bob@branch.example.com", "builder",
                        ssl_context=tls[1])
    folder = tmp_path / "peer"
    e.save(folder)
    files = list(folder.iterdir())
    assert [f.name for f in files] == ["enrollment.json"]
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    back = en.Enrollment.load(folder)
    assert back.config == e.config and back.document == e.document
    assert bytes(back.identity.signing_key) == bytes(e.identity.signing_key)
    assert back.identity.certificate == e.identity.certificate
    assert (back.identity.user_name, back.identity.node_id) == (
        e.identity.user_name, e.identity.node_id)
    e.save(folder)  # replacing an existing file works too
    files[0].write_bytes(files[0].read_bytes()[:-30])
    with pytest.raises(en.EnrollmentError):
        en.Enrollment.load(folder)


async def test_client_refuses_a_certificate_from_another_ca(ca, signer, tls, tmp_path):
    rogue = sec.make_ca(OVERLAY)  # issues certificates; the document names only `ca`
    config = dataclasses.replace(base_config(), root_certs=(ca.certificate,))
    srv = en.EnrollmentServer(ca=rogue, config=config, signer=signer, data_dir=tmp_path / "r",
                              ssl_context=tls[0])
    srv.add_user("alice@branch.example.com", "wonderland")
    await srv.start()
    try:
        with pytest.raises(en.EnrollmentError, match="not issued by the overlay's CA"):
            await en.enroll(srv.config_url, "alice@branch.example.com", "wonderland",
                            ssl_context=tls[1], trusted_signer=ca.certificate)
    finally:
        await srv.stop()
