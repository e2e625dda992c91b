"""The board registry (controller/boards/registry.py), the enrollment API of
the boards service, the ``[boards]`` options and ``sipmesh boards``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sipmesh import config
from sipmesh.boards import registry as reg
from sipmesh.boards.options import parse
from sipmesh.boards.service import BoardService
from sipmesh.proto import boardcfg, cose, device_record

BOARD = "sm-0123456789ab"
OTHER = "sm-aaaaaaaaaaaa"
OVERLAY = {"host": "10.77.0.1", "port": 6085, "name": "demo.demo.sipmesh",
           "kind": device_record.KIND}
TXT = {"v": "1", "id": BOARD, "kind": "unix", "fw": "0.1", "state": "unprovisioned",
       "cfg": "0", "name": ""}


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _beat(n: int, boot: int = 1, cfg: int = 1, overlay: str = "ok") -> dict:
    return {"id": BOARD, "boot": boot, "n": n, "cfg": cfg, "up": n * 30, "ip": "10.77.0.2",
            "free": 40000, "alloc": 60000, "overlay": overlay}


def _events(r: reg.BoardRegistry, board: str = BOARD) -> list[tuple[str, str]]:
    return [(e.event, e.detail) for e in r.history(board)]


def test_lifecycle_transitions_history_and_restart(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / reg.FILE_NAME
    r = reg.BoardRegistry(path, clock=clock)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    r.seen(BOARD, ip="10.77.0.2", port=7381, txt=TXT)
    assert r.get(BOARD).state == "discovered"
    # mDNS alone never moves a board further, whatever its TXT claims.
    r.seen(BOARD, ip="10.77.0.9", port=7381, txt={**TXT, "state": "configured", "cfg": "9"})
    b = r.get(BOARD)
    assert (b.state, b.ip, b.txt["state"]) == ("discovered", "10.77.0.9", "configured")
    with pytest.raises(reg.NotProvisioned):
        r.heartbeat(BOARD, _beat(1))

    r.provision(BOARD, pub=b"\x01" * 32, hb_key=b"\x02" * 32, kind="unix", fw="0.1")
    r.set_config(BOARD, {"name": "door-1", "aor": "sip:door-1@demo.sipmesh"})
    assert r.get(BOARD).state == "provisioned"
    clock.t += 1
    r.heartbeat(BOARD, _beat(1, overlay="down"))
    assert r.get(BOARD).state == "configured"
    r.heartbeat(BOARD, _beat(2))
    b = r.get(BOARD)
    assert (b.state, b.cfg_confirmed, b.hb_boot, b.hb_n, b.name) == ("online", 1, 1, 2, "door-1")
    with pytest.raises(reg.Replay):
        r.heartbeat(BOARD, _beat(2))
    with pytest.raises(reg.Replay):
        r.heartbeat(BOARD, _beat(5, boot=0))
    r.heartbeat(BOARD, _beat(1, boot=2))  # a reboot restarts n
    assert r.gone(BOARD).state == "lost"
    r.heartbeat(BOARD, _beat(2, boot=2))
    assert r.get(BOARD).state == "online"
    with pytest.raises(reg.RegistryError):
        r.heartbeat(BOARD, {**_beat(3, boot=2), "n": True})
    r.close()

    r = reg.BoardRegistry(path, clock=clock)
    b = r.get(BOARD)
    assert (b.state, b.hb_boot, b.hb_n, b.pub, b.hb_key) == ("online", 2, 2, b"\x01" * 32,
                                                             b"\x02" * 32)
    with pytest.raises(reg.Replay):
        r.heartbeat(BOARD, _beat(2, boot=2))  # replay refused across a restart
    states = [d for ev, d in _events(r) if ev == "state"]
    assert [s.split(":")[0] for s in states] == [
        "discovered -> provisioned", "provisioned -> configured", "configured -> online",
        "online -> lost", "lost -> online"]
    events = [ev for ev, _ in _events(r)]
    assert events.count("announced") == 1 and "rebooted" in events and "confirmed" in events
    assert any("state=unprovisioned -> configured" in d for ev, d in _events(r)
               if ev == "announced")


def test_lost_after_missed_heartbeats_by_injected_clock(tmp_path: Path) -> None:
    clock = Clock()
    svc = BoardService(parse({"lost_after": 3}), tmp_path, OVERLAY, clock=clock)
    svc.enroll_board(BOARD, b"\x01" * 32, "unix", "0.1", "door-1", "sip:door-1@demo.sipmesh",
                     intervals={"heartbeat": 10, "pull": 60, "refresh": 600})
    r = svc.registry
    r.heartbeat(BOARD, _beat(1))
    clock.t += 30
    assert svc.check_lost() == []  # exactly 3 intervals: not yet
    clock.t += 1
    assert svc.check_lost() == [BOARD]
    assert r.get(BOARD).state == "lost"
    assert svc.check_lost() == []
    clock.t += 5
    r.heartbeat(BOARD, _beat(2))
    assert r.get(BOARD).state == "online"
    assert "(back)" in _events(r)[-1][1]


def test_enroll_gives_a_config_the_board_accepts(tmp_path: Path) -> None:
    clock = Clock()
    svc = BoardService(parse({"listen": "10.77.0.1:7380"}), tmp_path, OVERLAY, clock=clock)
    pub = bytes(range(32))
    got = svc.enroll_board(BOARD, pub, "unix", "0.1", "door-1", "sip:door-1@demo.sipmesh",
                           contacts=["door-2"], net={"ssid": "lab", "psk": "secret"})
    assert len(got["hb_key"]) == 32 and got["controller_key"] == svc.key.pub
    assert cose.peek_kid(got["config"]) == svc.key.kid == got["kid"]
    cfg = boardcfg.accept(got["config"], got["controller_key"], BOARD, 0)
    assert cfg["seq"] == got["seq"] == 1
    assert cfg["controller"] == {"host": "10.77.0.1", "port": 7380}
    assert cfg["overlay"] == OVERLAY and cfg["contacts"] == ["door-2"]
    assert cfg["issued"] == int(clock.t)
    with pytest.raises(boardcfg.BoardConfigError, match="another board"):
        boardcfg.accept(got["config"], got["controller_key"], OTHER, 0)
    # The same seq serves the same bytes, even after the clock moved.
    clock.t += 100
    assert svc.registry.signed_config(BOARD) == (1, got["config"])
    assert svc.configure(BOARD, contacts=["door-3"]) == 2
    seq, data = svc.registry.signed_config(BOARD)
    assert seq == 2 and boardcfg.accept(data, svc.key.pub, BOARD, 1)["contacts"] == ["door-3"]

    # Fields a board would refuse are refused before anything is stored.
    with pytest.raises(boardcfg.BoardConfigError):
        svc.enroll_board(OTHER, pub, "unix", "0.1", "door-2", "tel:123")
    assert svc.registry.get(OTHER) is None
    with pytest.raises(reg.RegistryError):
        svc.enroll_board("door-2", pub, "unix", "0.1", "door-2", "sip:a@b")

    # The key survives a restart, and a new process provisioning offline
    # uses the overlay and controller the running one recorded.
    key = svc.key.pub
    svc.open().set_meta("context", json.dumps({"controller": {"host": "10.77.0.1",
                                                              "port": 7380},
                                               "overlay": OVERLAY}))
    svc.registry.close()
    again = BoardService(parse({}), tmp_path, None, clock=clock)
    got = again.enroll_board(OTHER, pub, "unix", "0.1", "door-2", "sip:door-2@demo.sipmesh")
    assert again.key.pub == key
    assert boardcfg.accept(got["config"], key, OTHER, 0)["overlay"] == OVERLAY


def test_without_overlay_no_config_is_issued(tmp_path: Path) -> None:
    svc = BoardService(parse({}), tmp_path, None)
    with pytest.raises(reg.NotProvisioned, match="overlay"):
        svc.enroll_board(BOARD, b"\x01" * 32, "unix", "0.1", "door-1", "sip:door-1@x")
    assert svc.open().get(BOARD) is None


def test_options_and_config_section() -> None:
    opts = parse({"enabled": True, "listen": "0.0.0.0:7380", "interfaces": ["10.77.0.1"]})
    assert opts.controller_host == "10.77.0.1"
    assert parse({}).listen == ("127.0.0.1", 7380) and not parse({}).enabled
    for bad in ({"listen": "x"}, {"interfaces": ["eth0"]}, {"heartbeat": 0},
                {"heartbeat": True}, {"colour": 1}, {"enabled": "yes"}):
        with pytest.raises(ValueError):
            parse(bad)
    # The demo: the service on loopback with two virtual boards and no mDNS.
    demo = config.load().boards
    assert demo.enabled and demo.listen == ("127.0.0.1", 7380) and demo.virtual == 2
    assert not demo.announce and not demo.browse
    with pytest.raises(config.ConfigError, match="boards"):
        config._validate({"boards": {"listen": "nowhere"}}, "test")


def test_boards_cli_lists_a_prepared_registry(tmp_path: Path) -> None:
    svc = BoardService(parse({}), tmp_path, OVERLAY)
    r = svc.open()
    r.seen(OTHER, ip="10.77.0.3", port=7381, txt={**TXT, "id": OTHER})
    svc.enroll_board(BOARD, b"\x01" * 32, "unix", "0.1", "door-1", "sip:door-1@demo.sipmesh")
    r.heartbeat(BOARD, _beat(1))
    r.close()

    def sipmesh(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sipmesh.cli", *args], capture_output=True,
                              text=True, timeout=60)

    out = sipmesh("boards", "--json", "--data-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    boards = {b["id"]: b for b in json.loads(out.stdout)["boards"]}
    assert boards[BOARD]["state"] == "online" and boards[OTHER]["state"] == "discovered"
    assert boards[BOARD]["cfg"] == {"seq": 1, "served": 0, "confirmed": 1}
    assert boards[BOARD]["heartbeat"]["overlay"] == "ok"
    assert "hb_key" not in boards[BOARD] and "020202" not in out.stdout
    table = sipmesh("boards", "--data-dir", str(tmp_path))
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "STATE"]
    assert any(line.split()[:3] == [BOARD, "door-1", "online"] for line in lines)
    hist = sipmesh("boards", "history", BOARD, "--json", "--data-dir", str(tmp_path))
    events = [e["event"] for e in json.loads(hist.stdout)["history"]]
    assert events[:2] == ["provisioned", "state"] and "confirmed" in events
    missing = sipmesh("boards", "history", "sm-ffffffffffff", "--data-dir", str(tmp_path))
    assert missing.returncode == 1 and "no board" in missing.stderr
    empty = sipmesh("boards", "--json", "--data-dir", str(tmp_path / "none"))
    assert json.loads(empty.stdout) == {"boards": []} and not (tmp_path / "none").exists()
