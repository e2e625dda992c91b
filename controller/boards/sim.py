"""The virtual board: the MicroPython unix port behind a PTY that behaves like a USB board.

A client (pyserial, mpremote, `sipmesh board provision`) opens a PTY, the
way a board appears as /dev/ttyACM0. Behind it this process runs
`micropython -X heapsize=<heap> -i boards/unix/sim_boot.py` on a second
PTY (its controlling terminal, so the client's Ctrl-C interrupts code as
on a board) and pumps bytes both ways. Two PTYs instead of one because the
unix port exits on a soft reset: the client's PTY must outlive each
interpreter, as a USB port outlives the board's soft reboots.

When the interpreter ends, the sim prints "MPY: soft reboot" (what a real
board prints, and what mpremote waits for after Ctrl-D in the raw REPL)
and starts a new one. If the client was in the raw REPL, the new
interpreter skips main.py, enters the raw REPL itself, and the client sees
only the "raw REPL; CTRL-B to exit" banner and prompt, as on a board. The
raw state is read from what the interpreter prints (its banners), not from
what the client sends, because a running application receives Ctrl-A bytes
as data.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import pty
import shutil
import signal
import tempfile
import termios
import tty
from pathlib import Path

from sipmesh.boards import unixport

SIM_BOOT = Path(__file__).resolve().parents[2] / "boards" / "unix" / "sim_boot.py"

SOFT_REBOOT = b"MPY: soft reboot\r\n"
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.\r\n'
# What a board's UART would hold; beyond it a client that is not reading
# loses the oldest output, as with a real board and no host.
MAX_PENDING = 64 * 1024
_TAIL = 64
# The unix port here is a CPython extension: its start-up takes a fraction
# of a second, minutes would mean it hangs.
BOOT_TIMEOUT = 60.0


class SimError(RuntimeError):
    """The virtual board cannot start: bad root, busy PTY path, missing interpreter."""


def default_board_id(root: Path) -> str:
    """A stable board id for a root folder: "sm-" + 12 hex chars of its path's SHA-256."""
    return "sm-" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]


def install_bundle(bundle_dir: Path, root: Path) -> int:
    """Copy a built bundle into the board's root folder; return the number of files.

    Each file is checked against the manifest's sha256 and replaced
    atomically (temp file + rename), as `deploy` would leave a board; /data
    is never touched.
    """
    from sipmesh.boards import bundle

    try:
        manifest = bundle.load(bundle_dir)
    except Exception as e:
        raise SimError(f"not a bundle: {bundle_dir}: {e}") from e
    names = dict(manifest.files)
    names["/" + bundle.MANIFEST] = ""
    for board_path, digest in sorted(names.items()):
        src = manifest.root / board_path.lstrip("/")
        data = src.read_bytes()
        if digest and hashlib.sha256(data).hexdigest() != digest:
            raise SimError(f"{src}: sha256 differs from the bundle's manifest")
        dest = root / board_path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    return len(names)


def _serial_attrs(fd: int) -> None:
    """Raw line but ISIG kept (Ctrl-C interrupts code) and no output processing (no \\r\\r\\n).

    Only Ctrl-C is special, as on a board's USB serial: Ctrl-\\ and Ctrl-Z
    bytes inside a frame must not quit or stop the interpreter.
    """
    attrs = termios.tcgetattr(fd)
    attrs[6][termios.VQUIT] = attrs[6][termios.VSUSP] = b"\x00"
    attrs[0] &= ~(termios.ICRNL | termios.IXON | termios.INLCR | termios.IGNCR)
    attrs[1] &= ~termios.OPOST
    attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN)
    attrs[3] |= termios.ISIG
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _controlling_tty() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class _Outbox:
    """Bytes waiting for a non-blocking fd; writes when the loop says it is writable."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, *, drop_oldest: bool) -> None:
        self.loop = loop
        self.fd = fd
        self.buf = bytearray()
        self.drop_oldest = drop_oldest
        self.watching = False

    def put(self, data: bytes) -> None:
        self.buf += data
        if self.drop_oldest and len(self.buf) > MAX_PENDING:
            del self.buf[: len(self.buf) - MAX_PENDING]
        self.flush()

    def flush(self) -> None:
        while self.buf:
            try:
                n = os.write(self.fd, self.buf)
            except BlockingIOError:
                break
            except OSError:
                self.buf.clear()
                break
            del self.buf[:n]
        want = bool(self.buf)
        if want and not self.watching:
            self.loop.add_writer(self.fd, self.flush)
        elif not want and self.watching:
            self.loop.remove_writer(self.fd)
        self.watching = want

    def close(self) -> None:
        if self.watching:
            self.loop.remove_writer(self.fd)
            self.watching = False


class VirtualBoard:
    """One virtual board: a client PTY at ``pty_link`` and a restarting interpreter.

    ``start()`` returns once the PTY link exists and the first interpreter
    runs; ``stop()`` kills the interpreter, removes the link and closes
    the PTYs. ``boots`` counts interpreter starts.
    """

    def __init__(
        self,
        root: Path,
        pty_link: Path,
        *,
        heap: str = "100K",
        board_id: str | None = None,
        ip: str | None = None,
        netns: str | None = None,
        micropython: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.pty_link = Path(pty_link)
        self.heap = heap
        self.board_id = board_id or default_board_id(self.root)
        self.ip = ip
        self.netns = netns
        self.micropython = micropython
        self.extra_env = dict(env or {})
        self.boots = 0
        self.raw = False
        self._boot_raw = False
        self._swallow: bytearray | None = None
        self._tail = b""
        self._client_master = -1
        self._client_slave = -1
        self._interp_master = -1
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._to_client: _Outbox | None = None
        self._to_interp: _Outbox | None = None
        self._early = bytearray()
        self._fifo_dir: str | None = None

    def command(self) -> list[str]:
        """The interpreter's command line (inside `ip netns exec` when a namespace is set)."""
        exe = self.micropython or unixport.micropython_path()
        cmd = [exe, "-X", "heapsize=" + self.heap, "-i", str(SIM_BOOT)]
        if self.netns:
            ip = shutil.which("ip") or "ip"
            cmd = [ip, "netns", "exec", self.netns, *cmd]
        return cmd

    def environment(self, raw: bool) -> dict[str, str]:
        """Environment of one interpreter run: the board's flash, identity and address
        (plus ``env`` given at construction, e.g. SIPMESH_NO_MDNS, SIPMESH_PUSH_PORT)."""
        env = dict(os.environ)
        env.pop("MICROPYPATH", None)
        env.update(self.extra_env)
        env["SIPMESH_SIM_ROOT"] = str(self.root)
        env["SIPMESH_BOARD_ID"] = self.board_id
        env["SIPMESH_SIM_RAW"] = "1" if raw else "0"
        if self._fifo_dir:
            env["SIPMESH_SIM_READY"] = os.path.join(self._fifo_dir, "ready")
        if self.ip:
            env["SIPMESH_BOARD_IP"] = self.ip
        return env

    async def start(self) -> None:
        """Create the client PTY and its link, then boot the first interpreter."""
        if not self.root.is_dir():
            raise SimError(f"board root {self.root} is not a folder")
        if self.pty_link.exists() and not self.pty_link.is_symlink():
            raise SimError(f"{self.pty_link} exists and is not a symlink")
        self.command()
        loop = asyncio.get_running_loop()
        self._client_master, self._client_slave = pty.openpty()
        tty.setraw(self._client_slave)
        os.set_blocking(self._client_master, False)
        self._to_client = _Outbox(loop, self._client_master, drop_oldest=True)
        tmp = self.pty_link.with_name(self.pty_link.name + f".{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.ttyname(self._client_slave), tmp)
        os.replace(tmp, self.pty_link)
        loop.add_reader(self._client_master, self._on_client)
        self._fifo_dir = tempfile.mkdtemp(prefix="sipmesh-sim-")
        os.mkfifo(os.path.join(self._fifo_dir, "ready"))
        await self._spawn()
        self._task = asyncio.create_task(self._supervise())

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        raw = self._boot_raw
        assert self._fifo_dir is not None
        ready_fd = os.open(os.path.join(self._fifo_dir, "ready"), os.O_RDONLY | os.O_NONBLOCK)
        master, slave = pty.openpty()
        try:
            _serial_attrs(slave)
            self._proc = await asyncio.create_subprocess_exec(
                *self.command(), stdin=slave, stdout=slave, stderr=slave,
                env=self.environment(raw), cwd=str(self.root),
                preexec_fn=_controlling_tty,
            )
        except OSError as e:
            os.close(master)
            os.close(ready_fd)
            raise SimError(f"cannot start the interpreter: {e}") from e
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._interp_master = master
        self._swallow = bytearray() if raw else None
        loop.add_reader(master, self._on_interp)
        try:
            await self._booted(ready_fd)
        finally:
            os.close(ready_fd)
        self._to_interp = _Outbox(loop, master, drop_oldest=False)
        self.boots += 1
        if raw:
            self._to_interp.put(b"\x01")
        if self._early:
            self._to_interp.put(bytes(self._early))
            self._early.clear()

    async def _booted(self, ready_fd: int) -> None:
        """Wait until sim_boot.py runs (it writes the FIFO) or the interpreter ends."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()

        def on_ready() -> None:
            with contextlib.suppress(BlockingIOError):
                os.read(ready_fd, 16)
            if not ready.done():
                ready.set_result(None)

        assert self._proc is not None
        loop.add_reader(ready_fd, on_ready)
        ended = asyncio.ensure_future(self._proc.wait())
        try:
            await asyncio.wait([ready, ended], timeout=BOOT_TIMEOUT,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(ready_fd)
            if not ended.done():
                ended.cancel()

    async def _supervise(self) -> None:
        while True:
            assert self._proc is not None
            rc = await self._proc.wait()
            self._close_interp()
            if self._stopping:
                return
            hard = rc == -signal.SIGUSR1
            self._boot_raw = self.raw and not hard
            assert self._to_client is not None
            self._to_client.put(SOFT_REBOOT)
            await self._spawn()

    def _on_client(self) -> None:
        try:
            data = os.read(self._client_master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if not data:
            return
        if self._to_interp is None:
            self._early += data
        else:
            self._to_interp.put(data)
            if len(self._to_interp.buf) > MAX_PENDING:
                asyncio.get_running_loop().remove_reader(self._client_master)
                asyncio.get_running_loop().call_later(0.05, self._resume_client)

    def _resume_client(self) -> None:
        if self._stopping or self._client_master < 0:
            return
        if self._to_interp is not None and len(self._to_interp.buf) > MAX_PENDING:
            asyncio.get_running_loop().call_later(0.05, self._resume_client)
            return
        asyncio.get_running_loop().add_reader(self._client_master, self._on_client)

    def _on_interp(self) -> None:
        try:
            data = os.read(self._interp_master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self._interp_master)
            return
        self._from_interp(data)

    def _from_interp(self, data: bytes) -> None:
        window = self._tail + data
        enter, leave = window.rfind(RAW_BANNER), window.rfind(FRIENDLY_BANNER)
        if enter >= 0 or leave >= 0:
            self.raw = enter > leave
        self._tail = window[-_TAIL:]
        if self._swallow is not None:
            self._swallow += data
            at = self._swallow.find(RAW_BANNER)
            if at < 0:
                del self._swallow[: max(0, len(self._swallow) - _TAIL)]
                return
            data = bytes(self._swallow[at:])
            self._swallow = None
        assert self._to_client is not None
        self._to_client.put(data)

    def _close_interp(self) -> None:
        if self._interp_master < 0:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._interp_master)
        while True:
            try:
                data = os.read(self._interp_master, 4096)
            except OSError:
                break
            if not data:
                break
            self._from_interp(data)
        if self._to_interp is not None:
            self._to_interp.close()
            self._to_interp = None
        os.close(self._interp_master)
        self._interp_master = -1
        self._swallow = None

    async def stop(self) -> None:
        """Kill the interpreter, wait for it, remove the PTY link and close the PTYs."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        if self._task is not None:
            await self._task
        elif proc is not None:
            await proc.wait()
        self._close_interp()
        loop = asyncio.get_running_loop()
        if self._client_master >= 0:
            loop.remove_reader(self._client_master)
            if self._to_client is not None:
                self._to_client.close()
            os.close(self._client_master)
            os.close(self._client_slave)
            self._client_master = self._client_slave = -1
        with contextlib.suppress(OSError):
            if self.pty_link.is_symlink():
                self.pty_link.unlink()
        if self._fifo_dir:
            shutil.rmtree(self._fifo_dir, ignore_errors=True)
            self._fifo_dir = None


async def serve(board: VirtualBoard, *, ready: asyncio.Event | None = None) -> None:
    """Run a board until SIGTERM or SIGINT, then stop it cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await board.start()
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await board.stop()
