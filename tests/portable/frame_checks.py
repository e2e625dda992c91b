"""Portable checks of sipmesh.proto.frame (COBS + CRC-32 serial framing).

Randomness comes from a fixed-seed xorshift32 so that both runtimes run the
very same cases. The damage checks judge the decoder against an oracle that
only splits the damaged stream on 0x00 and compares segments with the
original COBS bodies.
"""

from portable import MICROPYTHON, Rng, eq, raises, unhex

from sipmesh.proto import frame

_POOLS = []


def _pools():
    """A 16 KB random pool and the same with every zero replaced by 0x5A."""
    if not _POOLS:
        rng = Rng(0x9E3779B9)
        pool = bytearray(16384)
        for i in range(0, len(pool), 4):
            v = rng.next()
            pool[i] = v & 0xFF
            pool[i + 1] = (v >> 8) & 0xFF
            pool[i + 2] = (v >> 16) & 0xFF
            pool[i + 3] = v >> 24
        nz = bytearray(pool)
        i = nz.find(b"\x00")
        while i >= 0:
            nz[i] = 0x5A
            i = nz.find(b"\x00", i + 1)
        _POOLS.append(bytes(pool))
        _POOLS.append(bytes(nz))
    return _POOLS


def _slice(pool, rng, n):
    start = rng.below(len(pool) - n + 1)
    return pool[start : start + n]


def _payload(rng, maxlen):
    pool, nz = _pools()
    kind = rng.below(6)
    if kind == 0:
        return bytes(rng.below(maxlen + 1))
    if kind == 1:
        return _slice(nz, rng, rng.below(maxlen + 1))
    if kind == 2:
        # Run lengths around COBS block boundaries, zero-terminated or not.
        n = (253, 254, 255, 246, 247, 250)[rng.below(6)]
        n = min(n, maxlen)
        p = _slice(nz, rng, n)
        if rng.below(2) and n:
            p = p[:-1] + b"\x00"
        return p
    return _slice(pool, rng, rng.below(maxlen + 1))


def _body(version, ftype, seq, payload):
    """A decoded frame built here, independently of frame.encode."""
    b = bytes((version, ftype, seq >> 8, seq & 0xFF)) + payload
    c = frame._crc32_py(b)
    return b + bytes((c >> 24, (c >> 16) & 0xFF, (c >> 8) & 0xFF, c & 0xFF))


def _feed_chunks(dec, data, rng, maxchunk=64):
    """Feed data in random chunks of 1..maxchunk as bytes, bytearray or memoryview."""
    out = []
    i = 0
    while i < len(data):
        k = 1 + rng.below(maxchunk)
        c = data[i : i + k]
        t = rng.below(3)
        if t == 1:
            c = bytearray(c)
        elif t == 2:
            c = memoryview(c)
        out.extend(dec.feed(c))
        i += k
    return out


def _stream(rng, count, maxlen, seq0=0):
    """count random frames: (list of Frame, list of wire bytes)."""
    frames = []
    wires = []
    for k in range(count):
        f = frame.Frame(rng.below(256), (seq0 + k) & 0xFFFF, _payload(rng, maxlen))
        frames.append(f)
        wires.append(frame.encode(f.type, f.seq, f.payload))
    return frames, wires


def _show(frames):
    return [(f[0], f[1], len(f[2])) for f in frames]


def _eq_frames(got, want, what):
    """eq() for lists of frames, reporting (type, seq, payload length) only."""
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, _show(got), _show(want)))


# 1. Known vectors


def check_cobs_vectors():
    r = bytes(range(1, 255))  # 01..FE, 254 non-zero bytes
    cases = (
        (b"", "01"),
        (b"\x00", "01 01"),
        (b"\x00\x00", "01 01 01"),
        (unhex("11 22 00 33"), "03 11 22 02 33"),
        (unhex("11 22 33 44"), "05 11 22 33 44"),
        (unhex("11 00 00 00"), "02 11 01 01 01"),
        (r, "ff" + r.hex()),
        (r + b"\xff", "ff" + r.hex() + "02 ff"),
        (b"\x00" + r, "01 ff" + r.hex()),
        (r + b"\x00", "ff" + r.hex() + "01 01"),
        (r[1:] + b"\xff\x00", "ff" + r[1:].hex() + "ff 01 01"),
        (r[2:] + b"\xff\x00\x01", "fe" + r[2:].hex() + "ff 02 01"),
        (r[:253] + b"\x00", "fe" + r[:253].hex() + "01"),
        (r + r, "ff" + r.hex() + "ff" + r.hex()),
        (r + r + b"\x07", "ff" + r.hex() + "ff" + r.hex() + "02 07"),
    )
    for data, want in cases:
        eq(frame.cobs_encode(data), unhex(want), "cobs of %d bytes" % len(data))
        eq(frame.cobs_encode(bytearray(data)), unhex(want), "cobs of bytearray")


def check_frame_vector():
    payload = unhex("a1 62 6f 70 64 70 69 6e 67")  # CBOR {"op": "ping"}
    want = unhex("03 01 01 0f 07 a1 62 6f 70 64 70 69 6e 67 d4 75 fb d9 00")
    eq(frame.encode(frame.REQUEST, 7, payload), want, "frame vector")
    eq(frame.encode(1, 7, bytearray(payload)), want, "bytearray payload")
    eq(frame.encode(1, 7, memoryview(payload)), want, "memoryview payload")
    eq(want[:-1], frame.cobs_encode(_body(1, 1, 7, payload)), "independent body")
    dec = frame.FrameDecoder()
    got = dec.feed(want)
    eq(got, [frame.Frame(1, 7, payload)], "decoded vector")
    f = got[0]
    eq((f.type, f.seq, f.payload), (1, 7, payload), "fields")
    eq(type(f.payload), bytes, "payload type")
    eq((dec.delivered, dec.dropped, dec.last_error), (1, 0, None), "counters")


def check_constants():
    eq(
        (frame.VERSION, frame.REQUEST, frame.RESPONSE, frame.EVENT, frame.LOG),
        (1, 1, 2, 3, 4),
        "constants",
    )
    eq(frame.MAX_FRAME, 8192, "MAX_FRAME")
    assert issubclass(frame.FrameError, ValueError)


# 2. Round trips


def check_round_trip_sizes():
    pool, nz = _pools()
    rng = Rng(12345)
    sizes = (0, 1, 253, 254, 255, 256, 508, 509, 4096, frame.MAX_FRAME - 8)
    dec = frame.FrameDecoder()
    count = 0
    for n in sizes:
        for kind in range(3):
            if kind == 0:
                p = _slice(pool, rng, n)
            elif kind == 1:
                p = _slice(nz, rng, n)
            else:
                p = bytes(n)
            ftype = rng.below(256)
            seq = rng.below(65536)
            w = frame.encode(ftype, seq, p)
            body = len(p) + 8
            assert len(w) <= body + body // 254 + 2, "overhead bound"
            eq(w.find(b"\x00"), len(w) - 1, "single delimiter at the end")
            _eq_frames(dec.feed(w), [(ftype, seq, p)], "round trip of %d bytes" % n)
            count += 1
    eq((dec.delivered, dec.dropped), (count, 0), "counters")


def check_round_trip_block_ends():
    # Decoded frames that end exactly after a 0xFF block, and the redundant
    # form with a trailing 0x01 block, which must be rejected.
    _, nz = _pools()
    for plen, blocks in ((246, 1), (500, 2)):
        p = nz[:plen]
        seq = 0x0101
        while True:
            w = frame.encode(0x55, seq, p)
            if len(w) == plen + 8 + blocks + 1:  # no zero in header or crc
                break
            seq += 1
        eq(w[0], 0xFF, "starts with a 0xFF block")
        eq(w[-256], 0xFF, "ends with a 0xFF block")
        dec = frame.FrameDecoder()
        _eq_frames(dec.feed(w), [(0x55, seq, p)], "frame ending on a 0xFF block")
        _eq_frames(dec.feed(w[:-1] + b"\x01\x00"), [], "redundant trailing block")
        eq((dec.dropped, dec.last_error), (1, "cobs"), "redundant form is a drop")


def check_round_trip_random():
    rng = Rng(777)
    frames, wires = _stream(rng, 200, 700)
    dec = frame.FrameDecoder()
    got = []
    for w in wires:
        got.extend(dec.feed(w))
    _eq_frames(got, frames, "random round trips")
    eq((dec.delivered, dec.dropped), (200, 0), "counters")


def check_crc_fallback_end_to_end():
    saved = frame._crc32
    frame._crc32 = frame._crc32_py
    try:
        want = unhex("03 01 01 0f 07 a1 62 6f 70 64 70 69 6e 67 d4 75 fb d9 00")
        eq(frame.encode(1, 7, unhex("a1 62 6f 70 64 70 69 6e 67")), want, "vector")
        rng = Rng(4242)
        frames, wires = _stream(rng, 20, 300)
        dec = frame.FrameDecoder()
        _eq_frames(dec.feed(b"".join(wires)), frames, "fallback round trip")
    finally:
        frame._crc32 = saved
    dec = frame.FrameDecoder()
    _eq_frames(dec.feed(b"".join(wires)), frames, "fallback frames decode with the default")


# 3. Streaming


def check_stream_byte_by_byte():
    rng = Rng(2024)
    frames, wires = _stream(rng, 50, 400)
    stream = b"\x00" + b"".join(wires)  # leading resync byte
    dec = frame.FrameDecoder()
    got = []
    for i in range(len(stream)):
        got.extend(dec.feed(stream[i : i + 1]))
    _eq_frames(got, frames, "byte by byte")
    eq((dec.delivered, dec.dropped), (50, 0), "counters")
    eq(dec.feed(b""), [], "empty feed")


def check_stream_random_chunks():
    rng = Rng(99)
    frames, wires = _stream(rng, 50, 400)
    stream = b"".join(wires)
    for seed in (1, 2, 3, 4, 5):
        dec = frame.FrameDecoder()
        got = _feed_chunks(dec, stream, Rng(seed))
        _eq_frames(got, frames, "random chunks, seed %d" % seed)
        eq((dec.delivered, dec.dropped), (50, 0), "counters")
    dec = frame.FrameDecoder()
    _eq_frames(dec.feed(bytearray(stream)), frames, "whole stream as bytearray")
    dec = frame.FrameDecoder()
    _eq_frames(dec.feed(memoryview(stream)), frames, "whole stream as memoryview")


def check_empty_and_pending_segments():
    dec = frame.FrameDecoder()
    w = frame.encode(frame.EVENT, 1, b"x")
    eq(dec.feed(b"\x00\x00\x00" + w + b"\x00\x00" + w), [(3, 1, b"x")] * 2, "empty segments")
    eq(dec.dropped, 0, "empty segments are not drops")
    eq(dec.feed(b"\x05\x11"), [], "pending garbage")
    eq(dec.dropped, 0, "pending bytes are not counted")
    eq(dec.feed(b"\x00"), [], "delimiter ends garbage")
    eq((dec.dropped, dec.last_error), (1, "cobs"), "garbage counted once")
    eq(dec.feed(bytes((250, 7))), [], "unknown type, unfinished")
    eq(dec.feed(frame.encode(250, 65535, b"")), [], "frame glued to garbage")
    eq(dec.dropped, 2, "glued segment is one drop")
    eq(dec.feed(frame.encode(250, 65535, b"")), [(250, 65535, b"")], "unknown type delivered")


def check_drop_reasons():
    dec = frame.FrameDecoder()
    cases = (
        (b"\x05\x11\x22", "cobs"),  # code points past the delimiter
        (b"\x02", "cobs"),
        (b"\x01\x01", "too short"),  # decodes to one zero byte
        (frame.cobs_encode(b"\x01\x02\x03\x04\x05\x06\x07"), "too short"),
        (frame.cobs_encode(_body(2, 1, 5, b"hello")), "bad version"),
        (frame.cobs_encode(_body(0, 1, 5, b"hello")), "bad version"),
    )
    n = 0
    for seg, reason in cases:
        eq(dec.feed(seg + b"\x00"), [], reason)
        n += 1
        eq((dec.dropped, dec.last_error), (n, reason), "reason for %r" % seg)
    body = bytearray(_body(1, 1, 5, b"hello"))
    body[6] ^= 0x10
    eq(dec.feed(frame.cobs_encode(body) + b"\x00"), [], "bad crc")
    eq((dec.dropped, dec.last_error), (n + 1, "bad crc"), "crc reason")
    eq(dec.feed(frame.cobs_encode(_body(1, 9, 5, b"hello")) + b"\x00"), [(9, 5, b"hello")], "ok")
    eq(dec.delivered, 1, "delivered")


# 4. Damage with an oracle


def _zeros(s):
    out = []
    i = s.find(b"\x00")
    while i >= 0:
        out.append(i)
        i = s.find(b"\x00", i + 1)
    return out


def _garbage(rng, n, with_zero):
    _, nz = _pools()
    g = _slice(nz, rng, n)
    if with_zero:
        g = bytearray(g)
        for _ in range(1 + rng.below(3)):
            g[rng.below(n)] = 0
        g = bytes(g)
    return g


def _damage(rng, s):
    """Apply one random kind of damage to stream s; return the new bytes."""
    op = rng.below(9)
    size = len(s)
    if op <= 1:  # garbage anywhere, without / with a zero
        p = rng.below(size + 1)
        return s[:p] + _garbage(rng, 1 + rng.below(20), op == 1) + s[p:]
    if op == 2:  # garbage between frames, right after a delimiter
        z = _zeros(s)
        p = z[rng.below(len(z))] + 1 if z else 0
        return s[:p] + _garbage(rng, 1 + rng.below(20), rng.below(2)) + s[p:]
    if op == 3:  # drop a few bytes
        p = rng.below(size)
        return s[:p] + s[p + 1 + rng.below(12) :]
    if op == 4:  # drop a delimiter
        z = _zeros(s)
        if not z:
            return s
        p = z[rng.below(len(z))]
        return s[:p] + s[p + 1 :]
    if op <= 6:  # single bit flip
        p = rng.below(size)
        return s[:p] + bytes((s[p] ^ (1 << rng.below(8)),)) + s[p + 1 :]
    if op == 7:  # multi-byte flips
        b = bytearray(s)
        for _ in range(2 + rng.below(4)):
            b[rng.below(size)] ^= 1 + rng.below(255)
        return bytes(b)
    # a long run without zeros: oversize for a small decoder
    p = rng.below(size + 1)
    return s[:p] + _garbage(rng, 600 + rng.below(600), False) + s[p:]


def _oracle(stream, bodies):
    """Expected (frames, drops) from splitting stream on 0x00 alone."""
    segs = stream.split(b"\x00")
    want = []
    drops = 0
    for seg in segs[:-1]:
        if not seg:
            continue
        f = bodies.get(seg)
        if f is None:
            drops += 1
        else:
            want.append(f)
    return want, drops


def check_damage_oracle():
    rng = Rng(31337)
    cases = 800
    total_drops = 0
    for case in range(cases):
        frames, wires = _stream(rng, 6, 300, seq0=case * 8)
        bodies = {}
        for f, w in zip(frames, wires):
            bodies[w[:-1]] = f
        s = b"".join(wires)
        for _ in range(1 + rng.below(3)):
            s = _damage(rng, s)
        # A clean frame after the damage must always come through.
        tail = frame.Frame(7, (case * 8 + 7) & 0xFFFF, b"tail")
        tw = frame.encode(tail.type, tail.seq, tail.payload)
        bodies[tw[:-1]] = tail
        if not s.endswith(b"\x00") or rng.below(2):
            s = s + b"\x00"
        s = s + tw
        want, drops = _oracle(s, bodies)
        eq(want[-1], tail, "case %d: tail frame expected" % case)
        max_frame = (512, frame.MAX_FRAME)[case & 1]
        dec = frame.FrameDecoder(max_frame)
        _eq_frames(dec.feed(s), want, "case %d: frames in one feed" % case)
        eq((dec.dropped, dec.delivered), (drops, len(want)), "case %d: counters" % case)
        dec = frame.FrameDecoder(max_frame)
        got = _feed_chunks(dec, s, rng)
        _eq_frames(got, want, "case %d: frames in chunks" % case)
        eq((dec.dropped, dec.delivered), (drops, len(want)), "case %d: chunk counters" % case)
        total_drops += drops
    assert total_drops > cases, "damage produced drops"


def check_damage_resync_start():
    # A receiver that opens the port mid-frame drops one segment at most.
    rng = Rng(555)
    frames, wires = _stream(rng, 10, 200)
    s = b"".join(wires)
    for cut in range(1, len(wires[0]) - 1, 3):
        dec = frame.FrameDecoder()
        _eq_frames(dec.feed(s[cut:]), frames[1:], "cut at %d" % cut)
        eq(dec.dropped, 1, "partial first segment")


# 5. Oversize


def check_oversize():
    dec = frame.FrameDecoder(64)
    big = frame.encode(1, 1, bytes(range(1, 201)))
    small = frame.encode(2, 2, b"hi")
    eq(dec.feed(big + small), [(2, 2, b"hi")], "oversize then small")
    eq((dec.dropped, dec.last_error, dec.delivered), (1, "too long", 1), "one drop")
    # Exactly max_frame decoded bytes is accepted, one more is not.
    eq(dec.feed(frame.encode(3, 3, bytes(56))), [(3, 3, bytes(56))], "exact max")
    eq(dec.feed(frame.encode(3, 4, bytes(57))), [], "max + 1")
    eq(dec.feed(frame.encode(3, 5, b"\x01" * 57)), [], "max + 1, no zeros")
    eq(dec.dropped, 3, "max + 1 dropped")
    # 64 KB without a delimiter streams through without being buffered.
    chunk = b"\xff" * 1024
    for _ in range(64):
        eq(dec.feed(chunk), [], "oversize chunk")
        eq(len(dec._buf) <= 64, True, "buffer never grows")
    ones = b"\x01" * 1024  # each byte decodes to a zero: also oversize
    eq(dec.feed(ones), [], "zeros chunk")
    eq(dec.dropped, 3, "nothing counted before the delimiter")
    eq(dec.feed(b"\x00" + small), [(2, 2, b"hi")], "next frame after oversize")
    eq((dec.dropped, dec.last_error), (4, "too long"), "counted once")
    eq(len(dec._buf) <= 64, True, "buffer size")


def check_encode_errors():
    E = frame.FrameError
    raises(E, frame.encode, 1, 1, bytes(frame.MAX_FRAME - 7))
    eq(len(frame.encode(1, 1, bytes(frame.MAX_FRAME - 8))) > frame.MAX_FRAME, True, "max ok")
    raises(E, frame.encode, 1, 1, bytes(93), 100)
    frame.encode(1, 1, bytes(92), 100)
    raises(E, frame.encode, 1, 1, bytes(frame.MAX_FRAME - 8), max_frame=100)
    for bad in (-1, 256, 1000, "1", None, 1.0):
        raises(E, frame.encode, bad, 1, b"")
    for bad in (-1, 65536, 1 << 20, "1", None):
        raises(E, frame.encode, 1, bad, b"")
    e = raises(ValueError, frame.encode, 1, 1 << 16, b"")
    assert isinstance(e, frame.FrameError)
    frame.encode(0, 0, b"")
    frame.encode(255, 65535, b"")
    raises(E, frame.FrameDecoder, 7)
    frame.FrameDecoder(8)


# 6. CRC


def check_crc32():
    eq(frame._crc32_py(b"123456789"), 0xCBF43926, "check value")
    eq(frame._crc32(b"123456789"), 0xCBF43926, "selected implementation")
    eq(frame._crc32_py(b""), 0, "empty")
    pool, _ = _pools()
    inputs = [b"", b"\x00", b"\xff" * 4, b"a", pool[:1000], pool[5:4101], bytes(300)]
    for data in inputs:
        eq(frame._crc32_py(data), frame._crc32(data), "fallback vs selected")
        eq(frame._crc32_py(memoryview(data)), frame._crc32_py(data), "memoryview input")
        half = len(data) // 2
        eq(frame._crc32_py(data[half:], frame._crc32_py(data[:half])), frame._crc32(data), "chain")
    try:
        import binascii

        crc = binascii.crc32
    except (ImportError, AttributeError):
        return
    for data in inputs:
        eq(frame._crc32_py(data), crc(data), "fallback vs binascii")
        eq(frame._crc32_py(data, 0x12345678), crc(data, 0x12345678), "with start value")


# 7. Memory on MicroPython


def check_memory_per_frame():
    if not MICROPYTHON:  # sys.implementation.name == "micropython"
        return
    import gc

    rng = Rng(8080)
    pool, _ = _pools()
    wires = [frame.encode(frame.LOG, k, _slice(pool, rng, 200)) for k in range(100)]
    dec = frame.FrameDecoder()
    worst = 0
    for w in wires:
        gc.collect()
        gc.disable()
        a0 = gc.mem_alloc()
        got = dec.feed(w)
        grew = gc.mem_alloc() - a0
        gc.enable()
        eq(len(got), 1, "one frame")
        worst = max(worst, grew)
    eq((dec.delivered, dec.dropped), (100, 0), "counters")
    # What one frame must cost: the payload bytes (200 + header, ~224 B in
    # 16-byte GC blocks), the Frame tuple and the result list (~64 B each),
    # and a 32-byte memoryview per COBS block plus a few for slicing. Even a
    # 16-byte allocation per byte would be 3.4 KB for this 212-byte frame.
    assert worst < 1024, "feed() of one 200-byte frame allocated %d bytes" % worst
    # An oversize segment costs nothing per chunk: it is never buffered.
    small = frame.FrameDecoder(64)
    chunk = b"\x07" * 1024
    small.feed(chunk)
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    for _ in range(32):
        small.feed(chunk)
    grew = gc.mem_alloc() - a0
    gc.enable()
    assert grew < 32 * 160, "oversize chunks allocated %d bytes" % grew
