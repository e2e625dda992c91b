"""The HTTP endpoint boards pull their signed configuration from and send
heartbeats to, and nothing else.

- ``GET /boards/{id}/config``: 200 with the COSE_Sign1 (RFC 9052 §4.2;
  media type ``application/cose; cose-type="cose-sign1"``, RFC 9052 §9.1)
  and ``ETag: "<seq>"``; 304 when ``If-None-Match`` names that seq (RFC 9110
  §13.1.2, weak comparison); 404 unknown board; 409 not provisioned. The
  configuration is public to anyone who asks by design: it is signed, not
  secret, except ``net`` which only a controller on the board's own LAN serves.
- ``POST /boards/{id}/status``: a heartbeat MACed with the board's key
  (``sipmesh.proto.heartbeat``): 204 recorded; 403 when it does not
  authenticate (bad MAC, malformed, another board's id); 409 replay; 413
  when the body exceeds ``heartbeat.MAX_BODY``.

Errors are RFC 9457 problem documents. The server listens only on the
address ``[boards] listen`` names.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from sipmesh.boards import registry as reg
from sipmesh.proto import heartbeat

log = logging.getLogger("sipmesh.boards")

COSE_TYPE = 'application/cose; cose-type="cose-sign1"'


def _problem(status: int, title: str) -> web.Response:
    return web.Response(status=status, content_type="application/problem+json",
                        text=json.dumps({"title": title, "status": status}))


def etag_matches(header: str | None, seq: int) -> bool:
    """Whether an If-None-Match value names ``"<seq>"`` (RFC 9110 §13.1.2:
    weak comparison, a list of entity tags or ``*``)."""
    if not header:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == f'"{seq}"':
            return True
    return False


class ConfigServer:
    """The aiohttp application over a BoardRegistry; start() binds it."""

    def __init__(self, registry: reg.BoardRegistry, host: str = "127.0.0.1",
                 port: int = 7380) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.app = web.Application(client_max_size=heartbeat.MAX_BODY)
        self.app.router.add_get("/boards/{id}/config", self._config, allow_head=False)
        self.app.router.add_post("/boards/{id}/status", self._status)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on host:port (port 0 picks one; ``self.port`` is then the real one)."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("boards: configuration endpoint on http://%s:%d/boards/", self.host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _board(self, request: web.Request) -> reg.Board | web.Response:
        board_id = request.match_info["id"]
        board = self.registry.get(board_id) if reg.BOARD_ID.fullmatch(board_id) else None
        if board is None:
            return _problem(404, "unknown board")
        if not board.provisioned:
            return _problem(409, "board not provisioned")
        return board

    async def _config(self, request: web.Request) -> web.Response:
        board = self._board(request)
        if isinstance(board, web.Response):
            return board
        try:
            seq, cose = self.registry.signed_config(board.id)
        except reg.NotProvisioned as e:
            return _problem(409, str(e))
        etag = f'"{seq}"'
        if etag_matches(request.headers.get("If-None-Match"), seq):
            return web.Response(status=304, headers={"ETag": etag})
        self.registry.served(board.id, seq)
        return web.Response(body=cose, headers={"Content-Type": COSE_TYPE, "ETag": etag,
                                                "Cache-Control": "no-cache"})

    async def _status(self, request: web.Request) -> web.Response:
        board = self._board(request)
        if isinstance(board, web.Response):
            return board
        if request.content_length is not None and request.content_length > heartbeat.MAX_BODY:
            return _problem(413, f"heartbeat over {heartbeat.MAX_BODY} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _problem(413, f"heartbeat over {heartbeat.MAX_BODY} bytes")
        try:
            beat = heartbeat.open_(board.hb_key, body)
        except heartbeat.HeartbeatError as e:
            self.registry.refused(board.id, f"heartbeat from {request.remote}: {e}")
            return _problem(403, "heartbeat not authenticated")
        if beat["id"] != board.id:
            self.registry.refused(board.id, f"heartbeat names {beat['id']!r}")
            return _problem(403, "heartbeat for another board")
        try:
            self.registry.heartbeat(board.id, beat)
        except reg.Replay as e:
            self.registry.refused(board.id, f"heartbeat replay from {request.remote}: {e}")
            return _problem(409, "heartbeat replayed")
        except reg.RegistryError as e:
            return _problem(400, str(e))
        return web.Response(status=204)
