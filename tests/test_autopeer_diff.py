"""What a new capability set changes, in sentences (RFC 10006 §5 polling, §8).

A changed copy of the RFC's §9.1 example must give exactly the expected
sentences; every other field is changed on the typed configuration; a
first set gives a summary, an identical one nothing, and no password ever
appears in the output.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from sipmesh.autopeer.diff import changes
from sipmesh.autopeer.trunk import (
    CallerId,
    Codec,
    Credentials,
    HostPort,
    NumberRange,
    Stir,
    VendorExtension,
    map_capset,
)
from sipmesh.autopeer.validate import Validator

DATA = Path(__file__).resolve().parent / "data" / "autopeer"
ROOT = "ietf-sip-auto-peering:sip-auto-peering"
VENDOR = f"/{ROOT}/example-vendor-config:vendorConfig"


def example() -> dict:
    return json.loads((DATA / "example-capset-rfc10006.json").read_text())


def changed_example() -> dict:
    doc = example()
    r = doc[ROOT]
    r["revision"]["not-before"] = "2026-07-01T00:00:00Z"
    t = r["transport-info"]
    t["transport"] = ["ietf-sip-auto-peering:tcp"]
    t["registrar"].append({"host": "registrar3.voip.example.com", "port": 5060})
    t["realm"][0]["password"] = "$0$n3w-secret"
    t["dns-server"] = ["192.0.2.50"]
    c = r["call-spec"]
    c["early-media"] = False
    c["supported-method"].append("update")
    c["caller-id"]["preferred-method"] = "p-asserted-identity"
    c["number-range"][0]["value"] = ["19725455100"]
    audio = r["media"]["media-type-audio"]
    audio[0]["ptime"] = 30
    audio.reverse()
    audio.append({"media-format": "ietf-sip-auto-peering:g722", "rate": 16000, "ptime": 20})
    r["media"]["fax"]["protocol"] = ["t38"]
    r["dtmf"] = {"payload-number": 96, "iteration": True}
    stir = r["security"]["secure-telephony-identity"]
    stir["certificate-delegation"] = False
    del stir["acme-directory"]
    r["extension"] = ["one-hundred-rel", "timer", "replaces", "gruu"]
    r["example-vendor-config:vendorConfig"] = {"vendorConfigParam2": "sbc"}
    return doc


def test_changed_rfc_example_gives_exact_sentences() -> None:
    doc = changed_example()
    assert Validator().issues(doc) == []
    assert changes(map_capset(example()), map_capset(doc)) == [
        "valid from 2026-06-15 10:30:00 UTC -> 2026-07-01 00:00:00 UTC",
        "transport UDP removed",
        "registrar registrar3.voip.example.com:5060 added",
        "DNS server 192.0.2.51 removed",
        "password for realm voip.example.com changed",
        "codec G722 added",
        "PCMU ptime 20 -> 30 ms",
        "codec order changed: PCMU, G729 -> G729, PCMU",
        "fax protocol pass-through removed",
        "DTMF mode RFC 2833 -> RFC 4733",
        "DTMF payload type 101 -> 96",
        "early media turned off",
        "method UPDATE added",
        "caller ID header From -> P-Asserted-Identity",
        "inbound numbers added: 19725455100-19725455119",
        "inbound numbers removed: 19725455002-19725455019",
        "STIR certificate delegation turned off",
        "ACME directory no longer stated (was https://sipserviceprovider.com/acme.html)",
        "SIP extension path removed",
        "SIP extension gruu added",
        f"vendor data {VENDOR} added",
    ]


def test_every_other_field_on_the_typed_config() -> None:
    old = map_capset(example())
    new = replace(
        old,
        variant="2.0",
        revision_location="https://capserver.example.org/capserver/v2.json",
        mode="static",
        transports=("tcp", "udp", "tls"),
        signaling_secure=None,
        tls_versions=("1.3",),
        registrars=(),
        call_control=(HostPort("192.0.2.40", 5065), HostPort("callServer1.voip.example.com", 5060)),
        outbound_proxies=(HostPort("192.0.2.36", 5060),),
        dns_servers=("192.0.2.51", "192.0.2.50"),
        credentials=(
            Credentials("voip.example.com", "voip2", None, "p", "$6$other"),
            Credentials("backup.example.com", "b", "x", None),
        ),
        codecs=(Codec("PCMU", 16000, 20, None, None), Codec("G729", 8000, 20, None, 18)),
        fax=("pass-through", "t38"),
        rtp_trigger=False,
        symmetric_rtp=False,
        symmetric_rtcp=None,
        rtcp_feedback=False,
        signaling_forking=True,
        methods=tuple(reversed(old.methods)),
        caller_id=CallerId(e164=False, method="from"),
        number_ranges=old.number_ranges + (
            NumberRange(5, "reference", None, ("https://example.com/dids.txt",)),),
        key_management=("sdes",),
        certificate_location=None,
        stir=Stir(False, True, "https://sipserviceprovider.com/acme2.html"),
        extensions=("timer", "100rel", "replaces", "path"),
    )
    assert changes(old, new) == [
        "capability set variant 1.0 -> 2.0",
        "revision location https://capserver.example.org/capserver/capdoc.json -> "
        "https://capserver.example.org/capserver/v2.json",
        "mode registration -> static",
        "transport TLS added",
        "TLS signaling no longer stated (was on)",
        "TLS version 1.2 removed",
        "registrar registrar1.voip.example.com:5060 removed",
        "registrar registrar2.voip.example.com:5060 removed",
        "call-control server order changed: callServer1.voip.example.com:5060, "
        "192.0.2.40:5065 -> 192.0.2.40:5065, callServer1.voip.example.com:5060",
        "outbound proxy 192.0.2.35:5060 removed",
        "outbound proxy 192.0.2.36:5060 added",
        "DNS server order changed: 192.0.2.50, 192.0.2.51 -> 192.0.2.51, 192.0.2.50",
        "realm backup.example.com added",
        "username for realm voip.example.com voip -> voip2",
        "password for realm voip.example.com changed",
        "PCMU rate 8000 -> 16000 Hz",
        "PCMU payload type 0 -> not stated",
        "G729 parameters annexb -> none",
        "fax protocol order changed: t38, pass-through -> pass-through, t38",
        "sending the first RTP packet (RTP trigger) turned off",
        "symmetric RTP turned off",
        "symmetric RTCP no longer stated (was on)",
        "RTCP feedback turned off",
        "signaling forking turned on",
        "caller ID in E.164 turned off",
        "number list reference https://example.com/dids.txt added",
        "media key management DTLS-SRTP removed",
        "certificate location no longer stated (was "
        "https://sipserviceprovider.com/certificateList.pem)",
        "STIR compliance turned off",
        "ACME directory https://sipserviceprovider.com/acme.html -> "
        "https://sipserviceprovider.com/acme2.html",
    ]


def test_vendor_and_number_range_rewrites() -> None:
    old = map_capset(example())
    ext = VendorExtension("example-vendor-config", VENDOR, {"vendorConfigParam1": 1}, False)
    with_vendor = replace(old, vendor=(ext,))
    assert changes(with_vendor, replace(old, vendor=(replace(ext, validated=True),))) == [
        f"vendor data {VENDOR} now validated"]
    assert changes(with_vendor, replace(old, vendor=(replace(ext, data={"x": 2}),))) == [
        f"vendor data {VENDOR} changed"]
    assert changes(with_vendor, old) == [f"vendor data {VENDOR} removed"]
    same_numbers = (NumberRange(0, "collection", 20, old.dids),)
    assert changes(old, replace(old, number_ranges=same_numbers)) == [
        "number ranges rewritten with the same inbound numbers"]
    assert changes(old, replace(old, credentials=())) == ["realm voip.example.com removed"]
    hashed = replace(old.credentials[0], crypt_hash="$6$rotated")
    assert changes(old, replace(old, credentials=(hashed,))) == [
        "password for realm voip.example.com changed"]


def test_first_set_is_summarised() -> None:
    assert changes(None, map_capset(example())) == [
        "new trunk: registration via registrar1.voip.example.com:5060, "
        "registrar2.voip.example.com:5060; transports TCP, UDP; codecs PCMU, G729; "
        "20 inbound numbers; 1 warning"]
    static = json.loads((DATA / "example-capset-static.json").read_text())
    assert changes(None, map_capset(static)) == [
        "new trunk: static via 192.0.2.10:5060, [2001:db8::10]:5080; transports UDP; "
        "codecs opus, G722, PCMA; 4 inbound numbers; 1 warning"]


def test_identical_sets_give_nothing() -> None:
    assert changes(map_capset(example()), map_capset(example())) == []


def test_passwords_never_appear() -> None:
    old = json.loads((DATA / "example-capset-static.json").read_text())
    new = json.loads((DATA / "example-capset-static.json").read_text())
    new[ROOT]["transport-info"]["realm"][0]["password"] = "$0$an0ther-one"
    said = changes(map_capset(old), map_capset(new)) + changes(None, map_capset(new))
    assert said[0] == "password for realm trunk.example.net changed"
    assert not any("s3cret" in s or "an0ther" in s for s in said)
