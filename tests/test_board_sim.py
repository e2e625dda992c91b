"""The virtual board against the real mpremote client, as a USB board would meet it.

`sipmesh board sim` runs the MicroPython unix port behind a PTY; the
default mpremote commands (each starts with a soft reset in the raw REPL)
must work on it as on a board, a soft reset must restart the interpreter,
a client vanishing mid-command must not take the sim down, and SIGTERM
must leave nothing behind.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

MAIN_PY = 'print("main started")\nimport sys\nprint("main got", sys.stdin.readline())\n'
WAIT = 30.0


class Sim:
    def __init__(self, proc: subprocess.Popen[str], pty: Path, root: Path) -> None:
        self.proc, self.pty, self.root = proc, pty, root

    def mpremote(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", str(self.pty), *args],
            capture_output=True, text=True, timeout=WAIT,
        )


def readline(proc: subprocess.Popen[str], timeout: float = WAIT) -> str:
    """One stdout line of proc, failing (not hanging) when none comes in time."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout), "no output from the sim"
    return proc.stdout.readline()


def start_sim(root: Path, pty: Path, *extra: str,
              env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sipmesh.cli", "board", "sim", "--root", str(root),
         "--pty", str(pty), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, **(env or {})),
    )


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    root = tmp_path / "flash"
    root.mkdir()
    (root / "main.py").write_text(MAIN_PY)
    pty = tmp_path / "ttyACM0"
    proc = start_sim(root, pty, "--id", "sm-0123456789ab")
    try:
        line = readline(proc)
        assert line.startswith("board sm-0123456789ab on "), line + proc.stderr.read()
        yield Sim(proc, pty, root)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=WAIT)


def read_until(port: serial.Serial, marker: bytes, timeout: float = WAIT) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        assert time.monotonic() < deadline, f"no {marker!r} in {data[-300:]!r}"
        data += port.read(max(1, port.in_waiting))
    return data


def test_mpremote_exec_runs_on_the_board(sim: Sim) -> None:
    out = sim.mpremote("exec", "import os; print(1+1, os.getenv('SIPMESH_BOARD_ID'))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "sm-0123456789ab"]


def test_fs_cp_then_cat_lands_in_the_root_folder(sim: Sim, tmp_path: Path) -> None:
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello board\n" * 300)
    assert sim.mpremote("fs", "cp", str(src), ":hello.txt").returncode == 0
    assert (sim.root / "hello.txt").read_bytes() == src.read_bytes()
    out = sim.mpremote("fs", "cat", ":hello.txt")
    assert out.returncode == 0, out.stderr
    assert out.stdout == src.read_text()


def test_soft_reset_restarts_the_interpreter(sim: Sim) -> None:
    assert sim.mpremote("exec", "mark = 1").returncode == 0
    kept = sim.mpremote("resume", "exec", "print('mark' in globals())")
    assert kept.stdout.strip() == "True", kept.stderr
    reset = sim.mpremote("resume", "soft-reset", "exec", "print('mark' in globals())")
    assert reset.stdout.strip() == "False", reset.stderr


def test_ctrl_d_at_the_friendly_repl_runs_main_again(sim: Sim) -> None:
    assert sim.mpremote("exec", "pass").returncode == 0  # leaves the friendly REPL
    with serial.Serial(str(sim.pty), 115200, timeout=0.1) as port:
        port.write(b"\r\x04")
        data = read_until(port, b"main started")
        assert b"soft reboot\r\n" in data
        port.write(b"ping\n")
        read_until(port, b"main got ping")


def test_client_vanishing_mid_command_does_not_break_the_board(sim: Sim) -> None:
    with serial.Serial(str(sim.pty), 115200, timeout=0.1) as port:
        port.write(b"\r\x03\r\x01")
        read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        port.write(b"import time\nwhile True:\n print('x' * 200)\n time.sleep_ms(1)\n\x04")
        read_until(port, b"x" * 200)
    with serial.Serial(str(sim.pty), 115200, timeout=0.1) as port:
        port.write(b"\r\x01")
        port.write(b"print('half a comm")
    out = sim.mpremote("exec", "print(1+1)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
    assert sim.proc.poll() is None


def test_heap_is_capped_like_an_esp32(sim: Sim) -> None:
    out = sim.mpremote("exec", "x = bytearray(200 * 1024)")
    assert out.returncode != 0
    assert "MemoryError" in out.stdout + out.stderr
    assert sim.mpremote("exec", "x = bytearray(20 * 1024); print(len(x))").stdout.strip() == "20480"


def test_mpremote_reset_is_a_hard_reset_that_runs_main(sim: Sim) -> None:
    with serial.Serial(str(sim.pty), 115200, timeout=0.1) as port:
        port.write(b"\r\x03\r\x01")
        read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        port.write(b"import machine\nmachine.reset()\n\x04")
        read_until(port, b"main started")


def test_sigterm_stops_the_interpreter_and_removes_the_link(sim: Sim) -> None:
    kids = children(sim.proc.pid)
    assert kids, "the interpreter is not a child of the sim"
    sim.proc.send_signal(signal.SIGTERM)
    assert sim.proc.wait(timeout=WAIT) == 0
    assert not os.path.lexists(sim.pty)
    for pid in kids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_sim_refuses_to_replace_a_real_file_with_its_pty(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    proc = start_sim(tmp_path / "flash", tmp_path / "dir", "--id", "sm-0123456789ab")
    proc.wait(timeout=WAIT)
    assert proc.returncode == 2
    assert "is not a symlink" in proc.stderr.read()
