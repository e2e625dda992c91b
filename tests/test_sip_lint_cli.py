"""`sipmesh sip lint`: byte-exact files in, a verdict per message out, exit 1 if any is bad."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sip_cases import CASES

SIPMESH = str(Path(sys.executable).parent / "sipmesh")
BY_NAME = {c.name: c for c in CASES}


def lint(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIPMESH, "sip", "lint", *args], input=stdin, capture_output=True,
                          timeout=60)


def test_ok_and_problems_with_positions(tmp_path: Path) -> None:
    good = tmp_path / "good.sip"
    good.write_bytes(BY_NAME["compact-forms"].raw)
    bad = tmp_path / "bad.sip"
    bad.write_bytes(BY_NAME["row-without-colon"].raw)
    out = lint(str(good), str(bad))
    text = out.stdout.decode()
    assert out.returncode == 1
    assert f"{good}: ok (request INVITE)" in text
    assert f"{bad}: 400 header row without a colon" in text
    offset = BY_NAME["row-without-colon"].raw.index(b"This line has no colon")
    assert f"offset {offset}" in text


def test_every_problem_is_listed_as_json(tmp_path: Path) -> None:
    raw = (BY_NAME["cseq-method-mismatch"].raw
           .replace(b"Max-Forwards: 70", b"Max-Forwards: 999")
           .replace(b"INVITE sip:bob", b"INVITE http://bob"))
    f = tmp_path / "many.sip"
    f.write_bytes(raw)
    out = lint("--json", str(f))
    assert out.returncode == 1
    (report,) = json.loads(out.stdout)
    found = {(p["status"], p["header"]) for p in report["problems"]}
    assert (416, None) in found
    assert (400, "Max-Forwards") in found
    assert (400, "CSeq") in found
    assert report["ok"] is False


def test_stdin_and_all_ok_exit_zero() -> None:
    out = lint("-", stdin=BY_NAME["response-200-register"].raw)
    assert out.returncode == 0
    assert out.stdout.decode().strip() == "-: ok (response 200)"
