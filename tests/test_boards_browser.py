"""The zeroconf side of the boards service between two network namespaces:
the controller's BoardBrowser and ControllerAnnouncer in one, a board's
service (python-zeroconf standing in for the firmware's responder, which
has its own tests) in the other, joined by a veth pair.

This file is also the helper both namespaces run (``python THIS browse|board``),
so each side is a real process on its own host; they talk to the test over
stdin/stdout lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CTL_IP = "10.77.0.1"
BOARD_IP = "10.77.0.2"
BOARD = "sm-0123456789ab"
WAIT = 20.0
TXT = {"v": "1", "id": BOARD, "kind": "unix", "fw": "0.1", "state": "unprovisioned",
       "cfg": "0", "name": ""}


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@pytest.fixture
def lan():
    """Namespaces ctl (10.77.0.1) and board (10.77.0.2) on one veth link; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root: builds network namespaces with ip netns")
    p = f"bb{os.getpid() % 100000}"
    ns = {"ctl": p + "c", "board": p + "b"}
    try:
        for name in ns.values():
            _run("ip", "netns", "add", name)
            _run("ip", "-n", name, "link", "set", "lo", "up")
        _run("ip", "link", "add", p + "c", "type", "veth", "peer", "name", p + "b")
        for dev, where, addr in ((p + "c", "ctl", CTL_IP), (p + "b", "board", BOARD_IP)):
            _run("ip", "link", "set", dev, "netns", ns[where])
            _run("ip", "-n", ns[where], "addr", "add", addr + "/24", "dev", dev)
            _run("ip", "-n", ns[where], "link", "set", dev, "up")
        yield ns
    finally:
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


class Side:
    """A helper process in a namespace: commands on stdin, lines on stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, ns: str, *args: str) -> Side:
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns, sys.executable, __file__, *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        return cls(proc)

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")

    async def line(self, prefix: str) -> str:
        async def read() -> str:
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"helper ended while waiting for {prefix!r}")
                text = raw.decode().rstrip("\n")
                if text.startswith(prefix):
                    return text[len(prefix):].strip()

        return await asyncio.wait_for(read(), WAIT)

    async def finish(self) -> int:
        if self.proc.returncode is None:
            self.proc.stdin.close()
            try:
                return await asyncio.wait_for(self.proc.wait(), WAIT)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode


async def test_board_appears_changes_leaves_and_finds_the_controller(lan, tmp_path: Path) -> None:
    from sipmesh.boards.keys import BoardKey
    from sipmesh.boards.registry import BoardRegistry

    ctl = await Side.start(lan["ctl"], "browse", str(tmp_path), CTL_IP)
    board = await Side.start(lan["board"], "board", BOARD_IP)
    try:
        await ctl.line("ready")
        await board.line("ready")
        registry = BoardRegistry(tmp_path / "boards.sqlite")

        async def until(what: str, check) -> None:
            while not check(registry.get(BOARD)):
                assert await ctl.line(what) == BOARD

        board.send("register " + json.dumps(TXT))
        await until("seen", lambda b: b is not None)
        b = registry.get(BOARD)
        assert (b.state, b.ip, b.port, b.txt) == ("discovered", BOARD_IP, 7381, TXT)

        board.send("update " + json.dumps({**TXT, "state": "provisioned", "cfg": "1"}))
        await until("seen", lambda b: b.txt["state"] == "provisioned")
        changes = [e.detail for e in registry.history(BOARD) if e.event == "announced"]
        assert changes == ["cfg=0 -> 1; state=unprovisioned -> provisioned"]

        # The board side finds the controller and the key id it must trust.
        board.send("find")
        found = json.loads(await board.line("controller"))
        kid = BoardKey.load_or_make(tmp_path).kid.hex()
        assert found == {"name": "demo controller._sipmesh._tcp.local.", "port": 7380,
                         "addresses": [CTL_IP],
                         "txt": {"v": "1", "branch": "demo", "kid": kid}}

        board.send("unregister")
        await until("gone", lambda b: b.state == "lost")
        states = [e.detail.split(":")[0] for e in registry.history(BOARD) if e.event == "state"]
        assert states == ["discovered -> lost"]
        registry.close()

        # An orderly stop sends the controller's goodbye (RFC 6762 §10.1).
        board.send("watch")
        await board.line("watching")
        assert await ctl.finish() == 0
        assert await board.line("controller-gone") == "demo controller._sipmesh._tcp.local."
    finally:
        for side in (ctl, board):
            if side.proc.returncode is None:
                side.proc.kill()
                await side.proc.wait()


# ---------------------------------------------------------------- helpers run in namespaces


async def _lines():
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        raw = await reader.readline()
        if not raw:
            return
        yield raw.decode().strip()


def _say(*parts: str) -> None:
    print(*parts, flush=True)


async def _browse(data_dir: str, ip: str) -> None:
    """Controller side: BoardBrowser + ControllerAnnouncer until stdin closes."""
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncZeroconf

    from sipmesh.boards.announce import ControllerAnnouncer
    from sipmesh.boards.browser import BoardBrowser
    from sipmesh.boards.keys import BoardKey
    from sipmesh.boards.registry import BoardRegistry

    registry = BoardRegistry(Path(data_dir) / "boards.sqlite")
    key = BoardKey.load_or_make(data_dir)
    zc = AsyncZeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
    browser = BoardBrowser(zc, registry, on_change=lambda board, what: _say(what, board))
    announcer = ControllerAnnouncer(zc, branch="demo", port=7380, kid=key.kid, addresses=[ip])
    await browser.start()
    await announcer.start()
    _say("ready")
    async for _ in _lines():
        pass
    await announcer.close()
    await browser.close()
    await zc.async_close()
    registry.close()


async def _board(ip: str) -> None:
    """Board side: registers/updates/unregisters a board service, finds the controller."""
    from zeroconf import IPVersion, ServiceInfo, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    zc = AsyncZeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
    info = None
    browsers = []

    def make(txt: dict) -> ServiceInfo:
        return ServiceInfo("_sipmesh-board._tcp.local.", f"{BOARD}._sipmesh-board._tcp.local.",
                           addresses=[bytes(map(int, ip.split(".")))], port=7381,
                           properties=txt, server=f"{BOARD}.local.")

    def on_controller(zeroconf, service_type, name, state_change) -> None:
        if state_change is ServiceStateChange.Removed:
            _say("controller-gone", name)

    _say("ready")
    async for line in _lines():
        cmd, _, arg = line.partition(" ")
        if cmd == "register":
            info = make(json.loads(arg))
            await (await zc.async_register_service(info))
        elif cmd == "update":
            info = make(json.loads(arg))
            await (await zc.async_update_service(info))
        elif cmd == "unregister":
            await (await zc.async_unregister_service(info))
        elif cmd == "find":
            found = asyncio.get_running_loop().create_future()

            def on_found(zeroconf, service_type, name, state_change, found=found) -> None:
                if state_change is ServiceStateChange.Added and not found.done():
                    found.set_result(name)

            browsers.append(AsyncServiceBrowser(zc.zeroconf, "_sipmesh._tcp.local.",
                                                handlers=[on_found]))
            name = await found
            ctl = AsyncServiceInfo("_sipmesh._tcp.local.", name)
            await ctl.async_request(zc.zeroconf, 3000)
            _say("controller", json.dumps({
                "name": name, "port": ctl.port,
                "addresses": ctl.parsed_addresses(IPVersion.V4Only),
                "txt": {k.decode(): v.decode() for k, v in ctl.properties.items()}}))
        elif cmd == "watch":
            browsers.append(AsyncServiceBrowser(zc.zeroconf, "_sipmesh._tcp.local.",
                                                handlers=[on_controller]))
            _say("watching")
    for b in browsers:
        await b.async_cancel()
    await zc.async_close()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if sys.argv[1] == "browse":
        asyncio.run(_browse(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(_board(sys.argv[2]))
