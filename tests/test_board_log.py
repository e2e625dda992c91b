"""The board's log ring (firmware/fw_log.py) on CPython and on the MicroPython unix port.

The same check script runs on both: lines numbered from boot, ``lines(since)``
polled without repeats, old lines dropped whole once the fixed ring is full
(never half a line), multi-byte characters and lines that wrap around the end
of the buffer returned intact, and the ring's heap cost independent of how
many lines went through it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sipmesh.boards import unixport

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"

CHECK = r'''
import gc, sys
sys.path.insert(0, sys.argv[1])
import fw_log
fw_log._echo = False

def msg(i):
    return ("m%d " % i) + "x" * (i * 37 % 190) + ("\u00e9\u20ac" * (i % 4))


def alloc():
    gc.collect()
    return gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0


def poll(i, seen):
    # Write line i, poll from seen; return the next number to poll from.
    fw_log.log(msg(i))
    got, nxt = fw_log.lines(seen)
    assert nxt == i + 1, (nxt, i)
    first = nxt - len(got)
    # A poller sees every line once, unless the ring dropped it before the poll.
    assert first >= seen and got, (first, seen)
    for k, line in enumerate(got):
        text = line.split(" ", 1)[1]
        assert text == msg(first + k)[:140], (first + k, text[:20])
    assert sum(len(x.encode()) + 2 for x in fw_log.lines(0)[0]) <= fw_log.SIZE
    return nxt


seen = 0  # next number a poller expects
base = alloc()
for i in range(400):
    seen = poll(i, seen)
grown = alloc() - base
every, nxt = fw_log.lines(0)
assert nxt == 400 and 0 < len(every) < 400
assert fw_log.lines(400) == ([], 400)
assert fw_log.lines(10 ** 6) == ([], 400)
print("OK", len(every), grown)
'''


def _check(out: str) -> None:
    word, kept, _grown = out.split()
    assert word == "OK" and int(kept) > 10


def test_log_ring_on_cpython(tmp_path: Path) -> None:
    (tmp_path / "check.py").write_text(CHECK)
    out = subprocess.run([sys.executable, str(tmp_path / "check.py"), str(FIRMWARE)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    _check(out.stdout)


@pytest.mark.micropython
def test_log_ring_on_micropython(tmp_path: Path) -> None:
    (tmp_path / "check.py").write_text(CHECK)
    out = unixport.run([str(tmp_path / "check.py"), str(FIRMWARE)], [Path(".frozen")],
                       heapsize="100K", timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    _check(out.stdout)
    # The ring is preallocated: 400 lines later the heap holds no more than at import.
    assert int(out.stdout.split()[2]) < 256, out.stdout
