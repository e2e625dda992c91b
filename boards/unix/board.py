"""The virtual board: the MicroPython unix port behind a PTY.

Stands in for a real board in tests, the demo and `sipmesh board sim`:
its identity and address come from the environment the sim sets
(SIPMESH_BOARD_ID, SIPMESH_BOARD_IP), its management serial line is fd 0/1
(the PTY the sim gives), and a reset ends the process so the sim can start
the interpreter again, as a real board reboots.
"""

import gc
import os
import sys

KIND = "unix"
# Relative to "/" (the sim's cwd): the unix port's VfsPosix mounted with a
# root fails rename/remove given absolute paths (ENOENT, 1.29); relative work.
DATA = os.getenv("SIPMESH_DATA") or "data"

_saved = None


def board_id():
    """The board id from SIPMESH_BOARD_ID ("sm-" + 12 lower-hex chars)."""
    return os.getenv("SIPMESH_BOARD_ID") or "sm-000000000000"


async def net_up(net):
    """The sim sets the network up (namespace, veth); report its address."""
    return os.getenv("SIPMESH_BOARD_IP") or "127.0.0.1"


def serial_take():
    """From now on no byte on the line interrupts the program: the line set raw
    with VMIN=VTIME=0 (once; serial_restore undoes it).

    main.py calls this before the application loads, so a request that
    arrives during the boot (a frame's 0x03 byte is Ctrl-C to the sim's
    line) waits in the line instead of stopping the board. Raw so that no
    byte is translated or eaten by the line discipline; VMIN=VTIME=0 so a
    read after poll returns what is there instead of waiting for the whole
    request. A stdin that is not a tty is used as is.
    """
    global _saved
    if _saved is not None:
        return
    try:
        import termios

        _saved = termios.tcgetattr(0)
        attrs = termios.tcgetattr(0)
        # cfmakeraw(3) with Linux flag values (the port's termios names none);
        # set with TCSANOW, not setraw(), which flushes a request already waiting.
        attrs[0] &= ~0o2753  # iflag: IGNBRK BRKINT PARMRK ISTRIP INLCR IGNCR ICRNL IXON
        attrs[1] &= ~0o1  # oflag: OPOST
        attrs[2] = (attrs[2] & ~0o460) | 0o60  # cflag: CSIZE PARENB off, CS8
        attrs[3] &= ~0o100113  # lflag: ECHO ECHONL ICANON ISIG IEXTEN
        attrs[6][6] = 0  # VMIN: a read returns what is there
        attrs[6][5] = 0  # VTIME
        termios.tcsetattr(0, termios.TCSANOW, attrs)
    except (ImportError, OSError, AttributeError, TypeError):
        _saved = None


def serial_streams():
    """asyncio streams on fd 0/1, the line taken (serial_take)."""
    import asyncio

    serial_take()
    return asyncio.StreamReader(sys.stdin.buffer), asyncio.StreamWriter(sys.stdout.buffer, {})


def serial_restore():
    """Put the line back as it was before serial_take()."""
    global _saved
    if _saved is not None:
        try:
            import termios

            termios.tcsetattr(0, termios.TCSANOW, _saved)
        except OSError:
            pass
        _saved = None


def reset():
    """End the interpreter; the sim restarts it like a rebooting board."""
    sys.exit(0)


def mem():
    """(free, alloc) heap bytes after a collection."""
    gc.collect()
    return gc.mem_free(), gc.mem_alloc()
