"""Capability sets mapped to trunk settings (RFC 10006 §7.2, §8), and vendor extensions (§7.3).

Every field of the RFC's §9.1 example is checked, then a static trunk with
a clear-text password, the round trip through storage, the lines `sipmesh
trunk show` prints, and vendor data with and without its module installed,
where yanglint (libyang) must agree with the in-process validator.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from judges import require

from sipmesh.autopeer.trunk import (
    CallerId,
    Codec,
    Credentials,
    Dtmf,
    HostPort,
    NumberRange,
    Stir,
    VendorExtension,
    describe,
    from_json,
    map_capset,
    to_json,
)
from sipmesh.autopeer.trunk_config import MAX_DIDS, number_runs
from sipmesh.autopeer.validate import CapsetError, Validator, YangModuleError

DATA = Path(__file__).resolve().parent / "data" / "autopeer"
YANG = Path(__file__).resolve().parents[1] / "controller" / "autopeer" / "yang"
VENDOR_MODULE = DATA / "example-vendor-config@2026-12-06.yang"
ROOT = "ietf-sip-auto-peering:sip-auto-peering"
VENDOR_PATH = f"/{ROOT}/example-vendor-config:vendorConfig"
SHA512 = ("$6$OoEJwExxp6U/FRFq$4RkL2lSSGLoKdfGjX4lQLFXo89gc0wtJsKiBxg/BBz6aNwu7C.D3kRUwD7lvJm6"
          "rhaCdhSzVh/XfkkAUY2dTu0")


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator()


@pytest.fixture(scope="module")
def vendor_validator() -> Validator:
    return Validator([VENDOR_MODULE])


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def test_rfc_example_every_field(validator) -> None:
    doc = load("example-capset-rfc10006.json")
    assert validator.issues(doc) == []
    cfg = map_capset(doc, validator=validator)
    assert cfg.variant == "1.0"
    assert cfg.not_before == datetime(2026, 6, 15, 10, 30, tzinfo=UTC)
    assert cfg.not_before.utcoffset().total_seconds() == 0
    assert cfg.revision_location == "https://capserver.example.org/capserver/capdoc.json"
    assert cfg.mode == "registration"
    assert cfg.transports == ("tcp", "udp")
    assert cfg.signaling_secure is True
    assert cfg.tls_versions == ("1.2", "1.3")
    assert cfg.registrars == (HostPort("registrar1.voip.example.com", 5060),
                              HostPort("registrar2.voip.example.com", 5060))
    assert cfg.call_control == (HostPort("callServer1.voip.example.com", 5060),
                                HostPort("192.0.2.40", 5065))
    assert cfg.outbound_proxies == (HostPort("192.0.2.35", 5060),)
    assert cfg.dns_servers == ("192.0.2.50", "192.0.2.51")
    assert cfg.credentials == (Credentials(
        realm="voip.example.com", username="voip", password=None,
        problem="the provider sent the password for realm voip.example.com as a SHA-512 "
                "crypt hash ($6$); SIP digest needs the clear text, so set this realm's "
                "password locally (sipmesh trunk credentials voip.example.com)",
        crypt_hash=SHA512),)
    assert cfg.codecs == (Codec("PCMU", 8000, 20, None, 0), Codec("G729", 8000, 20, "annexb", 18))
    assert cfg.fax == ("t38", "pass-through")
    assert cfg.rtp_trigger is True
    assert cfg.symmetric_rtp is True
    assert cfg.symmetric_rtcp is True
    assert cfg.rtcp_feedback is True
    assert cfg.dtmf == Dtmf(mode="rfc2833", payload_type=101)
    assert cfg.early_media is True
    assert cfg.signaling_forking is False
    assert cfg.methods == ("INVITE", "OPTIONS", "BYE", "CANCEL", "ACK", "PRACK", "SUBSCRIBE",
                           "NOTIFY", "REGISTER")
    assert cfg.caller_id == CallerId(e164=True, method="from")
    assert cfg.number_ranges == (
        NumberRange(0, "range", 20, ("19725455000",)),
        NumberRange(1, "collection", 2, ("19725455000", "19725455001")),
    )
    assert cfg.number_ranges[0].numbers() == tuple(f"197254550{i:02d}" for i in range(20))
    assert cfg.number_ranges[1].numbers() == ("19725455000", "19725455001")
    assert cfg.dids == tuple(f"197254550{i:02d}" for i in range(20))
    assert cfg.key_management == ("sdes", "dtls-srtp")
    assert cfg.certificate_location == "https://sipserviceprovider.com/certificateList.pem"
    assert cfg.stir == Stir(compliance=True, certificate_delegation=True,
                            acme_directory="https://sipserviceprovider.com/acme.html")
    assert cfg.extensions == ("100rel", "timer", "replaces", "path")
    assert cfg.vendor == ()
    assert cfg.problems == (cfg.credentials[0].problem,)


def test_static_trunk_with_clear_password(validator) -> None:
    doc = load("example-capset-static.json")
    assert validator.issues(doc) == []
    cfg = map_capset(doc)
    assert cfg.variant == "1.0"
    assert cfg.not_before == datetime(2026, 9, 1, 6, 0, tzinfo=UTC)
    assert cfg.revision_location == "https://capserver.example.net/capserver/branch7/capdoc.json"
    assert cfg.mode == "static"
    assert cfg.transports == ("udp",)
    assert cfg.signaling_secure is False
    assert cfg.tls_versions == ()
    assert cfg.registrars == ()
    assert cfg.call_control == (HostPort("192.0.2.10", 5060), HostPort("2001:db8::10", 5080))
    assert [str(h) for h in cfg.call_control] == ["192.0.2.10:5060", "[2001:db8::10]:5080"]
    assert cfg.outbound_proxies == ()
    assert cfg.dns_servers == ()
    assert cfg.credentials == (Credentials("trunk.example.net", "branch7", "s3cret$with$dollars",
                                           None, None),)
    # opus has no static payload type; G.722 keeps 9 at its 16 kHz sampling
    # rate (RFC 3551 §4.5.2); PCMA at 16 kHz is not payload type 8.
    assert cfg.codecs == (Codec("opus", 48000, 20, "useinbandfec=1", None),
                          Codec("G722", 16000, None, None, 9),
                          Codec("PCMA", 16000, 30, None, None))
    assert cfg.fax == ()
    assert (cfg.rtp_trigger, cfg.symmetric_rtp, cfg.symmetric_rtcp, cfg.rtcp_feedback) == (
        None, None, None, None)
    assert cfg.dtmf == Dtmf(mode="rfc4733", payload_type=None)
    assert cfg.early_media is None
    assert cfg.signaling_forking is None
    assert cfg.methods == ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE")
    assert cfg.caller_id == CallerId(e164=None, method="p-asserted-identity")
    assert cfg.number_ranges == (
        NumberRange(1, "collection", 2, ("+4930123400", "+4930123409")),
        NumberRange(2, "reference", None, ("https://capserver.example.net/dids/branch7.txt",)),
        NumberRange(3, "range", 3, ("+4930123409",)),
    )
    assert cfg.number_ranges[1].numbers() == ()
    assert cfg.dids == ("+4930123400", "+4930123409", "+4930123410", "+4930123411")
    assert cfg.key_management == ()
    assert cfg.certificate_location is None
    assert cfg.stir == Stir(None, None, None)
    assert cfg.extensions == ()
    assert cfg.vendor == ()
    assert cfg.problems == (
        "number range 2 is a reference (https://capserver.example.net/dids/branch7.txt); "
        "those numbers are not fetched, route them by hand",)


@pytest.mark.parametrize(("stored", "algorithm"), [
    ("$1$abcdefgh$" + "a" * 22, "MD5 crypt hash ($1$)"),
    ("$5$rounds=5000$saltsalt$" + "b" * 43, "SHA-256 crypt hash ($5$)"),
    (SHA512, "SHA-512 crypt hash ($6$)"),
])
def test_hashed_passwords_are_a_problem_not_an_error(validator, stored, algorithm) -> None:
    doc = load("example-capset-rfc10006.json")
    doc[ROOT]["transport-info"]["realm"][0]["password"] = stored
    assert validator.issues(doc) == []
    (cred,) = map_capset(doc).credentials
    assert cred.password is None
    assert cred.crypt_hash == stored
    assert f"realm voip.example.com as a {algorithm}; SIP digest needs the clear" in cred.problem
    assert cred.problem.endswith("(sipmesh trunk credentials voip.example.com)")


def test_missing_password_and_leap_second() -> None:
    doc = load("example-capset-rfc10006.json")
    del doc[ROOT]["transport-info"]["realm"][0]["password"]
    doc[ROOT]["revision"]["not-before"] = "2026-12-31T23:59:60Z"
    cfg = map_capset(doc)
    assert cfg.credentials[0].password is None
    assert cfg.credentials[0].problem == (
        "the provider sent no password for realm voip.example.com; so set this realm's "
        "password locally (sipmesh trunk credentials voip.example.com)")
    assert cfg.not_before == datetime(2027, 1, 1, tzinfo=UTC)


def test_unusable_sets_raise_capset_error() -> None:
    doc = load("example-capset-static.json")
    del doc[ROOT]["transport-info"]["call-control"]
    with pytest.raises(CapsetError) as e:
        map_capset(doc)
    assert e.value.issues[0].path == f"/{ROOT}/transport-info"
    assert "nowhere to send" in e.value.issues[0].message

    doc = load("example-capset-static.json")
    doc[ROOT]["call-spec"]["number-range"] = [
        {"index": i, "type": "range", "count": 65535, "value": [f"{i}0000000"]} for i in range(2)]
    with pytest.raises(CapsetError) as e:
        map_capset(doc)
    assert e.value.issues[0].path == f"/{ROOT}/call-spec/number-range"
    assert f"131070 numbers, more than {MAX_DIDS}" in e.value.issues[0].message


def test_outbound_proxy_alone_is_a_static_trunk() -> None:
    doc = load("example-capset-static.json")
    info = doc[ROOT]["transport-info"]
    del info["call-control"]
    info["outbound-proxy"] = [{"host": "sbc.example.net", "port": 5061}]
    cfg = map_capset(doc)
    assert cfg.mode == "static"
    assert cfg.outbound_proxies == (HostPort("sbc.example.net", 5061),)


def test_number_ranges_keep_width_and_report_problems() -> None:
    assert NumberRange(0, "range", 3, ("0099",)).numbers() == ("0099", "0100", "0101")
    assert NumberRange(0, "range", 2, ("99",)).numbers() == ("99", "100")
    assert NumberRange(0, "range", 2, ("+4930",)).numbers() == ("+4930", "+4931")
    assert NumberRange(0, "range", 0, ("5",)).numbers() == ()
    assert NumberRange(4, "range", 2, ("ext-5",)).problem() == (
        "number range 4 has no usable first number; it gives no inbound numbers")
    assert NumberRange(4, "range", None, ("5",)).problem() == (
        "number range 4 has no count; it gives no inbound numbers")
    assert NumberRange(4, None, 1, ("5",)).numbers() == ()
    assert number_runs(["100", "101", "102", "104", "+1", "+2"]) == ["100-102", "104", "+1-+2"]


def test_option_tags_are_spelled_as_sip_spells_them() -> None:
    doc = load("example-capset-rfc10006.json")
    doc[ROOT]["extension"] = ["one-nine-nine", "one-hundred-rel", "gruu", "sdp-anat"]
    assert map_capset(doc).extensions == ("199", "100rel", "gruu", "sdp-anat")


@pytest.mark.parametrize("name", [
    "example-capset-rfc10006.json", "example-capset-static.json", "example-capset-vendor.json"])
def test_json_round_trip_is_exact(vendor_validator, name) -> None:
    cfg = map_capset(load(name), validator=vendor_validator)
    stored = json.dumps(to_json(cfg))
    back = from_json(json.loads(stored))
    assert back == cfg
    assert back.dids == cfg.dids
    assert to_json(back) == json.loads(stored)


def test_from_json_refuses_other_data() -> None:
    cfg = to_json(map_capset(load("example-capset-rfc10006.json")))
    with pytest.raises(ValueError, match="format 1"):
        from_json({"format": 2})
    del cfg["codecs"]
    with pytest.raises(ValueError, match="damaged"):
        from_json(cfg)


def test_describe_rfc_example() -> None:
    assert describe(map_capset(load("example-capset-rfc10006.json"))) == [
        "WARNING: the provider sent the password for realm voip.example.com as a SHA-512 crypt "
        "hash ($6$); SIP digest needs the clear text, so set this realm's password locally "
        "(sipmesh trunk credentials voip.example.com)",
        "capability set 1.0, valid from 2026-06-15 10:30:00 UTC, updates at "
        "https://capserver.example.org/capserver/capdoc.json",
        "mode: registration",
        "registrars: registrar1.voip.example.com:5060, registrar2.voip.example.com:5060",
        "call control: callServer1.voip.example.com:5060, 192.0.2.40:5065",
        "outbound proxies: 192.0.2.35:5060",
        "DNS servers: 192.0.2.50, 192.0.2.51",
        "transports: TCP, UDP",
        "TLS signaling: yes (TLS 1.2, 1.3)",
        "credentials: realm voip.example.com, user voip, password missing",
        "codecs: PCMU/8000 20 ms (PT 0), G729/8000 20 ms annexb (PT 18)",
        "DTMF: RFC 2833, payload type 101",
        "fax: t38, pass-through",
        "RTP: we send first yes, symmetric RTP yes, symmetric RTCP yes, RTCP feedback yes",
        "calls: early media yes, forking no",
        "caller ID: E.164 in From",
        "methods: INVITE, OPTIONS, BYE, CANCEL, ACK, PRACK, SUBSCRIBE, NOTIFY, REGISTER",
        "SIP extensions: 100rel, timer, replaces, path",
        "inbound numbers (20): 19725455000-19725455019",
        "media security: SDES, DTLS-SRTP",
        "provider certificates: https://sipserviceprovider.com/certificateList.pem",
        "STIR: compliant yes, delegation yes, ACME https://sipserviceprovider.com/acme.html",
    ]


def test_describe_static_trunk_says_what_is_unknown() -> None:
    lines = describe(map_capset(load("example-capset-static.json")))
    assert lines[0].startswith("WARNING: number range 2 is a reference")
    assert "mode: static" in lines
    assert "call control: 192.0.2.10:5060, [2001:db8::10]:5080" in lines
    assert "DNS servers: system resolver" in lines
    assert "credentials: realm trunk.example.net, user branch7, password set" in lines
    assert "DTMF: RFC 4733, payload type not stated" in lines
    assert "caller ID: format not stated in P-Asserted-Identity" in lines
    assert "inbound numbers (4): +4930123400, +4930123409-+4930123411" in lines
    assert not any("s3cret" in line for line in lines)


# Vendor extensions (RFC 10006 §7.3)

def vendor_doc(value: object = None) -> dict:
    doc = load("example-capset-vendor.json")
    if value is not None:
        doc[ROOT]["example-vendor-config:vendorConfig"]["vendorConfigParam1"] = value
    return doc


VENDOR_DATA = {"vendorConfigParam1": 1042, "vendorConfigParam2": "branch7-sbc"}


def test_vendor_data_without_its_module_is_listed_unvalidated(validator) -> None:
    doc = vendor_doc()
    assert validator.issues(doc) == []
    assert validator.issues(json.dumps(doc)) == []
    expected = [VendorExtension("example-vendor-config", VENDOR_PATH, VENDOR_DATA, False)]
    assert validator.extensions(doc) == expected
    assert validator.extensions(json.dumps(doc).encode()) == expected
    assert map_capset(doc, validator=validator).vendor == tuple(expected)
    assert map_capset(doc).vendor == tuple(expected)
    # Unvalidated means unchecked: a wrong type is not noticed without the module.
    assert validator.issues(vendor_doc("not a number")) == []
    assert doc == vendor_doc(), "issues() must not modify the caller's document"


def test_vendor_data_with_its_module_is_validated(vendor_validator) -> None:
    doc = vendor_doc()
    assert vendor_validator.issues(doc) == []
    expected = VendorExtension("example-vendor-config", VENDOR_PATH, VENDOR_DATA, True)
    assert vendor_validator.extensions(doc) == [expected]
    cfg = map_capset(doc, validator=vendor_validator)
    assert cfg.vendor == (expected,)
    assert describe(cfg)[-1] == f"vendor data {VENDOR_PATH} (validated)"
    # The base document stays valid with the extra module loaded.
    assert vendor_validator.issues(load("example-capset-rfc10006.json")) == []


@pytest.mark.parametrize("value", ["not a number", 2**40, 1.5])
def test_vendor_data_of_wrong_type_is_refused_with_path(vendor_validator, value) -> None:
    found = vendor_validator.issues(vendor_doc(value))
    assert [i.path for i in found] == [f"{VENDOR_PATH}/vendorConfigParam1"], found
    with pytest.raises(CapsetError):
        vendor_validator.validate(vendor_doc(value))


def test_unknown_leaf_in_installed_vendor_module_is_refused(vendor_validator) -> None:
    doc = vendor_doc()
    doc[ROOT]["example-vendor-config:vendorConfig"]["colour"] = "blue"
    assert [i.path for i in vendor_validator.issues(doc)] == [f"{VENDOR_PATH}/colour"]


def test_vendor_data_anywhere_is_found_in_document_order(validator) -> None:
    doc = load("example-capset-rfc10006.json")
    doc[ROOT]["transport-info"]["registrar"][1]["acme-sbc:weight"] = 10
    doc[ROOT]["acme-sbc:trunk-group"] = {"id": "tg7", "lines": [1, 2]}
    doc["acme-sbc:document-id"] = "x-1"
    assert validator.issues(doc) == []
    assert validator.extensions(doc) == [
        VendorExtension("acme-sbc", f"/{ROOT}/transport-info/registrar/1/acme-sbc:weight", 10,
                        False),
        VendorExtension("acme-sbc", f"/{ROOT}/acme-sbc:trunk-group",
                        {"id": "tg7", "lines": [1, 2]}, False),
        VendorExtension("acme-sbc", "/acme-sbc:document-id", "x-1", False),
    ]


def test_unknown_member_of_an_ietf_module_is_still_an_error(validator) -> None:
    doc = load("example-capset-rfc10006.json")
    doc[ROOT]["ietf-tls-common:colour"] = "blue"
    assert [i.path for i in validator.issues(doc)] == [f"/{ROOT}/ietf-tls-common:colour"]
    assert validator.extensions(doc) == []


def test_vendor_module_files_are_checked(tmp_path) -> None:
    wrong_name = tmp_path / "vendor.yang"
    shutil.copy(VENDOR_MODULE, wrong_name)
    with pytest.raises(YangModuleError, match="must be named example-vendor-config@2026-12-06"):
        Validator([wrong_name])
    with pytest.raises(YangModuleError, match="cannot read"):
        Validator([tmp_path / "missing@2026-01-01.yang"])
    broken = tmp_path / "broken@2026-01-01.yang"
    broken.write_text('module broken {\n  namespace "urn:x:broken";\n  prefix b;\n'
                      '  import no-such-module { prefix n; }\n  revision 2026-01-01;\n}\n')
    with pytest.raises(YangModuleError, match="do not load"):
        Validator([broken])
    with pytest.raises(YangModuleError, match="already in the model"):
        Validator([YANG / "ietf-sip-auto-peering@2026-06-15.yang"])


def _yanglint(exe: str, doc_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [exe, "-p", str(YANG), "-p", str(YANG / "deps"), "-p", str(DATA),
         "-F", "ietf-tls-common:tls12,tls13", "-t", "data",
         str(YANG / "ietf-sip-auto-peering@2026-06-15.yang"), str(VENDOR_MODULE), str(doc_path)],
        capture_output=True, text=True, timeout=60,
    )


def test_yanglint_agrees_on_vendor_documents(vendor_validator, tmp_path) -> None:
    exe = require("yanglint", "libyang-tools")
    unknown_leaf = vendor_doc()
    unknown_leaf[ROOT]["example-vendor-config:vendorConfig"]["colour"] = "blue"
    docs = {"valid": vendor_doc(), "text": vendor_doc("not a number"), "big": vendor_doc(2**40),
            "fraction": vendor_doc(1.5), "max": vendor_doc(2**31 - 1),
            "unknown-leaf": unknown_leaf, "rfc": load("example-capset-rfc10006.json")}
    verdicts = {}
    for name, doc in docs.items():
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(copy.deepcopy(doc)))
        ours = not vendor_validator.issues(doc)
        run = _yanglint(exe, f)
        assert ours == (run.returncode == 0), (name, ours, run.stderr)
        verdicts[name] = ours
    assert verdicts == {"valid": True, "text": False, "big": False, "fraction": False,
                        "max": True, "unknown-leaf": False, "rfc": True}
