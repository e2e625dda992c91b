"""Boot script of the virtual board: what a real board's firmware does before the REPL.

`sipmesh board sim` runs `micropython -i sim_boot.py` on a PTY. A real
board mounts its flash at "/", runs boot.py, then main.py (only when the
REPL is in friendly mode: a soft reset from the raw REPL skips main.py, so
mpremote keeps the line), then the REPL, with sys.path ['', '.frozen',
'/lib'] (asyncio is frozen). Here the board's flash is a folder
(SIPMESH_SIM_ROOT); the script tells the sim it runs through the FIFO
SIPMESH_SIM_READY (so the sim holds the client's bytes, a Ctrl-C above
all, until MicroPython can take them), and the sim sets SIPMESH_SIM_RAW=1
when it restarts the interpreter for a client that was in the raw REPL.

A hard reset (``machine.reset()``, or ``board.reset()`` / ``sys.exit()`` out
of main.py) ends the interpreter with SIGUSR1: under ``-i`` a SystemExit
out of this script would only drop into the REPL, and the unix port has
no os.kill or os._exit, so the shell delivers the signal. The sim sees it
and boots the board in friendly mode again, main.py included.
"""

import os
import sys


def _hard_reset():
    os.system("kill -USR1 $PPID")
    while True:
        pass


class _Machine:
    """The unix port's machine module plus reset(), as `mpremote reset` expects."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def reset(self):
        _hard_reset()


def _boot():
    ready = os.getenv("SIPMESH_SIM_READY")
    ready = open(ready, "w") if ready else None
    root = os.getenv("SIPMESH_SIM_ROOT")
    if root:
        os.umount("/")
        os.mount(os.VfsPosix(root), "/")
        os.chdir("/")
    del sys.path[:]
    sys.path.append("")
    sys.path.append(".frozen")
    sys.path.append("/lib")
    import machine

    sys.modules["machine"] = _Machine(machine)
    if ready:
        ready.write("1")
        ready.close()
    if os.getenv("SIPMESH_SIM_RAW") == "1":
        return
    try:
        os.stat("/main.py")
    except OSError:
        return
    try:
        __import__("main")
    except SystemExit:
        _hard_reset()
    except BaseException as e:  # noqa: B036 - a board prints any error and falls to the REPL
        sys.print_exception(e)


_boot()
del _boot
