"""Browsing for a DNS-SD service (RFC 6763 §4), loaded while a ``find`` runs.

``fw_mdns.find`` imports this module for one browse and drops it after.
It hooks into the responder's reader (the running responder's socket, or
a temporary one), keeps the PTR, SRV, TXT and A records of the browsed
service it sees (16 of each at most) and asks for what the answers left out.
"""

import asyncio


def _text(w, end):
    """The labels of wire name w before offset end, as text joined by "."."""
    out = []
    i = 0
    while i < end:
        c = w[i]
        out.append(w[i + 1:i + 1 + c].decode())
        i += c + 1
    return out


def _txt(rd):
    """TXT rdata -> {lower-case key: str value or None} (RFC 6763 §6.4).

    The first occurrence of a key wins, strings without a key are skipped,
    values that are not UTF-8 stay bytes.
    """
    d = {}
    i = 0
    while i < len(rd):
        k, eq, v = rd[i + 1:i + 1 + rd[i]].partition(b"=")
        i += rd[i] + 1
        try:
            k = k.decode().lower()
        except UnicodeError:
            continue
        if k and k not in d:
            try:
                v = v.decode()
            except UnicodeError:
                pass
            d[k] = v if eq else None
    return d


async def find(r, service, timeout_ms):
    """Browse for service on responder r (§5.2 queries 1, 2, 4 s apart, QU on the first, §5.4).

    Returns [{instance, host, port, ip, txt}] of the instances whose SRV,
    TXT and A were seen, asking for what the answers left out. Ends at
    timeout_ms, or 300 ms after the last new answer once every instance
    found is complete.
    """
    import fw_mdns

    svc = service if service.endswith(".local") else service + ".local"
    svc = b"".join(bytes((len(x),)) + x.encode() for x in svc.split(".")) + b"\x00"
    b = svc.lower()
    ptr = {}  # instance (lower case) -> its PTR record
    seen = {33: {}, 16: {}, 1: {}}
    chg = 0  # 25 ms ticks since the last new instance

    def hook(flags, qs, rs):
        nonlocal chg
        if not flags & 0x8000:
            return
        for x in rs:
            n = x[1].lower()
            t = x[2]
            if t == 12 and n == b:
                k = x[5].lower()
                if not x[4]:
                    ptr.pop(k, None)
                elif k not in ptr and len(ptr) < 16 and len(k) > len(b) and k.endswith(b):
                    ptr[k] = x
                    chg = 0
            elif (t == 1 or t in (33, 16) and len(n) > len(b) and n.endswith(b)) and len(
                    seen[t]) < 16 and (t != 33 or len(x[5]) > 7):
                seen[t][n] = x[5]

    opened = r._sock is None
    w = fw_mdns._get("fw_mdns_wire")
    try:
        if opened:
            await fw_mdns._with("fw_mdns_ctl", "_open", r)
        r._hooks += (hook,)
        nxt = 0
        asked = -12
        for i in range(timeout_ms // 25):
            if i == nxt:  # §7.1 known answers
                w.send(r, 0, [(svc, 12, 0x8001 if not i else 1)], list(ptr.values()))
                nxt = 2 * nxt + 40
            qs = []
            for k, p in ptr.items():
                s = seen[33].get(k)
                if s is None:
                    qs.append((p[5], 33, 1))
                elif s[6:].lower() not in seen[1]:
                    qs.append((s[6:], 1, 1))
                if k not in seen[16]:
                    qs.append((p[5], 16, 1))
            # let the first answer's additionals arrive before asking
            if qs and i - asked >= 12 and chg >= 4:
                w.send(r, 0, qs, ())
                asked = i
            if ptr and not qs and chg >= 12:
                break
            qs = None
            chg += 1
            await asyncio.sleep_ms(25)
    finally:
        r._hooks = tuple(f for f in r._hooks if f is not hook)
        if opened:
            await r.stop()
        w = None
        fw_mdns._rel("fw_mdns_wire")
    out = []
    for k, p in ptr.items():
        s = seen[33].get(k)
        t = seen[16].get(k)
        ip = s and seen[1].get(s[6:].lower())
        if ip and t is not None:
            try:
                host = _text(s[6:], len(s) - 7)
                out.append({"instance": ".".join(_text(p[5], len(k) - len(b))),
                            "host": ".".join(x.replace("\\", "\\\\").replace(".", "\\.")
                                             for x in host),
                            "port": (s[4] << 8) | s[5], "ip": "%d.%d.%d.%d" % tuple(ip),
                            "txt": _txt(t)})
            except UnicodeError:
                pass  # names must be UTF-8 (RFC 6763 §4.3)
    return out
