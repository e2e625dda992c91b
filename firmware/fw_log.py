"""The board's log: the last lines kept in RAM for the serial `logs` op.

A board has no disk to spare for logs and no console once the serial line
carries frames, so the recent lines live in a ring buffer and the
controller fetches them with ``logs {since: n}``. Lines are numbered from
boot; ``lines(since)`` returns those still held with a number >= since and
the number the next line will get, so a reader polls without repeats. On
the unix port (the virtual board) lines also go to stderr, which the test
or the sim reads; on a real board stderr is the serial line itself.

The ring is one preallocated bytearray of ``SIZE`` bytes holding each line
as a 2-byte big-endian length and its UTF-8 bytes: a full log costs the
same heap as an empty one and never fragments it with one str per line
(issue 6). A new line that does not fit drops the oldest lines whole, so a
reader never gets part of one.
"""

import sys
import time

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# Bytes of the ring; a full `logs` answer stays well inside one serial frame
# (sipmesh.proto.frame.MAX_FRAME).
SIZE = const(2048)
# Characters kept of one message.
_MAX = const(140)

_buf = bytearray(SIZE)
_start = 0  # ring offset of the oldest line held
_used = 0  # bytes held
_first = 0  # number of the oldest line held
_next = 0  # number of the next line
_t0 = time.ticks_ms() if hasattr(time, "ticks_ms") else 0
_echo = sys.platform in ("linux", "darwin")


def _len(off):
    return (_buf[off] << 8) | _buf[(off + 1) % SIZE]


def log(msg):
    """Record one line, prefixed with seconds since boot (ticks, wraps ~12 days)."""
    global _start, _used, _first, _next
    if hasattr(time, "ticks_ms"):
        t = time.ticks_diff(time.ticks_ms(), _t0)
    else:
        t = 0
    line = "%d.%03d %s" % (t // 1000, t % 1000, msg[:_MAX])
    b = line.encode()
    n = len(b)
    while _used + n + 2 > SIZE:
        k = _len(_start) + 2
        _start = (_start + k) % SIZE
        _used -= k
        _first += 1
    off = (_start + _used) % SIZE
    _buf[off] = n >> 8
    _buf[(off + 1) % SIZE] = n & 0xFF
    off = (off + 2) % SIZE
    k = SIZE - off
    if n <= k:
        _buf[off : off + n] = b
    else:
        mv = memoryview(b)
        _buf[off:] = mv[:k]
        _buf[: n - k] = mv[k:]
    _used += n + 2
    _next += 1
    if _echo:
        try:
            sys.stderr.write(line + "\n")
        except Exception:  # noqa: BLE001 - a log line must never take the app down
            pass


def lines(since=0):
    """Return ``(lines, next)``: the held lines numbered >= since, oldest first."""
    out = []
    off = _start
    for i in range(_first, _next):
        n = _len(off)
        off = (off + 2) % SIZE
        if i >= since:
            k = SIZE - off
            if n <= k:
                b = bytes(_buf[off : off + n])
            else:
                b = bytes(_buf[off:]) + bytes(_buf[: n - k])
            out.append(b.decode())
        off = (off + n) % SIZE
    return out, _next
