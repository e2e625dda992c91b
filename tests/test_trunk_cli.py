"""``sipmesh trunk`` and ``sipmesh capserver`` as an operator runs them: real
processes, a capability server over HTTPS with a throwaway CA, and the
trunk state in a data folder that outlives each command (RFC 10006 §4-§8).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from judges import require

SIPMESH = str(Path(sys.executable).parent / "sipmesh")
DATA = Path(__file__).parent / "data" / "autopeer"
ROOT = "ietf-sip-auto-peering:sip-auto-peering"


def sipmesh(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIPMESH, *args], capture_output=True, text=True, timeout=timeout)


def changed_example(folder: Path) -> Path:
    """The §9.1 example with a registrar, a codec order, DTMF, early media,
    UDP dropped and numbers changed: a provider's typical revision."""
    doc = json.loads((DATA / "example-capset-rfc10006.json").read_text())
    body = doc[ROOT]
    body["transport-info"]["registrar"].append({"host": "registrar3.voip.example.com",
                                                "port": 5061})
    body["transport-info"]["transport"].remove("ietf-sip-auto-peering:udp")
    body["media"]["media-type-audio"].reverse()
    body["dtmf"]["payload-number"] = 96
    body["call-spec"]["early-media"] = False
    body["call-spec"]["number-range"][0]["count"] = 30
    path = folder / "changed.json"
    path.write_text(json.dumps(doc, indent=1))
    return path


def test_validate_exit_codes_and_json(tmp_path):
    ok = sipmesh("trunk", "validate", str(DATA / "example-capset-rfc10006.json"))
    assert ok.returncode == 0, ok.stderr
    assert "valid capability set" in ok.stdout

    bad = sipmesh("trunk", "validate", str(DATA / "example-capset-draft36-obsolete.json"))
    assert bad.returncode == 1
    assert "invalid capability set" in bad.stderr
    assert f"/{ROOT}/revision/not-before" in bad.stderr

    js = sipmesh("trunk", "validate", "--json", str(DATA / "example-capset-draft36-obsolete.json"))
    assert js.returncode == 1
    report = json.loads(js.stdout)
    assert report["valid"] is False
    assert {"path", "message"} <= set(report["errors"][0])
    assert any(e["path"] == f"/{ROOT}/revision/not-before" for e in report["errors"])

    missing = sipmesh("trunk", "validate", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_diff_between_two_capability_sets_reads_as_sentences(tmp_path):
    new = changed_example(tmp_path)
    out = sipmesh("trunk", "diff", str(DATA / "example-capset-rfc10006.json"), str(new))
    assert out.returncode == 0, out.stderr
    lines = [line.strip() for line in out.stdout.splitlines()]
    assert lines[0].endswith("changed.json:")
    changes = [line.removeprefix("- ") for line in lines[1:]]
    assert "registrar registrar3.voip.example.com:5061 added" in changes
    assert "transport UDP removed" in changes
    assert "codec order changed: PCMU, G729 -> G729, PCMU" in changes
    assert "DTMF payload type 101 -> 96" in changes
    assert "early media turned off" in changes
    assert "inbound numbers added: 19725455020-19725455029" in changes
    assert len(changes) == 6, changes

    same = sipmesh("trunk", "diff", str(new), str(new))
    assert same.returncode == 0 and same.stdout.strip().endswith("no changes")


@pytest.fixture
def capserver(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(tmp_path / "cert.pem"), append=i > 0)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "acme.secret").write_text("s3cret\n")
    shutil.copy(DATA / "example-capset-rfc10006.json", tmp_path / "acme.json")
    (tmp_path / "capserver.toml").write_text("""
listen = "127.0.0.1:0"
certificate = "cert.pem"
private_key = "key.pem"
[[enterprise]]
name = "acme"
client_id = "acme-sbc"
client_secret_file = "acme.secret"
resources = ["acct:trunk@acme.example"]
documents = { "capdoc.json" = "acme.json" }
""")
    proc = subprocess.Popen([SIPMESH, "capserver", "--config", str(tmp_path / "capserver.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert "capserver listening on https://" in line, line + proc.stdout.read()
        base = line.rsplit(" ", 1)[-1].strip()
        doc = json.loads((tmp_path / "acme.json").read_text())
        doc[ROOT]["revision"]["location"] = f"{base}/capserver/acme/capdoc.json"
        (tmp_path / "acme.json").write_text(json.dumps(doc))
        yield proc, base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_operator_session_against_a_capserver(capserver, tmp_path):
    proc, base = capserver
    state = tmp_path / "state"
    creds = ["--ca-file", str(tmp_path / "ca.pem"), "--data-dir", str(state)]
    found = sipmesh("trunk", "discover", "acct:trunk@acme.example", "--webfinger-host",
                    base.removeprefix("https://"), *creds)
    assert found.returncode == 0, found.stderr
    url = found.stdout.strip()
    assert url == f"{base}/capserver/acme/capdoc.json"

    oauth = ["--token-url", f"{base}/oauth/token", "--client-id", "acme-sbc",
             "--client-secret-file", str(tmp_path / "acme.secret")]
    fetched = sipmesh("trunk", "fetch", "--url", url, *oauth, *creds)
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.startswith(f"trunk configuration applied from {url}")

    again = sipmesh("trunk", "fetch", "--url", url, "--json", *oauth, *creds)
    assert json.loads(again.stdout)["result"] == "unchanged"

    shown = sipmesh("trunk", "show", "--json", "--data-dir", str(state))
    trunk = json.loads(shown.stdout)
    assert trunk["source"] == url
    assert trunk["trunk"]["mode"] == "registration"
    text = sipmesh("trunk", "show", "--data-dir", str(state)).stdout
    assert "WARNING" in text and "voip.example.com" in text

    proc.terminate()
    proc.wait(timeout=20)
    down = sipmesh("trunk", "fetch", "--url", url, *oauth, *creds)
    assert down.returncode == 3
    assert "configuration in force is kept" in down.stderr
    assert json.loads(sipmesh("trunk", "show", "--json", "--data-dir", str(state)).stdout) \
        == trunk

    staged = sipmesh("trunk", "diff", str(changed_example(tmp_path)), "--data-dir", str(state))
    assert "DTMF payload type 101 -> 96" in staged.stdout
    applied = sipmesh("trunk", "apply", str(tmp_path / "changed.json"), "--data-dir", str(state))
    assert applied.returncode == 0, applied.stderr
    assert "early media turned off" in applied.stdout

    history = sipmesh("trunk", "history", "--json", "--data-dir", str(state))
    events = [e["event"] for e in json.loads(history.stdout)]
    assert events == ["discovered", "applied", "error", "applied"]


def test_yanglint_is_the_second_judge_of_the_cli_verdicts(tmp_path):
    yanglint = require("yanglint", "libyang-tools")
    yang = Path(__file__).parent.parent / "controller" / "autopeer" / "yang"
    for doc, expected in ((DATA / "example-capset-rfc10006.json", 0),
                          (changed_example(tmp_path), 0),
                          (DATA / "example-capset-draft36-obsolete.json", 1)):
        ours = sipmesh("trunk", "validate", str(doc)).returncode
        theirs = subprocess.run(
            [yanglint, "-p", str(yang / "deps"), "-p", str(yang), "-F",
             "ietf-tls-common:tls12,tls13", "-t", "data",
             str(yang / "ietf-sip-auto-peering@2026-06-15.yang"), str(doc)],
            capture_output=True).returncode
        assert (ours, theirs != 0) == (expected, bool(expected)), doc


def test_controller_polls_the_provider_and_keeps_the_trunk(capserver, tmp_path):
    """`sipmesh run` with [autopeer] enabled discovers, fetches and applies the
    trunk into the state file that `sipmesh trunk show` reads."""
    proc, base = capserver
    cfg = tmp_path / "branch.toml"
    cfg.write_text(f"""
[controller]
branch = "lyon"
data_dir = "{tmp_path / 'state'}"
[sip]
listen = []
[overlay]
enabled = false
[autopeer]
enabled = true
resource = "acct:trunk@acme.example"
webfinger_host = "{base.removeprefix('https://')}"
token_url = "{base}/oauth/token"
client_id = "acme-sbc"
client_secret_file = "{tmp_path / 'acme.secret'}"
ca_file = "{tmp_path / 'ca.pem'}"
""")
    controller = subprocess.Popen([SIPMESH, "run", "--config", str(cfg)], cwd=tmp_path,
                                  stderr=subprocess.PIPE, text=True,
                                  env=dict(os.environ, PYTHONUNBUFFERED="1"))
    log = []
    try:
        for line in controller.stderr:
            log.append(line)
            if "capability set poll:" in line:
                break
        assert "capability set poll: applied" in log[-1], "".join(log)
        shown = json.loads(sipmesh("trunk", "show", "--json", "--config", str(cfg)).stdout)
        assert shown["source"] == f"{base}/capserver/acme/capdoc.json"
        assert [c["name"] for c in shown["trunk"]["codecs"]] == ["PCMU", "G729"]
        controller.terminate()
        rest = controller.communicate(timeout=30)[1]
    finally:
        controller.kill()
    assert controller.returncode == 0, rest
    assert "Traceback" not in "".join(log) + rest
