"""Shared test set-up: tests/ importable, and the runtimes named in the log header."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_report_header(config) -> list[str]:
    """Name the MicroPython interpreter the dual-runtime tests use."""
    from sipmesh.boards import unixport

    try:
        exe = unixport.micropython_path()
    except unixport.UnixPortMissing as e:
        return [f"micropython: MISSING ({e})"]
    out = subprocess.run(
        [exe, "-c", "import sys; print(sys.implementation.version, sys.version)"],
        capture_output=True, text=True, timeout=30,
    )
    return [f"micropython: {exe} {out.stdout.strip()}"]


def _hypothesis_profiles() -> None:
    """CI replays a fixed sequence of examples (a red CI is then reproducible);
    developers' runs explore new ones each time."""
    import os

    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")


_hypothesis_profiles()
