"""The whole board application fits the ESP32 heap budget on the unix port.

The application runs under ``micropython -X heapsize=HEAP`` with every LAN
part on (mDNS, push listener, pull, heartbeat, overlay refresh), driven by
tests/mp/app_heap.py. The test provisions it over the serial line as
`sipmesh board provision` does, then serves its controller on 127.0.0.1
(an aiohttp config/status endpoint in a thread: signed configuration and
HMAC'd heartbeats checked with sipmesh.proto.heartbeat, and the demo
overlay peer with its client listener, whose CA issued the board's
certificate), pushes a newer configuration to its push listener, and reads
the ``HEAP low`` lines the driver prints. Every job must succeed: the pull,
the heartbeats, the push and the overlay refresh, whose signed device
record the peer then holds.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web
from test_board_agent import BID, CTRL, WAIT, Board

from sipmesh.config import OverlayOptions
from sipmesh.overlay.service import KIND_DEVICE_RECORD, OverlayService
from sipmesh.proto import boardcfg, cose, device_record, heartbeat
from sipmesh.proto import reload_client as rc
from sipmesh.proto import reload_storage as rs

pytestmark = pytest.mark.micropython

ROOT = Path(__file__).resolve().parent.parent
# The ESP32 budget (issue 6); the test boards of tests/board_lan.py get the same.
HEAP = "100K"
HB_KEY = bytes(range(32))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signed(seq: int, ctl_port: int, ov: OverlayService) -> bytes:
    overlay = {"host": "127.0.0.1", "port": ov.peer.client_port,
               "name": ov.enrollment.config.instance_name, "kind": KIND_DEVICE_RECORD}
    payload = boardcfg.make(
        BID, seq, "door-1", "sip:door-1@demo.sipmesh", {"host": "127.0.0.1", "port": ctl_port},
        overlay,
        {"heartbeat": 1, "pull": 300, "refresh": 600}, contacts=["door-2"], issued=1800000000)
    kid = cose.key_id(bytes(CTRL.verify_key))
    return cose.encode_sign1(payload, lambda tbs: CTRL.sign(tbs).signature, kid)


class Controller:
    """The controller's board endpoint and overlay peer on 127.0.0.1, run in their own thread."""

    def __init__(self, data: Path, config: bytes, seq: int) -> None:
        self.config, self.seq = config, seq
        opts = OverlayOptions(enabled=True, listen=("127.0.0.1", 0), first=True, demo=True,
                              client_listen=("127.0.0.1", 0))
        self.overlay = OverlayService(opts, data, branch="demo")
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
        self.loop.run_until_complete(self.overlay.start())
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
        if len(self.beats) >= 3 and any(b["overlay"] == "ok" for b in self.beats):
            self.three.set()
        return web.Response(status=204)

    def record(self, user: str) -> dict | None:
        """The device record the overlay peer holds for user, or None."""

        async def fetch() -> dict | None:
            spec = rs.StoredDataSpecifier(KIND_DEVICE_RECORD, 0, rs.MODEL_SINGLE)
            ans = self.overlay.peer.store.fetch(rs.FetchReq(rc.resource_id(user), [spec]))
            values = ans.kind_responses[0].values
            return device_record.decode(values[0].value.value) if values else None

        return asyncio.run_coroutine_threadsafe(fetch(), self.loop).result(WAIT)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.overlay.stop(), self.loop).result(WAIT)
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)


def scenario(tmp: Path, heapsize: str) -> int:
    """Provision, one pull, heartbeats until one reports the overlay record stored,
    one push; return the lowest free heap seen."""
    push_port = free_port()
    ctl = Controller(tmp / "controller", b"", 2)
    ctl.config = signed(2, ctl.port, ctl.overlay)
    b = Board(tmp, heapsize, args=[str(ROOT / "tests" / "mp" / "app_heap.py"), str(push_port)],
              env={"SIPMESH_NO_LAN": ""})
    try:
        pub = b.call("keygen")["pub"]
        assert len(pub) == 32
        ca = ctl.overlay.enrollment.config.root_certs[0].public_key().public_bytes_raw()
        got = b.call("provision", controller_key=bytes(CTRL.verify_key),
                     cert=ctl.overlay.issue_board_certificate(pub, "door-1@demo.sipmesh"),
                     ca_key=ca, hb_key=HB_KEY, config=signed(1, ctl.port, ctl.overlay))
        assert got["cfg"] == 1
        b.wait_line(r"config seq 2 accepted from pull")
        assert ctl.three.wait(WAIT), "".join(b.log)
        assert [x["n"] for x in ctl.beats[:3]] == [1, 2, 3]
        assert all(x["cfg"] in (1, 2) and x["id"] == BID for x in ctl.beats)
        rec = ctl.record("door-1@demo.sipmesh")
        assert rec is not None and rec["aor"] == "sip:door-1@demo.sipmesh", rec
        # What the push brings is what the controller serves from now on (the
        # pull it wakes then gets 304).
        ctl.config, ctl.seq = signed(3, ctl.port, ctl.overlay), 3
        req = urllib.request.Request(f"http://127.0.0.1:{push_port}/config", method="POST",
                                     data=ctl.config,
                                     headers={"Content-Type": "application/cose"})
        try:
            with urllib.request.urlopen(req, timeout=WAIT) as resp:
                status = resp.status
        except urllib.error.HTTPError as e:
            status = e.code
        assert status == 204, "".join(b.log)
        b.wait_line(r"config seq 3 accepted from push")
        info = b.call("info")
        assert (info["state"], info["cfg"]) == ("configured", 3)
        log = "".join(b.log)
        assert "MemoryError" not in log and "memory allocation failed" not in log, log
        assert not re.search(r"^[\d.]+ (refresh|pull|heartbeat): ", log, re.M), log
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
