"""DNS message codec for Multicast DNS and DNS-SD, small enough for a board.

A board announces its service and finds its controller with mDNS (RFC 6762)
and DNS-SD (RFC 6763); the controller's own discovery uses python-zeroconf,
so this codec only has to speak the wire format (RFC 1035 §4.1) with the
mDNS bits of RFC 6762 §18: the top bit of a question's class asks for a
unicast response (QU, §5.4) and the top bit of a record's class is the
cache-flush bit (§10.2). They are split off into ``Question.unicast`` and
``Record.flush`` so that ``qclass`` and ``rclass`` are plain classes.

Names are ``str`` of dot-separated labels without the final dot
("_sipmesh._tcp.local"). DNS-SD instance labels may hold any UTF-8 text
(RFC 6763 §4.3), so a "." or "\\" inside a decoded label is escaped as "\\."
or "\\\\" and the encoder reads those escapes back. Names compare
case-insensitively (RFC 1035 §2.3.3): use ``same_name``.

Record data by type: A -> "a.b.c.d"; PTR/CNAME -> name; SRV -> (priority,
weight, port, target); TXT -> list of bytes strings (RFC 6763 §6, empty TXT
is one empty string on the wire and [] here); NSEC -> (next name, sorted
list of types) in the restricted form of RFC 6762 §6.1 (window 0 only when
encoding); any other type -> raw bytes.

Limits (anything beyond raises ``MdnsError``, the one error of this module):
a message is at most 9000 bytes (RFC 6762 §17), at most ``MAX_ENTRIES``
questions and records in total, labels at most 63 bytes and names at most
255 bytes on the wire (RFC 1035 §2.3.4). Compression pointers must point
strictly before the name part that holds them, which refuses forward
pointers and loops without counting jumps.

The board's responder does not load this module (heap: its own parser and
encoder in firmware/fw_mdns_wire.py are loaded per packet); the tests judge
those bytes with this codec, and python-zeroconf judges this codec. It is
still written for a small heap: few functions, short error texts, no
tables. ``decode`` takes an optional ``keep(name)`` filter so that a reader
materialises only the records it cares about (their rdata alone is parsed
and checked).
"""

import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


TYPE_A = const(1)
TYPE_CNAME = const(5)
TYPE_PTR = const(12)
TYPE_TXT = const(16)
TYPE_AAAA = const(28)
TYPE_SRV = const(33)
TYPE_NSEC = const(47)
TYPE_ANY = const(255)
CLASS_IN = const(1)

FLAG_QR = const(0x8000)
FLAG_AA = const(0x0400)
FLAG_TC = const(0x0200)

MAX_MESSAGE = const(9000)
MAX_ENTRIES = const(100)
_TOP = const(0x8000)


class MdnsError(ValueError):
    """A message, name or record that cannot be decoded or encoded."""


class Question:
    """One question; ``unicast`` is the QU bit (RFC 6762 §5.4)."""

    def __init__(self, name, qtype, qclass=CLASS_IN, unicast=False):
        self.name = name
        self.qtype = qtype
        self.qclass = qclass
        self.unicast = unicast


class Record:
    """One resource record; ``flush`` is the cache-flush bit (RFC 6762 §10.2)."""

    def __init__(self, name, rtype, data, ttl=120, flush=False, rclass=CLASS_IN):
        self.name = name
        self.rtype = rtype
        self.data = data
        self.ttl = ttl
        self.flush = flush
        self.rclass = rclass

    def same(self, other):
        """Same name, type, class and rdata (RFC 6762 §7.1 known answers, §8.2 ties)."""
        return (self.rtype == other.rtype and self.rclass == other.rclass
                and same_name(self.name, other.name) and rdata(self) == rdata(other))


class Message:
    """A DNS message (RFC 1035 §4.1): header fields and four sections."""

    def __init__(self, id=0, flags=0, questions=None, answers=None, authority=None,
                 additional=None):
        self.id = id
        self.flags = flags
        self.questions = questions or []
        self.answers = answers or []
        self.authority = authority or []
        self.additional = additional or []

    def is_response(self):
        return bool(self.flags & FLAG_QR)

    def records(self):
        """Answers, authority and additional records in wire order."""
        return self.answers + self.authority + self.additional

    def encode(self):
        """The wire form, with name compression (RFC 6762 §18.14)."""
        c = (len(self.questions), len(self.answers), len(self.authority), len(self.additional))
        if sum(c) > MAX_ENTRIES:
            raise MdnsError("bad message")
        buf = bytearray(struct.pack(">6H", self.id & 0xFFFF, self.flags & 0xFFFF, *c))
        comp = {}
        for q in self.questions:
            _put(buf, 0, q.name, comp)
            buf.extend(struct.pack(">HH", q.qtype, (q.qclass & 0x7FFF) | (_TOP * q.unicast)))
        for r in self.records():
            _put(buf, 0, r.name, comp)
            if not 0 <= r.ttl <= 0xFFFFFFFF:
                raise MdnsError("bad rdata")
            buf.extend(struct.pack(">HHIH", r.rtype, (r.rclass & 0x7FFF) | (_TOP * r.flush),
                                   r.ttl, 0))
            start = len(buf)
            _put(buf, r, None, comp)
            n = len(buf) - start
            buf[start - 2] = n >> 8
            buf[start - 1] = n & 0xFF
        if len(buf) > MAX_MESSAGE:
            raise MdnsError("bad message")
        return bytes(buf)


def same_name(a, b):
    """DNS names compare ASCII case-insensitively (RFC 1035 §2.3.3)."""
    return a.lower() == b.lower()


def ip_bytes(ip):
    """"a.b.c.d" -> 4 bytes (no inet_aton on every MicroPython port)."""
    try:
        out = bytes(map(int, ip.split(".")))
        if len(out) == 4:
            return out
    except ValueError:
        pass
    raise MdnsError("bad rdata")


def ip_str(b):
    """4 bytes -> "a.b.c.d"."""
    return "%d.%d.%d.%d" % (b[0], b[1], b[2], b[3])


def txt_items(d):
    """A dict as TXT strings b"key=value", keys sorted (RFC 6763 §6.3-6.4).

    A value None gives a boolean attribute (just the key); str, int and bytes
    values are allowed. Keys are non-empty, printable ASCII without "=".
    """
    out = []
    for k in sorted(d):
        v = d[k]
        item = k.encode()
        if not k or "=" in k or min(item) < 0x20 or max(item) > 0x7E:
            raise MdnsError("bad TXT")
        if v is not None:
            if isinstance(v, int):
                v = str(v)
            if isinstance(v, str):
                v = v.encode()
            item += b"=" + bytes(v)
        if len(item) > 255:
            raise MdnsError("bad TXT")
        out.append(item)
    return out


def txt_dict(items):
    """TXT strings -> {lower-case key: str value or None} (RFC 6763 §6.4).

    The first occurrence of a key wins, strings without a key are skipped,
    values that are not UTF-8 stay bytes.
    """
    d = {}
    for item in items:
        k, eq, v = bytes(item).partition(b"=")
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


def _put(buf, r, name, comp):
    """Append name (r == 0) or the rdata of record r; comp: suffix -> offset, or None."""
    if r:
        t = r.rtype
        d = r.data
        if t == TYPE_A:
            buf.extend(ip_bytes(d))
        elif t == TYPE_PTR or t == TYPE_CNAME:
            _put(buf, 0, d, comp)
        elif t == TYPE_SRV:
            buf.extend(struct.pack(">HHH", d[0], d[1], d[2]))
            _put(buf, 0, d[3], comp)
        elif t == TYPE_TXT:
            for s in d or (b"",):
                if len(s) > 255:
                    raise MdnsError("bad TXT")
                buf.append(len(s))
                buf.extend(s)
        elif t == TYPE_NSEC:
            _put(buf, 0, d[0], comp)
            bits = bytearray(32)
            top = 0
            for ty in d[1]:
                if not 0 < ty < 256:
                    raise MdnsError("bad rdata")
                bits[ty >> 3] |= 0x80 >> (ty & 7)
                top = max(top, (ty >> 3) + 1)
            if top:
                buf.extend(bytes((0, top)) + bits[:top])
        elif isinstance(d, (bytes, bytearray)):
            buf.extend(d)
        else:
            raise MdnsError("bad rdata")
        return
    # name: "\\." and "\\\\" are a dot and a backslash inside a label
    if name.endswith(".") and not name.endswith("\\."):
        name = name[:-1]
    labels = []
    total = 0
    for p in name.replace("\\\\", "\0").replace("\\.", "\1").split(".") if name else ():
        p = p.replace("\0", "\\").replace("\1", ".").encode()
        total += len(p) + 1
        labels.append(p)
    if total > 254:
        raise MdnsError("bad name")
    for i in range(len(labels)):
        b = labels[i]
        if not 0 < len(b) < 64:
            raise MdnsError("bad name")
        if comp is not None:
            key = b".".join(labels[i:]).lower()
            off = comp.get(key)
            if off is not None:
                buf.extend(struct.pack(">H", 0xC000 | off))
                return
            if len(buf) < 0x3FFF:
                comp[key] = len(buf)
        buf.append(len(b))
        buf.extend(b)
    buf.append(0)


def rdata(r):
    """The rdata of r without compression, as compared by RFC 6762 §7.1 and §8.2."""
    buf = bytearray()
    _put(buf, r, None, None)
    return bytes(buf)


def _name(data, pos):
    """(name, position after it); pointers only ever go backwards (no loops)."""
    n = len(data)
    out = []
    end = -1
    limit = pos
    total = 1
    while True:
        if pos >= n:
            raise MdnsError("bad name")
        c = data[pos]
        if c >= 0xC0:
            if pos + 1 >= n:
                raise MdnsError("bad name")
            if end < 0:
                end = pos + 2
            ptr = ((c & 0x3F) << 8) | data[pos + 1]
            if ptr >= limit:
                raise MdnsError("bad name")
            limit = pos = ptr
            continue
        pos += 1
        if not c:
            break
        total += c + 1
        if c > 63 or total > 255 or pos + c > n:
            raise MdnsError("bad name")
        try:
            s = bytes(data[pos:pos + c]).decode()
        except UnicodeError:
            raise MdnsError("bad name") from None
        out.append(s.replace("\\", "\\\\").replace(".", "\\."))
        pos += c
    return ".".join(out), (pos if end < 0 else end)


def _rdata(data, t, pos, end):
    """Decoded rdata of type t in data[pos:end]; MdnsError when it does not fit."""
    if t == TYPE_A:
        if end - pos == 4:
            return ip_str(data[pos:end])
    elif t == TYPE_PTR or t == TYPE_CNAME or t == TYPE_SRV or t == TYPE_NSEC:
        p = pos + 6 if t == TYPE_SRV else pos
        if p < end:
            name, p = _name(data, p)
            if t == TYPE_SRV:
                if p == end:
                    return struct.unpack_from(">HHH", data, pos) + (name,)
            elif t != TYPE_NSEC:
                if p == end:
                    return name
            else:
                types = []
                while p + 2 <= end:
                    k = data[p + 1]
                    if not 0 < k <= 32 or p + 2 + k > end:
                        break
                    for i in range(k * 8):
                        if data[p + 2 + (i >> 3)] & (0x80 >> (i & 7)):
                            types.append((data[p] << 8) | i)
                    p += 2 + k
                if p == end:
                    return (name, types)
    elif t == TYPE_TXT:
        out = []
        while pos < end:
            k = data[pos] + 1
            if pos + k > end:
                break
            if k > 1:
                out.append(bytes(data[pos + 1:pos + k]))
            pos += k
        if pos == end:
            return out
    else:
        return bytes(data[pos:end])
    raise MdnsError("bad rdata")


def decode(data, keep=None):
    """bytes -> Message; every malformed or over-limit input raises MdnsError.

    With ``keep``, only the records for which ``keep(name)`` is true are kept
    (and have their rdata parsed); questions are always kept.
    """
    n = len(data)
    if not 12 <= n <= MAX_MESSAGE:
        raise MdnsError("bad message")
    h = struct.unpack_from(">6H", data)
    if sum(h[2:]) > MAX_ENTRIES:
        raise MdnsError("bad message")
    m = Message(h[0], h[1])
    pos = 12
    for sect, count in enumerate(h[2:]):
        for _ in range(count):
            name, pos = _name(data, pos)
            p = pos + (10 if sect else 4)
            if p > n:
                raise MdnsError("bad message")
            t, c = struct.unpack_from(">HH", data, pos)
            pos = p
            if not sect:
                m.questions.append(Question(name, t, c & 0x7FFF, c >= _TOP))
                continue
            ttl, rdlen = struct.unpack_from(">IH", data, p - 6)
            pos += rdlen
            if pos > n:
                raise MdnsError("bad message")
            if keep is None or keep(name):
                (m.answers, m.authority, m.additional)[sect - 1].append(
                    Record(name, t, _rdata(data, t, p, pos), ttl, c >= _TOP, c & 0x7FFF))
    if pos != n:
        raise MdnsError("bad message")
    return m
