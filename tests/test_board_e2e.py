"""Two virtual boards on a LAN with the controller: issue 6 end to end.

The controller (`sipmesh run`: demo overlay with a client listener, the
boards service) runs in the "ctrl" namespace with avahi-daemon beside it;
each board is the MicroPython unix port behind `sipmesh board sim` (heap
capped at the ESP32 budget) in its own namespace, on a bridge. Board 1 is
provisioned over its PTY with pyserial and the new bundle is deployed to it
with the real mpremote; from then on no serial byte is sent, and the board
must be discovered by zeroconf, pull and verify its signed configuration
over the LAN, store its device record in the running overlay and reach
"online". Board 2 stays unprovisioned. Then forged, replayed, misdirected
and unsolicited configurations are pushed over the LAN and refused, and
board 1 keeps working (RFC 6762/6763, RFC 9052, RFC 6940 §3.2).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import board_lan
import pytest
from judges import require

pytestmark = [pytest.mark.root, pytest.mark.micropython]

SIPMESH = str(Path(sys.executable).parent / "sipmesh")
CTRL_IP, B1_IP, B2_IP = "10.79.0.1", "10.79.0.2", "10.79.0.3"
B1, B2 = "sm-0000000000b1", "sm-0000000000b2"
HEAP = board_lan.BOARD_HEAP
BRANCH = "lab"
OVERLAY = f"{BRANCH}.demo.sipmesh"
KIND_DEVICE_RECORD = 4026531842


def sipmesh(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIPMESH, *args], capture_output=True, text=True, timeout=timeout)


def sipmesh_json(*args: str) -> object:
    out = sipmesh(*args, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


PUSH = """
import socket, sys
body = open(sys.argv[3], "rb").read()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(b"POST /config HTTP/1.1\\r\\nHost: b\\r\\nContent-Type: application/cose\\r\\n"
          b"Content-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % len(body) + body)
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode(errors="replace").replace("\\r\\n", " | "))
"""


@pytest.fixture
async def site(tmp_path: Path):
    """The LAN, avahi, the controller and two simulated boards (board 1 with the
    old bundle installed, as flashed at the factory; board 2 with the new one)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: builds network namespaces with ip netns")
    for tool, pkg in (("dbus-daemon", "dbus"), ("avahi-daemon", "avahi-daemon"),
                      ("avahi-browse", "avahi-utils")):
        require(tool, pkg)
    ns = board_lan.build(f"e2e{os.getpid() % 10000}", CTRL_IP, {"b1": B1_IP, "b2": B2_IP})
    procs: list[board_lan.Proc] = []
    try:
        data = tmp_path / "ctl"
        cfg = board_lan.controller_config(tmp_path / "branch.toml", branch=BRANCH,
                                          ctrl_ip=CTRL_IP, data=data)
        env = await board_lan.start_avahi(procs, ns["ctrl"], tmp_path, ns["br"])
        ctl = await board_lan.start_controller(procs, ns["ctrl"], SIPMESH, cfg)
        old, new = tmp_path / "bundle-1", tmp_path / "bundle-2"
        for out, version in ((old, "1.0-factory"), (new, "1.1")):
            built = sipmesh("board", "build", "--kind", "unix", "--out", str(out),
                            "--version", version, "--json")
            assert built.returncode == 0, built.stderr
        boards = {}
        for key, bid, ip, bundle in (("b1", B1, B1_IP, old), ("b2", B2, B2_IP, new)):
            pty = tmp_path / f"{key}.pty"
            sim = await board_lan.start(
                procs, key, ns[key], SIPMESH, "board", "sim", "--root", str(tmp_path / key),
                "--pty", str(pty), "--id", bid, "--ip", ip, "--heap", HEAP,
                "--bundle", str(bundle))
            await sim.line(f"board {bid} on")
            boards[key] = (sim, pty)
        yield {"ns": ns, "cfg": cfg, "data": data, "ctl": ctl, "avahi_env": env,
               "boards": boards, "new_bundle": new, "tmp": tmp_path}
        for key, (_, pty) in boards.items():
            # The board's own log (its serial `logs`), for a failure's report.
            try:
                logs = sipmesh("board", "logs", "--port", str(pty), timeout=30)
                print(f"--- {key} log ---", logs.stdout, logs.stderr, sep="\n")
            except subprocess.TimeoutExpired:
                print(f"--- {key} log: no answer ---")
    finally:
        for p in reversed(procs):
            await p.close()
        for p in procs:
            print(await p.tail())
        board_lan.remove(ns)


def board(cfg: Path, board_id: str) -> dict:
    for b in sipmesh_json("boards", "--config", str(cfg))["boards"]:
        if b["id"] == board_id:
            return b
    return {}


async def push(site: dict, ip: str, body: bytes, name: str) -> str:
    path = site["tmp"] / f"{name}.cose"
    path.write_bytes(body)
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", site["ns"]["ctrl"], sys.executable, "-c", PUSH, ip, "7381",
        str(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return out.decode()


def signed(key_seed: bytes, payload: bytes) -> bytes:
    import nacl.signing

    from sipmesh.proto import cose

    signer = nacl.signing.SigningKey(key_seed)
    return cose.encode_sign1(payload, lambda tbs: signer.sign(tbs).signature,
                             kid=cose.key_id(signer.verify_key.encode()))


async def test_board_provisioned_deployed_then_configured_over_the_lan(site) -> None:
    cfg, ctl = site["cfg"], site["ctl"]
    sim1, pty1 = site["boards"]["b1"]

    # Both boards announce themselves; the controller's zeroconf browser finds them.
    for bid in (B1, B2):
        if not any(f"boards: {bid} discovered" in ln for ln in ctl.seen):
            await ctl.line(f"boards: {bid} discovered")

    provisioned = sipmesh("board", "provision", "--port", str(pty1), "--name", "door-1",
                          "--config", str(cfg), "--json")
    assert provisioned.returncode == 0, provisioned.stdout + provisioned.stderr
    result = json.loads(provisioned.stdout.splitlines()[-1])
    assert result["id"] == B1 and result["name"] == "door-1"

    deployed = sipmesh("board", "deploy", "--port", str(pty1), "--kind", "unix", "--bundle",
                       str(site["new_bundle"]), "--json")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    report = json.loads(deployed.stdout.splitlines()[-1])
    # The running agent handed the line over; mpremote compared hashes (the code
    # is the same, only the bundle version differs) and wrote the new manifest.
    assert report["ok"] and report["serial"] == "agent", report

    # No serial byte from here on: the LAN does the rest. The reset after the
    # deploy says goodbye (RFC 6762 §10.1); the new firmware comes back online.
    # Back online and the new version announced: two lines in either order.
    mark = len(ctl.seen)
    for text, wait in ((f"boards: {B1} lost -> online", 180), ("fw=1.0-factory -> 1.1", 60)):
        if not any(text in seen for seen in ctl.seen[mark:]):
            await ctl.line(text, timeout=wait)
    b1 = board(cfg, B1)
    assert b1["state"] == "online" and b1["name"] == "door-1"
    assert b1["fw"] == "1.1", b1
    assert b1["cfg"]["confirmed"] == b1["cfg"]["seq"] >= 1, b1
    history = sipmesh_json("boards", "history", B1, "--config", str(cfg))["history"]
    states = [h["detail"].split(":")[0] for h in history if h["event"] == "state"]
    assert history[0]["event"] == "discovered", history  # first seen on mDNS
    assert any("-> provisioned" in s for s in states), states
    assert states[-1].endswith("-> online"), states
    assert board(cfg, B2)["state"] == "discovered"

    # The device record is in the overlay, signed by the board.
    fetched = sipmesh_json("overlay", "fetch", f"door-1@{OVERLAY}", "--kind",
                           str(KIND_DEVICE_RECORD), "--data", str(site["data"]))
    from sipmesh.proto import device_record

    [value] = fetched["values"]
    record = device_record.decode(bytes.fromhex(value["value_hex"]))
    assert record["aor"] == f"sip:door-1@{BRANCH}.sipmesh", record
    assert record["kind"] == "unix" and record["fw"] == "1.1"
    assert any(a.startswith(B1_IP + ":") for a in record["addrs"]), record

    # avahi, an mDNS implementation we did not write, lists both boards.
    found: dict[str, dict] = {}
    for _ in range(10):
        for fields in await board_lan.avahi_browse(site["ns"]["ctrl"], site["avahi_env"],
                                                   "_sipmesh-board._tcp"):
            found[fields[3]] = {"ip": fields[7], "port": fields[8],
                                "txt": board_lan.txt_of(fields[9])}
        if {B1, B2} <= set(found) and found[B1]["txt"].get("state") == "configured":
            break
        await ctl.line("boards: ", timeout=30)  # let another announcement round pass
    assert found[B1]["ip"] == B1_IP and found[B1]["port"] == "7381"
    assert found[B1]["txt"]["id"] == B1 and found[B1]["txt"]["kind"] == "unix"
    assert found[B1]["txt"]["name"] == "door-1"
    assert found[B1]["txt"]["cfg"] == str(b1["cfg"]["seq"])
    assert found[B2]["txt"]["state"] == "unprovisioned"


async def test_lan_configurations_that_must_be_refused(site) -> None:
    import nacl.signing

    from sipmesh.proto import boardcfg

    cfg, ctl = site["cfg"], site["ctl"]
    sim1, pty1 = site["boards"]["b1"]
    provisioned = sipmesh("board", "provision", "--port", str(pty1), "--name", "door-1",
                          "--config", str(cfg), "--json")
    assert provisioned.returncode == 0, provisioned.stdout + provisioned.stderr
    await ctl.line(f"boards: {B1} provisioned -> online", timeout=180)
    seq = board(cfg, B1)["cfg"]["seq"]

    key = (site["data"] / "boards-key").read_bytes()
    controller_seed = key[:32] if len(key) in (32, 64) else None
    assert controller_seed is not None, "the controller's board key file holds its seed"

    def payload(board_id: str, n: int) -> bytes:
        return boardcfg.make(board_id, n, "door-1", f"sip:door-1@{BRANCH}.sipmesh",
                             {"host": CTRL_IP, "port": 7380},
                             {"host": CTRL_IP, "port": 6085, "name": OVERLAY,
                              "kind": KIND_DEVICE_RECORD},
                             {"heartbeat": 2, "pull": 4, "refresh": 8})

    stranger = nacl.signing.SigningKey.generate().encode()
    cases = {
        "another key": (B1_IP, signed(stranger, payload(B1, seq + 5)), "signature"),
        "replayed": (B1_IP, signed(controller_seed, payload(B1, seq)), "not newer"),
        "another board": (B1_IP, signed(controller_seed, payload(B2, seq + 6)), "another"),
        "unprovisioned": (B2_IP, signed(controller_seed, payload(B2, 1)), "provisioned"),
    }
    for name, (ip, body, reason) in cases.items():
        answer = await push(site, ip, body, name.replace(" ", "-"))
        assert answer.startswith("HTTP/1.1 403"), (name, answer)
        assert reason in answer, (name, answer)

    # Board 1 keeps its configuration and keeps working: fresh heartbeats arrive
    # (every 2 s; polled with a deadline, the registry has no event to wait on).
    before = board(cfg, B1)
    deadline = asyncio.get_running_loop().time() + 60
    after = before
    while after["heartbeat"]["n"] < before["heartbeat"]["n"] + 2:
        assert asyncio.get_running_loop().time() < deadline, after
        await asyncio.sleep(0.5)
        after = board(cfg, B1)
    assert after["state"] == "online"
    assert after["cfg"]["confirmed"] == before["cfg"]["confirmed"] == seq
    # A genuine newer configuration is still accepted.
    answer = await push(site, B1_IP, signed(controller_seed, payload(B1, seq + 10)), "good")
    assert answer.startswith("HTTP/1.1 204"), answer
