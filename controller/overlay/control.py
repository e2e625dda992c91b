"""The local control channel of a running overlay peer (for ``sipmesh overlay``).

A Unix-domain socket in the data folder, mode 0600, so only the account
that runs the peer can drive it and nothing listens on the network for it.
One JSON object per line in, one JSON object per line out; the connection
stays open after a bad line so a tool can send several requests. A failed
overlay request answers ``{"error": {"code", "name", "reason"}}`` with the
RELOAD error code and its name from RFC 6940 §14.9; a request the channel
itself cannot understand answers the same shape with ``code`` null.

Ops: ``ring``; ``store`` (resource, kind, value, optional index or
key_hex, lifetime); ``fetch`` and ``stat`` (resource, kind, optional
indices [[first, last], ...] or key_hex); ``ping`` (node as hex).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from sipmesh.overlay.peer import OverlayError, Peer
from sipmesh.overlay.security import SecurityError
from sipmesh.proto import reload as rl
from sipmesh.proto import reload_storage as rs

MAX_LINE = 64 * 1024  # a request is a few hundred bytes; a value at most a kind's max-size
SOCKET_NAME = "overlay.sock"

# RFC 6940 §14.9 names of the error codes.
ERROR_NAMES = {
    rl.ERROR_FORBIDDEN: "Error_Forbidden",
    rl.ERROR_NOT_FOUND: "Error_Not_Found",
    rl.ERROR_REQUEST_TIMEOUT: "Error_Request_Timeout",
    rl.ERROR_GENERATION_COUNTER_TOO_LOW: "Error_Generation_Counter_Too_Low",
    rl.ERROR_INCOMPATIBLE_WITH_OVERLAY: "Error_Incompatible_with_Overlay",
    rl.ERROR_UNSUPPORTED_FORWARDING_OPTION: "Error_Unsupported_Forwarding_Option",
    rl.ERROR_DATA_TOO_LARGE: "Error_Data_Too_Large",
    rl.ERROR_DATA_TOO_OLD: "Error_Data_Too_Old",
    rl.ERROR_TTL_EXCEEDED: "Error_TTL_Exceeded",
    rl.ERROR_MESSAGE_TOO_LARGE: "Error_Message_Too_Large",
    rl.ERROR_UNKNOWN_KIND: "Error_Unknown_Kind",
    rl.ERROR_UNKNOWN_EXTENSION: "Error_Unknown_Extension",
    rl.ERROR_RESPONSE_TOO_LARGE: "Error_Response_Too_Large",
    rl.ERROR_CONFIG_TOO_OLD: "Error_Config_Too_Old",
    rl.ERROR_CONFIG_TOO_NEW: "Error_Config_Too_New",
    rl.ERROR_IN_PROGRESS: "Error_In_Progress",
    rl.ERROR_EXP_A: "Error_Exp_A",
    rl.ERROR_EXP_B: "Error_Exp_B",
    rl.ERROR_INVALID_MESSAGE: "Error_Invalid_Message",
}


class BadRequest(Exception):
    """A control request the channel cannot carry out as asked."""


class ControlUnavailable(Exception):
    """No peer answers on the control socket (none running for that folder)."""


def error_name(code: int | None) -> str:
    """The §14.9 name of a RELOAD error code ("Bad_Request" for channel errors)."""
    if code is None:
        return "Bad_Request"
    return ERROR_NAMES.get(code, f"Error_{code}")


def _error(code: int | None, reason: str) -> dict:
    return {"error": {"code": code, "name": error_name(code), "reason": reason}}


def _text(data: bytes) -> dict:
    try:
        return {"value": data.decode("utf-8"), "value_hex": data.hex()}
    except UnicodeDecodeError:
        return {"value": None, "value_hex": data.hex()}


class ControlServer:
    """Serves control requests for one :class:`Peer` on ``path``."""

    def __init__(self, path: Path, peer: Peer) -> None:
        self.path = Path(path)
        self.peer = peer
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Bind the socket with mode 0600 (umask at bind time, so it never
        exists with wider rights); a stale socket of a dead peer is replaced,
        a live one is an error."""
        if self.path.exists():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(self.path))
            except OSError:
                self.path.unlink()
            else:
                raise OSError(f"another peer already answers on {self.path}")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._server = await asyncio.start_unix_server(
            self._client, sock=sock, limit=MAX_LINE + 1
        )

    async def close(self) -> None:
        """Stop listening, end open connections and remove the socket."""
        if self._server is not None:
            self._server.close()
            for t in list(self._clients):
                t.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    too_long = _error(None, f"request longer than {MAX_LINE} bytes")
                    writer.write(self._encode(too_long))
                    await writer.drain()
                    return  # no way to find the next line boundary cheaply
                writer.write(self._encode(await self.handle_line(line)))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    @staticmethod
    def _encode(answer: dict) -> bytes:
        return json.dumps(answer, separators=(",", ":")).encode("utf-8") + b"\n"

    async def handle_line(self, line: bytes) -> dict:
        """One request line -> one answer (never raises for bad input)."""
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return _error(None, f"not JSON: {e}")
        if not isinstance(request, dict):
            return _error(None, "a request is a JSON object")
        op = request.get("op")
        handler = _OPS.get(op) if isinstance(op, str) else None
        if handler is None:
            return _error(None, f"unknown op {op!r}; one of {', '.join(sorted(_OPS))}")
        try:
            return await handler(self.peer, request)
        except BadRequest as e:
            return _error(None, str(e))
        except OverlayError as e:
            info = bytes(e.info).decode("utf-8", "replace")
            return _error(e.code, e.reason or info or str(e))
        except SecurityError as e:
            return _error(e.code, e.reason)
        except (rl.ReloadDecodeError, ValueError) as e:
            return _error(rl.ERROR_INVALID_MESSAGE, f"bad answer: {e}")


def _field(req: dict, name: str, kind: type, default: Any = ...) -> Any:
    if name not in req:
        if default is ...:
            raise BadRequest(f"{name!r} missing")
        return default
    value = req[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"{name!r} must be a {kind.__name__}")
    return value


def _hex(req: dict, name: str) -> bytes | None:
    text = _field(req, name, str, None)
    if text is None:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise BadRequest(f"{name!r} is not hex") from None


def _model(peer: Peer, kind: int) -> str:
    kd = peer.settings.kinds.get(kind)
    if kd is None:
        raise OverlayError(rl.ERROR_UNKNOWN_KIND, f"kind {kind} is not in the configuration")
    return kd.model


async def _ring(peer: Peer, req: dict) -> dict:
    return {"overlay": peer.settings.name, **peer.ring()}


async def _store(peer: Peer, req: dict) -> dict:
    resource = _field(req, "resource", str)
    kind = _field(req, "kind", int)
    data = _field(req, "value", str).encode("utf-8")
    index = _field(req, "index", int, None)
    key = _hex(req, "key_hex")
    lifetime = _field(req, "lifetime", int, 86400)
    if not 0 < lifetime <= 0xFFFFFFFF:
        raise BadRequest("'lifetime' out of range")
    model = _model(peer, kind)
    value = rs.DataValue(True, data)
    if model == rs.MODEL_ARRAY:
        # §7.4.1.1: index 0xffffffff appends after the last element.
        value = rs.ArrayEntry(rs.ARRAY_LAST if index is None else index, value)
    elif model == rs.MODEL_DICTIONARY:
        if key is None:
            raise BadRequest(f"kind {kind} is a dictionary: give a key")
        value = rs.DictionaryEntry(key, value)
    if (index is not None and model != rs.MODEL_ARRAY) or (
        key is not None and model != rs.MODEL_DICTIONARY
    ):
        raise BadRequest(f"kind {kind} uses the {model} model")
    ans = await peer.store_value(resource, kind, [value], lifetime=lifetime)
    return {
        "stored": [
            {"kind": r.kind, "generation": r.generation_counter,
             "replicas": [bytes(n).hex() for n in r.replicas]}
            for r in ans.kind_responses
        ]
    }


def _specifier(peer: Peer, req: dict) -> tuple[str, rs.StoredDataSpecifier]:
    resource = _field(req, "resource", str)
    kind = _field(req, "kind", int)
    model = _model(peer, kind)
    items: list = []
    if model == rs.MODEL_ARRAY:
        ranges = _field(req, "indices", list, [[0, rs.ARRAY_LAST]])
        for r in ranges:
            if (not isinstance(r, list) or len(r) != 2
                    or not all(isinstance(x, int) and 0 <= x <= 0xFFFFFFFF for x in r)
                    or r[0] > r[1]):
                raise BadRequest("'indices' is a list of [first, last] ranges")
            items.append(tuple(r))
    elif model == rs.MODEL_DICTIONARY:
        key = _hex(req, "key_hex")
        items = [] if key is None else [key]
    return resource, rs.StoredDataSpecifier(kind, 0, model, items)


def _position(v: Any) -> tuple[dict, Any]:
    if isinstance(v, rs.ArrayEntry):
        return {"index": v.index}, v.value
    if isinstance(v, rs.DictionaryEntry):
        return {"key_hex": v.key.hex()}, v.value
    return {}, v


async def _fetch(peer: Peer, req: dict) -> dict:
    resource, spec = _specifier(peer, req)
    ans, resp = await peer.fetch(resource, [spec])
    values = []
    for kr in ans.kind_responses:
        for sd in kr.values:
            where, dv = _position(sd.value)
            if not dv.exists:
                continue
            values.append({"kind": kr.kind, "generation": kr.generation, **where,
                           **_text(dv.value), "storage_time": sd.storage_time,
                           "lifetime": sd.lifetime})
    return {"resource": resource, "values": values, "hops": resp.hops,
            "responder": bytes(resp.responder).hex()}


async def _stat(peer: Peer, req: dict) -> dict:
    resource, spec = _specifier(peer, req)
    ans = await peer.stat(resource, [spec])
    values = []
    for kr in ans.kind_responses:
        for smd in kr.values:
            where, md = _position(smd.metadata)
            if not md.exists:
                continue
            values.append({"kind": kr.kind, "generation": kr.generation, **where,
                           "value_length": smd.value_length, "hash_hex": md.hash_value.hex(),
                           "storage_time": smd.storage_time, "lifetime": smd.lifetime})
    return {"resource": resource, "values": values}


async def _ping(peer: Peer, req: dict) -> dict:
    node = _hex(req, "node")
    if node is None or len(node) != len(peer.node_id):
        raise BadRequest(f"'node' must be a {len(peer.node_id)}-byte Node-ID in hex")
    start = time.monotonic()
    resp = await peer.ping(node)
    return {"responder": bytes(resp.responder).hex(), "hops": resp.hops,
            "rtt_ms": round((time.monotonic() - start) * 1000, 3)}


_OPS = {"ring": _ring, "store": _store, "fetch": _fetch, "stat": _stat, "ping": _ping}


def call(path: Path, request: dict, timeout: float = 60.0) -> dict:
    """Send one request to the peer on ``path`` and return its answer (for
    the CLI: blocking is fine there). Raises :class:`ControlUnavailable`
    when nothing listens on ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise ControlUnavailable(f"no overlay peer answers on {path}") from e
        sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ControlUnavailable(f"the peer on {path} closed the connection")
            buf += chunk
        return json.loads(buf)
    finally:
        sock.close()
