"""The board's mDNS responder and querier (RFC 6762, DNS-SD RFC 6763).

The board has no screen and no configured address for its controller, so it
announces itself as ``<board id>._sipmesh-board._tcp.local`` and finds the
controller by browsing ``_sipmesh._tcp.local``. One UDP socket on port 5353
serves both: a single task reads it and hands queries to the responder and
responses to the prober and to a running ``find``.

The module stays resident in a 100 KB heap, so it is one class with few
methods, its own four records are built once per name or TXT change, and an
incoming packet is decoded only as far as the records named like ours (or,
while a ``find`` runs, the records it browses for). MicroPython's sockets
have no ``recvfrom_into``, so each datagram is one bytes object of its size.

Simplifications, each allowed by the RFC's SHOULDs: responses go to the
multicast group even for QU questions (§5.4 permits it); legacy unicast
queries (source port not 5353, §6.7) get a unicast answer; the §8.2
tie-break compares the sorted proposed records of each probed name; after
announcing, a conflicting record makes the board probe again (§9), which
renames it as "name-2", "name-3", ... when the other host defends the name.
One ``find`` runs at a time.
"""

import asyncio
import os
import socket
import sys

from sipmesh.proto import mdns
from sipmesh.proto.mdns import Message, Question, Record

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_PORT = const(5353)
_TTL_HOST = const(120)  # RFC 6762 §10: records with a host name in them
_TTL_OTHER = const(4500)  # §10: 75 minutes for the others
# §17 allows 9000 bytes, but responders split at the Ethernet MTU (zeroconf,
# avahi do) and a 9000-byte block is rarely free in a fragmented heap.
_RECV_MAX = const(1500)
_A = const(1)
_PTR = const(12)
_TXT = const(16)
_SRV = const(33)
_NSEC = const(47)
_ANY = const(255)
_RESP = const(0x8400)  # QR + AA (RFC 6762 §18.2, §18.4)
_HOST = const(1)
_INST = const(2)
_TIE = const(4)
_GROUP = "224.0.0.251"
_META = "_services._dns-sd._udp.local"

_active = None


def _rand(n):
    """A random int in [0, n)."""
    b = os.urandom(2)
    return ((b[0] << 8) | b[1]) % n


def _addr(host, port):
    return socket.getaddrinfo(host, port)[0][-1]


def _wait(sock):
    yield asyncio.core._io_queue.queue_read(sock)


class Responder:
    """Announces one service instance of this board and answers for it.

    ``instance`` and ``host`` change when probing finds them taken (§9);
    ``state`` is "new", "probing", "announced" or "stopped". ``log`` may be
    set to a callable taking one line of text.
    """

    def __init__(self, ip, instance, service="_sipmesh-board._tcp", port=7381, txt=None,
                 host=None):
        self.ip = ip
        self.base = self.instance = instance
        self.hostbase = self.host = host or instance
        self.service = service if service.endswith(".local") else service + ".local"
        self.port = port
        self.txt = mdns.txt_items(txt or {})
        self.state = "new"
        self.log = None
        self.dropped = self.renames = self._conflict = 0
        self._ni = self._nh = 1
        self._sock = self._task = self._serve_task = self._b = self._rr = self._ready = None

    def _records(self, ttl=None):
        """PTR, SRV, TXT, A of this instance (cached), or fresh ones with ttl."""
        rr = self._rr
        if rr is None or ttl is not None:
            inst = self.iname = (self.instance.replace("\\", "\\\\").replace(".", "\\.")
                                 + "." + self.service)
            host = self.hname = self.host + ".local"
            self._lc = (self.service.lower(), _META, inst.lower(), host.lower())
            o = _TTL_OTHER if ttl is None else ttl
            h = _TTL_HOST if ttl is None else ttl
            rr = [Record(self.service, _PTR, inst, o),
                  Record(inst, _SRV, (0, 0, self.port, host), h, True),
                  Record(inst, _TXT, self.txt, o, True),
                  Record(host, _A, self.ip, h, True)]
            if ttl is None:
                self._rr = rr
        return rr

    def _say(self, text):
        if self.log:
            self.log(text)

    def _open(self):
        if self._sock is None:
            s = self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(_addr("0.0.0.0", _PORT))
            me = mdns.ip_bytes(self.ip)
            lv = getattr(socket, "IPPROTO_IP", 0)
            s.setsockopt(lv, socket.IP_ADD_MEMBERSHIP, mdns.ip_bytes(_GROUP) + me)
            if sys.platform == "linux":
                # IP_MULTICAST_IF, _TTL (255, §11), _LOOP: Linux numbers, absent on the unix port
                for opt, v in ((32, me), (33, 255), (34, 0)):
                    s.setsockopt(lv, opt, v)
            s.setblocking(False)
            self._group = _addr(_GROUP, _PORT)
            self._records()
            self._serve_task = asyncio.create_task(self._serve())

    def _go(self):
        if self._task:
            self._task.cancel()
        self.state = "probing"
        self._task = asyncio.create_task(self._run())

    async def start(self):
        """Probe (§8.1), rename on conflict (§9), announce (§8.3); return once announced."""
        global _active
        self._open()
        _active = self
        self._ready = asyncio.Event()
        self._go()
        await self._ready.wait()

    async def _run(self):
        while True:
            self._conflict = 0
            await asyncio.sleep_ms(_rand(250))
            for _ in range(3):
                auth = []
                for r in self._records()[1:]:
                    auth.append(Record(r.name, r.rtype, r.data, r.ttl))
                self._send(Message(0, 0, [Question(self.iname, _ANY, unicast=True),
                                          Question(self.hname, _ANY, unicast=True)],
                                   authority=auth))
                await asyncio.sleep_ms(250)
                if self._conflict:
                    break
            c = self._conflict
            if not c:
                break
            if c == _TIE:
                await asyncio.sleep_ms(1000)  # §8.2: defer, then probe again
                continue
            if c & _HOST:
                self._nh += 1
                self.host = "%s-%d" % (self.hostbase, self._nh)
            if c & _INST:
                self._ni += 1
                self.instance = "%s-%d" % (self.base, self._ni)
            self._rr = None
            self.renames += 1
            self._say("mdns renamed %s %s" % (self.instance, self.host))
            if self.renames % 15 == 0:
                await asyncio.sleep_ms(5000)  # §8.1: slow down after 15 conflicts
        self.state = "announced"
        self._say("mdns announced %s %s" % (self.iname, self.hname))
        await self._announce(False)

    async def _announce(self, txt_only):
        """Two announcements one second apart (§8.3), or of the TXT alone (§8.4)."""
        for i in range(2):
            if i:
                await asyncio.sleep_ms(1000)
            if self.state != "announced":
                return
            rr = self._records()
            self._send(Message(0, _RESP, answers=rr[2:3] if txt_only else rr))
            self._ready.set()

    def update_txt(self, txt):
        """New TXT data, re-announced twice (§8.4) once the names are ours."""
        self.txt = mdns.txt_items(txt)
        self._rr = None
        if self.state == "announced":
            asyncio.create_task(self._announce(True))

    async def stop(self):
        """Goodbye (TTL 0, §10.1) for every record, then close the socket."""
        global _active
        if self._task:
            self._task.cancel()
            self._task = None
        if self.state == "announced":
            self._send(Message(0, _RESP, answers=self._records(0)))
        self.state = "stopped"
        if _active is self:
            _active = None
        if self._serve_task:
            self._serve_task.cancel()
            self._sock.close()
            self._sock = self._serve_task = None

    def _send(self, msg, addr=None):
        try:
            self._sock.sendto(msg.encode(), addr or self._group)
        except Exception as e:  # noqa: BLE001 - OSError or MdnsError: logged, not fatal
            self._say("mdns: %r" % e)

    def _keep(self, name):
        return self._b is not None or name.lower() in self._lc

    async def _serve(self):
        sock = self._sock
        while True:
            await _wait(sock)
            try:
                try:
                    data, addr = sock.recvfrom(_RECV_MAX)
                except MemoryError:
                    # No 1.5 KB block free now: drop this datagram (one byte read
                    # discards it), or the socket stays readable and this loop spins.
                    sock.recv(1)
                    raise
                if isinstance(addr, tuple):
                    ip, port = addr[0], addr[1]
                else:  # raw sockaddr on the unix port
                    ip, port = mdns.ip_str(addr[4:8]), (addr[2] << 8) | addr[3]
                if ip == self.ip:
                    continue  # our own
                msg = mdns.decode(data, self._keep)
                data = None
                if not msg.flags & 0x780F:  # opcode and rcode 0 (RFC 6762 §18.3, §18.11)
                    await self._on(msg, addr, port)
            except Exception as e:  # noqa: BLE001 - one bad packet never stops the responder
                self.dropped += 1
                if not isinstance(e, (OSError, mdns.MdnsError)):
                    self._say("mdns: %r" % e)

    async def _on(self, msg, addr, port):
        """One message: conflicts (§9), a find's answers, §8.2 tie-break, or a query."""
        rr = self._records()
        svc, meta, inst, host = self._lc
        state = self.state
        if msg.flags & 0x8000:
            for r in msg.records():
                n = r.name.lower()
                t = r.rtype
                flag = _HOST if n == host else _INST if n == inst else 0
                if flag and t != _NSEC:
                    for m in rr:
                        if r.same(m):
                            break
                    else:
                        if state == "probing":
                            self._conflict |= flag
                        elif state == "announced" and t in (_A, _SRV, _TXT) and r.ttl:
                            self._say("mdns: %r" % r.name)
                            self._go()
                b = self._b
                if not b:
                    continue
                seen = self._seen
                ptr = seen[_PTR]
                if t == _PTR and n == b:
                    n = r.data.lower()
                    if not r.ttl:
                        ptr.pop(n, None)
                    elif n not in ptr and len(ptr) < 16:
                        ptr[n] = r
                        self._chg = 0
                elif (t == _A or t in (_SRV, _TXT) and n.endswith("." + b)) and len(seen[t]) < 16:
                    seen[t][n] = r.data
            return
        if state == "probing":
            # §8.2: a simultaneous probe with later data wins; we defer
            for n in (inst, host):
                ours, theirs = c = ([], [])
                for q in msg.questions:
                    if q.name.lower() == n:
                        for i in (0, 1):
                            for r in (rr, msg.authority)[i]:
                                if r.name.lower() == n:
                                    c[i].append((r.rclass, r.rtype, mdns.rdata(r)))
                            c[i].sort()
                        break
                if theirs and theirs > ours:
                    self._conflict |= _TIE
            return
        if state != "announced":
            return
        ans = []
        extra = []
        for q in msg.questions:
            t = q.qtype
            n = q.name.lower()
            if q.qclass not in (1, _ANY):
                continue
            if t in (_PTR, _ANY) and n == svc:
                ans.append(rr[0])
                extra += rr[1:]
            elif t in (_PTR, _ANY) and n == meta:
                ans.append(Record(_META, _PTR, self.service, _TTL_OTHER))
            elif n == inst:
                if t in (_SRV, _ANY):
                    ans.append(rr[1])
                    extra.append(rr[3])
                if t in (_TXT, _ANY):
                    ans.append(rr[2])
                if t not in (_SRV, _TXT, _ANY):  # §6.1 negative answer
                    ans.append(Record(self.iname, _NSEC, (self.iname, [_TXT, _SRV]), _TTL_OTHER,
                                      True))
            elif n == host:
                ans.append(rr[3] if t in (_A, _ANY) else
                           Record(self.hname, _NSEC, (self.hname, [_A]), _TTL_HOST, True))
        a, e = out = ([], [])
        na = len(ans)
        wait = 0
        for i, r in enumerate(ans + extra):
            if i >= na and r in ans:
                continue
            for k in msg.answers:  # §7.1: a known answer with at least half our TTL
                if k.same(r) and k.ttl >= r.ttl // 2:
                    break
            else:
                if port != _PORT:  # §6.7 legacy unicast: TTL at most 10, no cache-flush bit
                    r = Record(r.name, r.rtype, r.data, min(r.ttl, 10))
                elif r.rtype == _PTR and i < na and not msg.authority:
                    wait = 1  # §6: shared answers wait 20-120 ms
                out[1 if i >= na else 0].append(r)
        if not a:
            return
        if port != _PORT:  # legacy: echo id and questions, unicast
            self._send(Message(msg.id, _RESP, msg.questions, a, additional=e), addr)
            return
        if wait:
            await asyncio.sleep_ms(20 + _rand(100))
        self._send(Message(0, _RESP, answers=a, additional=e))

    async def find(self, service="_sipmesh._tcp", timeout_ms=3000):
        """Browse for service (§5.2 queries 1, 2, 4 s apart, QU on the first, §5.4).

        Returns [{instance, host, port, ip, txt}] of the instances whose SRV,
        TXT and A were seen, asking for what the answers left out. Ends at
        timeout_ms, or 300 ms after the last new answer once every instance
        found is complete.
        """
        opened = self._sock is None
        self._open()
        svc = service if service.endswith(".local") else service + ".local"
        self._b = svc.lower()
        seen = self._seen = {_PTR: {}, _SRV: {}, _TXT: {}, _A: {}}
        ptr = seen[_PTR]
        self._chg = 0  # 25 ms ticks since the last new instance
        nxt = 0
        asked = -12
        try:
            for i in range(timeout_ms // 25):
                if i == nxt:  # §7.1 known answers
                    self._send(Message(0, 0, [Question(svc, _PTR, unicast=not i)],
                                       list(ptr.values())))
                    nxt = 2 * nxt + 40
                qs = []
                for k, p in ptr.items():
                    s = seen[_SRV].get(k)
                    if s is None:
                        qs.append(Question(p.data, _SRV))
                    elif s[3].lower() not in seen[_A]:
                        qs.append(Question(s[3], _A))
                    if k not in seen[_TXT]:
                        qs.append(Question(p.data, _TXT))
                # let the first answer's additionals arrive before asking
                if qs and i - asked >= 12 and self._chg >= 4:
                    self._send(Message(0, 0, qs))
                    asked = i
                if ptr and not qs and self._chg >= 12:
                    break
                qs = None
                self._chg += 1
                await asyncio.sleep_ms(25)
        finally:
            self._b = None
            if opened:
                await self.stop()
        out = []
        for k, p in ptr.items():
            s = seen[_SRV].get(k)
            t = seen[_TXT].get(k)
            ip = s and seen[_A].get(s[3].lower())
            if ip and t is not None:
                out.append({"instance": p.data[:-len(svc) - 1].replace("\\.", ".")
                            .replace("\\\\", "\\"), "host": s[3], "port": s[2], "ip": ip,
                            "txt": mdns.txt_dict(t)})
        self._seen = None
        return out


async def find(service="_sipmesh._tcp", timeout_ms=3000, ip="0.0.0.0"):
    """Browse with the running responder's socket, or a temporary one on ip."""
    return await (_active or Responder(ip, "")).find(service, timeout_ms)
