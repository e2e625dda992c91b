"""The board's serial agent on real MicroPython behind a PTY, driven by pyserial.

The whole board application (firmware/main.py with the unix board module)
runs under ``micropython -X heapsize=HEAP`` with the LAN parts off
(SIPMESH_NO_LAN=1); its stdin/stdout are one end of a socat PTY pair and
the test talks to the other end with pyserial and sipmesh.proto.frame/mgmt,
as `sipmesh board provision` does. Configurations are signed on CPython
with pynacl (what the controller uses) and verified on the board by the
portable Ed25519.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from judges import require
from nacl.signing import SigningKey

from sipmesh.boards import unixport
from sipmesh.proto import boardcfg, cbor, cose, frame, mgmt

pytestmark = pytest.mark.micropython

ROOT = Path(__file__).resolve().parent.parent
BID = "sm-00a1b2c3d4e5"
CTRL = SigningKey(bytes(range(1, 33)))
OTHER = SigningKey(bytes(range(50, 82)))
WAIT = 60.0
# The ESP32 budget: provisioning (Ed25519 verify on the board) with the LAN parts off.
HEAP = "100K"


def signed(seq: int, key: SigningKey = CTRL, board: str = BID, name: str = "door-1") -> bytes:
    payload = boardcfg.make(
        board, seq, name, f"sip:{name}@demo.sipmesh",
        {"host": "127.0.0.1", "port": 7380},
        {"host": "127.0.0.1", "port": 6085, "name": "demo", "kind": 4026531842},
        {"heartbeat": 30, "pull": 300, "refresh": 600}, contacts=["door-2"], issued=1800000000,
    )
    kid = cose.key_id(bytes(key.verify_key))
    return cose.encode_sign1(payload, lambda tbs: key.sign(tbs).signature, kid)


def board_lib(dest: Path) -> Path:
    """A board's /lib as `sipmesh board build` lays it out: .mpy of proto, fw_*, board.

    Compiled as on a deployed board: compiling the sources on the board
    would itself take more heap than the 100 KB budget leaves.
    """
    if not (dest / "board.mpy").exists():
        unixport.stage_lib(dest, compiled=True)
        for src in [*(ROOT / "firmware").glob("fw_*.py"), ROOT / "boards" / "unix" / "board.py"]:
            unixport.mpy_cross(src, dest / (src.stem + ".mpy"))
    return dest


def board_env(data: Path, lib: Path) -> dict[str, str]:
    env = unixport.environment([Path(".frozen"), lib])
    env.update(SIPMESH_BOARD_ID=BID, SIPMESH_BOARD_IP="127.0.0.1", SIPMESH_DATA=str(data),
               SIPMESH_NO_LAN="1")
    return env


class Board:
    """A running virtual board: the process, its stderr lines, and the PTY ends."""

    def __init__(self, tmp: Path, heapsize: str = HEAP, args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        socat = require("socat")
        self.tmp = tmp
        self.a, self.b = str(tmp / "board.pty"), str(tmp / "ctl.pty")
        self.socat = subprocess.Popen(
            [socat, "-d", "-d", f"pty,raw,echo=0,link={self.a}",
             f"pty,raw,echo=0,link={self.b}"], stderr=subprocess.PIPE, text=True)
        assert self.socat.stderr is not None
        for line in self.socat.stderr:
            if "starting data transfer loop" in line:
                break
        # Holding the controller end open keeps socat's master from seeing a hangup
        # when pyserial closes the port (a USB serial board stays plugged in).
        self.hold = os.open(self.b, os.O_RDWR | os.O_NOCTTY)
        self.port = serial.Serial(self.b, 115200, timeout=0.2)
        self.port.write(b"\x00")
        self.dec = frame.FrameDecoder()
        self.seq = 0
        self.events: list[dict] = []
        lib = board_lib(tmp / "lib")
        (tmp / "data").mkdir(exist_ok=True)
        fd = os.open(self.a, os.O_RDWR | os.O_NOCTTY)
        self.proc = subprocess.Popen(
            unixport.command(args or [str(ROOT / "firmware" / "main.py")], heapsize=heapsize),
            stdin=fd, stdout=fd, stderr=subprocess.PIPE, text=True,
            env={**board_env(tmp / "data", lib), **(env or {})})
        os.close(fd)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)

    def wait_line(self, pattern: str) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                assert self.proc.poll() is None, f"board exited: {''.join(self.log)}"
                continue
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line {pattern!r}: {''.join(self.log)}")

    def read_frame(self, want_type: int, want_seq: int | None = None) -> frame.Frame:
        deadline = time.monotonic() + WAIT
        pending: list[frame.Frame] = []
        while time.monotonic() < deadline:
            pending += self.dec.feed(self.port.read(4096))
            while pending:
                f = pending.pop(0)
                if f.type == frame.EVENT:
                    self.events.append(cbor.loads(f.payload))
                if f.type == want_type and (want_seq is None or f.seq == want_seq):
                    return f
            assert self.proc.poll() is None, f"board exited: {''.join(self.log)}"
        raise AssertionError(f"no frame of type {want_type}: {''.join(self.log)}")

    def send(self, payload: bytes) -> int:
        self.seq = (self.seq + 1) & 0xFFFF
        self.port.write(frame.encode(frame.REQUEST, self.seq, payload))
        return self.seq

    def call(self, op: str, **args: object) -> dict:
        seq = self.send(mgmt.request(op, **args))
        return mgmt.parse_response(self.read_frame(frame.RESPONSE, seq).payload)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.port.close()
        os.close(self.hold)
        self.socat.terminate()
        self.socat.wait(timeout=10)


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Board]:
    b = Board(tmp_path)
    try:
        yield b
    finally:
        b.close()


def provision(b: Board, seq: int = 1) -> dict:
    return b.call("provision", controller_key=bytes(CTRL.verify_key), cert=b"\x30\x03\x02\x01\x01",
                  ca_key=bytes(OTHER.verify_key), hb_key=bytes(range(32)), config=signed(seq))


def test_every_op_over_the_serial_line(board: Board) -> None:
    boot = board.read_frame(frame.EVENT)
    assert cbor.loads(boot.payload) == {"event": "boot", "id": BID, "fw": "0.1.0"}
    hello = board.call("hello")
    assert hello == {"ok": True, "id": BID, "kind": "unix", "fw": "0.1.0", "proto": 1,
                     "state": "unprovisioned"}
    info = board.call("info")
    assert info["state"] == "unprovisioned" and info["cfg"] == 0 and info["kid"] is None
    assert info["free"] > 0 and info["alloc"] > 0 and info["ip"] == "127.0.0.1"
    # Nothing is accepted before provisioning.
    with pytest.raises(mgmt.MgmtError) as e:
        board.call("set", config=signed(5))
    assert e.value.code == "not-provisioned"

    pub = board.call("keygen")["pub"]
    assert len(pub) == 32
    # A config signed by another key is refused at provisioning: nothing written.
    with pytest.raises(mgmt.MgmtError) as e:
        board.call("provision", controller_key=bytes(CTRL.verify_key), cert=b"\x30\x00",
                   ca_key=bytes(32), hb_key=bytes(32), config=signed(1, OTHER))
    assert e.value.code == "refused" and "signature" in e.value.message
    assert board.call("hello")["state"] == "unprovisioned"

    got = provision(board, 3)
    assert got == {"ok": True, "pub": pub, "id": BID, "cfg": 3}
    info = board.call("info")
    assert info["state"] == "configured" and info["cfg"] == 3 and info["name"] == "door-1"
    assert info["kid"] == cose.key_id(bytes(CTRL.verify_key))
    assert board.call("get")["config"]["aor"] == "sip:door-1@demo.sipmesh"

    assert board.call("set", config=signed(4, name="door-9")) == {"ok": True, "cfg": 4}
    assert board.call("get")["config"]["name"] == "door-9"
    for cfg, reason in ((signed(4), "not newer"), (signed(2), "not newer"),
                        (signed(9, board="sm-ffffffffffff"), "for another board"),
                        (signed(9, OTHER), "bad signature"),
                        (b"\xd2\x84garbage", "bad signature")):
        with pytest.raises(mgmt.MgmtError) as e:
            board.call("set", config=cfg)
        assert (e.value.code, e.value.message) == ("refused", reason)
    assert board.call("info")["cfg"] == 4

    logs = board.call("logs", since=0)
    text = "\n".join(logs["lines"])
    assert "config seq 4 accepted from serial" in text and "refused: not newer" in text
    assert board.call("logs", since=logs["next"])["lines"] == []
    assert isinstance(board.call("ping")["t"], int)

    seq = board.send(cbor.dumps({"op": "dance"}))
    with pytest.raises(mgmt.MgmtError) as e:
        mgmt.parse_response(board.read_frame(frame.RESPONSE, seq).payload)
    assert e.value.code == "unknown-op"

    assert board.call("reboot") == {"ok": True}
    assert board.proc.wait(timeout=WAIT) == 0


def test_configuration_survives_a_restart(tmp_path: Path) -> None:
    b = Board(tmp_path)
    try:
        b.call("keygen")
        provision(b, 7)
        b.call("reboot")
        b.proc.wait(timeout=WAIT)
    finally:
        b.close()
    b = Board(tmp_path)
    try:
        info = b.call("info")
        assert (info["state"], info["cfg"], info["name"]) == ("configured", 7, "door-1")
    finally:
        b.close()


def test_bad_input_on_the_line_never_stops_the_agent(board: Board) -> None:
    board.read_frame(frame.EVENT)
    port = board.port
    good = frame.encode(frame.REQUEST, 77, mgmt.request("ping"))
    # Garbage, a truncated frame, a frame with a bad CRC, then a good one.
    port.write(bytes(range(1, 256)) * 8 + b"\x00")
    port.write(good[: len(good) // 2] + b"\x00")
    bad = bytearray(good)
    bad[3] ^= 0x40
    port.write(bytes(bad))
    port.write(good)
    assert mgmt.parse_response(board.read_frame(frame.RESPONSE, 77).payload)["ok"]
    # Valid frames whose payload is no request: answered bad-request with their seq.
    for i, payload in enumerate((b"\xff\xff", cbor.dumps([1, 2]), cbor.dumps({"op": 5}),
                                 mgmt.request("logs") + b"\x00",
                                 cbor.dumps({"op": "set", "config": "text"}),
                                 cbor.dumps({"op": "ping", "extra": 1}))):
        port.write(frame.encode(frame.REQUEST, 100 + i, payload))
        reply = board.read_frame(frame.RESPONSE, 100 + i)
        with pytest.raises(mgmt.MgmtError) as e:
            mgmt.parse_response(reply.payload)
        assert e.value.code == "bad-request", payload
    # A frame split across many writes.
    for i in range(len(good)):
        port.write(good[i : i + 1])
    assert board.read_frame(frame.RESPONSE, 77)
    # Port closed in the middle of a frame, then reopened: the next command works.
    port.write(good[:9])
    port.close()
    board.port = port = serial.Serial(board.b, 115200, timeout=0.2)
    port.write(b"\x00")
    info = board.call("info")
    assert info["rx_dropped"] >= 4 and info["rx_bad"] == 6
    assert board.proc.poll() is None


def test_repl_op_ends_the_application(board: Board) -> None:
    assert board.call("repl") == {"ok": True}
    board.wait_line("app: exit to REPL")
    assert board.proc.wait(timeout=WAIT) == 0
