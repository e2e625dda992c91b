"""`sipmesh board build` and `sipmesh board flash`: bundles, esptool and UF2 plans, real failures.

Builds are checked against what a board loads (the .mpy header of the
board's bytecode version, a manifest whose hashes match the files, the
same bytes on every build, and the unix bundle importing under real
MicroPython). Flashing is checked with the real esptool: no board exists
here, so a real run against a PTY with nothing behind it must end with
esptool's own "No serial data received" and a non-zero exit, never a
Python traceback.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from judges import require

from sipmesh import cli
from sipmesh.boards import boardkind, bundle, flash, unixport

KINDS = ["unix", "esp32", "rp2040-w"]


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("kind", KINDS)
def test_build_lays_out_the_board_filesystem_with_a_true_manifest(
    kind: str, tmp_path: Path
) -> None:
    m = bundle.build(kind, tmp_path / "b")
    root = boardkind.source_root()
    fw = sorted(p.stem for p in (root / "firmware").glob("fw_*.py"))
    proto = sorted(p.stem for p in bundle.proto_dir(root).glob("*.py"))
    assert set(m.files) == (
        {"/main.py", "/lib/board.mpy"}
        | {f"/lib/{n}.mpy" for n in fw}
        | {f"/lib/sipmesh/proto/{n}.mpy" for n in proto}
    )
    on_disk = {"/" + str(p.relative_to(m.root)) for p in m.root.rglob("*") if p.is_file()}
    assert on_disk == set(m.files) | {"/manifest.json"}
    for board_path, digest in m.files.items():
        data = m.local(board_path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, board_path
        if board_path.endswith(".mpy"):
            # .mpy 6.3: b"M", major 6, flags (0 = bytecode only, any 6.x VM).
            assert data[:2] == b"M\x06", board_path
            assert data[2] in (0, (data[2] & ~3) | 3), board_path
    assert m.local("/main.py").read_bytes() == (root / "firmware" / "main.py").read_bytes()
    doc = json.loads((m.root / "manifest.json").read_bytes())
    assert doc["kind"] == kind and doc["mpy"] == "6.3" and doc["files"] == m.files
    assert m.total_bytes == sum(p.stat().st_size for p in m.root.rglob("*") if p.is_file())


def test_build_is_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = boardkind.source_root()
    for part in ("boards", "firmware", "shared/proto"):
        shutil.copytree(src / part, tmp_path / "src" / part)
    monkeypatch.setenv(boardkind.SOURCE_ENV, str(tmp_path / "src"))
    a = bundle.build("esp32", tmp_path / "a")
    b = bundle.build("esp32", tmp_path / "b")
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (
        tmp_path / "b" / "manifest.json").read_bytes()
    for p in a.files:
        assert a.local(p).read_bytes() == b.local(p).read_bytes()
    # Build paths never leak into the bytecode.
    assert not any(str(tmp_path).encode() in a.local(p).read_bytes() for p in a.files)
    # Rebuilding in place replaces the old bundle.
    c = bundle.build("esp32", tmp_path / "a", version="7")
    assert c.version == "7" and bundle.load(tmp_path / "a").version == "7"


def test_unix_bundle_imports_under_micropython(tmp_path: Path) -> None:
    m = bundle.build("unix", tmp_path / "b")
    done = unixport.run(
        ["-c", "import board, sipmesh.proto.cbor as c, sipmesh.proto.frame as f;"
               "print(board.KIND, c.loads(c.dumps([1, 'x'])), f.MAX_FRAME)"],
        [m.root / "lib"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["unix", "[1,", "'x']", "8192"]


def test_mpy_header_check_refuses_other_versions() -> None:
    bundle.check_mpy_header(b"M\x06\x00\x1f", "6.3")
    bundle.check_mpy_header(b"M\x06\x2b\x1f", "6.3")  # native xtensawin, sub-version 3
    for bad in (b"M\x05\x00\x1f", b"C\x06\x00\x1f", b"M\x06\x2a\x1f"):
        with pytest.raises(bundle.BuildError):
            bundle.check_mpy_header(bad, "6.3")


def test_build_refuses_to_overwrite_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(bundle.BuildError, match="not a bundle"):
        bundle.build("unix", tmp_path / "b")
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"


def test_build_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run_cli(["board", "build", "--kind", "rp2040-w", "--out",
                             str(tmp_path / "b"), "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["ok"] and doc["kind"] == "rp2040-w" and doc["mpy"] == "6.3"
    assert doc["files"] == len(bundle.load(tmp_path / "b").files)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "ESP32_GENERIC-v1.24.1.bin"
    path.write_bytes(bytes(range(256)) * 64)
    return path


def test_esp32_dry_run_prints_the_esptool_commands(
    image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run_cli(["board", "flash", "--kind", "esp32", "--image", str(image),
                             "--port", "/dev/ttyUSB0", "--dry-run"], capsys)
    assert code == 0
    base = f"{sys.executable} -m esptool --chip esp32 --port /dev/ttyUSB0 --baud 460800"
    assert out.splitlines() == [f"{base} erase-flash", f"{base} write-flash 0x1000 {image}"]

    code, out, _ = _run_cli(["board", "flash", "--kind", "esp32", "--image", str(image),
                             "--port", "/dev/ttyUSB0", "--baud", "115200", "--dry-run",
                             "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["dry_run"]
    assert doc["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert doc["commands"][1][-3:] == ["write-flash", "0x1000", str(image)]
    assert doc["commands"][0][doc["commands"][0].index("--baud") + 1] == "115200"


def test_the_esptool_syntax_is_what_esptool_accepts(image: Path) -> None:
    # esptool's own parser must accept every command (an unknown option or
    # command would exit 2 with "No such option" / "No such command"); --help
    # after the command stops before any port is opened.
    erase, write = flash.plan("esp32", image, port="/dev/ttyUSB0")
    assert write[-3:] == ["write-flash", "0x1000", str(image)]
    for cmd in (erase, write[:-2]):
        done = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Usage:" in done.stdout


def _pinned_source(tmp_path: Path, sha: str) -> Path:
    src = boardkind.source_root()
    root = tmp_path / "src"
    shutil.copytree(src / "boards", root / "boards")
    toml = root / "boards" / "esp32" / "board.toml"
    text = re.sub(r'(?m)^sha256 = .*$', f'sha256 = "{sha}"', toml.read_text())
    assert sha in text
    toml.write_text(text)
    return root


def test_image_hash_mismatch_is_refused(
    image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(boardkind.SOURCE_ENV, str(_pinned_source(tmp_path, "ab" * 32)))
    code, out, err = _run_cli(["board", "flash", "--kind", "esp32", "--image", str(image),
                               "--port", "/dev/ttyUSB0", "--dry-run"], capsys)
    assert code == 2 and out == ""
    assert "sha256" in err and "refusing" in err and "Traceback" not in err

    good = hashlib.sha256(image.read_bytes()).hexdigest()
    monkeypatch.setenv(boardkind.SOURCE_ENV, str(_pinned_source(tmp_path / "g", good)))
    code, out, _ = _run_cli(["board", "flash", "--kind", "esp32", "--image", str(image),
                             "--dry-run"], capsys)
    assert code == 0 and "erase-flash" in out and "--port" not in out


@pytest.fixture
def uf2(tmp_path: Path) -> tuple[Path, Path]:
    drive = tmp_path / "RPI-RP2"
    drive.mkdir()
    (drive / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\n")
    img = tmp_path / "RPI_PICO_W-v1.24.1.uf2"
    img.write_bytes(b"UF2\n" + bytes(range(256)) * 8)
    return img, drive


def test_rp2040_dry_run_and_copy(
    uf2: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    img, drive = uf2
    args = ["board", "flash", "--kind", "rp2040-w", "--image", str(img), "--drive", str(drive)]
    code, out, _ = _run_cli(args + ["--dry-run"], capsys)
    assert code == 0
    assert out.splitlines() == [f"cp {img} {drive / img.name}"]
    assert not (drive / img.name).exists()

    code, out, _ = _run_cli(args, capsys)
    assert code == 0, out
    assert (drive / img.name).read_bytes() == img.read_bytes()


def test_rp2040_needs_a_uf2_drive(uf2: tuple[Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    img, _ = uf2
    empty = tmp_path / "not-a-drive"
    empty.mkdir()
    code, _, err = _run_cli(["board", "flash", "--kind", "rp2040-w", "--image", str(img),
                             "--drive", str(empty)], capsys)
    assert code == 2 and "INFO_UF2.TXT" in err
    assert list(empty.iterdir()) == []
    code, _, err = _run_cli(["board", "flash", "--kind", "rp2040-w", "--image", str(img)], capsys)
    assert code == 2 and "--drive" in err
    code, _, err = _run_cli(["board", "flash", "--kind", "unix", "--image", str(img)], capsys)
    assert code == 2 and "not flashed" in err


@pytest.fixture
def silent_pty(tmp_path: Path) -> Iterator[Path]:
    """One end of a socat PTY pair with nothing on the other end: a port with no board."""
    socat = require("socat")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "starting data transfer loop" in line:
                break
        assert a.exists()
        yield a
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_real_esptool_flash_without_a_board_fails_cleanly(image: Path, silent_pty: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sipmesh.cli", "board", "flash", "--kind", "esp32",
         "--image", str(image), "--port", str(silent_pty)],
        capture_output=True, text=True, timeout=120,
    )
    both = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in both
    assert "esptool" in done.stdout  # esptool's own output was streamed
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("sipmesh board: flash failed:")
    assert "No serial data received" in last
