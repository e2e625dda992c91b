"""`sipmesh board info|provision|logs|reboot` over a virtual board's PTY.

The board firmware runs on the sim (`sipmesh board sim --bundle`) for the
info test. The provisioning, logs and garbage tests use a STAND-IN AGENT
(clearly marked below, a small MicroPython script speaking the same frames
and CBOR maps) so that the controller side (SerialLink, provision(), exit
codes) is proven independently of the firmware's own state.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from board_lan import BOARD_HEAP
from test_board_sim import WAIT, readline, start_sim

from sipmesh.boards import bundle, unixport
from sipmesh.boards.provision import ProvisionError, provision
from sipmesh.boards.serial_link import SerialError, SerialLink
from sipmesh.proto import boardcfg, cose, ed25519

BOARD_ID = "sm-00112233aabb"

# ---- STAND-IN AGENT (test only; the real one is firmware/fw_agent.py) ----
STAND_IN = r'''
import os, sys, select, termios
termios.setraw(0)
a = termios.tcgetattr(0); a[6][6] = 0; a[6][5] = 0; termios.tcsetattr(0, termios.TCSANOW, a)
from sipmesh.proto import cbor, frame, mgmt
ID = os.getenv("SIPMESH_BOARD_ID")
st = {"state": "unprovisioned", "cfg": 0, "pub": None}
dec = frame.FrameDecoder()
out = sys.stdout.buffer
out.write(frame.encode(frame.EVENT, 0, mgmt.event("boot", id=ID, fw="stand-in")))
p = select.poll(); p.register(0, select.POLLIN)
while True:
    p.poll(-1)
    data = sys.stdin.buffer.read(256)
    if not data:
        continue
    for f in dec.feed(data):
        if f.type != frame.REQUEST:
            continue
        try:
            op, args = mgmt.parse_request(f.payload)
            if op in ("hello", "info"):
                r = mgmt.response_ok(id=ID, kind="unix", fw="stand-in", proto=1,
                                     state=st["state"], cfg=st["cfg"])
            elif op == "keygen":
                st["pub"] = bytes(range(32))
                r = mgmt.response_ok(pub=st["pub"])
            elif op == "provision":
                seq = cbor.loads(cbor.loads(args["config"]).value[2])["seq"]
                st["state"] = "provisioned"; st["cfg"] = seq
                r = mgmt.response_ok(pub=st["pub"], id=ID, cfg=seq)
            elif op == "logs":
                n = args.get("since", 0)
                lines = ["line %d" % i for i in range(n, 3)]
                r = mgmt.response_ok(lines=lines, next=3)
            elif op == "reboot":
                r = mgmt.response_error("refused", "stand-in does not reboot")
            else:
                raise mgmt.MgmtError("unknown-op", op)
        except mgmt.MgmtError as e:
            r = mgmt.response_error(e.code, e.message)
        out.write(frame.encode(frame.RESPONSE, f.seq, r))
'''
# ---- end of STAND-IN AGENT ----


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sipmesh.cli", "board", *args],
                          capture_output=True, text=True, timeout=WAIT)


def run_sim(root: Path, pty: Path, *extra: str,
            env: dict[str, str] | None = None) -> Iterator[Path]:
    proc = start_sim(root, pty, "--id", BOARD_ID, *extra, env=env)
    try:
        line = readline(proc)
        if line.startswith("installed "):  # --bundle reports the copy first
            line = readline(proc)
        assert f"board {BOARD_ID} on " in line, line
        yield pty
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=WAIT)


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "flash"
    unixport.stage_lib(root / "lib", compiled=True)
    (root / "main.py").write_text(STAND_IN)
    # The stand-in is test code compiled on the board: it gets more than the budget.
    for pty in run_sim(root, tmp_path / "tty", "--heap", "256K"):
        wait_for_boot_event(pty)
        yield pty


@pytest.fixture
def firmware(tmp_path: Path) -> Iterator[Path]:
    built = tmp_path / "bundle"
    bundle.build("unix", built)
    # In this process's own namespace: the board must not speak mDNS or HTTP here.
    for pty in run_sim(tmp_path / "flash", tmp_path / "tty", "--bundle", str(built),
                       "--heap", BOARD_HEAP, env={"SIPMESH_NO_LAN": "1"}):
        wait_for_boot_event(pty)
        yield pty


def wait_for_boot_event(pty: Path, timeout: float = 15.0) -> None:
    """Listen (sending nothing) until the agent's boot EVENT: bytes sent while
    the firmware is still starting meet a line in cooked mode, where a frame's
    0x03 or 0x04 would interrupt the boot as Ctrl-C or Ctrl-D would."""
    import time

    import serial

    from sipmesh.proto import frame

    decoder = frame.FrameDecoder()
    deadline = time.monotonic() + timeout
    with serial.Serial(str(pty), timeout=0.2) as port:
        while time.monotonic() < deadline:
            for f in decoder.feed(port.read(256)):
                if f.type == frame.EVENT:
                    return


def signed_config(seed: bytes, seq: int) -> bytes:
    payload = boardcfg.make(
        BOARD_ID, seq, "door-1", "sip:door-1@demo.sipmesh", {"host": "10.77.0.1", "port": 7380},
        {"host": "10.77.0.1", "port": 6085, "name": "demo", "kind": 4026531842},
        {"heartbeat": 30, "pull": 300, "refresh": 600},
    )
    return cose.sign1(payload, seed)


class FakeController:
    """Test double of BoardService.enroll_board: signs with a throw-away key."""

    def __init__(self) -> None:
        self.seed = bytes(range(1, 33))
        self.calls: list[dict] = []

    def enroll_board(self, **kw: object) -> dict:
        self.calls.append(kw)
        return {"controller_key": ed25519.public_key(self.seed), "ca_key": b"\x01" * 32,
                "hb_key": b"\x02" * 32, "cert": b"0\x82fake-der", "config":
                signed_config(self.seed, 1)}


def test_info_of_the_real_firmware_shows_an_unprovisioned_board(firmware: Path) -> None:
    out = cli("info", "--port", str(firmware), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["id"] == BOARD_ID
    assert info["state"] == "unprovisioned"


def test_info_json_and_garbage_before_a_request(stand_in: Path) -> None:
    with open(stand_in, "wb", buffering=0) as port:
        port.write(b"\xff\x13garbage\x00\x05\x07\x00 more junk without delimiter")
    out = cli("info", "--port", str(stand_in), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert (info["id"], info["state"], info["cfg"]) == (BOARD_ID, "unprovisioned", 0)


def test_provision_through_the_serial_link(firmware: Path) -> None:
    controller = FakeController()
    steps: list[str] = []
    with SerialLink(str(firmware)) as link:
        result = provision(link, controller, name="door-1", aor="sip:door-1@demo.sipmesh",
                           progress=steps.append)
        info = link.request("info")
    assert steps == ["hello", "keygen", "enroll", "provision", "info"]
    assert controller.calls[0]["board_id"] == BOARD_ID
    assert len(controller.calls[0]["pub"]) == 32
    assert (result["id"], result["cfg"]) == (BOARD_ID, 1)
    assert info["state"] == "configured" and info["cfg"] == 1 and info["name"] == "door-1"


def test_provision_refuses_a_controller_without_a_certificate(stand_in: Path) -> None:
    def enroll(**kw: object) -> dict:
        return dict(FakeController().enroll_board(**kw), cert=b"")

    with SerialLink(str(stand_in)) as link, pytest.raises(ProvisionError, match="cert"):
        provision(link, enroll, name="door-1", aor="sip:door-1@demo.sipmesh")


def test_logs_and_board_errors_and_exit_codes(stand_in: Path, tmp_path: Path) -> None:
    out = cli("logs", "--port", str(stand_in))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["line 0", "line 1", "line 2"]
    refused = cli("reboot", "--port", str(stand_in))
    assert refused.returncode == 1
    assert "stand-in does not reboot" in refused.stderr
    missing = cli("info", "--port", str(tmp_path / "nothing"))
    assert missing.returncode == 3
    assert "cannot open" in missing.stderr
    assert cli("info").returncode == 2


def test_no_answer_is_a_serial_error_naming_the_port(tmp_path: Path) -> None:
    root = tmp_path / "flash"
    root.mkdir()
    (root / "main.py").write_text("import sys\nwhile True:\n    sys.stdin.buffer.read(1)\n")
    for pty in run_sim(root, tmp_path / "tty"):
        with SerialLink(str(pty), timeout=0.5) as link, pytest.raises(SerialError) as err:
            link.request("hello")
        assert err.value.code is None
        assert f"no answer from the board on {pty} within 0.5s" in str(err.value)


def test_requests_during_a_reboot_never_stop_the_board(firmware: Path) -> None:
    """Right after `reboot` the next request reaches a board that is booting, whose
    line is still the REPL's: a 0x03 there is Ctrl-C and would stop main.py (and
    every frame with a sequence number below 256 opens with 0x03). The link's
    short requests hold neither 0x03 nor 0x04, so the board always comes up."""
    with SerialLink(str(firmware), timeout=20) as link:
        for _ in range(3):
            link.request("reboot")
            hello = link.request("hello")
            assert (hello["id"], hello["kind"]) == (BOARD_ID, "unix")
