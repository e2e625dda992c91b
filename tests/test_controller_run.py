"""`sipmesh run` (what `make run` starts): embedded config, logs, clean stop on Ctrl-C."""

from __future__ import annotations

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
        assert (tmp_path / ".sipmesh").is_dir()
        proc.send_signal(sig)
        rest = proc.communicate(timeout=30)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    assert "stopped" in rest
    assert "Traceback" not in log + rest


def test_run_with_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "branch.toml"
    cfg.write_text('[controller]\nbranch = "lyon-2"\ndata_dir = "state"\n')
    proc = _start(tmp_path, "--config", str(cfg))
    try:
        log = "".join(_read_until(proc, "controller ready"))
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "branch 'lyon-2'" in log and str(cfg) in log
    assert (tmp_path / "state").is_dir()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[controller]\nbranche = 'x'\n", "unknown key(s) in [controller]: branche"),
        ("[sip]\n", "unknown section(s): sip"),
        ("[controller]\nlog_level = 'loud'\n", "log_level must be one of"),
        ("[controller\n", "branch.toml"),
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
