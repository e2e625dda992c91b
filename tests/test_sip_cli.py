"""`sipmesh sip listen|options|call` against each other, as an administrator runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SIPMESH = str(Path(sys.executable).parent / "sipmesh")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def listener():
    port = free_port()
    proc = subprocess.Popen([SIPMESH, "sip", "listen", "--port", str(port), "--user", "desk"],
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if "listening on" in line:
            break
    else:
        pytest.fail("listen did not start:\n" + "".join(lines))
    yield port, proc, lines
    proc.kill()
    proc.wait()


def test_options_ping(listener) -> None:
    port, _, _ = listener
    out = subprocess.run([SIPMESH, "sip", "options", f"sip:desk@127.0.0.1:{port}", "--count",
                          "2", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert [r["status"] for r in results] == [200, 200]
    assert all(r["ms"] > 0 for r in results)
    assert "INVITE" in results[0]["allow"] and "OPTIONS" in results[0]["allow"]


def test_call_and_listen_log(listener) -> None:
    port, proc, lines = listener
    out = subprocess.run([SIPMESH, "sip", "call", f"sip:desk@127.0.0.1:{port}", "--duration",
                          "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    printed = out.stdout.splitlines()
    assert printed[0] == f"> INVITE sip:desk@127.0.0.1:{port}"
    assert printed[1].startswith("< 180 Ringing in ")
    assert printed[2].startswith("< 200 OK in ")
    assert printed[3:] == ["> ACK", "> BYE", "< 200 OK"]
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=30)[1]
    log = "".join(lines) + rest
    assert "INVITE from" in log and "call ended" in log
    assert "answering 1 calls" in log
    assert proc.returncode == 0


def test_options_to_a_closed_tcp_port_is_a_transport_error() -> None:
    """Nothing listens: the connection is refused, reported as 503 (§8.1.3.1), exit 1."""
    port = free_port()
    out = subprocess.run([SIPMESH, "sip", "options", f"sip:127.0.0.1:{port};transport=tcp"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "503" in out.stdout  # TCP connection refused: a transport error (§8.1.3.1)
