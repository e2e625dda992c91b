"""The demo's virtual boards, started by the controller itself (``[boards] virtual = N``).

Each board is the MicroPython unix port behind a PTY (``sim.VirtualBoard``,
what ``sipmesh board sim`` runs), heap capped at an ESP32's 100 KB. Its
flash is a folder under ``DATA_DIR/virtual-boards/`` holding the unix
bundle (built there with ``bundle.build`` when the sources change) and the
board's own ``/data``, so a board provisioned once is still provisioned at
the next start and just comes back online.

A board that says "unprovisioned" on its serial line is provisioned over
its PTY as ``sipmesh board provision`` does it (``provision.provision``):
the key pair is made on the board, the running BoardService enrolls it with
a certificate from the demo overlay's CA. Afterwards the board pulls its
signed configuration, heartbeats and stores its device record in the
overlay over loopback only: its mDNS responder is off (SIPMESH_NO_MDNS) and
its push listener takes a free loopback port of its own (SIPMESH_PUSH_PORT).

A board that fails (no ``micropython``, a build error, a refused enrollment)
is logged with the reason; the controller keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
from pathlib import Path
from typing import Any

import sipmesh
from sipmesh.boards import registry as reg
from sipmesh.boards import service as board_service
from sipmesh.boards.sim import VirtualBoard, default_board_id, install_bundle

log = logging.getLogger("sipmesh.boards")

FOLDER = "virtual-boards"
KIND = "unix"
HEAP = "100K"  # an ESP32's free heap (issue 6)
# Serial `hello` on a fresh interpreter: it answers in milliseconds once main.py runs.
HELLO_TIMEOUT = 30.0
# The enrollment runs on the event loop (the registry's SQLite connection lives there).
ENROLL_TIMEOUT = 60.0


class VirtualBoardError(RuntimeError):
    """A virtual board cannot be set up (the reason is in the message)."""


def source_digest() -> str:
    """sha256 over the unix bundle's sources and the sipmesh version: the bundle
    is rebuilt when it changes."""
    from sipmesh.boards import boardkind, bundle

    kind = boardkind.load(KIND)
    h = hashlib.sha256(f"sipmesh {sipmesh.__version__} kind {KIND}\n".encode())
    for board_path, src in bundle.sources(kind, boardkind.source_root()):
        h.update(f"{board_path} {hashlib.sha256(src.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def ensure_bundle(folder: Path) -> tuple[Path, bool]:
    """The unix bundle in ``folder/bundle``, built unless its stamp matches the
    sources; returns (bundle folder, whether it was built now). Blocking."""
    from sipmesh.boards import bundle

    out = folder / "bundle"
    stamp = folder / "bundle.sources"
    digest = source_digest()
    try:
        if stamp.read_text().strip() == digest:
            bundle.load(out)
            return out, False
    except (OSError, bundle.BuildError):
        pass
    bundle.build(KIND, out)
    stamp.write_text(digest + "\n")
    return out, True


def install(bundle_dir: Path, root: Path) -> bool:
    """Copy the bundle into a board's flash unless it holds that bundle already."""
    from sipmesh.boards import bundle

    root.mkdir(parents=True, exist_ok=True)
    new = (bundle_dir / bundle.MANIFEST).read_bytes()
    with contextlib.suppress(OSError):
        if (root / bundle.MANIFEST).read_bytes() == new:
            return False
    install_bundle(bundle_dir, root)
    return True


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a board's push listener)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def board_id_for(folder: Path, name: str) -> str:
    """The board's id, made once and kept beside its flash (``NAME.id``)."""
    path = folder / f"{name}.id"
    with contextlib.suppress(OSError, reg.RegistryError):
        return reg.check_id(path.read_text().strip())
    board_id = default_board_id(folder / name)
    path.write_text(board_id + "\n")
    return board_id


class VirtualBoards:
    """Starts, provisions and stops the controller's virtual boards."""

    def __init__(self, count: int, service: Any, overlay: Any, data_dir: Path, *,
                 branch: str, heap: str = HEAP) -> None:
        self.count = count
        self.service = service
        self.overlay = overlay
        self.folder = Path(data_dir).absolute() / FOLDER
        self.branch = branch
        self.heap = heap
        self.boards: list[VirtualBoard] = []
        self.names: dict[str, str] = {}  # board id -> name
        self.provisioned: list[str] = []
        self.ready = asyncio.Event()  # set when every board is up (or failed)
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    def start(self) -> None:
        """Set the boards up in the background (the controller is ready meanwhile)."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="virtual-boards")

    async def _run(self) -> None:
        try:
            await self._setup()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.error("boards: virtual boards not started: %s", e)
        finally:
            self.ready.set()

    def _overlay_name(self) -> str:
        enrollment = getattr(self.overlay, "enrollment", None)
        options = getattr(self.overlay, "options", None)
        if enrollment is None or not getattr(options, "demo", False):
            raise VirtualBoardError("they need the demo overlay ([overlay] enabled and demo = "
                                    "true): their certificates come from its CA")
        if board_service.overlay_entry(self.overlay) is None:
            raise VirtualBoardError("they need [overlay] client_listen (boards are RELOAD "
                                    "clients, RFC 6940 §3.2)")
        return enrollment.config.instance_name

    async def _setup(self) -> None:
        overlay_name = self._overlay_name()
        self.folder.mkdir(parents=True, exist_ok=True)
        bundle_dir, built = await asyncio.to_thread(ensure_bundle, self.folder)
        if built:
            log.info("boards: built the unix bundle for the virtual boards in %s", bundle_dir)
        waits = []
        for i in range(1, self.count + 1):
            name = f"vb{i}"
            try:
                board = await self._start_board(name, bundle_dir)
            except Exception as e:  # SimError, UnixPortMissing, OSError: logged
                log.error("boards: virtual board %s not started: %s", name, e)
                continue
            waits.append(self._provision(board, name, overlay_name))
        await asyncio.gather(*waits)

    async def _start_board(self, name: str, bundle_dir: Path) -> VirtualBoard:
        root = self.folder / name
        if await asyncio.to_thread(install, bundle_dir, root):
            log.info("boards: installed the bundle on virtual board %s", name)
        board_id = board_id_for(self.folder, name)
        port = free_loopback_port()
        board = VirtualBoard(root, self.folder / f"{name}.pty", heap=self.heap,
                             board_id=board_id,
                             env={"SIPMESH_NO_MDNS": "1", "SIPMESH_PUSH_PORT": str(port)})
        self.boards.append(board)
        self.names[board_id] = name
        try:
            await board.start()
        except Exception:
            self.boards.remove(board)
            await board.stop()
            raise
        log.info("boards: virtual board %s (%s) on PTY %s, heap %s, push listener "
                 "127.0.0.1:%d", name, board_id, board.pty_link, self.heap, port)
        return board

    async def _provision(self, board: VirtualBoard, name: str, overlay_name: str) -> None:
        try:
            result = await asyncio.to_thread(self._provision_blocking, board, name, overlay_name)
        except Exception as e:  # SerialError, ProvisionError: logged, the controller runs on
            if not self._stopping:
                log.error("boards: virtual board %s (%s) not provisioned: %s", name,
                          board.board_id, e)
            return
        if result is None:
            known = self.service.open().get(board.board_id)
            if known is None or not known.provisioned:
                log.warning("boards: virtual board %s (%s) holds an identity this controller's "
                            "registry does not know; delete %s to provision it again", name,
                            board.board_id, board.root)
            else:
                log.info("boards: virtual board %s (%s) already provisioned", name,
                         board.board_id)
        else:
            self.provisioned.append(board.board_id)
            log.info("boards: virtual board %s (%s) provisioned (configuration %d, state %s)",
                     name, board.board_id, result["cfg"], result["state"])

    def _provision_blocking(self, board: VirtualBoard, name: str,
                            overlay_name: str) -> dict | None:
        """In a thread: ask the board its state over the PTY; provision it when
        it says unprovisioned. Returns provision()'s result, or None."""
        from sipmesh.boards.provision import provision
        from sipmesh.boards.serial_link import SerialLink

        with SerialLink(str(board.pty_link), timeout=HELLO_TIMEOUT) as link:
            hello = link.request("hello")
            if hello.get("state") != "unprovisioned":
                return None
            aor = f"sip:{name}@{self.branch}.sipmesh"
            return provision(link, _Enroller(self, overlay_name), name=name, aor=aor)

    def _enroll_on_loop(self, overlay_name: str, **kw: Any) -> dict:
        """Called from the provisioning thread: enroll on the event loop."""
        async def enroll() -> dict:
            from sipmesh.overlay.service import demo_board_certificate

            if self._stopping:
                raise VirtualBoardError("the controller is stopping")
            pub, name = kw["pub"], kw["name"]
            cert, ca_key = demo_board_certificate(self.service.data_dir, overlay_name, pub,
                                                  f"{name}@{overlay_name}")
            return self.service.enroll_board(cert=cert, ca_key=ca_key, **kw)

        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(enroll(), self._loop)
        return future.result(ENROLL_TIMEOUT)

    async def stop(self) -> None:
        """Stop the set-up if it still runs, then every board (interpreter killed,
        PTY closed, link removed)."""
        self._stopping = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for board in reversed(self.boards):
            try:
                await board.stop()
            except Exception as e:
                log.error("boards: virtual board %s did not stop cleanly: %s",
                          self.names.get(board.board_id, board.board_id), e)
        if self.boards:
            log.info("boards: %d virtual board(s) stopped", len(self.boards))
        self.boards = []


class _Enroller:
    """provision()'s controller side for a virtual board: BoardService.enroll_board
    with the demo overlay's certificate, run on the event loop."""

    def __init__(self, owner: VirtualBoards, overlay_name: str) -> None:
        self.owner, self.overlay_name = owner, overlay_name

    def enroll_board(self, **kw: Any) -> dict:
        return self.owner._enroll_on_loop(self.overlay_name, **kw)
