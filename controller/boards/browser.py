"""Watches the LAN for boards: DNS-SD browsing (RFC 6763 §4) of
``_sipmesh-board._tcp.local.`` with python-zeroconf, feeding the registry.

Each new or changed service instance is resolved (SRV, TXT and A records,
RFC 6763 §5-6) and recorded: an unknown board id becomes ``discovered``, and
address or TXT changes (a board re-announces when its TXT changes, RFC 6762
§8.4) go to the board's history. A goodbye (TTL 0, RFC 6762 §10.1) or cache
expiry marks the board ``lost``. What mDNS says is unauthenticated, so it is
only recorded; trust comes from heartbeats.

The board's id is its TXT ``id`` (the instance name may carry a conflict
suffix after RFC 6762 §9 renaming); instances without a well-formed id are
ignored. TXT is cut to the keys and lengths a board sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from sipmesh.boards import registry as reg

log = logging.getLogger("sipmesh.boards")

BOARD_TYPE = "_sipmesh-board._tcp.local."
# How long one resolution (SRV/TXT/A queries, RFC 6762 §5.2 retries) may take.
RESOLVE_MS = 3000
# A board's TXT has seven short keys (contract); a record with dozens of
# long values is not one of ours and must not grow the registry.
TXT_MAX_KEYS = 16
TXT_MAX_VALUE = 64


def clean_txt(properties: dict) -> dict[str, str]:
    """TXT key/values (RFC 6763 §6.3, §6.4) as text, within the limits above."""
    out: dict[str, str] = {}
    for key, value in properties.items():
        if len(out) >= TXT_MAX_KEYS:
            break
        try:
            k = key.decode("ascii") if isinstance(key, bytes) else str(key)
            v = "" if value is None else (value.decode("utf-8") if isinstance(value, bytes)
                                          else str(value))
        except UnicodeDecodeError:
            continue
        if k and len(k) <= 9 and len(v) <= TXT_MAX_VALUE:
            out[k.lower()] = v
    return out


class BoardBrowser:
    """Browses for boards on ``zc``'s interfaces and updates ``registry``.

    ``on_change(board_id, what)`` is called after each registry update with
    ``what`` in ("seen", "gone").
    """

    def __init__(self, zc: AsyncZeroconf, registry: reg.BoardRegistry, *,
                 on_change: Callable[[str, str], None] | None = None) -> None:
        self.zc = zc
        self.registry = registry
        self.on_change = on_change
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task] = set()
        self._ids: dict[str, str] = {}

    async def start(self) -> None:
        """Start browsing (queries go out at once, then back off, RFC 6762 §5.2)."""
        self._browser = AsyncServiceBrowser(self.zc.zeroconf, BOARD_TYPE,
                                            handlers=[self._on_state_change])

    async def close(self) -> None:
        """Stop browsing and drop resolutions in flight."""
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_state_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                         state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            self._removed(name)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, name: str) -> None:
        info = AsyncServiceInfo(BOARD_TYPE, name)
        if not await info.async_request(self.zc.zeroconf, RESOLVE_MS):
            log.info("boards: %s did not resolve", name)
            return
        txt = clean_txt(info.properties)
        board_id = txt.get("id", "")
        if not reg.BOARD_ID.fullmatch(board_id):
            log.info("boards: ignoring %s: TXT id %r is not a board id", name, board_id)
            return
        addresses = info.parsed_addresses(IPVersion.V4Only)
        ip = addresses[0] if addresses else ""
        try:
            self.registry.seen(board_id, ip=ip, port=info.port or 0, txt=txt)
        except reg.RegistryError as e:
            log.warning("boards: %s: %s", name, e)
            return
        self._ids[name] = board_id
        if self.on_change is not None:
            self.on_change(board_id, "seen")

    def _removed(self, name: str) -> None:
        board_id = self._ids.pop(name, None)
        if board_id is None:
            label = name[: -len(BOARD_TYPE)].rstrip(".")
            board_id = label if reg.BOARD_ID.fullmatch(label) else None
        if board_id is None:
            return
        self.registry.gone(board_id, "mDNS goodbye or expiry (RFC 6762 §10.1)")
        if self.on_change is not None:
            self.on_change(board_id, "gone")
