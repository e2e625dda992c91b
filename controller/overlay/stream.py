"""A compact stream transport for plain-TCP RELOAD links (RFC 6940 §6.6).

asyncio's socket transport costs about 3 KiB per connection end in
Python objects (the transport and its dictionaries, a weak registry,
buffers and handles). A host of many peers (the overlay benchmark runs a
thousand in a few processes, each with some twenty links) spends most of its
memory there, so plain-TCP links use this transport instead: a non-blocking
socket watched with ``loop.add_reader`` / ``add_writer``, ``__slots__``, a
write buffer only while the kernel's is full, and the small part of the
``asyncio.Transport`` interface that :class:`link.Link` uses (write, close,
abort, is_closing, get_extra_info, flow control callbacks). TLS links keep
asyncio's SSL transport.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

READ_SIZE = 16384
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024


class SocketStream:
    """One connected TCP socket driving an ``asyncio.Protocol``."""

    __slots__ = ("_sock", "_fd", "_loop", "_protocol", "_wbuf", "_state", "_paused")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._protocol = protocol
        self._wbuf: bytearray | None = None
        self._state = 0  # 0 open, 1 closing (flushing), 2 closed
        self._paused = False
        protocol.connection_made(self)
        if self._state == 0:
            loop.add_reader(self._fd, self._read_ready)

    # ---------------------------------------------------------- transport API

    def get_extra_info(self, name: str, default=None):
        if name == "socket":
            return self._sock
        try:
            if name == "peername":
                return self._sock.getpeername()
            if name == "sockname":
                return self._sock.getsockname()
        except OSError:
            return default
        return default

    def is_closing(self) -> bool:
        return self._state != 0

    def write(self, data: bytes) -> None:
        if self._state != 0 or not data:
            return
        if self._wbuf is None:
            try:
                n = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                self._finish(e)
                return
            if n == len(data):
                return
            self._wbuf = bytearray(memoryview(data)[n:])
            self._loop.add_writer(self._fd, self._write_ready)
        else:
            self._wbuf += data
        if not self._paused and len(self._wbuf) > HIGH_WATER:
            self._paused = True
            self._protocol.pause_writing()

    def close(self) -> None:
        """Stop reading, send what is buffered, then close (FIN)."""
        if self._state != 0:
            return
        self._state = 1
        self._loop.remove_reader(self._fd)
        if self._wbuf is None:
            self._loop.call_soon(self._finish, None)

    def abort(self) -> None:
        """Close now, dropping anything buffered."""
        if self._state != 2:
            self._finish(None)

    # ---------------------------------------------------------- internals

    def _read_ready(self) -> None:
        try:
            data = self._sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._finish(e)
            return
        if not data:
            self._protocol.eof_received()
            self.close()
            return
        self._protocol.data_received(data)

    def _write_ready(self) -> None:
        buf = self._wbuf
        try:
            n = self._sock.send(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._finish(e)
            return
        del buf[:n]
        if buf:
            if self._paused and len(buf) <= LOW_WATER:
                self._paused = False
                self._protocol.resume_writing()
            return
        self._wbuf = None
        self._loop.remove_writer(self._fd)
        if self._paused:
            self._paused = False
            self._protocol.resume_writing()
        if self._state == 1:
            self._finish(None)

    def _finish(self, exc: Exception | None) -> None:
        if self._state == 2:
            return
        self._state = 2
        self._loop.remove_reader(self._fd)
        if self._wbuf is not None:
            self._loop.remove_writer(self._fd)
            self._wbuf = None
        self._sock.close()
        # As asyncio does: connection_lost is never called from inside
        # write(), close() or abort().
        self._loop.call_soon(self._protocol.connection_lost, exc)


async def open_stream(
    host: str, port: int, factory: Callable[[], asyncio.Protocol], local_addr=None
):
    """Connect to host:port and return (stream, protocol)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    err: Exception | None = None
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            if local_addr is not None:
                sock.bind(local_addr)
            await loop.sock_connect(sock, addr)
        except OSError as e:
            sock.close()
            err = e
            continue
        protocol = factory()
        return SocketStream(loop, sock, protocol), protocol
    raise err if err is not None else OSError(f"cannot resolve {host}")


class StreamServer:
    """A listening socket; each accepted connection gets a SocketStream and a
    protocol from ``factory``."""

    __slots__ = ("_sock", "_loop", "_factory", "_closed", "sockets")

    def __init__(self, loop, sock: socket.socket, factory) -> None:
        self._sock = sock
        self._loop = loop
        self._factory = factory
        self._closed = loop.create_future()
        self.sockets = (sock,)
        loop.add_reader(sock.fileno(), self._accept_ready)

    def _accept_ready(self) -> None:
        for _ in range(64):
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: try again on the next readiness
            SocketStream(self._loop, conn, self._factory())

    def close(self) -> None:
        if not self._closed.done():
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)


async def start_stream_server(host: str, port: int, factory, backlog: int = 128) -> StreamServer:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return StreamServer(loop, sock, factory)
