"""Flash a MicroPython firmware image onto a board: esptool (ESP32) or UF2 copy (RP2040).

The image comes from the user (a MicroPython release file); board.toml
pins its sha256, so a wrong or corrupted download is refused before the
board is erased. ``plan`` gives the exact commands, which ``--dry-run``
prints and a real run executes one after the other:

- ESP32 (esptool 5 syntax): ``python -m esptool --chip esp32 --port P
  --baud B erase-flash``, then ``... write-flash 0x1000 IMAGE``.
- RP2040: ``cp IMAGE DRIVE/NAME`` onto the RPI-RP2 mass-storage drive the
  board shows in BOOTSEL mode (recognised by its INFO_UF2.TXT); the board
  flashes and reboots itself once the file is written.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

from sipmesh.boards import boardkind

UF2_MARKER = "INFO_UF2.TXT"
DEFAULT_BAUD = 460800


class FlashError(RuntimeError):
    """The one error of flashing; ``exit_code`` is what the command exits with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def image_sha256(image: Path) -> str:
    """sha256 hex of an image file; FlashError (exit 2) when it cannot be read."""
    try:
        return hashlib.sha256(Path(image).read_bytes()).hexdigest()
    except OSError as e:
        raise FlashError(f"cannot read image {image}: {e.strerror}", 2) from None


def check_image(kind: boardkind.BoardKind, image: Path) -> str:
    """The image's sha256, refused (exit 2) when board.toml pins another one."""
    digest = image_sha256(image)
    if kind.image_sha256 and digest != kind.image_sha256:
        want = kind.image_name or "the image board.toml names"
        raise FlashError(
            f"image {image} has sha256 {digest}, board kind {kind.kind} expects {want} "
            f"with sha256 {kind.image_sha256}: refusing to flash it", 2)
    return digest


def plan(
    kind: str | boardkind.BoardKind,
    image: Path | str,
    port: str | None = None,
    baud: int | None = None,
    drive: Path | str | None = None,
) -> list[list[str]]:
    """The exact commands that flash image onto a board of this kind.

    Without ``port`` esptool finds the port itself. RP2040 needs ``drive``,
    the mounted RPI-RP2 folder (it must hold INFO_UF2.TXT).
    """
    bk = kind if isinstance(kind, boardkind.BoardKind) else boardkind.load(kind)
    image = str(image)
    if bk.flash_method == "esptool":
        if bk.offset is None:
            raise FlashError(f"board.toml of {bk.kind} gives no flash offset", 2)
        base = [sys.executable, "-m", "esptool", "--chip", bk.chip or "auto"]
        if port:
            base += ["--port", port]
        base += ["--baud", str(baud or bk.baud or DEFAULT_BAUD)]
        return [base + ["erase-flash"], base + ["write-flash", hex(bk.offset), image]]
    if bk.flash_method == "uf2":
        if not image.lower().endswith(".uf2"):
            raise FlashError(f"{image} is not a .uf2 file", 2)
        if drive is None:
            raise FlashError("UF2 flashing needs --drive: the mounted RPI-RP2 folder", 2)
        if not (Path(drive) / UF2_MARKER).is_file():
            raise FlashError(f"{drive} is not a UF2 bootloader drive (no {UF2_MARKER}); "
                             "hold BOOTSEL while plugging the board in", 2)
        return [["cp", image, str(Path(drive) / Path(image).name)]]
    raise FlashError(f"board kind {bk.kind} is not flashed (flash method {bk.flash_method})", 2)


def format_plan(commands: list[list[str]]) -> str:
    """One shell-quoted line per command, as --dry-run prints them."""
    return "".join(shlex.join(c) + "\n" for c in commands)


def _stream(cmd: list[str], out: BinaryIO) -> tuple[int, str]:
    # Pass the tool's own output (progress included) through as it comes,
    # keeping the last non-empty line for the error message.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    tail = b""
    while chunk := os.read(proc.stdout.fileno(), 4096):
        out.write(chunk)
        out.flush()
        tail = (tail + chunk)[-8192:]
    proc.wait()
    lines = [ln.strip() for ln in tail.replace(b"\r", b"\n").decode(errors="replace").splitlines()
             if ln.strip()]
    # esptool ends with "ERROR: A fatal error occurred: ..." then a troubleshooting link.
    errors = [ln for ln in lines if "error" in ln.lower()]
    last = (errors or lines or [""])[-1].removeprefix("ERROR: ")
    return proc.returncode, last


def run(commands: list[list[str]], out: BinaryIO | None = None) -> None:
    """Execute a plan, streaming each tool's output to ``out`` (stdout by default).

    Stops at the first failing command with FlashError carrying the tool's
    last line (esptool prints its fatal error last) and its exit code.
    """
    out = out or sys.stdout.buffer
    for cmd in commands:
        try:
            code, last = _stream(cmd, out)
        except OSError as e:
            raise FlashError(f"cannot run {cmd[0]}: {e.strerror}") from None
        if code != 0:
            raise FlashError(last or f"{shlex.join(cmd)} failed", code if code > 0 else 1)
        if cmd[0] == "cp":
            os.sync()
