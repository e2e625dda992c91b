"""The controller process: one asyncio event loop that runs every service.

Services (SIP, overlay, Auto Peer, boards, web) register here as they are
built; each is started in order and stopped in reverse order, so Ctrl-C or
SIGTERM always ends with every socket closed and state written.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import TYPE_CHECKING

from sipmesh import __version__
from sipmesh.config import Config
from sipmesh.overlay.service import OverlayService
from sipmesh.sip.ua import UserAgent

if TYPE_CHECKING:
    from sipmesh.boards.service import BoardService
    from sipmesh.boards.virtual import VirtualBoards

log = logging.getLogger("sipmesh")


def tune_collector() -> None:
    """Collector settings for a long-running SIP server (call after start-up).

    A busy server keeps tens of thousands of transactions alive for Timer
    J's 32 s; with CPython's default thresholds the collector scans them so
    often that pauses reach T1 and retransmissions pile up (measured with
    sipp at 750 calls/s: 0.15 % failed calls before, 0 after). Freeze what
    start-up created and collect young objects less often.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class Controller:
    """Owns the configuration, the data folder and the services' lifetimes."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._stop = asyncio.Event()
        self.virtual: VirtualBoards | None = None

    def stop(self) -> None:
        """Ask the controller to shut down (safe to call from a signal handler)."""
        self._stop.set()

    async def run(self) -> None:
        """Start, wait for stop(), then shut down cleanly."""
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        log.info("sipmesh %s starting: branch %r, config: %s", __version__, cfg.branch, cfg.source)
        log.info("data folder: %s", cfg.data_dir.resolve())
        ua = await self._start_sip()
        try:
            overlay = await self._start_overlay()
        except BaseException:
            if ua is not None:
                await ua.close()
            raise
        autopeer = self._start_autopeer()
        try:
            boards = await self._start_boards(overlay)
        except BaseException:
            await self._shutdown(ua, overlay, autopeer, None)
            raise
        tune_collector()
        log.info("controller ready; Ctrl-C stops it")
        try:
            await self._stop.wait()
        finally:
            log.info("stopping")
            await self._shutdown(ua, overlay, autopeer, boards)
            log.info("stopped")

    async def _shutdown(self, ua: UserAgent | None, overlay: OverlayService | None,
                        autopeer: asyncio.Task | None, boards: BoardService | None) -> None:
        """Stop what started, last started first: the virtual boards before the
        boards service they talk to, the Auto Peer loop (it ends on _stop)."""
        self._stop.set()
        if self.virtual is not None:
            await self.virtual.stop()
            self.virtual = None
        if boards is not None:
            await boards.stop()
        if autopeer is not None:
            await autopeer
        if overlay is not None:
            await overlay.stop()
        if ua is not None:
            await ua.close()

    async def _start_overlay(self) -> OverlayService | None:
        """The RELOAD peer (RFC 6940) when ``[overlay] enabled``; it leaves the
        ring gracefully (§10.9) on shutdown."""
        cfg = self.config
        if not cfg.overlay.enabled:
            log.info("overlay: not enabled")
            return None
        service = OverlayService(cfg.overlay, cfg.data_dir, branch=cfg.branch)
        await service.start()
        return service

    async def _start_boards(self, overlay: OverlayService | None) -> BoardService | None:
        """The boards service when ``[boards] enabled``: configuration endpoint,
        mDNS browsing and announcement (RFC 6762/6763), heartbeat watch; then
        ``[boards] virtual`` virtual boards, set up in the background (a
        failing one is logged, the controller runs on)."""
        cfg = self.config
        if not cfg.boards.enabled:
            log.info("boards: not enabled%s", f" (virtual = {cfg.boards.virtual} needs "
                     "enabled = true)" if cfg.boards.virtual else "")
            return None
        from sipmesh.boards.service import BoardService

        service = BoardService(cfg.boards, cfg.data_dir, overlay, branch=cfg.branch)
        await service.start()
        if cfg.boards.virtual:
            from sipmesh.boards.virtual import VirtualBoards

            log.info("boards: starting %d virtual board(s) (MicroPython unix port behind "
                     "PTYs)", cfg.boards.virtual)
            self.virtual = VirtualBoards(cfg.boards.virtual, service, overlay, cfg.data_dir,
                                         branch=cfg.branch)
            self.virtual.start()
        return service

    def _start_autopeer(self) -> asyncio.Task | None:
        """The SIP Auto Peer poll loop (RFC 10006 §5) when ``[autopeer] enabled``;
        it keeps ``DATA_DIR/autopeer.sqlite`` current and ends with the controller."""
        cfg = self.config
        if not cfg.autopeer.enabled:
            log.info("autopeer: not enabled")
            return None
        from sipmesh.autopeer.service import AutoPeer
        from sipmesh.autopeer.store import TrunkStore

        peer = AutoPeer(cfg.autopeer, TrunkStore(cfg.data_dir / "autopeer.sqlite"))
        log.info("autopeer: polling %s every %g h", cfg.autopeer.capset_url
                 or cfg.autopeer.resource, cfg.autopeer.refresh_hours)
        return asyncio.create_task(peer.run(self._stop), name="autopeer")

    async def _start_sip(self) -> UserAgent | None:
        """The SIP user agent on the configured sockets (none: nothing listens)."""
        cfg = self.config
        if not cfg.sip_listen:
            log.info("SIP: no listen address configured, not started")
            return None
        hosts = {host for _, host, _ in cfg.sip_listen}
        if len(hosts) > 1:
            raise ValueError("sip.listen: one host address for now")
        ua = UserAgent(hosts.pop(), user=cfg.sip_user, user_agent=f"sipmesh/{__version__}")
        for proto, _, port in cfg.sip_listen:
            if proto == "udp":
                await ua.transport.listen_udp(ua.host, port)
            else:
                await ua.transport.listen_tcp(ua.host, port)
        ports = ", ".join(f"{p} {ua.host}:{n}" for p, n in sorted(ua.transport.ports.items()))
        log.info("SIP user agent sip:%s@%s listening on %s", cfg.sip_user, ua.host, ports)
        return ua


async def serve(config: Config) -> None:
    """Run a controller until SIGINT or SIGTERM."""
    controller = Controller(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, controller.stop)
    try:
        await controller.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
