"""Capability sets checked against the RFC 10006 YANG module; yanglint judges too.

First step of issue 5: the in-process validator (yangson, modules shipped in
controller/autopeer/yang/) must agree with Debian's yanglint (libyang) on
the RFC's §9.1 example, the draft-36 document and a set of broken
documents made from the example, and must name the path of each error.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
from judges import require

from sipmesh.autopeer.validate import CapsetError, Validator

DATA = Path(__file__).resolve().parent / "data" / "autopeer"
YANG = Path(__file__).resolve().parents[1] / "controller" / "autopeer" / "yang"
ROOT = "ietf-sip-auto-peering:sip-auto-peering"


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator()


def example() -> dict:
    return json.loads((DATA / "example-capset-rfc10006.json").read_text())


def _broken() -> dict[str, tuple[dict, str]]:
    """name -> (document, a path the error must name)."""
    cases = {}

    def case(name, path, fn):
        doc = example()
        fn(doc[ROOT])
        cases[name] = (doc, path)

    case("epoch not-before", "/revision/not-before",
         lambda r: r["revision"].__setitem__("not-before", 1742330340))
    case("date not-before", "/revision/not-before",
         lambda r: r["revision"].__setitem__("not-before", "15 June 2026"))
    case("unknown transport", "/transport-info/transport",
         lambda r: r["transport-info"].__setitem__("transport", ["ietf-sip-auto-peering:tls"]))
    case("port out of range", "/transport-info/registrar",
         lambda r: r["transport-info"]["registrar"][0].__setitem__("port", 70000))
    case("unknown leaf", "/transport-info",
         lambda r: r["transport-info"].__setitem__("colour", "blue"))
    case("bad dns server", "/transport-info/dns-server",
         lambda r: r["transport-info"].__setitem__("dns-server", ["not an address"]))
    case("unknown variant", "/variant", lambda r: r.__setitem__("variant", "v9"))
    case("dtmf payload text", "/dtmf/payload-number",
         lambda r: r["dtmf"].__setitem__("payload-number", "one hundred"))
    case("dtmf payload too big", "/dtmf/payload-number",
         lambda r: r["dtmf"].__setitem__("payload-number", 300))
    case("early media as text", "/call-spec/early-media",
         lambda r: r["call-spec"].__setitem__("early-media", "yes"))
    case("unknown method", "/call-spec/supported-method",
         lambda r: r["call-spec"].__setitem__("supported-method", ["TELEPORT"]))
    case("number range index negative", "/call-spec/number-range",
         lambda r: r["call-spec"]["number-range"][0].__setitem__("index", -1))
    case("codec ptime too big", "/media/media-type-audio",
         lambda r: r["media"]["media-type-audio"][0].__setitem__("ptime", 1000))
    case("unknown codec", "/media/media-type-audio",
         lambda r: r["media"]["media-type-audio"][0].__setitem__(
             "media-format", "ietf-sip-auto-peering:no-such-codec"))
    case("unknown fax protocol", "/media/fax/protocol",
         lambda r: r["media"]["fax"].__setitem__("protocol", ["carrier-pigeon"]))
    case("unknown key management", "/security/media-security/key-management",
         lambda r: r["security"]["media-security"].__setitem__("key-management", ["rot13"]))
    case("secure as number", "/security/signaling/secure",
         lambda r: r["security"]["signaling"].__setitem__("secure", 1))
    case("revision as list", "/revision", lambda r: r.__setitem__("revision", []))
    return cases


BROKEN = _broken()


def test_rfc_example_is_valid(validator) -> None:
    assert validator.issues(example()) == []
    validator.validate((DATA / "example-capset-rfc10006.json").read_bytes())


def test_draft36_document_is_refused_with_paths(validator) -> None:
    with pytest.raises(CapsetError) as e:
        validator.validate((DATA / "example-capset-draft36-obsolete.json").read_bytes())
    assert e.value.issues[0].path == f"/{ROOT}/revision/not-before"
    assert e.value.issues[0].message == "expected string value"


def test_independent_errors_are_all_listed(validator) -> None:
    doc = example()
    doc[ROOT]["dtmf"]["payload-number"] = "one hundred"
    doc[ROOT]["transport-info"]["colour"] = "blue"
    found = validator.issues(doc)
    assert [i.path for i in found] == [
        f"/{ROOT}/transport-info/colour",
        f"/{ROOT}/dtmf/payload-number",
    ], found
    assert found[0].message == "not in the data model"


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_documents_name_the_path(validator, name) -> None:
    doc, path = BROKEN[name]
    found = validator.issues(doc)
    assert found, name
    assert any(i.path.startswith(f"/{ROOT}{path}") for i in found), found


def test_not_json_and_wrong_root(validator) -> None:
    assert validator.issues(b"{not json")[0].path == "/"
    assert "no ietf-sip-auto-peering" in validator.issues({"x": 1})[0].message


def _yanglint(exe: str, doc_path: Path) -> int:
    return subprocess.run(
        [exe, "-p", str(YANG / "deps"), "-p", str(YANG), "-F", "ietf-tls-common:tls12,tls13",
         "-t", "data", str(YANG / "ietf-sip-auto-peering@2026-06-15.yang"), str(doc_path)],
        capture_output=True, text=True, timeout=60,
    ).returncode


def test_yanglint_agrees_on_every_document(validator, tmp_path) -> None:
    exe = require("yanglint", "libyang-tools")
    docs = {"rfc": example(),
            "draft36": json.loads((DATA / "example-capset-draft36-obsolete.json").read_text())}
    docs.update({name: copy.deepcopy(doc) for name, (doc, _path) in BROKEN.items()})
    for name, doc in docs.items():
        f = tmp_path / f"{name.replace(' ', '-')}.json"
        f.write_text(json.dumps(doc))
        ours = not validator.issues(doc)
        theirs = _yanglint(exe, f) == 0
        assert ours == theirs, (name, ours, theirs)
