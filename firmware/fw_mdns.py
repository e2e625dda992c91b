"""The board's mDNS responder and querier (RFC 6762, DNS-SD RFC 6763).

The board has no screen and no configured address for its controller, so it
announces itself as ``<board id>._sipmesh-board._tcp.local`` and finds the
controller by browsing ``_sipmesh._tcp.local``. One UDP socket on port 5353
serves both: a single task reads it, answers queries and hands every packet
to the prober and to a running ``find``.

Heap (100 KB board): this module stays resident and holds the socket, the
reader task and the board's records, built once per name or TXT change as
one message (``_me``, see ``fw_mdns_wire``). The rest is
imported while it runs and forgotten afterwards by its last user:
``fw_mdns_wire`` (parser, encoder, answers) for each packet that may
concern us, ``fw_mdns_ctl`` for probing, announcing and TXT updates,
``fw_mdns_find`` for a browse. The reader's sieve rests on compression
(RFC 1035 §4.1.4): a pointer only refers to labels earlier in the packet,
so the first label of a name always appears in the packet as written; a
packet without the text of the first label of any of our names (a
response: of our instance or host name) cannot concern us and is dropped
unread.
``sipmesh.proto.mdns``, the full codec, judges these bytes in the tests;
the board does not load it.

Behaviour: probing with renames "name-2", "name-3", ... on conflict (§8.1,
§9), the §8.2 tie-break, two announcements (§8.3), TXT updates announced
twice (§8.4), goodbyes (§10.1), answers to PTR/SRV/TXT/A/ANY and the
services meta-query, NSEC negative answers (§6.1), known-answer
suppression (§7.1), shared answers delayed 20-120 ms (§6), legacy unicast
(source port not 5353, §6.7: unicast, id and questions echoed, TTL <= 10,
no cache-flush bit), and, after announcing, a conflicting record makes the
board probe again (§9). Responses go to the group even for QU questions
(§5.4 permits it). One ``find`` runs at a time.
"""

import asyncio
import gc
import sys

_active = None  # the started responder, for find


def _get(name):
    """Import a transient part for one more user (counted in the module itself);
    _rel(name) when done: its last user forgets and empties it, so every user
    holds it through _get, none by a plain import."""
    m = __import__(name)
    m.users = getattr(m, "users", 0) + 1
    return m


def _rel(name):
    m = sys.modules.get(name)
    if m:
        m.users -= 1
        if not m.users:
            # emptied too: a stale word the conservative GC takes for a pointer to
            # the module then pins the module object alone, not its code
            sys.modules.pop(name).__dict__.clear()
            m = None
            gc.collect()


async def _with(name, fn, *args):
    """fn(*args) of module name, imported for the call (plain or coroutine function)."""
    m = _get(name)
    try:
        m = getattr(m, fn)(*args)
        if hasattr(m, "send"):
            m = await m
        return m
    finally:
        m = args = None
        _rel(name)


class Responder:
    """Announces one service instance of this board and answers for it.

    ``instance`` and ``host`` change when probing finds them taken (§9);
    ``state`` is "new", "probing", "announced" or "stopped". ``log`` may be
    set to a callable taking one line of text.
    """

    def __init__(self, ip, instance, service="_sipmesh-board._tcp", port=7381, txt=None,
                 host=None):
        self.ip = ip
        self.instance = instance
        self.host = host or instance
        self._base = (instance, self.host, service, port)  # names before renames
        self.txt = txt or {}  # until the first build puts it in _me
        self.state = "new"
        # _sock: (socket, group address, reader task) while open
        self.log = self._sock = self._task = self._me = None
        # lock: an asyncio.Lock the application's own transient jobs hold, or None
        self.lock = None
        self._hooks = ()

    async def _ctl(self, fn, *args, part="fw_mdns_ctl"):
        """part.<fn>(self, *args) under self.lock when given: this code and a job's
        modules (a signature check, an overlay refresh) are never in the heap
        together."""
        if self.lock is None:
            return await _with(part, fn, self, *args)
        async with self.lock:
            return await _with(part, fn, self, *args)

    async def start(self):
        """Probe (§8.1), rename on conflict (§9), announce (§8.3); return once announced.

        The probing runs in its own task (fw_mdns_ctl.run, under self.lock)."""
        global _active
        _active = self
        ready = asyncio.Event()
        self.state = "probing"
        self._task = asyncio.create_task(self._twice("run", ready))
        await ready.wait()

    def update_txt(self, txt):
        """New TXT data, re-announced twice (§8.4) once the names are ours."""
        asyncio.create_task(self._twice("update", txt))

    async def _twice(self, fn, *args):
        """fw_mdns_ctl.<fn>(self, *args), true once it announced; then the second
        announcement (§8.3, §8.4) one second later, with nothing loaded meanwhile."""
        if await self._ctl(fn, *args):
            await asyncio.sleep_ms(1000)
            if self.state == "announced":
                await self._ctl("tell", fn == "update", part="fw_mdns_wire")

    async def stop(self):
        """Goodbye (TTL 0, §10.1) for every record, then close the socket."""
        await self._ctl("stop")

    async def _read(self):
        """The reader task: each datagram that may concern us to fw_mdns_wire.on.

        A datagram is read (a 1.5 KB block) only while no job runs, or when a
        probe or a find (which hold the job lock) waits for it."""
        sock, group = self._sock[:2]
        while True:
            yield asyncio.core._io_queue.queue_read(sock)
            try:
                if not self._hooks and self.lock is not None and self.lock.locked():
                    # A job is at its heap peak: the datagram waits in the socket's
                    # queue until it ends, then is read before the next job starts.
                    async with self.lock:
                        pass
                try:
                    # §17 allows 9000 bytes, but responders split at the Ethernet MTU
                    # (zeroconf, avahi do) and a 9000-byte block is rarely free.
                    data, addr = sock.recvfrom(1500)
                except MemoryError:
                    # No 1.5 KB block free now: drop this datagram (one byte read
                    # discards it), or the socket stays readable and this loop spins.
                    sock.recv(1)
                    raise
                if isinstance(addr, tuple):
                    ip, port = addr[0], addr[1]
                else:  # raw sockaddr on the unix port
                    ip, port = "%d.%d.%d.%d" % tuple(addr[4:8]), (addr[2] << 8) | addr[3]
                if ip == self.ip:
                    continue  # our own
                if not self._hooks:  # the sieve: a query may name our service, the
                    # meta-query, instance or host; a response only the last two
                    low = data.lower()
                    k = (self.instance, self.host)
                    if not data[2] & 0x80:
                        k += (self._base[2].split(".")[0], "_services")
                    if not any(x.encode().lower() in low for x in k):
                        continue
                    low = None
                if self._hooks:  # a probe or find runs (holding the lock): wire is loaded
                    data = await _with("fw_mdns_wire", "on", self, data, port)
                else:  # a query waits for a running job
                    data = await self._ctl("on", data, port, part="fw_mdns_wire")
                if data:  # (delay, answer)
                    if data[0]:
                        await asyncio.sleep_ms(data[0])
                    sock.sendto(data[1], addr if port != 5353 else group)
                    data = None
            except Exception as e:  # noqa: BLE001 - one bad packet never stops the responder
                if self.log and not isinstance(e, (OSError, ValueError, IndexError)):
                    self.log("mdns: %r" % e)


async def find(service="_sipmesh._tcp", timeout_ms=3000, ip="0.0.0.0"):
    """Browse for service (RFC 6763 §4) with the running responder's socket, or a
    temporary one on ip: [{instance, host, port, ip, txt}], see fw_mdns_find."""
    return await _with("fw_mdns_find", "find", _active or Responder(ip, ""), service,
                       timeout_ms)
