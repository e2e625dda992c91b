"""Probing, announcing and TXT updates of the board's mDNS names, loaded while they run.

``fw_mdns.Responder`` imports this module for a probe (at start, and when
a conflict is seen after announcing) or a TXT update and forgets it
afterwards (heap: only the answerer in ``fw_mdns`` stays resident).

Probing (RFC 6762 §8.1): three probes 250 ms apart ask for the instance and
host names (QU, type ANY) with our proposed SRV, TXT and A in the authority
section. A response holding another record with one of these names
(flagged by the responder's reader) renames that name "base-2", "base-3",
... and probing starts over (§9); after 15 conflicts it waits 5 s. A
simultaneous probe for our names whose sorted authority records compare
later than ours wins the tie-break (§8.2): we wait one second and probe
again, then meet its defence. Then the first announcement (§8.3), or of a
new TXT (§8.4); ``Responder._twice`` sends the second one a second later
with ``fw_mdns_wire`` alone, so this module is not held meanwhile.
"""

import asyncio
import socket
import struct
import sys

import fw_mdns

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_FLUSH = const(0x8001)  # class IN with the cache-flush bit (§10.2)
_TIE = const(4)
_META = b"\x09_services\x07_dns-sd\x04_udp\x05local\x00"


def _wire(labels):
    """Labels (str) as a name in wire form (RFC 1035 §3.1)."""
    out = b""
    for x in labels:
        x = x.encode()
        if not 0 < len(x) < 64:
            raise ValueError(x)
        out += bytes((len(x),)) + x
    if len(out) > 254:
        raise ValueError(out)
    return out + b"\x00"


def _txt(d):
    """A dict as TXT rdata: "key=value" strings, keys sorted (RFC 6763 §6.1-6.4).

    A value None gives a boolean attribute (just the key); str, int and bytes
    values are allowed. Keys are non-empty, printable ASCII without "=".
    """
    out = b""
    for k in sorted(d):
        v = d[k]
        x = k.encode()
        if not k or "=" in k or min(x) < 0x20 or max(x) > 0x7E:
            raise ValueError(k)
        if v is not None:
            x += b"=" + (str(v).encode() if isinstance(v, (int, str)) else bytes(v))
        if len(x) > 255:
            raise ValueError(k)
        out += bytes((len(x),)) + x
    return out or b"\x00"


def _svc(r):
    s = r._base[2]
    return s if s.endswith(".local") else s + ".local"


def _build(r, w, txt=None):
    """r's seven records (see fw_mdns_wire) as one response message,
    with TXT rdata txt, else r.txt (set before the first build), else the one
    they had."""
    t = r.txt
    r.txt = None
    if isinstance(t, dict):
        t = _txt(t)
    txt = txt or t or w.me(r)[2][5]
    svc = _svc(r).split(".")
    inst = _wire([r.instance] + svc)
    svc = _wire(svc)
    host = _wire([r.host, "local"])
    o = 4500  # §10: 75 minutes, and 120 s for records with a host name in them
    r._me = bytes(w.enc(0, 0x8400, (), ([(1,) + x for x in (
        (svc, 12, 1, o, inst),
        (inst, 33, _FLUSH, 120, struct.pack(">HHH", 0, 0, r._base[3]) + host),
        (inst, 16, _FLUSH, o, txt),
        (host, 1, _FLUSH, 120, bytes(map(int, r.ip.split(".")))),
        (_META, 12, 1, o, svc),
        (inst, 47, _FLUSH, o, inst + b"\x00\x05\x00\x00\x80\x00\x40"),  # TXT, SRV
        (host, 47, _FLUSH, 120, host + b"\x00\x01\x40"))], (), ())))  # A


def _open(r):
    """Bind 5353, join the group (§11: TTL 255) and start r's reader task."""
    if r._sock is None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(socket.getaddrinfo("0.0.0.0", 5353)[0][-1])
        me = bytes(map(int, r.ip.split(".")))
        lv = getattr(socket, "IPPROTO_IP", 0)
        s.setsockopt(lv, socket.IP_ADD_MEMBERSHIP, b"\xe0\x00\x00\xfb" + me)
        if sys.platform == "linux":
            # IP_MULTICAST_IF, _TTL, _LOOP: Linux numbers, absent on the unix port
            for opt, v in ((32, me), (33, 255), (34, 0)):
                s.setsockopt(lv, opt, v)
        s.setblocking(False)
        r._sock = (s, socket.getaddrinfo("224.0.0.251", 5353)[0][-1])
        r._sock += (asyncio.create_task(r._read()),)


def _next(base, name):
    """base-2 for base, base-(n+1) for base-n."""
    return "%s-%d" % (base, int(name[len(base) + 1:] or 1) + 1)


def update(r, txt):
    """New TXT data (a bad one is logged and ignored); true once announced (§8.4)."""
    w = fw_mdns._get("fw_mdns_wire")
    try:
        txt = _txt(txt)
        if r._me:
            _build(r, w, txt)
        else:
            r.txt = txt
        if r.state == "announced":
            w.tell(r, True)
            return True
    except ValueError as e:
        w.say(r, "mdns: %r" % e)
    finally:
        w = None
        fw_mdns._rel("fw_mdns_wire")


def stop(r):
    """Responder.stop: goodbye (TTL 0, §10.1) for every record, then close the socket."""
    if r._task:
        r._task.cancel()
        r._task = None
    if r.state == "announced":
        w = fw_mdns._get("fw_mdns_wire")
        try:
            w.bye(r)
        finally:
            w = None
            fw_mdns._rel("fw_mdns_wire")
    r.state = "stopped"
    if fw_mdns._active is r:
        fw_mdns._active = None
    if r._sock:
        r._sock[2].cancel()
        r._sock[0].close()
        r._sock = None


async def run(r, ready=None):
    """Probe until the names are ours (renaming on conflict), then announce once
    (true; Responder._twice sends the second); ready is set then, or when the
    names cannot be built."""
    c = [0]  # 1: host name taken, 2: instance name taken, 4: tie-break lost

    def hook(flags, qs, rs):
        if r.state != "probing":
            return
        m = w.me(r)
        if flags & 0x8000:
            c[0] |= w.conflicts(m, rs)
            return
        for n in (m[1][1].lower(), m[3][1].lower()):
            for q in qs:
                if q[0].lower() == n:  # a simultaneous probe (§8.2)
                    theirs = sorted((x[3] & 0x7FFF, x[2], x[5]) for x in rs
                                    if x[0] == 2 and x[1].lower() == n)
                    ours = sorted((x[3] & 0x7FFF, x[2], x[5]) for x in m[1:4]
                                  if x[1].lower() == n)
                    if theirs and theirs > ours:
                        c[0] |= _TIE
                    break

    w = fw_mdns._get("fw_mdns_wire")
    renames = 0
    try:
        _build(r, w)
        _open(r)
        r._hooks += (hook,)
        while True:
            c[0] = 0
            await asyncio.sleep_ms(w.rand(250))
            for _ in range(3):
                me = w.me(r)  # a TXT update may rebuild them
                w.send(r, 0, [(me[1][1], 255, 0x8001), (me[3][1], 255, 0x8001)], (),
                       [x[:3] + (1,) + x[4:] for x in me[1:4]])
                me = None
                await asyncio.sleep_ms(250)
                if c[0]:
                    break
            if not c[0]:
                break
            if c[0] == _TIE:
                await asyncio.sleep_ms(1000)  # §8.2: defer, then probe again
                continue
            if c[0] & 1:
                r.host = _next(r._base[1], r.host)
            if c[0] & 2:
                r.instance = _next(r._base[0], r.instance)
            _build(r, w)
            renames += 1
            w.say(r, "mdns renamed %s %s" % (r.instance, r.host))
            if renames % 15 == 0:
                await asyncio.sleep_ms(5000)  # §8.1: slow down after 15 conflicts
        r._hooks = tuple(f for f in r._hooks if f is not hook)
        r.state = "announced"
        w.say(r, "mdns announced %s.%s %s.local" % (r.instance, _svc(r), r.host))
        w.tell(r, False)
        if ready:
            ready.set()
        r._task = None  # its second announcement needs no cancelling: it checks the state
        return True
    except ValueError as e:  # a bad label or TXT key: the board runs without mDNS
        w.say(r, "mdns: %r" % e)
        r.state = "stopped"
        if ready:
            ready.set()
    finally:
        r._hooks = tuple(f for f in r._hooks if f is not hook)
        w = None
        fw_mdns._rel("fw_mdns_wire")
