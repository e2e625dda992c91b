"""DNS wire format and the answers of the board's mDNS responder (RFC 6762).

Loaded by ``fw_mdns`` for each packet that may concern the board, and by
the prober and the browser while they run; forgotten afterwards (heap).

A parsed record is (section, name, type, class, ttl, rdata): the name in
wire form (length-prefixed labels, final 0) without compression, the class
with its top bit (cache-flush, §10.2), the rdata with its name (PTR, CNAME,
SRV, NSEC) uncompressed; a question is (name, type, class). The board's own
seven records are one response message, ``Responder._me``, whose parsed
answers are: PTR, SRV, TXT, A, the PTR answering the services meta-query
(RFC 6763 §9), and the NSEC of §6.1 for the instance and for the host. The
encoder compresses names as RFC 6762 §18.14 allows, as ``sipmesh.proto.mdns``
does (the tests compare the two byte for byte).
"""

import asyncio
import os
import struct


def say(r, text):
    if r.log:
        r.log(text)


def rand(n):
    """A random int in [0, n)."""
    b = os.urandom(2)
    return ((b[0] << 8) | b[1]) % n


def _name(d, p):
    """(wire name at d[p], position after it); pointers only go backwards (no loops)."""
    out = b""
    end = 0
    lim = p
    while True:
        c = d[p]
        if c >= 0xC0:
            q = ((c & 0x3F) << 8) | d[p + 1]
            if q >= lim:
                raise ValueError
            end = end or p + 2
            lim = p = q
            continue
        out += d[p:p + c + 1]
        p += c + 1
        if c > 63 or len(out) > 255 or p > len(d):
            raise ValueError
        if not c:
            return out, end or p


def parse(d, keep):
    """(header, questions, records) of message d (RFC 1035 §4.1); ValueError or
    IndexError when malformed. Records whose lower-case name is not in keep
    (unless keep is None) are skipped unread."""
    n = len(d)
    if n < 12:
        raise ValueError
    h = struct.unpack_from(">6H", d)
    if sum(h[2:]) > 100:
        raise ValueError
    qs = []
    rs = []
    p = 12
    for s in range(4):
        for _ in range(h[2 + s]):
            nm, p = _name(d, p)
            if p + (10 if s else 4) > n:
                raise ValueError
            t, c = struct.unpack_from(">HH", d, p)
            p += 4
            if not s:
                qs.append((nm, t, c))
                continue
            ttl, k = struct.unpack_from(">IH", d, p)
            p += 6
            e = p + k
            if e > n:
                raise ValueError
            if keep is None or nm.lower() in keep:
                if t == 1 and k != 4:
                    raise ValueError
                if t in (12, 5, 33, 47):
                    q = p + 6 if t == 33 else p
                    x, q = _name(d, q)
                    if q > e or q < e and t != 47:
                        raise ValueError
                    x = d[p:p + 6] + x if t == 33 else x + d[q:e]
                else:
                    x = d[p:e]
                rs.append((s, nm, t, c, ttl, x))
            p = e
    if p != n:
        raise ValueError
    return h, qs, rs


def _put(b, w, comp, i=0):
    """Append the wire name at w[i] to b, ending in a pointer to an earlier copy
    of a suffix; return the position after the name in w."""
    e = i
    while w[e]:
        e += w[e] + 1
    while w[i]:
        k = w[i:e].lower()
        o = comp.get(k)
        if o is not None:
            b += struct.pack(">H", 0xC000 | o)
            return e + 1
        if len(b) < 0x3FFF:
            comp[k] = len(b)
        b += w[i:i + w[i] + 1]
        i += w[i] + 1
    b.append(0)
    return e + 1


def enc(i, flags, qs, secs):
    """Message bytes: id, flags, questions, and answer, authority, additional records."""
    b = bytearray(struct.pack(">6H", i, flags, len(qs), *[len(s) for s in secs]))
    comp = {}
    for q in qs:
        _put(b, q[0], comp)
        b += struct.pack(">HH", q[1], q[2])
    for s in secs:
        for r in s:
            _put(b, r[1], comp)
            b += struct.pack(">HHIH", r[2], r[3], r[4], 0)
            k = len(b)
            d = r[5]
            if r[2] in (12, 5, 33, 47):
                j = 6 if r[2] == 33 else 0
                b += d[:j]
                b += d[_put(b, d, comp, j):]
            else:
                b += d
            n = len(b) - k
            b[k - 2] = n >> 8
            b[k - 1] = n & 0xFF
    return b


def same(a, b):
    """Same name, type, class and rdata (§7.1 known answers, §8.2, §9 conflicts)."""
    return (a[2] == b[2] and a[3] & 0x7FFF == b[3] & 0x7FFF and a[5] == b[5]
            and a[1].lower() == b[1].lower())


def conflicts(m, rs, t=None):
    """1 (host name) | 2 (instance name): records in rs named like ours m[1:4] but
    not among them (§9). NSEC never conflicts; with t, only records of these
    types with a TTL (no goodbyes) count."""
    host = m[3][1].lower()
    f = 0
    for x in rs:
        n = x[1].lower()
        if (n == host or n == m[1][1].lower()) and x[2] != 47 and (
                t is None or x[2] in t and x[4]) and not (
                same(m[1], x) or same(m[2], x) or same(m[3], x)):
            f |= 1 if n == host else 2
    return f


def me(r):
    """The responder's seven records, parsed."""
    return parse(r._me, None)[2]


def send(r, flags, qs, an, ns=()):
    """One message to the group; a failure is logged."""
    try:
        r._sock[0].sendto(enc(0, flags, qs, (an, ns, ())), r._sock[1])
    except Exception as e:  # noqa: BLE001 - OSError or a bad name: logged, not fatal
        say(r, "mdns: %r" % e)


def tell(r, txt):
    """An announcement of our records (§8.3), or of the TXT alone (§8.4)."""
    m = me(r)
    send(r, 0x8400, (), m[2:3] if txt else m[:4])


def bye(r):
    """Goodbye: our records with TTL 0 (§10.1)."""
    send(r, 0x8400, (), [x[:4] + (0,) + x[5:] for x in me(r)[:4]])


def on(r, d, port):
    """Message d from port: to the hooks, conflicts (§9), or the answer to a query as
    (delay in ms, bytes) or None."""
    m = me(r) if r._me else None
    lc = (m[0][1].lower(), m[4][1].lower(), m[1][1].lower(), m[3][1].lower()) if m else ()
    h, qs, rs = parse(d, None if r._hooks else lc)
    if h[1] & 0x780F:  # opcode and rcode 0 (RFC 6762 §18.3, §18.11)
        return None
    for f in r._hooks:
        f(h[1], qs, rs)
    if not m or r.state != "announced":
        return None  # the prober's hook sees what concerns it
    svc, meta, inst, host = lc
    if h[1] & 0x8000:
        f = conflicts(m, rs, (1, 33, 16))
        if f:  # §9: probe again
            say(r, "mdns: conflict on %s" % (r.host if f & 1 else r.instance))
            if r._task:
                r._task.cancel()
            r.state = "probing"
            r._task = asyncio.create_task(r._twice("run"))
        return None
    ans = []
    extra = []
    for n, t, c in qs:
        n = n.lower()
        if c & 0x7FFF not in (1, 255):
            continue
        if t in (12, 255) and n == svc:
            ans.append(0)
            extra += (1, 2, 3)
        elif t in (12, 255) and n == meta:
            ans.append(4)
        elif n == inst:
            if t in (33, 255):
                ans.append(1)
                extra.append(3)
            if t in (16, 255):
                ans.append(2)
            if t not in (33, 16, 255):  # §6.1 negative answer
                ans.append(5)
        elif n == host:
            ans.append(3 if t in (1, 255) else 6)
    out = [0, [], []]
    na = len(ans)
    legacy = port != 5353
    for i, j in enumerate(ans + extra):
        if i >= na and (j in ans or j in extra[:i - na]):
            continue  # an additional record once, and not when it is an answer
        x = m[j]
        for k in rs:  # §7.1: a known answer with at least half our TTL
            if k[0] == 1 and k[4] >= x[4] // 2 and same(x, k):
                break
        else:
            if legacy:  # §6.7: TTL at most 10, no cache-flush bit
                x = x[:3] + (1, min(x[4], 10), x[5])
            elif j in (0, 4) and i < na and all(k[0] != 2 for k in rs):
                out[0] = 20 + rand(100)  # §6: a shared answer, not to a probe, waits
            out[1 + (i >= na)].append(x)
    if not out[1]:
        return None
    if legacy:  # echo id and questions, unicast
        return 0, enc(h[0], 0x8400, qs, (out[1], (), out[2]))
    return out[0], enc(0, 0x8400, (), (out[1], (), out[2]))
