"""The whole board application fits the ESP32 heap budget on the unix port.

The application runs under ``micropython -X heapsize=HEAP`` with every LAN
part on (mDNS, push listener, pull, heartbeat, overlay refresh), driven by
tests/mp/app_heap.py. The test provisions it over the serial line as
`sipmesh board provision` does, then serves its controller on 127.0.0.1
(an aiohttp config/status endpoint in a thread: signed configuration and
HMAC'd heartbeats checked with sipmesh.proto.heartbeat), pushes a newer
configuration to its push listener, and reads the ``HEAP low`` lines the
driver prints. The overlay points at a closed port: the refresh imports
its modules (the heap cost) and fails to connect.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web
from test_board_agent import BID, CTRL, OTHER, WAIT, Board

from sipmesh.proto import boardcfg, cose, heartbeat

pytestmark = pytest.mark.micropython

ROOT = Path(__file__).resolve().parent.parent
# The ESP32 budget (issue 6); the test boards of tests/board_lan.py get the same.
HEAP = "100K"
HB_KEY = bytes(range(32))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signed(seq: int, ctl_port: int, ov_port: int) -> bytes:
    payload = boardcfg.make(
        BID, seq, "door-1", "sip:door-1@demo.sipmesh", {"host": "127.0.0.1", "port": ctl_port},
        {"host": "127.0.0.1", "port": ov_port, "name": "demo", "kind": 4026531842},
        {"heartbeat": 1, "pull": 300, "refresh": 600}, contacts=["door-2"], issued=1800000000)
    kid = cose.key_id(bytes(CTRL.verify_key))
    return cose.encode_sign1(payload, lambda tbs: CTRL.sign(tbs).signature, kid)


class Controller:
    """The controller's board endpoint on 127.0.0.1, served from its own thread."""

    def __init__(self, config: bytes, seq: int) -> None:
        self.config, self.seq = config, seq
        self.pulls: list[str] = []
        self.beats: list[dict] = []
        self.three = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.port = free_port()
        started = threading.Event()
        threading.Thread(target=self._serve, args=(started,), daemon=True).start()
        assert started.wait(WAIT)

    def _serve(self, started: threading.Event) -> None:
        app = web.Application()
        app.router.add_get(f"/boards/{BID}/config", self.get_config)
        app.router.add_post(f"/boards/{BID}/status", self.post_status)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        started.set()
        self.loop.run_forever()

    async def get_config(self, request: web.Request) -> web.Response:
        tag = request.headers.get("If-None-Match", "")
        self.pulls.append(tag)
        if tag == f'"{self.seq}"':
            return web.Response(status=304)
        return web.Response(body=self.config, content_type="application/cose")

    async def post_status(self, request: web.Request) -> web.Response:
        try:
            beat = heartbeat.open_(HB_KEY, await request.read())
        except heartbeat.HeartbeatError:
            return web.Response(status=403)
        self.beats.append(beat)
        if len(self.beats) >= 3:
            self.three.set()
        return web.Response(status=204)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)


def scenario(tmp: Path, heapsize: str) -> int:
    """Provision, one pull, three heartbeats, one push; return the lowest free heap seen."""
    ov_port, push_port = free_port(), free_port()
    ctl = Controller(b"", 2)
    ctl.config = signed(2, ctl.port, ov_port)
    b = Board(tmp, heapsize, args=[str(ROOT / "tests" / "mp" / "app_heap.py"), str(push_port)],
              env={"SIPMESH_NO_LAN": ""})
    try:
        assert len(b.call("keygen")["pub"]) == 32
        got = b.call("provision", controller_key=bytes(CTRL.verify_key),
                     cert=b"\x30\x03\x02\x01\x01", ca_key=bytes(OTHER.verify_key),
                     hb_key=HB_KEY, config=signed(1, ctl.port, ov_port))
        assert got["cfg"] == 1
        b.wait_line(r"config seq 2 accepted from pull")
        assert ctl.three.wait(WAIT), "".join(b.log)
        assert [x["n"] for x in ctl.beats[:3]] == [1, 2, 3]
        assert all(x["cfg"] in (1, 2) and x["id"] == BID for x in ctl.beats[:3])
        req = urllib.request.Request(f"http://127.0.0.1:{push_port}/config", method="POST",
                                     data=signed(3, ctl.port, ov_port),
                                     headers={"Content-Type": "application/cose"})
        with urllib.request.urlopen(req, timeout=WAIT) as resp:
            assert resp.status == 204
        b.wait_line(r"config seq 3 accepted from push")
        info = b.call("info")
        assert (info["state"], info["cfg"]) == ("configured", 3)
        log = "".join(b.log)
        assert "MemoryError" not in log, log
        lows = [int(m) for m in re.findall(r"HEAP low (\d+) free", log)]
        assert lows, log
        return min(lows)
    finally:
        b.close()
        ctl.close()


def test_whole_application_in_budget(tmp_path: Path) -> None:
    low = scenario(tmp_path, HEAP)
    print(f"heapsize {HEAP}: lowest free heap seen {low} bytes")
    assert low > 0
