"""The boards' configuration endpoint (controller/boards/configsrv.py) on a
real server on 127.0.0.1, through the BoardService that owns it."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from sipmesh.boards.configsrv import COSE_TYPE, etag_matches
from sipmesh.boards.options import parse
from sipmesh.boards.service import BoardService
from sipmesh.proto import boardcfg, cbor, device_record, heartbeat

BOARD = "sm-0123456789ab"
OTHER = "sm-aaaaaaaaaaaa"
OVERLAY = {"host": "10.77.0.1", "port": 6085, "name": "demo.demo.sipmesh",
           "kind": device_record.KIND}


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def _beat(n: int, boot: int = 1, cfg: int = 1, board: str = BOARD) -> dict:
    return {"id": board, "boot": boot, "n": n, "cfg": cfg, "up": n, "ip": "127.0.0.1",
            "free": 40000, "alloc": 60000, "overlay": "ok"}


@pytest.fixture
async def service(tmp_path: Path):
    clock = Clock()
    svc = BoardService(parse({"listen": "127.0.0.1:0", "browse": False, "announce": False}),
                       tmp_path, OVERLAY, clock=clock)
    await svc.start()
    svc.clock_ = clock
    async with aiohttp.ClientSession(f"http://127.0.0.1:{svc.port}") as http:
        svc.http = http
        yield svc
    await svc.stop()


async def test_config_pull_200_304_404_409(service) -> None:
    http = service.http
    got = service.enroll_board(BOARD, b"\x01" * 32, "unix", "0.1", "door-1",
                               "sip:door-1@demo.sipmesh")
    service.registry.seen(OTHER, ip="127.0.0.1", port=7381, txt={"id": OTHER})

    async with http.get(f"/boards/{BOARD}/config", headers={"Connection": "close"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == COSE_TYPE
        assert resp.headers["ETag"] == '"1"'
        body = await resp.read()
    assert body == got["config"]
    cfg = boardcfg.accept(body, got["controller_key"], BOARD, 0)
    assert cfg["controller"] == {"host": "127.0.0.1", "port": service.port}
    assert service.registry.get(BOARD).cfg_served == 1

    async with http.get(f"/boards/{BOARD}/config", headers={"If-None-Match": '"1"'}) as resp:
        assert resp.status == 304 and resp.headers["ETag"] == '"1"'
        assert await resp.read() == b""
    service.configure(BOARD, name="door-9")
    async with http.get(f"/boards/{BOARD}/config", headers={"If-None-Match": '"1"'}) as resp:
        assert resp.status == 200 and resp.headers["ETag"] == '"2"'
        assert boardcfg.accept(await resp.read(), got["controller_key"], BOARD, 1)["name"] \
            == "door-9"

    for path, status in ((f"/boards/{OTHER}/config", 409),
                         ("/boards/sm-ffffffffffff/config", 404),
                         ("/boards/..%2f..%2fetc/config", 404),
                         ("/boards", 404), (f"/boards/{BOARD}/secret", 404)):
        async with http.get(path) as resp:
            assert resp.status == status, path
            if status in (404, 409) and path.endswith("/config"):
                assert resp.content_type == "application/problem+json"
    async with http.put(f"/boards/{BOARD}/config", data=b"x") as resp:
        assert resp.status == 405


async def test_heartbeats_online_bad_mac_replay_oversize(service) -> None:
    http = service.http
    got = service.enroll_board(BOARD, b"\x01" * 32, "unix", "0.1", "door-1",
                               "sip:door-1@demo.sipmesh")
    key = got["hb_key"]
    url = f"/boards/{BOARD}/status"

    async def post(body: bytes, path: str = url) -> int:
        async with http.post(path, data=body) as resp:
            return resp.status

    assert service.registry.get(BOARD).state == "provisioned"
    assert await post(heartbeat.seal(key, _beat(1))) == 204
    b = service.registry.get(BOARD)
    assert (b.state, b.cfg_confirmed, b.hb_n, b.ip) == ("online", 1, 1, "127.0.0.1")
    assert b.hb_detail["free"] == 40000

    assert await post(heartbeat.seal(b"\x09" * 32, _beat(2))) == 403
    forged = cbor.loads(heartbeat.seal(key, _beat(2)))
    forged["p"] = cbor.dumps({**_beat(2), "cfg": 7})
    assert await post(cbor.dumps(forged)) == 403
    assert await post(b"\xff garbage") == 403
    assert await post(heartbeat.seal(key, _beat(2, board=OTHER))) == 403
    assert await post(heartbeat.seal(key, _beat(1))) == 409  # replay
    assert await post(b"\x00" * (heartbeat.MAX_BODY + 1)) == 413

    async def chunks():
        for _ in range(heartbeat.MAX_BODY // 100 + 2):
            yield b"\x00" * 100

    assert await post(chunks()) == 413  # no Content-Length: the read limit holds
    assert await post(heartbeat.seal(key, _beat(2)), "/boards/sm-ffffffffffff/status") == 404
    b = service.registry.get(BOARD)
    assert (b.hb_n, b.cfg_confirmed) == (1, 1)  # nothing refused changed the record
    refused = [e.detail for e in service.registry.history(BOARD) if e.event == "refused"]
    assert len(refused) == 5 and "replay" in refused[-1]

    # Missed heartbeats (injected clock): lost; the next heartbeat: back online.
    service.clock_.t += 3 * 30 + 1
    assert service.check_lost() == [BOARD]
    assert service.registry.get(BOARD).state == "lost"
    assert await post(heartbeat.seal(key, _beat(2))) == 204
    assert service.registry.get(BOARD).state == "online"


async def test_new_controller_address_reissues_configs(tmp_path: Path) -> None:
    opts = parse({"listen": "127.0.0.1:0", "browse": False, "announce": False})
    svc = BoardService(opts, tmp_path, OVERLAY)
    await svc.start()
    got = svc.enroll_board(BOARD, b"\x01" * 32, "unix", "0.1", "door-1", "sip:door-1@x.sipmesh")
    await svc.stop()
    svc = BoardService(opts, tmp_path, {**OVERLAY, "port": 6086})
    await svc.start()
    try:
        seq, data = svc.registry.signed_config(BOARD)
        cfg = boardcfg.accept(data, got["controller_key"], BOARD, got["seq"])
        assert seq == 2 and cfg["overlay"]["port"] == 6086
        assert "re-issued" in svc.registry.history(BOARD)[-1].detail
    finally:
        await svc.stop()


def test_if_none_match_forms() -> None:
    assert etag_matches('"7"', 7) and etag_matches('W/"7"', 7)
    assert etag_matches('"3", "7"', 7) and etag_matches("*", 7)
    assert not etag_matches('"17"', 7) and not etag_matches(None, 7)
    assert not etag_matches("7", 7)


async def test_configs_name_the_running_overlay_client_listener(tmp_path: Path) -> None:
    from sipmesh.config import OverlayOptions
    from sipmesh.overlay.service import OverlayService

    overlay = OverlayService(OverlayOptions(
        enabled=True, demo=True, first=True, plain_tcp=True, listen=("127.0.0.1", 0),
        client_listen=("127.0.0.1", 0)), tmp_path, branch="lab")
    await overlay.start()
    svc = BoardService(parse({"listen": "127.0.0.1:0", "browse": False, "announce": False}),
                       tmp_path, overlay, branch="lab")
    try:
        await svc.start()
        got = svc.enroll_board(BOARD, b"\x01" * 32, "unix", "0.1", "door-1",
                               "sip:door-1@lab.sipmesh")
        cfg = boardcfg.accept(got["config"], svc.key.pub, BOARD, 0)
        assert cfg["overlay"] == {"host": "127.0.0.1", "port": overlay.peer.client_port,
                                  "name": "lab.demo.sipmesh", "kind": device_record.KIND}
        assert cfg["controller"] == {"host": "127.0.0.1", "port": svc.port}
    finally:
        await svc.stop()
        await overlay.stop()
