"""`sipmesh run` (what `make run` starts): embedded config, logs, clean stop on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SIPMESH = str(Path(sys.executable).parent / "sipmesh")


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SIPMESH, "run", *args], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def _read_until(proc: subprocess.Popen[str], marker: str) -> list[str]:
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:  # ends at EOF if the process dies
        lines.append(line)
        if marker in line:
            return lines
    pytest.fail("no {!r} in controller log:\n{}".format(marker, "".join(lines)))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_with_embedded_default_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    proc = _start(tmp_path)
    try:
        log = "".join(_read_until(proc, "controller ready"))
        assert "config: embedded default" in log
        assert "branch 'demo'" in log
        assert "listening on tcp 127.0.0.1:5060, udp 127.0.0.1:5060" in log
        assert (tmp_path / ".sipmesh").is_dir()
        # The demo controller answers a SIP ping on loopback.
        ping = subprocess.run([SIPMESH, "sip", "options", "sip:controller@127.0.0.1:5060"],
                              capture_output=True, text=True, timeout=60)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert "200 OK" in ping.stdout and "sipmesh/" in ping.stdout
        # The demo overlay peer (a ring of one, TLS on 127.0.0.1:6084) answers
        # the CLI from another process through its control socket.
        ring = subprocess.run([SIPMESH, "overlay", "ring", "--json"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert ring.returncode == 0, ring.stderr
        view = json.loads(ring.stdout)
        assert view["joined"] and view["address"] == "127.0.0.1:6084"
        assert view["overlay"] == "demo.demo.sipmesh" and len(view["node_id"]) == 32
        assert "(TLS), a ring of one" in log
        proc.send_signal(sig)
        rest = proc.communicate(timeout=30)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    assert "stopped" in rest
    assert "Traceback" not in log + rest
    assert not (tmp_path / ".sipmesh" / "overlay.sock").exists()


def test_run_with_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "branch.toml"
    cfg.write_text('[controller]\nbranch = "lyon-2"\ndata_dir = "state"\n'
                   '[sip]\nlisten = ["udp:127.0.0.1:0"]\n')
    proc = _start(tmp_path, "--config", str(cfg))
    try:
        log = "".join(_read_until(proc, "controller ready"))
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "branch 'lyon-2'" in log and str(cfg) in log
    assert (tmp_path / "state").is_dir()
    assert "listening on udp 127.0.0.1:" in log and "tcp" not in log.split("listening on")[1]


def test_no_sip_listen_means_nothing_listens(tmp_path: Path) -> None:
    cfg = tmp_path / "quiet.toml"
    cfg.write_text("[sip]\nlisten = []\n")
    proc = _start(tmp_path, "--config", str(cfg))
    try:
        log = "".join(_read_until(proc, "controller ready"))
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "SIP: no listen address configured, not started" in log


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[controller]\nbranche = 'x'\n", "unknown key(s) in [controller]: branche"),
        ("[sipp]\n", "unknown section(s): sipp"),
        ("[controller]\nlog_level = 'loud'\n", "log_level must be one of"),
        ("[controller\n", "branch.toml"),
        ("[sip]\nlisten = [\"sctp:127.0.0.1:5060\"]\n", "is not \"udp|tcp:HOST:PORT\""),
        ("[sip]\nlisten = [\"tls:127.0.0.1:5061\"]\n", "TLS needs a certificate"),
        ("[sip]\nport = 5060\n", "unknown key(s) in [sip]: port"),
        ("[overlay]\nbootstrap_peers = []\n", "unknown key(s) in [overlay]: bootstrap_peers"),
        ("[overlay]\nlisten = \"6084\"\n", "overlay.listen '6084' is not \"HOST:PORT\""),
        ("[overlay]\nbootstrap = [\"h:99999\"]\n", "overlay.bootstrap 'h:99999'"),
        ("[overlay]\nfirst = \"yes\"\n", "overlay.first must be true or false"),
        ("[overlay]\nenabled = true\n", "[overlay] needs demo = true, or enroll_url"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "branch.toml"
    cfg.write_text(text)
    out = subprocess.run([SIPMESH, "run", "--config", str(cfg)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_config_default_prints_the_embedded_file() -> None:
    out = subprocess.run([SIPMESH, "config", "--default"], capture_output=True, text=True,
                         check=True)
    assert 'branch = "demo"' in out.stdout
