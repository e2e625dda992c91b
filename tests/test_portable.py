"""The dual-runtime harness: every portable check runs on CPython and MicroPython.

Check modules live in tests/portable/ and are plain functions named
``check_*``. On CPython they are called in process; on MicroPython the
unix port runs tests/portable/runner.py once per module and each check's
result line becomes one pytest result, so the log shows every check on
both runtimes.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from sipmesh.boards import unixport

MODULES = [
    "cbor_checks",
    "cbor_malformed_checks",
    "crypto_checks",
    "device_record_checks",
    "boardcfg_checks",
    "frame_checks",
    "mgmt_checks",
    "mdns_checks",
    "heartbeat_checks",
    "transient_checks",
    "reload_checks",
    "reload_storage_checks",
    "reload_topology_checks",
]

PORTABLE = Path(__file__).resolve().parent / "portable"
sys.path.insert(0, str(PORTABLE))


def _cases():
    for modname in MODULES:
        mod = importlib.import_module(modname)
        for name in sorted(n for n in dir(mod) if n.startswith("check_")):
            yield modname, name


CASES = list(_cases())
IDS = ["{}.{}".format(*c) for c in CASES]


@pytest.mark.parametrize(("modname", "name"), CASES, ids=IDS)
def test_cpython(modname: str, name: str) -> None:
    getattr(importlib.import_module(modname), name)()


@pytest.fixture(scope="session")
def micropython_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Run every module once under MicroPython; map 'module.check' to its line."""
    lib = unixport.stage_lib(tmp_path_factory.mktemp("board-lib"))
    results: dict[str, str] = {}
    for modname in MODULES:
        proc = unixport.run([str(PORTABLE / "runner.py"), modname], [lib, PORTABLE])
        lines = proc.stdout.splitlines()
        if not lines or not lines[-1].startswith("DONE"):
            pytest.fail(
                f"MicroPython run of {modname} did not finish (exit {proc.returncode}):\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        for line in lines:
            status, _, rest = line.partition(" ")
            if status in ("PASS", "FAIL"):
                results[rest.split(":", 1)[0]] = line
    return results


@pytest.mark.micropython
@pytest.mark.parametrize(("modname", "name"), CASES, ids=IDS)
def test_micropython(modname: str, name: str, micropython_results: dict[str, str]) -> None:
    line = micropython_results.get(f"{modname}.{name}")
    assert line is not None, "check did not run under MicroPython"
    assert line.startswith("PASS"), line
