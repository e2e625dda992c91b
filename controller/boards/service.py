"""The boards service of the controller: registry, signing key, configuration
endpoint, mDNS browser and announcement, and the watch that marks boards
lost after missed heartbeats.

Every board configuration names the controller (where to pull and send
heartbeats) and the overlay peer a board joins as a RELOAD client (RFC 6940
§3.2). Both are recorded in the registry when the service starts; when they
change, every board's configuration is re-issued with a new sequence number
so boards pull the new one. A process that only provisions a board over
serial (``enroll_board`` without ``start``) uses what the running
controller recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from sipmesh.boards import registry as reg
from sipmesh.boards.keys import BoardKey
from sipmesh.boards.options import BoardsOptions
from sipmesh.proto import boardcfg, device_record

log = logging.getLogger("sipmesh.boards")

HB_KEY_LEN = 32
_CONTEXT = "context"


def overlay_entry(overlay: object) -> dict | None:
    """The config's ``overlay`` map from a started OverlayService (its client
    listener and overlay name), a ready map, or None when there is none."""
    if overlay is None:
        return None
    if isinstance(overlay, dict):
        return dict(overlay)
    listen = getattr(getattr(overlay, "options", None), "client_listen", None)
    enrollment = getattr(overlay, "enrollment", None)
    if not listen or enrollment is None:
        return None
    if isinstance(listen, str):
        host, _, port = listen.rpartition(":")
        listen = (host.strip("[]"), int(port))
    # Port 0 in the options: the peer's bound port is the real one.
    port = getattr(getattr(overlay, "peer", None), "client_port", None) or int(listen[1])
    if not port:
        return None
    return {"host": listen[0], "port": port, "name": enrollment.config.instance_name,
            "kind": device_record.KIND}


def _specific(host: str) -> bool:
    try:
        return not ipaddress.IPv4Address(host).is_unspecified
    except ValueError:
        return False


class BoardService:
    """Owns the boards' registry, key and network services for one controller."""

    def __init__(self, options: BoardsOptions, data_dir: str | Path, overlay: object = None,
                 *, branch: str = "demo", clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.data_dir = Path(data_dir)
        self.overlay = overlay
        self.branch = branch
        self.clock = clock
        self.registry: reg.BoardRegistry | None = None
        self.key: BoardKey | None = None
        self.port = options.listen[1]
        self._server = None
        self._zc = None
        self._browser = None
        self._announcer = None
        self._watch: asyncio.Task | None = None

    # ------------------------------------------------------------ local state

    def open(self) -> reg.BoardRegistry:
        """Open the registry and the signing key (no network); idempotent."""
        if self.registry is None:
            self.key = BoardKey.load_or_make(self.data_dir)
            self.registry = reg.BoardRegistry(self.data_dir / reg.FILE_NAME, clock=self.clock,
                                              issuer=self._issue)
        return self.registry

    def context(self) -> dict:
        """The ``controller`` and ``overlay`` maps every configuration carries."""
        registry = self.open()
        stored = json.loads(registry.meta(_CONTEXT) or "{}")
        controller = {"host": self.options.controller_host, "port": self.port}
        if self._server is None and stored.get("controller"):
            controller = stored["controller"]
        overlay = overlay_entry(self.overlay) or stored.get("overlay")
        return {"controller": controller, "overlay": overlay}

    def _payload(self, board_id: str, seq: int, fields: dict) -> bytes:
        ctx = self.context()
        if not ctx["overlay"]:
            raise reg.NotProvisioned(
                "no overlay to name in the configuration: the controller needs [overlay] "
                "enabled with client_listen (boards are RELOAD clients, RFC 6940 §3.2)")
        return boardcfg.make(
            board_id, seq, fields["name"], fields["aor"], ctx["controller"], ctx["overlay"],
            fields.get("intervals") or self.options.intervals,
            contacts=fields.get("contacts", ()), net=fields.get("net"),
            settings=fields.get("settings"), issued=int(self.clock()))

    def _issue(self, board_id: str, seq: int, fields: dict) -> bytes:
        return self.key.sign_config(self._payload(board_id, seq, fields))

    def enroll_board(self, board_id: str, pub: bytes, kind: str, fw: str, name: str, aor: str,
                     *, cert: bytes = b"", ca_key: bytes = b"", intervals: dict | None = None,
                     contacts: list[str] | tuple[str, ...] = (), settings: dict | None = None,
                     net: dict | None = None) -> dict:
        """Record a board being provisioned over serial and return what the
        ``provision`` op sends it: controller_key, hb_key (a fresh 32-byte
        MAC key), the first signed config, and cert/ca_key as given (the
        caller adds the overlay certificate when an overlay CA is available).

        Raises boardcfg.BoardConfigError for fields a board would refuse,
        registry.RegistryError for a bad id or key, before anything is stored.
        """
        registry = self.open()
        fields = {"name": name, "aor": aor, "intervals": dict(intervals or self.options.intervals),
                  "contacts": list(contacts)}
        if settings is not None:
            fields["settings"] = settings
        if net is not None:
            fields["net"] = net
        reg.check_id(board_id)
        known = registry.get(board_id)
        self._payload(board_id, (known.cfg_seq if known else 0) + 1, fields)
        hb_key = os.urandom(HB_KEY_LEN)
        registry.provision(board_id, pub=pub, hb_key=hb_key, kind=kind, fw=fw, name=name,
                           cert=cert)
        registry.set_config(board_id, fields)
        seq, config = registry.signed_config(board_id)
        log.info("boards: %s provisioned as %s (configuration %d)", board_id, name, seq)
        return {"controller_key": self.key.pub, "kid": self.key.kid, "hb_key": hb_key,
                "config": config, "seq": seq, "cert": cert, "ca_key": ca_key}

    def configure(self, board_id: str, **changes: object) -> int:
        """Change some configuration fields of a board; returns the new seq
        (boards pull it at their next ``pull`` interval)."""
        registry = self.open()
        fields = registry.config_fields(board_id)
        if fields is None:
            raise reg.NotProvisioned(f"board {board_id} has no configuration to change")
        fields.update(changes)
        board = registry.get(board_id)
        self._payload(board_id, board.cfg_seq + 1, fields)
        return registry.set_config(board_id, fields)

    def check_lost(self, now: float | None = None) -> list[str]:
        """Mark boards lost after ``lost_after`` missed heartbeats."""
        lost = self.open().mark_lost(self.options.lost_after, now)
        for board_id in lost:
            log.warning("boards: %s lost (no heartbeat)", board_id)
        return lost

    # ------------------------------------------------------------ network

    def _addresses(self) -> list[str]:
        if _specific(self.options.controller_host):
            return [self.options.controller_host]
        if self.options.interfaces:
            return list(self.options.interfaces)
        import ifaddr

        return [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
                if isinstance(ip.ip, str) and not ipaddress.IPv4Address(ip.ip).is_loopback]

    async def start(self) -> None:
        """Open state, listen for boards, browse and announce, watch heartbeats."""
        from sipmesh.boards.configsrv import ConfigServer

        registry = self.open()
        host, port = self.options.listen
        server = ConfigServer(registry, host, port)
        await server.start()
        self._server, self.port = server, server.port
        try:
            self._record_context()
            if self.options.browse or self.options.announce:
                await self._start_mdns()
        except BaseException:
            await self.stop()
            raise
        self._watch = asyncio.create_task(self._watch_heartbeats(), name="boards-lost")

    def _record_context(self) -> None:
        ctx = self.context()
        if not ctx["overlay"]:
            log.warning("boards: no overlay client listener; boards cannot be configured "
                        "until [overlay] client_listen is set")
            return
        text = json.dumps(ctx, sort_keys=True)
        old = self.registry.meta(_CONTEXT)
        if old != text:
            self.registry.set_meta(_CONTEXT, text)
            if old is not None:
                redone = self.registry.reissue_all("controller or overlay address changed")
                if redone:
                    log.info("boards: re-issued %d configuration(s) for the new addresses",
                             len(redone))

    async def _start_mdns(self) -> None:
        from zeroconf import InterfaceChoice, IPVersion
        from zeroconf.asyncio import AsyncZeroconf

        from sipmesh.boards.announce import ControllerAnnouncer
        from sipmesh.boards.browser import BoardBrowser

        interfaces = list(self.options.interfaces) or InterfaceChoice.All
        self._zc = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        if self.options.browse:
            self._browser = BoardBrowser(self._zc, self.registry)
            await self._browser.start()
        if self.options.announce:
            addresses = self._addresses()
            if addresses:
                self._announcer = ControllerAnnouncer(
                    self._zc, branch=self.branch, port=self.port, kid=self.key.kid,
                    addresses=addresses)
                await self._announcer.start()
            else:
                log.warning("boards: no IPv4 address to announce the controller on")

    async def _watch_heartbeats(self) -> None:
        every = max(1, min(self.options.heartbeat, 30))
        while True:
            await asyncio.sleep(every)
            try:
                self.check_lost()
            except Exception:
                log.exception("boards: heartbeat watch failed")

    async def stop(self) -> None:
        """Stop in reverse order: watch, announcement (goodbye), browser, endpoint."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self._announcer is not None:
            await self._announcer.close()
            self._announcer = None
        if self._browser is not None:
            await self._browser.close()
            self._browser = None
        if self._zc is not None:
            await self._zc.async_close()
            self._zc = None
        if self._server is not None:
            await self._server.close()
            self._server = None
        if self.registry is not None:
            self.registry.close()
            self.registry = None
