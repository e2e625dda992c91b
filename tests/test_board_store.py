"""The board's configuration store survives SIGKILL at every step of a write.

Runs firmware/fw_store.py on the MicroPython unix port. A driver writes a
configuration (or provisions an identity) with SIPMESH_CRASH_AT naming a
step; the store prints ``CRASHPOINT`` and blocks, the test kills the process
with SIGKILL (a real kill, nothing flushed or cleaned up), then boots the
store again: it must come up with the old or the new configuration, never
with none or a broken one. Configurations are signed on CPython with pynacl.
The last test checks the acceptance rules of a LAN push through the app
(unprovisioned, garbage, another key, another board, replay).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from test_board_agent import BID, CTRL, board_lib, signed

from sipmesh.boards import unixport
from sipmesh.proto import cbor

pytestmark = pytest.mark.micropython

DRIVER = r'''
import sys, fw_store
from sipmesh.proto import cbor
st = fw_store.Store(sys.argv[1], sys.argv[2])
print("STATE", st.load(), st.seq)
op = sys.argv[3]
if op == "set":
    st.set_config(open(sys.argv[4], "rb").read())
elif op == "provision":
    st.provision(cbor.loads(open(sys.argv[4], "rb").read()), open(sys.argv[5], "rb").read())
print("DONE", st.state(), st.seq)
'''
STEPS = ["tmp-partial", "tmp-written", "old-renamed", "new-renamed", "done"]


def identity(key: SigningKey = CTRL) -> dict:
    return {"id": BID, "seed": bytes(32), "pub": bytes(range(32)), "cert": b"\x30\x00",
            "controller_key": bytes(key.verify_key), "ca_key": bytes(32), "hb_key": bytes(32)}


def run(tmp: Path, *args: str, crash: str | None = None) -> str:
    """Run the driver; with crash, SIGKILL it at the crash point (or let a write
    that never reaches that step, such as old-renamed on a fresh board, finish)."""
    lib = board_lib(tmp / "lib")
    (tmp / "driver.py").write_text(DRIVER)
    env = unixport.environment([Path(".frozen"), lib])
    env.pop("SIPMESH_CRASH_AT", None)
    if crash:
        env["SIPMESH_CRASH_AT"] = crash
    proc = subprocess.Popen(
        unixport.command([str(tmp / "driver.py"), str(tmp / "data"), BID, *args], heapsize="120K"),
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if crash:
        assert proc.stderr is not None
        killed = False
        for line in proc.stderr:
            if line.startswith("CRASHPOINT"):
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
        proc.wait(timeout=60)
        assert proc.returncode == (-signal.SIGKILL if killed else 0)
        return "killed" if killed else "finished"
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    return out


def state(tmp: Path) -> str:
    return run(tmp, "none").splitlines()[0]


def files(tmp: Path, **blobs: bytes) -> list[str]:
    for name, data in blobs.items():
        (tmp / name).write_bytes(data)
    return [str(tmp / n) for n in blobs]


@pytest.mark.parametrize("step", STEPS)
def test_kill_during_a_config_write_keeps_old_or_new(tmp_path: Path, step: str) -> None:
    (tmp_path / "data").mkdir()
    run(tmp_path, "provision", *files(tmp_path, ident=cbor.dumps(identity()), c3=signed(3)))
    assert state(tmp_path) == "STATE configured 3"
    assert run(tmp_path, "set", *files(tmp_path, c4=signed(4)), crash="config:" + step) == \
        "killed"
    after = state(tmp_path)
    assert after in ("STATE configured 3", "STATE configured 4"), after
    if step in ("new-renamed", "done"):
        assert after == "STATE configured 4"
    # The board still takes the next configuration.
    assert run(tmp_path, "set", *files(tmp_path, c5=signed(5))).splitlines()[-1] == \
        "DONE configured 5"


@pytest.mark.parametrize("step", STEPS)
def test_kill_during_first_provisioning(tmp_path: Path, step: str) -> None:
    (tmp_path / "data").mkdir()
    ident, c3 = files(tmp_path, ident=cbor.dumps(identity()), c3=signed(3))
    how = run(tmp_path, "provision", ident, c3, crash="identity:" + step)
    assert how == ("finished" if step == "old-renamed" else "killed")
    after = state(tmp_path)
    if how == "finished":
        assert after == "STATE configured 3"
    elif step == "tmp-partial":
        assert after == "STATE unprovisioned 0", after
    else:
        # A complete identity.cbor.tmp with no identity.cbor is the new file, finished at boot.
        assert after == "STATE provisioned 0", after
    run(tmp_path, "provision", ident, c3)
    assert state(tmp_path) == "STATE configured 3"


@pytest.mark.parametrize("step", STEPS)
def test_kill_during_reprovisioning(tmp_path: Path, step: str) -> None:
    (tmp_path / "data").mkdir()
    ident, c3, c4, c5 = files(tmp_path, ident=cbor.dumps(identity()), c3=signed(3),
                              c4=signed(4), c5=signed(5))
    run(tmp_path, "provision", ident, c3)
    run(tmp_path, "provision", ident, c4, crash="identity:" + step)
    after = state(tmp_path)
    assert after in ("STATE configured 3", "STATE configured 4"), after
    run(tmp_path, "provision", ident, c5)
    assert state(tmp_path) == "STATE configured 5"


def test_garbage_config_at_boot_falls_back(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    run(tmp_path, "provision", *files(tmp_path, ident=cbor.dumps(identity()), c3=signed(3)))
    run(tmp_path, "set", *files(tmp_path, c4=signed(4)), crash="config:old-renamed")
    # config.cbor.old (seq 3) and config.cbor.tmp (seq 4) exist; damage the tmp.
    (tmp_path / "data" / "config.cbor.tmp").write_bytes(b"\xa1garbage")
    proc = subprocess.run(
        unixport.command([str(tmp_path / "driver.py"), str(tmp_path / "data"), BID, "none"]),
        env=unixport.environment([Path(".frozen"), tmp_path / "lib"]), capture_output=True,
        text=True, timeout=60)
    assert proc.stdout.splitlines()[0] == "STATE configured 3"
    assert "config.cbor.tmp refused" in proc.stderr and "recovered from .old" in proc.stderr


APP_DRIVER = r'''
import sys, asyncio, board, fw_app
from sipmesh.proto import cbor
def rd(p):
    with open(p, "rb") as f:
        return f.read()
async def go():
    app = fw_app.App(board)
    await app.task(app.store.load)
    print("PUSH", (await app.on_push(rd(sys.argv[3])))[0], app.store.state())
    await app.task(app.store.provision, cbor.loads(rd(sys.argv[1])), rd(sys.argv[2]))
    for p in sys.argv[3:]:
        status, reason = await app.on_push(rd(p))
        print("PUSH", status, reason, app.store.seq)
asyncio.run(go())
'''


def test_lan_push_acceptance_rules(tmp_path: Path) -> None:
    """What fw_lan's push listener answers, decided by fw_app.App.on_push."""
    (tmp_path / "data").mkdir()
    lib = board_lib(tmp_path / "lib")
    (tmp_path / "app.py").write_text(APP_DRIVER)
    other = SigningKey(bytes(range(90, 122)))
    args = files(tmp_path, ident=cbor.dumps(identity()), c3=signed(3), c5=signed(5),
                 garbage=b"GET / HTTP/1.1\r\n", other_key=signed(9, other),
                 other_board=signed(9, board="sm-ffffffffffff"), replay=signed(2),
                 same=signed(5), c6=signed(6))
    env = unixport.environment([Path(".frozen"), lib])
    env.update(SIPMESH_BOARD_ID=BID, SIPMESH_DATA=str(tmp_path / "data"))
    proc = subprocess.run(unixport.command([str(tmp_path / "app.py"), *args], heapsize="120K"),
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        "PUSH 403 unprovisioned",
        "PUSH 204  5",
        "PUSH 400 body is not CBOR 5",
        "PUSH 403 bad signature 5",
        "PUSH 403 for another board 5",
        "PUSH 403 not newer 5",
        "PUSH 403 not newer 5",
        "PUSH 204  6",
    ]
