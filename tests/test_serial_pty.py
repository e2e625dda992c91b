"""Framing and CBOR across a real serial line: pyserial <-> PTY <-> MicroPython.

socat makes the PTY pair (the way a USB serial board appears), the
MicroPython unix port runs a small board program on one end, and the
controller side uses pyserial on the other. Damaged frames sent by the
controller must be dropped and counted by the board, every intact one
answered, and every value must survive the trip through both runtimes.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from judges import require

from sipmesh.boards import unixport
from sipmesh.proto import cbor, frame

HERE = Path(__file__).resolve().parent


@pytest.fixture
def pty_pair() -> Iterator[tuple[str, str]]:
    """Two linked PTYs from socat; waits for socat's own report that both exist."""
    socat = require("socat")
    proc = subprocess.Popen(
        [socat, "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        ptys: list[str] = []
        assert proc.stderr is not None
        for line in proc.stderr:
            m = re.search(r"PTY is (\S+)", line)
            if m:
                ptys.append(m.group(1))
            if "starting data transfer loop" in line:
                break
        assert len(ptys) == 2, f"socat did not report two PTYs: {ptys}"
        yield ptys[0], ptys[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _read_frames(port: serial.Serial, dec: frame.FrameDecoder, want: int,
                 deadline: float) -> list[frame.Frame]:
    frames: list[frame.Frame] = []
    while len(frames) < want and time.monotonic() < deadline:
        frames += dec.feed(port.read(4096))
    return frames


def test_frames_cross_a_pty_between_pyserial_and_micropython(
    pty_pair: tuple[str, str], tmp_path: Path
) -> None:
    board_end, controller_end = pty_pair
    lib = unixport.stage_lib(tmp_path / "lib")
    port = serial.Serial(controller_end, 115200, timeout=0.2)
    board = subprocess.Popen(
        unixport.command([str(HERE / "mp" / "echo_board.py"), board_end]),
        env=unixport.environment([lib]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert board.stdout is not None
        assert board.stdout.readline().strip() == "ready", board.stderr.read()
        values = [
            {"op": "ping", "n": 1},
            "sip:door-1@branch.example",
            list(range(300)),
            {"key": bytes(range(256)), "neg": -(2**63), "big": 2**64, "t": cbor.Tag(99, [None])},
            {"config": {"contacts": [{"name": f"Ext {i}", "button": i} for i in range(120)]}},
        ]
        wire = [frame.encode(frame.REQUEST, n, cbor.dumps(v)) for n, v in enumerate(values)]
        damaged = bytearray(wire[2])
        damaged[len(damaged) // 2] ^= 0x10  # one bit flipped mid-frame
        # The opening 0x00 resynchronises the board; the line noise before
        # it and the damaged frame are the two drops the board must count.
        port.write(b"noise\x7f\x01" + b"\x00" + wire[0] + wire[1] + bytes(damaged) + wire[3]
                   + wire[4])
        stats = frame.encode(frame.REQUEST, 100, cbor.dumps("stats"))
        port.write(stats)
        dec = frame.FrameDecoder()
        got = _read_frames(port, dec, 5, time.monotonic() + 60)
        port.write(frame.encode(frame.REQUEST, 101, cbor.dumps("bye")))
        board.wait(timeout=30)
    finally:
        board.kill()
        out, err = board.communicate()
        port.close()
    assert board.returncode == 0, err
    assert [f.type for f in got] == [frame.RESPONSE] * 5
    assert [f.seq for f in got] == [0, 1, 3, 4, 100]
    for f, seq in zip(got[:4], [0, 1, 3, 4], strict=True):
        assert cbor.loads(f.payload) == {"echo": values[seq]}
        # The board's encoding is the deterministic one: byte-identical to ours.
        assert f.payload == cbor.dumps({"echo": values[seq]})
    assert cbor.loads(got[4].payload) == {"delivered": 5, "dropped": 2}
    assert dec.dropped == 0
