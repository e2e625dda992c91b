"""`sipmesh overlay ...` with real processes: an enrollment server, two peers
that enroll with it (RFC 6940 §11.3) and form a ring over TLS links, and
the CLI storing, fetching and inspecting through each peer's control socket.

Readiness and ring formation are awaited by polling the control socket
with a deadline (a peer is ready when its socket answers); nothing waits a
fixed time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from judges import self_signed_cert

SIPMESH = str(Path(sys.executable).parent / "sipmesh")
OVERLAY = "branches.sipmesh.test"
KIND_SIP_REGISTRATION = 1
KIND_NOTE = 0xF0000001
USERS = ("lyon@branches.example", "nantes@branches.example")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sipmesh(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIPMESH, *args], capture_output=True, text=True, timeout=timeout)


def ring(data: Path) -> dict:
    out = sipmesh("overlay", "ring", "--json", "--data", str(data))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


class Processes:
    """Started processes, killed at teardown; their stderr goes to files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, *args: str, env: dict | None = None) -> subprocess.Popen:
        log = self.folder / f"{name}.log"
        with open(log, "w") as f:
            proc = subprocess.Popen([SIPMESH, *args], stdout=f, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
        self.procs.append((proc, log))
        return proc

    def log(self, proc: subprocess.Popen) -> str:
        return next(log for p, log in self.procs if p is proc).read_text()

    def wait_until(self, proc: subprocess.Popen, ready: Callable[[], bool],
                   timeout: float = 60) -> None:
        """Poll ``ready()`` until it holds; fail at the deadline or if proc exits."""
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"process exited ({proc.returncode}):\n{self.log(proc)}")
            if time.monotonic() > deadline:
                pytest.fail(f"not ready in {timeout} s:\n{self.log(proc)}")
            time.sleep(0.1)

    def kill_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    yield p
    p.kill_all()


def _answers(data: Path) -> Callable[[], bool]:
    return lambda: sipmesh("overlay", "ring", "--data", str(data)).returncode == 0


def test_ring_with_no_peer_running_exits_3(tmp_path: Path) -> None:
    out = sipmesh("overlay", "ring", "--data", str(tmp_path / "none"))
    assert out.returncode == 3
    assert "no running overlay peer" in out.stderr
    assert "sipmesh overlay start --data" in out.stderr
    assert "Traceback" not in out.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    out = sipmesh("overlay", "fetch", "x", "--kind", "1", "--index", "5-2",
                  "--data", str(tmp_path))
    assert out.returncode == 2 and "A <= B" in out.stderr
    out = sipmesh("overlay", "store", "x", "--kind", "1", "--value", "v", "--index", "1",
                  "--key", "k")
    assert out.returncode == 2 and "not allowed with" in out.stderr


def test_config_shows_the_overlay(tmp_path: Path) -> None:
    out = sipmesh("config")
    assert out.returncode == 0
    assert "overlay   peer on 127.0.0.1:6084 (TLS), demo CA" in out.stdout
    conf = tmp_path / "c.toml"
    conf.write_text('[overlay]\nenabled = true\nenroll_url = "https://127.0.0.1:1"\n'
                    'user = "u@x"\npassword_file = "pw"\nbootstrap = ["127.0.0.1:6084"]\n')
    out = sipmesh("config", "--config", str(conf))
    assert "enroll as u@x at https://127.0.0.1:1, bootstrap 127.0.0.1:6084" in out.stdout
    conf.write_text("[sip]\nlisten = []\n")
    assert "overlay   (disabled)" in sipmesh("config", "--config", str(conf)).stdout
    conf.write_text('[overlay]\nenabled = true\ndemo = true\nstun = "stun.example"\n')
    out = sipmesh("config", "--config", str(conf))
    assert out.returncode == 2 and "overlay.stun" in out.stderr


def test_demo_peer_control_socket(tmp_path: Path, procs: Processes) -> None:
    """A one-peer demo ring (no server): the socket is private, bad lines get
    an error and the connection stays usable; SIGTERM stops it cleanly and
    a restart keeps the identity and the stored data."""
    data = tmp_path / "d1"
    args = ("overlay", "start", "--first", "--plain-tcp", "--data", str(data),
            "--listen", "127.0.0.1:0")
    peer = procs.start("demo", *args)
    procs.wait_until(peer, _answers(data))
    sock_path = data / "overlay.sock"
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
    first = ring(data)
    assert first["joined"] and first["successors"] == []
    assert first["overlay"].endswith(".demo.sipmesh")
    user = f"controller@{first['overlay']}"
    out = sipmesh("overlay", "store", user, "--kind", str(KIND_NOTE), "--value", "hello",
                  "--data", str(data))
    assert out.returncode == 0, out.stderr

    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock_path))
        f = s.makefile("rwb")
        for line in (b"not json\n", b'{"op": "teleport"}\n', b"[1]\n",
                     b'{"op": "ping", "node": "zz"}\n'):
            f.write(line)
            f.flush()
            err = json.loads(f.readline())["error"]
            assert err["code"] is None and err["reason"], err
        f.write(b'{"op": "ring"}\n')
        f.flush()
        assert json.loads(f.readline())["node_id"] == first["node_id"]
        f.write(b'{"op": "ring", "pad": "' + b"x" * 70000 + b'"}\n')
        f.flush()
        assert "longer than" in json.loads(f.readline())["error"]["reason"]

    peer.send_signal(signal.SIGTERM)
    assert peer.wait(timeout=30) == 0
    log = procs.log(peer)
    assert "plain TCP" in log and "stopped" in log and "Traceback" not in log
    assert not sock_path.exists()
    assert stat.S_IMODE((data / "overlay" / "enrollment.json").stat().st_mode) == 0o600

    again = procs.start("demo2", *args)
    procs.wait_until(again, _answers(data))
    assert ring(data)["node_id"] == first["node_id"]
    out = sipmesh("overlay", "fetch", user, "--kind", str(KIND_NOTE), "--json",
                  "--data", str(data))
    assert [v["value"] for v in json.loads(out.stdout)["values"]] == ["hello"]


def test_enrolled_peers_form_a_ring_and_store_through_the_cli(
    tmp_path: Path, procs: Processes
) -> None:
    key, cert = self_signed_cert(tmp_path)
    for i in range(len(USERS)):
        (tmp_path / f"pw{i}").write_text(f"secret-{i}\n")
    es_port, p1_port = _free_port(), _free_port()
    server = procs.start(
        "enroll", "overlay", "enrollment-server", "--data", str(tmp_path / "ca"),
        "--overlay", OVERLAY, "--listen", f"127.0.0.1:{es_port}",
        "--tls-cert", str(cert), "--tls-key", str(key),
        "--user", f"{USERS[0]}:{tmp_path / 'pw0'}", "--user", f"{USERS[1]}:{tmp_path / 'pw1'}",
        "--bootstrap", f"127.0.0.1:{p1_port}",
    )
    procs.wait_until(server, lambda: "ready" in procs.log(server))
    datas = [tmp_path / "d1", tmp_path / "d2"]
    peers = []
    for i, user in enumerate(USERS):
        conf = tmp_path / f"peer{i}.toml"
        conf.write_text(
            "[overlay]\n"
            f'enroll_url = "https://127.0.0.1:{es_port}"\n'
            f'user = "{user}"\npassword_file = "{tmp_path / f"pw{i}"}"\n'
        )
        listen = f"127.0.0.1:{p1_port}" if i == 0 else "127.0.0.1:0"
        extra = ["--first"] if i == 0 else []  # the second joins via the document's bootstrap
        peer = procs.start(f"peer{i}", "overlay", "start", "--config", str(conf),
                           "--data", str(datas[i]), "--listen", listen, *extra,
                           env={"SSL_CERT_FILE": str(cert)})
        procs.wait_until(peer, _answers(datas[i]))
        peers.append(peer)
    ids = [ring(d)["node_id"] for d in datas]

    def linked() -> bool:
        a, b = ring(datas[0]), ring(datas[1])
        return (a["successors"][:1] == [ids[1]] and a["predecessors"][:1] == [ids[1]]
                and b["successors"][:1] == [ids[0]] and b["predecessors"][:1] == [ids[0]])

    procs.wait_until(peers[1], linked)
    assert "TLS" in procs.log(peers[0]) and "joined via 127.0.0.1" in procs.log(peers[1])
    text = sipmesh("overlay", "ring", "--data", str(datas[0])).stdout
    assert f"node-id      {ids[0]}" in text and f"successors   {ids[1]}" in text
    assert f"predecessors {ids[1]}" in text and "stored " in text

    # A note stored through the second peer is fetched through the first.
    out = sipmesh("overlay", "store", USERS[1], "--kind", str(KIND_NOTE), "--value", "bonjour",
                  "--data", str(datas[1]))
    assert out.returncode == 0 and "stored kind" in out.stdout, out.stderr
    out = sipmesh("overlay", "fetch", USERS[1], "--kind", str(KIND_NOTE), "--json",
                  "--data", str(datas[0]))
    got = json.loads(out.stdout)
    assert out.returncode == 0 and [v["value"] for v in got["values"]] == ["bonjour"]
    assert got["responder"] in ids
    out = sipmesh("overlay", "fetch", USERS[1], "--kind", str(KIND_NOTE), "--data", str(datas[0]))
    assert f"kind {KIND_NOTE}: bonjour" in out.stdout
    out = sipmesh("overlay", "stat", USERS[1], "--kind", str(KIND_NOTE), "--json",
                  "--data", str(datas[0]))
    meta = json.loads(out.stdout)["values"]
    assert len(meta) == 1 and meta[0]["value_length"] > 0 and meta[0]["hash_hex"]

    # SIP-REGISTRATION (RFC 7904): a dictionary keyed by the storing Node-ID.
    out = sipmesh("overlay", "store", USERS[1], "--kind", str(KIND_SIP_REGISTRATION),
                  "--key", "0x" + ids[1], "--value", "sip:nantes@127.0.0.1",
                  "--data", str(datas[1]))
    assert out.returncode == 0, out.stderr
    out = sipmesh("overlay", "fetch", USERS[1], "--kind", str(KIND_SIP_REGISTRATION),
                  "--key", "0x" + ids[1], "--json", "--data", str(datas[0]))
    (value,) = json.loads(out.stdout)["values"]
    assert value["key_hex"] == ids[1] and value["value"] == "sip:nantes@127.0.0.1"

    # USER-MATCH (§7.3.1): the second peer may not write the first user's resource.
    out = sipmesh("overlay", "store", USERS[0], "--kind", str(KIND_NOTE), "--value", "forged",
                  "--json", "--data", str(datas[1]))
    assert out.returncode == 1
    assert json.loads(out.stdout)["error"]["code"] == 2
    assert "Error_Forbidden" in out.stderr
    out = sipmesh("overlay", "store", USERS[0], "--kind", str(KIND_NOTE), "--value", "forged",
                  "--data", str(datas[1]))
    assert out.returncode == 1 and "Error_Forbidden (2)" in out.stderr

    out = sipmesh("overlay", "ping", ids[0], "--json", "--data", str(datas[1]))
    assert out.returncode == 0 and json.loads(out.stdout)["responder"] == ids[0]

    # Ctrl-C: the second peer leaves (§10.9) and the first sees it go.
    peers[1].send_signal(signal.SIGINT)
    assert peers[1].wait(timeout=30) == 0
    procs.wait_until(peers[0], lambda: ring(datas[0])["successors"] == [])
    assert "Traceback" not in procs.log(peers[0]) + procs.log(peers[1])
