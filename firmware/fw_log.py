"""The board's log: the last lines kept in RAM for the serial `logs` op.

A board has no disk to spare for logs and no console once the serial line
carries frames, so the recent lines live in a ring buffer and the
controller fetches them with ``logs {since: n}``. Lines are numbered from
boot; ``lines(since)`` returns those still held with a number >= since and
the number the next line will get, so a reader polls without repeats. On
the unix port (the virtual board) lines also go to stderr, which the test
or the sim reads; on a real board stderr is the serial line itself.
"""

import sys
import time

SIZE = 50
# 50 lines of this length fit in one serial frame (sipmesh.proto.frame.MAX_FRAME).
_MAX = 140

_ring = [None] * SIZE
_next = 0
_t0 = time.ticks_ms() if hasattr(time, "ticks_ms") else 0
_echo = sys.platform in ("linux", "darwin")


def log(msg):
    """Record one line, prefixed with seconds since boot (ticks, wraps ~12 days)."""
    global _next
    if hasattr(time, "ticks_ms"):
        t = time.ticks_diff(time.ticks_ms(), _t0)
    else:
        t = 0
    line = "%d.%03d %s" % (t // 1000, t % 1000, msg[:_MAX])
    _ring[_next % SIZE] = line
    _next += 1
    if _echo:
        try:
            sys.stderr.write(line + "\n")
        except Exception:  # noqa: BLE001 - a log line must never take the app down
            pass


def lines(since=0):
    """Return ``(lines, next)``: the held lines numbered >= since, oldest first."""
    first = _next - SIZE if _next > SIZE else 0
    if since < first:
        since = first
    out = [_ring[i % SIZE] for i in range(since, _next)]
    return out, _next
