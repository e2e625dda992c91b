"""`sipmesh board deploy` against a virtual board with the real mpremote client.

The board is the MicroPython unix port behind a PTY (sipmesh.boards.sim),
its flash a temporary folder. Checked: a first deploy copies every file
and leaves the bundle's manifest on the board; a second copies nothing;
changing one firmware module copies only that one and a module the new
bundle drops is removed; the copies are made by the installed mpremote;
a running management agent is asked to drop to the REPL first, and the
application runs again after the deploy's reset.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from sipmesh import cli
from sipmesh.boards import boardkind, bundle, deploy, sim
from sipmesh.proto import frame, mgmt

# Runs the installed mpremote exactly as `python -m mpremote` would, after
# logging its module file and arguments: proof of what did the copying.
_LOGGING_MPREMOTE = (
    "import json, runpy, sys, mpremote\n"
    "with open(sys.argv[1], 'a') as f:\n"
    "    f.write(json.dumps([mpremote.__file__] + sys.argv[2:]) + '\\n')\n"
    "sys.argv = ['mpremote'] + sys.argv[2:]\n"
    "runpy.run_module('mpremote', run_name='__main__', alter_sys=True)\n"
)


class Board:
    """A virtual board served by its own event loop in a thread."""

    def __init__(self, root: Path, link: Path) -> None:
        self.root = root
        self.link = link
        self.vb = sim.VirtualBoard(root, link)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.vb.start(), self.loop).result(30)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.vb.stop(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Board]:
    # The store and the agent only: these tests have no LAN for the board.
    monkeypatch.setenv("SIPMESH_NO_LAN", "1")
    root = tmp_path / "flash"
    root.mkdir()
    b = Board(root, tmp_path / "board.pty")
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def mpremote_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "mpremote.log"
    monkeypatch.setattr(deploy, "mpremote_command",
                        lambda: [sys.executable, "-c", _LOGGING_MPREMOTE, str(log)])
    return log


@pytest.fixture(scope="module")
def unix_bundle(tmp_path_factory: pytest.TempPathFactory) -> bundle.Manifest:
    return bundle.build("unix", tmp_path_factory.mktemp("bundle") / "unix")


def _board_files(root: Path) -> dict[str, bytes]:
    return {"/" + str(p.relative_to(root)): p.read_bytes()
            for p in root.rglob("*") if p.is_file() and "data" not in p.relative_to(root).parts}


def _expected(m: bundle.Manifest) -> dict[str, bytes]:
    files = {p: m.local(p).read_bytes() for p in m.files}
    files["/manifest.json"] = m.to_json()
    return files


def _hello(link: Path, timeout: float = 20.0) -> dict:
    """The board's answer to `hello`, asking until its agent is up (it may be booting)."""
    payload = mgmt.request("hello")
    dec = frame.FrameDecoder()
    with serial.Serial(str(link), 115200, timeout=0.1) as port:
        port.write(b"\x00")
        deadline = time.monotonic() + timeout
        resend = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= resend:
                port.write(frame.encode(frame.REQUEST, 7, payload))
                resend = time.monotonic() + 1.0
            for f in dec.feed(port.read(4096)):
                if f.type == frame.RESPONSE and f.seq == 7:
                    return mgmt.parse_response(f.payload)
    raise AssertionError("the board's agent never answered hello")


def test_deploy_copies_everything_once_then_nothing(
    board: Board, unix_bundle: bundle.Manifest, mpremote_log: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[tuple[int, int, str]] = []
    first = deploy.deploy(str(board.link), unix_bundle.root,
                          progress=lambda d, t, n: seen.append((d, t, n)))
    assert first.copied == sorted(unix_bundle.files)
    assert first.skipped == [] and first.removed == []
    assert _board_files(board.root) == _expected(unix_bundle)
    assert (board.root / "manifest.json").read_bytes() == (
        unix_bundle.root / "manifest.json").read_bytes()
    # Progress is monotonic and ends full.
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)
    assert seen[-1][0] == seen[-1][1] > 0

    # What ran was mpremote, one session per step, copying each file.
    runs = [json.loads(line) for line in mpremote_log.read_text().splitlines()]
    assert all(Path(r[0]).parent.name == "mpremote" for r in runs)
    assert all(r[1:4] == ["connect", str(board.link), "resume"] for r in runs)
    copies = [r[i + 3] for r in runs for i, a in enumerate(r[:-3])
              if a == "fs" and r[i + 1] == "cp"]
    assert copies == [":" + p for p in sorted(unix_bundle.files)] + [":/manifest.json"]
    assert runs[-1][-1] == "reset"

    mpremote_log.unlink()
    code = cli.main(["board", "deploy", "--port", str(board.link), "--kind", "unix",
                     "--bundle", str(unix_bundle.root), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["ok"]
    assert doc["copied"] == [] and doc["removed"] == []
    assert doc["skipped"] == sorted(unix_bundle.files)
    runs = [json.loads(line) for line in mpremote_log.read_text().splitlines()]
    assert not any("cp" in r for r in runs)
    assert _board_files(board.root) == _expected(unix_bundle)


def _source_copy(dest: Path) -> Path:
    src = boardkind.source_root()
    shutil.copytree(src / "boards", dest / "boards")
    shutil.copytree(src / "firmware", dest / "firmware")
    shutil.copytree(src / "shared" / "proto", dest / "shared" / "proto")
    return dest


def test_deploy_copies_only_the_changed_module_and_removes_dropped_ones(
    board: Board, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _source_copy(tmp_path / "src")
    monkeypatch.setenv(boardkind.SOURCE_ENV, str(root))
    (root / "firmware" / "fw_extra.py").write_text("X = 1\n")
    old = bundle.build("unix", tmp_path / "old")
    assert "/lib/fw_extra.mpy" in old.files
    deploy.deploy(str(board.link), old.root)
    assert _board_files(board.root) == _expected(old)

    (root / "firmware" / "fw_extra.py").unlink()
    fw_log = root / "firmware" / "fw_log.py"
    fw_log.write_text(fw_log.read_text() + "\n_DEPLOY_TEST = 2\n")
    new = bundle.build("unix", tmp_path / "new")
    result = deploy.deploy(str(board.link), new.root)
    assert result.copied == ["/lib/fw_log.mpy"]
    assert result.removed == ["/lib/fw_extra.mpy"]
    assert set(result.skipped) == set(new.files) - {"/lib/fw_log.mpy"}
    assert _board_files(board.root) == _expected(new)


def test_deploy_stops_the_running_agent_and_restarts_the_application(
    board: Board, unix_bundle: bundle.Manifest
) -> None:
    first = deploy.deploy(str(board.link), unix_bundle.root)
    assert first.serial in ("repl", "silent")  # an empty board has only its REPL
    assert _hello(board.link)["kind"] == "unix"  # the reset started main.py and the agent
    again = deploy.deploy(str(board.link), unix_bundle.root)
    assert again.serial == "agent"
    assert again.copied == []
    assert _hello(board.link)["kind"] == "unix"
