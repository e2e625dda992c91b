"""The controller process: one asyncio event loop that runs every service.

Services (SIP, overlay, Auto Peer, boards, web) register here as they are
built; each is started in order and stopped in reverse order, so Ctrl-C or
SIGTERM always ends with every socket closed and state written.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from sipmesh import __version__
from sipmesh.config import Config

log = logging.getLogger("sipmesh")


class Controller:
    """Owns the configuration, the data folder and the services' lifetimes."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask the controller to shut down (safe to call from a signal handler)."""
        self._stop.set()

    async def run(self) -> None:
        """Start, wait for stop(), then shut down cleanly."""
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        log.info("sipmesh %s starting: branch %r, config: %s", __version__, cfg.branch, cfg.source)
        log.info("data folder: %s", cfg.data_dir.resolve())
        log.info("services started: none yet (this build has the portable codecs only)")
        log.info("controller ready; Ctrl-C stops it")
        await self._stop.wait()
        log.info("stopping")
        log.info("stopped")


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
