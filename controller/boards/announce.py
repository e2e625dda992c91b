"""The controller's own DNS-SD service (RFC 6763 §4.1): how boards find it.

Instance ``<branch> controller`` of ``_sipmesh._tcp.local.``; SRV names the
board configuration endpoint's port, A records its addresses, and TXT
(RFC 6763 §6) carries ``v=1``, ``branch=<name>`` and ``kid=<hex key id>`` so
a board checks that the controller it found holds the key it was
provisioned with before pulling anything. python-zeroconf probes the name
first (RFC 6762 §8.1) and renames on conflict (§9); closing sends the
goodbye (TTL 0, §10.1) so boards drop the records at once.
"""

from __future__ import annotations

import logging
import socket

from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

log = logging.getLogger("sipmesh.boards")

CONTROLLER_TYPE = "_sipmesh._tcp.local."


class ControllerAnnouncer:
    """Registers the controller service on ``zc`` at start(), withdraws it at close()."""

    def __init__(self, zc: AsyncZeroconf, *, branch: str, port: int, kid: bytes,
                 addresses: list[str]) -> None:
        self.zc = zc
        self.info = ServiceInfo(
            CONTROLLER_TYPE, f"{branch} controller.{CONTROLLER_TYPE}",
            addresses=[socket.inet_aton(a) for a in addresses], port=port,
            properties={"v": "1", "branch": branch, "kid": kid.hex()},
            server=f"sipmesh-{branch}-{kid.hex()[:8]}.local.")
        self._registered = False

    async def start(self) -> None:
        """Probe, then announce (RFC 6762 §8.1, §8.3)."""
        await (await self.zc.async_register_service(self.info, allow_name_change=True))
        self._registered = True
        log.info("boards: announcing %s on port %d", self.info.name, self.info.port)

    async def close(self) -> None:
        """Send the goodbye (RFC 6762 §10.1)."""
        if self._registered:
            self._registered = False
            await (await self.zc.async_unregister_service(self.info))
