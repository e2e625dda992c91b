"""A board as a RELOAD client of its controller's overlay peer (issue 6, RFC 6940 §3.2).

The controller side runs in process (the demo OverlayService with its own
CA, or a ring of peers from tests/overlay_ring.py); the board side is the
real firmware module ``fw_overlay`` with ``sipmesh.proto.reload_client``
under the MicroPython unix port, with the heap capped at the ESP32 budget.
A CPython stand-in of fw_overlay's loop (``_Board`` below) drives the same
sans-I/O client where the test only checks the peer's routing rules.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import nacl.signing
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from overlay_ring import OVERLAY, TEST_KINDS, Ring, random_node_id

from sipmesh.boards import unixport
from sipmesh.config import ConfigError, OverlayOptions, _overlay
from sipmesh.overlay import config_doc
from sipmesh.overlay.ids import to_bytes, to_int
from sipmesh.overlay.kinds import USER_MATCH, KindDef
from sipmesh.overlay.peer import Peer
from sipmesh.overlay.security import Identity, cert_info, issue, make_ca, verify_stored_data
from sipmesh.overlay.service import KIND_DEVICE_RECORD, OverlayService, overlay_document
from sipmesh.overlay.settings import OverlaySettings
from sipmesh.proto import cbor, device_record
from sipmesh.proto import reload as rl
from sipmesh.proto import reload_client as rc
from sipmesh.proto import reload_storage as rs
from sipmesh.proto import reload_topology as rt

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
HEAP = "100K"
TIMEOUT = 120.0

RECORD_A = {
    "aor": "sip:door-1@demo.sipmesh",
    "addrs": ["10.77.0.2:5060"],
    "caps": ["door", "sip"],
    "kind": "unix",
    "fw": "0.1.0",
    "t": 1800000000,
}

# Run by the unix port: one board, one scenario; one "RESULT {json}" line each.
# Signatures are counted by wrapping ed25519.sign (the client imports it by name
# at each use).
DRIVER = r"""
import sys, gc, json, time, asyncio, os
from sipmesh.proto import cbor, device_record, ed25519
import fw_overlay

SIGS = [0]
_sign = ed25519.sign

def sign(seed, msg):
    SIGS[0] += 1
    return _sign(seed, msg)

ed25519.sign = sign

def out(tag, **kw):
    kw["tag"] = tag
    print("RESULT " + json.dumps(kw))

class Obj:
    pass

async def main(host, port, overlay, mode, path, arg, rec=None):
    with open(path, "rb") as f:
        ident = cbor.loads(f.read())
    if mode == "refused":
        rec = device_record.encode(json.loads(rec))
        oc = fw_overlay.OverlayClient(host, int(port), ident, overlay, tries=3)
        cl = oc.client
        now = (int(time.time()) + fw_overlay._EPOCH) * 1000 + 10000
        a = await oc.call(lambda: cl.store(rec, now, 60, data_seed=os.urandom(32)))
        b = await oc.call(lambda: cl.store(rec, now, 60, user=arg))
        oc.close()
        out("refused", forged_key=a[1], other_user=b[1],
            info=[bytes(a[2]).decode(), bytes(b[2]).decode()])
        return
    # A board application as fw_overlay.refresh sees it.
    app = Obj()
    app.store = Obj()
    app.store.identity = ident
    app.store.config = {"aor": "sip:door-1@demo.sipmesh", "contacts": json.loads(arg),
                        "overlay": {"host": host, "port": int(port), "name": overlay},
                        "settings": {"caps": ["door", "sip"]}}
    app.ip = "10.77.0.2"
    app.board = Obj()
    app.board.KIND = "unix"
    app.fw = "0.1.0"
    app.overlay = None
    app.contacts = None
    key = (host, int(port), overlay, fw_overlay.KIND)
    for n in range(1 if mode == "once" else 2):
        if mode == "future":
            # First a store dated a day ahead, then a board that forgot it
            # (as after a reboot without a real-time clock).
            app.overlay = (key, (0, (int(time.time()) + 86400) * 1000, None)) if n == 0 else None
        gc.collect()
        SIGS[0] = 0
        t0 = time.ticks_ms()
        before = int(time.time()) + fw_overlay._EPOCH
        await fw_overlay.refresh(app)
        out("refresh%d" % n, ms=time.ticks_diff(time.ticks_ms(), t0), sigs=SIGS[0],
            seq=app.overlay[1][0], last=app.overlay[1][1], contacts=app.contacts,
            clock=[before, int(time.time()) + fw_overlay._EPOCH])
    gc.collect()
    out("mem", alloc=gc.mem_alloc(), free=gc.mem_free())

asyncio.run(main(*sys.argv[1:]))
"""


def _seed_pair() -> tuple[bytes, bytes]:
    seed = os.urandom(32)
    return seed, bytes(nacl.signing.SigningKey(seed).verify_key)


@pytest.fixture(scope="module")
def board_lib(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A board's /lib as deployed (.mpy of shared/proto and of the firmware
    modules used here), plus the driver script's folder."""
    unixport.micropython_path()
    lib = unixport.stage_lib(tmp_path_factory.mktemp("lib"), compiled=True)
    for name in ("fw_overlay", "fw_log"):
        unixport.mpy_cross(FIRMWARE / f"{name}.py", lib / f"{name}.mpy")
    drv = tmp_path_factory.mktemp("driver")
    (drv / "board_overlay_driver.py").write_text(DRIVER)
    return [lib, drv]


async def _board(paths: list[Path], *args: str, heap: str = HEAP) -> dict[str, dict]:
    """Run the driver under MicroPython; return its RESULT lines by tag."""
    script = str(paths[1] / "board_overlay_driver.py")
    proc = await asyncio.create_subprocess_exec(
        *unixport.command([script, *args], heapsize=heap),
        env=unixport.environment([Path(".frozen"), *paths]),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    results = {}
    for line in out.decode().splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            results[r.pop("tag")] = r
    results["_proc"] = {"rc": proc.returncode, "stdout": out.decode(), "stderr": err.decode()}
    return results


def _explain(res: dict) -> str:
    p = res["_proc"]
    return f"exit {p['rc']}\n{p['stdout'][-3000:]}\n{p['stderr'][-3000:]}"


@pytest.fixture
async def controller(tmp_path: Path):
    """The controller's demo overlay peer with a client listener on loopback."""
    opts = OverlayOptions(enabled=True, listen=("127.0.0.1", 0), first=True, demo=True,
                          client_listen=("127.0.0.1", 0))
    service = OverlayService(opts, tmp_path / "data", branch="demo")
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def _identity_file(folder: Path, name: str, service: OverlayService) -> tuple[Path, dict]:
    seed, pub = _seed_pair()
    user = f"{name}@demo.sipmesh"
    der = service.issue_board_certificate(pub, user)
    ca_key = service.enrollment.config.root_certs[0].public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ident = {"seed": seed, "pub": pub, "cert": der, "ca_key": ca_key}
    path = folder / f"{name}.cbor"
    path.write_bytes(cbor.dumps(ident))
    return path, {**ident, "user": user}


# ---------------------------------------------------------------- configuration


def test_client_listen_is_parsed_and_off_by_default() -> None:
    assert _overlay({}, "t").client_listen is None
    assert _overlay({"client_listen": "10.77.0.1:6085"}, "t").client_listen == ("10.77.0.1", 6085)
    with pytest.raises(ConfigError, match="client_listen"):
        _overlay({"client_listen": "nowhere"}, "t")


def test_demo_document_declares_the_device_record_kind(tmp_path: Path) -> None:
    from sipmesh.overlay.service import load_or_make_authority

    ca, signer = load_or_make_authority(tmp_path, "demo.demo.sipmesh")
    doc = overlay_document(ca, signer)
    parsed = config_doc.parse(config_doc.to_xml(doc, signer), trusted=[ca.certificate])
    assert parsed.kind(4026531842) == KindDef(
        4026531842, "sipmesh device record", rs.MODEL_SINGLE, USER_MATCH, 1, 1024)
    assert KIND_DEVICE_RECORD == device_record.KIND == rc.KIND_DEVICE_RECORD


async def test_board_certificate_is_issued_by_the_overlay_ca(controller: OverlayService) -> None:
    seed, pub = _seed_pair()
    der = controller.issue_board_certificate(pub, "door-9@demo.sipmesh")
    cert = x509.load_der_x509_certificate(der)
    root = controller.enrollment.config.root_certs[0]
    cert.verify_directly_issued_by(root)
    info = cert_info(cert)
    assert info.user_name == "door-9@demo.sipmesh" and len(info.node_ids) == 1
    assert info.node_ids[0] != controller.peer.node_id
    user, node_id, ov, public_key, tbs, sig = rc.parse_certificate(der)
    assert (user, node_id, public_key) == ("door-9@demo.sipmesh", info.node_ids[0], pub)
    assert ov == controller.enrollment.config.instance_name
    assert (tbs, sig) == (cert.tbs_certificate_bytes, cert.signature)
    with pytest.raises(rc.ReloadClientError):
        rc.parse_certificate(der[:-1])
    with pytest.raises(rc.ReloadClientError):
        rc.parse_certificate(der[:200])


# ---------------------------------------------------------------- boards on MicroPython


@pytest.mark.micropython
async def test_boards_store_and_fetch_records(
    controller: OverlayService, board_lib: list[Path], tmp_path: Path
) -> None:
    """fw_overlay.refresh on two boards: each stores its signed record and
    fetches the other's, with the controller's peer checking every store."""
    peer = controller.peer
    overlay = controller.enrollment.config.instance_name
    path_a, a = _identity_file(tmp_path, "door-1", controller)
    path_b, b = _identity_file(tmp_path, "door-2", controller)
    common = ("127.0.0.1", str(peer.client_port), overlay)

    # A: two refreshes; door-2 has stored nothing yet: an empty answer, not an error.
    res = await _board(board_lib, *common, "twice", str(path_a), json.dumps(["door-2"]))
    assert "refresh1" in res, _explain(res)
    first, second = res["refresh0"], res["refresh1"]
    # A store signs twice (value §7.1, message §6.3.4), a fetch once; the
    # first request's retransmission with the learnt configuration sequence
    # signs nothing, and the next refresh starts from the kept sequence.
    assert first["sigs"] == second["sigs"] == 3
    assert first["seq"] == second["seq"] == peer.settings.configuration_sequence
    assert first["contacts"] == second["contacts"] == {"door-2": None}
    assert " fetch " not in res["_proc"]["stdout"], _explain(res)  # no failure logged
    print(f"\nboard refresh on the unix port: first {first['ms']} ms, then {second['ms']} ms")

    # The controller holds the value with A's own signature (§7.1).
    rid = rc.resource_id(a["user"])
    spec = rs.StoredDataSpecifier(KIND_DEVICE_RECORD, 0, rs.MODEL_SINGLE)
    ans = peer.store.fetch(rs.FetchReq(rid, [spec]))
    sd = ans.kind_responses[0].values[0]
    stored = device_record.decode(sd.value.value)
    assert stored == {**RECORD_A, "t": stored["t"]} and stored["t"] > 1600000000
    certs = peer.store.certificates({sd.signature.identity.hash})
    root = controller.enrollment.config.root_certs[0]
    info = verify_stored_data(sd, rid, KIND_DEVICE_RECORD, certs, root)
    assert info.user_name == a["user"]
    assert info.node_ids[0] == rc.parse_certificate(a["cert"])[1]

    # B fetches A's record, checked end to end (CA, USER-MATCH, §7.1).
    res = await _board(board_lib, *common, "once", str(path_b), json.dumps(["door-1"]))
    assert "refresh0" in res, _explain(res)
    assert res["refresh0"]["contacts"] == {"door-1": stored}, _explain(res)

    # The boards were clients: never members of the Chord table.
    ids = {to_int(rc.parse_certificate(x["cert"])[1]) for x in (a, b)}
    assert not ids & set(peer.table.nodes())


@pytest.mark.micropython
async def test_store_older_than_the_stored_copy_is_stored_after_it(
    controller: OverlayService, board_lib: list[Path], tmp_path: Path
) -> None:
    """§7.4.1.1: a board whose clock is behind its stored record (Error_Data_Too_Old)
    fetches the stored copy's time and stores just after it, in the same refresh."""
    overlay = controller.enrollment.config.instance_name
    path_a, _ = _identity_file(tmp_path, "door-1", controller)
    res = await _board(board_lib, "127.0.0.1", str(controller.peer.client_port), overlay,
                       "future", str(path_a), json.dumps(["door-1"]))
    assert "refresh1" in res, _explain(res)
    first, second = res["refresh0"], res["refresh1"]
    assert second["last"] == first["last"] + 1, (first, second)
    # The refused store (2 signatures), the fetch of the stored copy (1), the
    # new store (2) and the contact's fetch (1).
    assert second["sigs"] == 6, second
    # The contact fetched is the record this refresh stored, not the day-ahead one.
    low, high = second["clock"]
    assert low <= second["contacts"]["door-1"]["t"] <= high, second


@pytest.mark.micropython
async def test_forged_and_foreign_stores_are_forbidden(
    controller: OverlayService, board_lib: list[Path], tmp_path: Path
) -> None:
    overlay = controller.enrollment.config.instance_name
    path_a, a = _identity_file(tmp_path, "door-1", controller)
    _, b = _identity_file(tmp_path, "door-2", controller)
    res = await _board(board_lib, "127.0.0.1", str(controller.peer.client_port), overlay,
                       "refused", str(path_a), b["user"], json.dumps(RECORD_A))
    assert "refused" in res, _explain(res)
    r = res["refused"]
    assert r["forged_key"] == rl.ERROR_FORBIDDEN, r
    assert r["other_user"] == rl.ERROR_FORBIDDEN, r
    spec = rs.StoredDataSpecifier(KIND_DEVICE_RECORD, 0, rs.MODEL_SINGLE)
    for user in (a["user"], b["user"]):
        got = controller.peer.store.fetch(rs.FetchReq(rc.resource_id(user), [spec]))
        assert not any(v.value.exists for kr in got.kind_responses for v in kr.values)


@pytest.mark.micropython
async def test_heap_floor_of_store_and_fetch(
    controller: OverlayService, board_lib: list[Path], tmp_path: Path
) -> None:
    """The smallest heap (4 KB steps) in which a board's refresh stores its
    record and fetches one record with its checks (its own: a CA and a value
    signature verified), from .mpy as deployed; it must be within 100 KB."""
    overlay = controller.enrollment.config.instance_name
    path_a, _ = _identity_file(tmp_path, "door-1", controller)
    args = ("127.0.0.1", str(controller.peer.client_port), overlay, "once",
            str(path_a), json.dumps(["door-1"]))

    async def passes(kb: int) -> bool:
        res = await _board(board_lib, *args, heap=f"{kb}K")
        return bool(res.get("refresh0", {}).get("contacts", {}).get("door-1"))

    if os.environ.get("SIPMESH_HEAP_PROBE"):  # pragma: no cover - manual probing
        for kb in map(int, os.environ["SIPMESH_HEAP_PROBE"].split(",")):
            print(kb, _explain(await _board(board_lib, *args, heap=f"{kb}K"))[-600:])
    assert await passes(100), "store+fetch do not fit the ESP32 budget"
    low, high = 8, 100  # fails at low (assumed), passes at high
    while high - low > 4:
        mid = (low + high) // 2 // 4 * 4
        if mid in (low, high):
            break
        if await passes(mid):
            high = mid
        else:
            low = mid
    print(f"\nheap floor of a refresh, store + checked fetch (.mpy): {high} KB")


# ---------------------------------------------------------------- routing rules (CPython)


class _Board:
    """CPython stand-in of fw_overlay's loop around the same sans-I/O client."""

    def __init__(self, client: rc.ReloadClient):
        self.client = client
        self.answers: dict[int, tuple] = {}
        self.got = asyncio.Event()

    async def connect(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        self.client.reset()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while data := await self.reader.read(4096):
            for a in self.client.receive_data(data):
                self.answers[a[0]] = a
            self.writer.write(self.client.data_to_send())
            self.got.set()
        self.got.set()

    async def call(self, tid: int, timeout: float = 5.0) -> tuple | None:
        self.writer.write(self.client.data_to_send())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while tid not in self.answers and not self.task.done():
            self.got.clear()
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(self.got.wait(), left)
            except TimeoutError:
                return None
        return self.answers.pop(tid, None)

    def close(self) -> None:
        self.writer.close()
        self.task.cancel()


def _client(ring: Ring, user: str, node_id: bytes, kind: int) -> rc.ReloadClient:
    seed, pub = _seed_pair()
    der = issue(ring.ca, pub, user, node_id, OVERLAY).public_bytes(serialization.Encoding.DER)
    ca_key = bytes(ring.ca.signing_key.verify_key)
    return rc.ReloadClient(OVERLAY, der, seed, kind, ca_key=ca_key, config_sequence=1)


def _answer(a: tuple | None) -> dict | None:
    """An answer tuple of reload_client by field name."""
    names = ("tid", "error", "info", "value", "storage_time", "signer")
    return None if a is None else dict(zip(names, a, strict=True))


async def _peer_with_clients(ring: Ring) -> Peer:
    """The ring's first peer, with a client listener on loopback."""
    identity = Identity.generate(ring.ca, "user0", random_node_id())
    peer = ring.make_peer(identity)
    peer.client_listen = ("127.0.0.1", 0)
    await peer.start()
    await peer.join([], first=True)
    ring.peers.append(peer)
    ring.identities.append(identity)
    return peer


async def test_client_link_is_never_a_route_hop(tmp_path: Path) -> None:
    """A client whose Node-ID sits just after peer A would be A's best next
    hop for the targets behind it if it were a ring member: A must still
    route them to its real successor, and reach the client only for
    messages destined to the client's own Node-ID (§3.2)."""
    kinds = {**TEST_KINDS, KIND_DEVICE_RECORD: KindDef(
        KIND_DEVICE_RECORD, "sipmesh device record", rs.MODEL_SINGLE, USER_MATCH, 1, 1024)}
    settings = OverlaySettings(OVERLAY, kinds=kinds, update_interval=2.0, reliability_timer=1.0)
    ring = Ring(tmp_path, settings=settings)
    try:
        pa = await _peer_with_clients(ring)
        pb = await ring.add()
        await ring.wait_for(ring.ring_correct)

        # The client's Node-ID: right after A, so in B's range and closer to
        # the targets behind it than B is.
        c_id = to_bytes(pa.own + 1)
        # A user name whose record B is responsible for: A must forward it.
        user = next(f"door-{i}@x" for i in range(10000)
                    if pb.table.responsible(to_int(rc.resource_id(f"door-{i}@x"))))
        board = _Board(_client(ring, user, c_id, KIND_DEVICE_RECORD))
        await board.connect("127.0.0.1", pa.client_port)
        value = device_record.encode(RECORD_A)
        a = _answer(await board.call(board.client.store(value, 1000, 60)))
        assert a is not None and a["error"] == 0 and a["storage_time"] == 1000, a
        ans = pb.store.fetch(rs.FetchReq(rc.resource_id(user), [rs.StoredDataSpecifier(
            KIND_DEVICE_RECORD, 0, rs.MODEL_SINGLE)]))
        assert ans.kind_responses[0].values[0].value.value == value

        c = to_int(c_id)
        link = pa.links[c]
        assert pa.is_client(c) and pa.ring()["clients"] == [c_id.hex()]
        assert c not in pa.table.nodes() and c not in pb.table.nodes()
        assert pa._route(c, True) is link
        assert pa._route(c) is not link  # a Resource-ID equal to the Node-ID is no exception
        for k in range(2, 200):
            assert pa._route((pa.own + k) % (1 << 128)) is not link
        frames = link.frames_sent
        # A fetches at a Resource-ID just behind the client: answered by B.
        target = to_bytes(pa.own + 2)
        _, r = await pa.fetch(target, [rs.StoredDataSpecifier(4001, 0, rs.MODEL_SINGLE)])
        assert r.responder == pb.node_id
        assert link.frames_sent == frames
        # Stabilisation sends Updates to neighbours only; a client gets none.
        pa.stabilise()
        pa._announce()
        await asyncio.sleep(0)
        assert link.frames_sent == frames

        # The client's own answers come back over its link, and the record
        # it fetches passes its end-to-end checks (CA, USER-MATCH, §7.1).
        a = _answer(await board.call(board.client.fetch(user)))
        assert a is not None and a["value"] == value and a["signer"] == user, a
        # An Update straight from a client is refused: it never enters the table.
        up = rt.ChordUpdate(1, rt.CHORD_FULL, [c_id], [c_id], [])
        a = _answer(await board.call(board.client.request(rl.UPDATE_REQ, pa.node_id, up.encode())))
        assert a is not None and a["error"] == rl.ERROR_FORBIDDEN
        assert c not in pa.table.nodes()
        board.close()
    finally:
        await ring.stop()


async def test_client_cannot_displace_a_ring_member(tmp_path: Path) -> None:
    ring = Ring(tmp_path)
    try:
        pa = await _peer_with_clients(ring)
        pb = await ring.add()
        await ring.wait_for(ring.ring_correct)
        member_link = pa.links[pb.own]
        # A certificate (the CA issued it) naming B's Node-ID, on the client port.
        board = _Board(_client(ring, "door-1@x", pb.node_id, 4001))
        await board.connect("127.0.0.1", pa.client_port)
        a = await board.call(board.client.fetch("door-1@x"), timeout=3.0)
        assert a is None and board.task.done()  # link refused and closed
        assert pa.links[pb.own] is member_link and not pa.is_client(pb.own)
        board.close()
    finally:
        await ring.stop()


def test_answers_are_acked_and_config_sequence_learnt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sans-I/O: a framed Error_Config_Too_Old makes the client resend the
    same signed request with the peer's sequence; data frames are acked."""
    from sipmesh.proto import ed25519

    signed = []
    monkeypatch.setattr(ed25519, "sign", lambda s, m: signed.append(m) or nacl.signing.SigningKey(
        s).sign(m).signature)
    ca = make_ca(OVERLAY)
    seed, pub = _seed_pair()
    der = issue(ca, pub, "door-1@x", random_node_id(), OVERLAY).public_bytes(
        serialization.Encoding.DER)
    cl = rc.ReloadClient(OVERLAY, der, seed)
    tid = cl.fetch("door-2@x")
    first = rl.FrameDecoder().feed(cl.data_to_send())
    assert [f.sequence for f in first] == [0]
    req = rl.decode_message(first[0].message)
    err = rl.error_message(req.header, rl.ERROR_CONFIG_TOO_OLD)
    err.header.configuration_sequence = 7
    err.header.destinations = [rl.Destination.node(cl.node_id)]
    assert cl.receive_data(rl.encode_data_frame(5, err.encode())) == []
    frames = rl.FrameDecoder().feed(cl.data_to_send())
    assert frames[0] == rl.AckFrame(5, 0)
    again = rl.decode_message(frames[1].message)
    assert frames[1].sequence == 1 and again.header.configuration_sequence == 7
    assert again.header.transaction_id == tid and again.security == req.security
    assert len(signed) == 1
    # A second config error is final; the ack of 6 tells 5 was seen (bit 6-5, §6.6.2.2).
    got = cl.receive_data(rl.encode_data_frame(6, err.encode()))
    assert [x[:2] for x in got] == [(tid, rl.ERROR_CONFIG_TOO_OLD)]
    assert rl.FrameDecoder().feed(cl.data_to_send()) == [rl.AckFrame(6, 2)]
    assert cl.tid == 0  # nothing in flight
    assert cl.receive_data(rl.encode_data_frame(7, err.encode())) == []  # a late copy
    with pytest.raises(rc.ReloadClientError):
        cl.receive_data(b"\x42garbage")


def test_requests_signed_apart_are_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """unsigned_request + Ed25519 by the caller + send (a board's phases) put the
    same bytes on the link as request(); parts_to_send joins to data_to_send."""
    from sipmesh.proto import ed25519

    monkeypatch.setattr(rc.os, "urandom", lambda n: b"\x07" * n)
    ca = make_ca(OVERLAY)
    seed, pub = _seed_pair()
    der = issue(ca, pub, "door-1@x", random_node_id(), OVERLAY).public_bytes(
        serialization.Encoding.DER)
    value = device_record.encode(RECORD_A)
    cl = rc.ReloadClient(OVERLAY, der, seed)
    cl.store(value, 1000, 60)
    cl.fetch("door-2@x")
    whole = cl.data_to_send()
    later = rc.ReloadClient(OVERLAY, der, seed)
    todo = [cl.unsigned_store(value, 1000, 60), cl.unsigned_fetch("door-2@x")]
    parts = []
    for tid, code, rid, st, head, pre, sdt, post, ident in todo:
        msg = pre + ed25519.sign(seed, sdt) + post if sdt else pre
        later.send((tid, code, rid, msg, ed25519.sign(seed, head + msg + ident), st))
        parts += later.parts_to_send()
    assert b"".join(parts) == whole
    frames = rl.FrameDecoder().feed(whole)
    req = rl.decode_message(frames[0].message)
    assert req.header.transaction_id == later.tid == int.from_bytes(b"\x07" * 8, "big")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q", "-s"]))
