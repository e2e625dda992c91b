"""The demo's virtual boards: `sipmesh run` with the embedded default starts two.

The controller runs as a subprocess with the embedded default configuration,
only its data folder and ports changed (free loopback ports, so the test
never needs 5060/6084/6085/7380). Both virtual boards must be provisioned
over their PTYs, reach `online` in the registry and store their device
record in the overlay; SIGTERM must leave no MicroPython process behind; a
second start must find them provisioned and bring them back without
provisioning them again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import board_lan
import pytest

from sipmesh import config

pytestmark = pytest.mark.micropython

SIPMESH = str(Path(sys.executable).parent / "sipmesh")
KIND_DEVICE_RECORD = 4026531842
OVERLAY = "demo.demo.sipmesh"
WAIT = 120.0


def free_port(udp_too: bool = False) -> int:
    """A loopback port free for TCP (and UDP when asked) now."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def demo_config(tmp_path: Path) -> tuple[Path, Path]:
    """The embedded default with only data_dir and ports changed; (file, data_dir)."""
    data = tmp_path / "data"
    sip, peer, clients, boards = free_port(True), free_port(), free_port(), free_port()
    text = config.default_text()
    for old, new in (('data_dir = ".sipmesh"', f'data_dir = "{data}"'),
                     ('"udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"',
                      f'"udp:127.0.0.1:{sip}", "tcp:127.0.0.1:{sip}"'),
                     ('listen = "127.0.0.1:6084"', f'listen = "127.0.0.1:{peer}"'),
                     ('client_listen = "127.0.0.1:6085"', f'client_listen = "127.0.0.1:{clients}"'),
                     ('listen = "127.0.0.1:7380"', f'listen = "127.0.0.1:{boards}"')):
        assert text.count(old) == 1, f"the embedded default no longer holds {old!r}"
        text = text.replace(old, new)
    path = tmp_path / "demo.toml"
    path.write_text(text)
    loaded = config.load(path)
    assert loaded.boards.virtual == 2 and loaded.boards.enabled
    assert not loaded.boards.announce and not loaded.boards.browse
    return path, data


def sipmesh_json(*args: str) -> dict:
    out = subprocess.run([SIPMESH, *args, "--json"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def boards(cfg: Path) -> dict[str, dict]:
    return {b["id"]: b for b in sipmesh_json("boards", "--config", str(cfg))["boards"]}


def history(cfg: Path, board_id: str) -> list[dict]:
    return sipmesh_json("boards", "history", board_id, "--config", str(cfg))["history"]


async def until(check, what: str, timeout: float = WAIT):
    """Poll check() (a registry or overlay query; neither has an event to wait
    on) until it returns something true, with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await asyncio.to_thread(check)
        if got:
            return got
        assert loop.time() < deadline, f"no {what} within {timeout} s"
        await asyncio.sleep(0.5)


def micropython_of(data: Path) -> list[int]:
    """Pids of MicroPython interpreters whose board flash is under data."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"SIPMESH_SIM_ROOT=") and str(data).encode() in item:
                pids.append(int(entry.name))
    return pids


async def start_controller(procs: list, cfg: Path, cwd: Path) -> board_lan.Proc:
    ctl = await board_lan.start(procs, "controller", None, SIPMESH, "run", "--config", str(cfg),
                                env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=cwd)
    await ctl.line("controller ready")
    return ctl


async def seen_or_line(ctl: board_lan.Proc, text: str) -> str:
    """A line containing text, already read or still to come (lines of two
    boards arrive in either order)."""
    for line in ctl.seen:
        if text in line:
            return line
    return await ctl.line(text, timeout=WAIT)


async def virtual_ids(ctl: board_lan.Proc) -> dict[str, str]:
    """name -> board id from the "virtual board vbN (sm-...) on PTY" lines."""
    ids = {}
    for name in ("vb1", "vb2"):
        line = await seen_or_line(ctl, f"virtual board {name} (")
        assert "on PTY" in line, line
        ids[name] = line.split(f"virtual board {name} (")[1].split(")")[0]
    return ids


async def stop_controller(ctl: board_lan.Proc, data: Path) -> str:
    started = micropython_of(data)
    assert len(started) == 2, started
    ctl.proc.send_signal(signal.SIGTERM)
    rest, _ = await asyncio.wait_for(ctl.proc.communicate(), 60)
    out = rest.decode(errors="replace")
    assert ctl.proc.returncode == 0, "\n".join(ctl.seen) + out
    assert "virtual board(s) stopped" in out and "Traceback" not in out, out
    assert micropython_of(data) == [], "a MicroPython process outlived the controller"
    return out


async def test_run_starts_provisions_and_restarts_two_virtual_boards(tmp_path: Path) -> None:
    cfg, data = demo_config(tmp_path)
    procs: list[board_lan.Proc] = []
    try:
        ctl = await start_controller(procs, cfg, tmp_path)
        ids = await virtual_ids(ctl)
        for name, board_id in ids.items():
            await seen_or_line(ctl, f"virtual board {name} ({board_id}) provisioned")
        for board_id in ids.values():
            await seen_or_line(ctl, f"boards: {board_id} provisioned -> online")
        listed = boards(cfg)
        for name, board_id in ids.items():
            b = listed[board_id]
            assert b["state"] == "online" and b["name"] == name and b["kind"] == "unix", b
            assert b["cfg"]["confirmed"] == b["cfg"]["seq"] >= 1, b

        def record() -> dict | None:
            out = subprocess.run(
                [SIPMESH, "overlay", "fetch", f"vb1@{OVERLAY}", "--kind",
                 str(KIND_DEVICE_RECORD), "--data", str(data), "--json"],
                capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                return None
            values = json.loads(out.stdout)["values"]
            return values[0] if values and values[0].get("value_hex") else None

        from sipmesh.proto import device_record

        value = await until(record, "device record of vb1 in the overlay")
        rec = device_record.decode(bytes.fromhex(value["value_hex"]))
        assert rec["aor"] == "sip:vb1@demo.sipmesh" and rec["kind"] == "unix", rec
        assert all(a.startswith("127.0.0.1:") for a in rec["addrs"]), rec

        first = await stop_controller(ctl, data)
        assert "stopped" in first
        procs.clear()
        assert not list((data / "virtual-boards").glob("*.pty"))

        # Second start: already provisioned, back online after a reboot, no new provisioning.
        ctl = await start_controller(procs, cfg, tmp_path)
        assert await virtual_ids(ctl) == ids
        for name, board_id in ids.items():
            await seen_or_line(ctl, f"virtual board {name} ({board_id}) already provisioned")

        def back(board_id: str) -> bool:
            return any(h["event"] == "rebooted" for h in history(cfg, board_id))

        for board_id in ids.values():
            await until(lambda b=board_id: back(b), f"heartbeat of {board_id} after its reboot")
        listed = boards(cfg)
        for board_id in ids.values():
            assert listed[board_id]["state"] == "online", listed[board_id]
            states = [h["detail"] for h in history(cfg, board_id) if h["event"] == "state"]
            assert sum("-> provisioned" in s for s in states) == 1, states
        assert not any("provisioned (configuration" in line for line in ctl.seen), ctl.seen
        await stop_controller(ctl, data)
        procs.clear()
    finally:
        for p in procs:
            await p.close()
        for p in procs:
            print(await p.tail())


@pytest.mark.parametrize("value", ["-1", "9", '"two"', "1.5", "true"])
def test_bad_virtual_count_is_a_clear_error(tmp_path: Path, value: str) -> None:
    cfg = tmp_path / "branch.toml"
    cfg.write_text(f"[boards]\nvirtual = {value}\n")
    out = subprocess.run([SIPMESH, "run", "--config", str(cfg)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2, out.stderr
    assert "boards.virtual must be a whole number from 0 to 8" in out.stderr
    assert "Traceback" not in out.stderr


def test_virtual_defaults_to_off_outside_the_demo() -> None:
    from sipmesh.boards.options import parse

    assert parse({}).virtual == 0
    assert parse({"virtual": 3}).virtual == 3
    assert config.load().boards.virtual == 2


async def test_missing_interpreter_is_logged_not_fatal(tmp_path: Path, monkeypatch,
                                                       caplog) -> None:
    from sipmesh.boards import unixport, virtual

    def missing() -> str:
        raise unixport.UnixPortMissing("the MicroPython unix port is missing (test)")

    monkeypatch.setattr(unixport, "micropython_path", missing)
    overlay = SimpleNamespace(
        enrollment=SimpleNamespace(config=SimpleNamespace(instance_name=OVERLAY)),
        options=SimpleNamespace(demo=True, client_listen=("127.0.0.1", 1)),
        peer=SimpleNamespace(client_port=1))
    vb = virtual.VirtualBoards(1, SimpleNamespace(), overlay, tmp_path, branch="demo")
    with caplog.at_level(logging.INFO, logger="sipmesh.boards"):
        vb.start()
        await asyncio.wait_for(vb.ready.wait(), WAIT)
        await vb.stop()
    assert "virtual board vb1 not started: the MicroPython unix port is missing" in caplog.text
    assert not list((tmp_path / "virtual-boards").glob("*.pty"))

    # No demo overlay: refused with the reason, nothing started.
    caplog.clear()
    vb = virtual.VirtualBoards(1, SimpleNamespace(), None, tmp_path, branch="demo")
    with caplog.at_level(logging.INFO, logger="sipmesh.boards"):
        vb.start()
        await asyncio.wait_for(vb.ready.wait(), WAIT)
        await vb.stop()
    assert "virtual boards not started: they need the demo overlay" in caplog.text
