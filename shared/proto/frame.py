"""Serial framing for board management: COBS-delimited frames with a CRC-32.

The controller and a board exchange management messages over a serial line
that may start mid-stream, drop bytes or flip bits. Each message travels as
one self-delimiting frame so that a receiver can always find the next frame
boundary and so that a damaged frame is discarded rather than misread.

Wire format (version 1)::

    decoded frame = header | payload | crc
      header  4 bytes: version u8 (= 1), frame type u8, sequence u16 big-endian
      payload any bytes (the management layer puts one CBOR item there)
      crc     4 bytes: CRC-32 of header + payload, big-endian
    on the wire   = COBS(decoded frame) | 0x00

COBS is Consistent Overhead Byte Stuffing (S. Cheshire and M. Baker,
"Consistent Overhead Byte Stuffing", IEEE/ACM Transactions on Networking
7(2), 1999): it removes every 0x00 from the frame at a cost of at most one
byte per 254, so 0x00 can delimit frames and resynchronisation never needs
more than the next delimiter. Each block is a code byte ``c`` followed by
``c - 1`` data bytes; a block with ``c < 0xFF`` stands for its data followed
by 0x00, except for the last block of a frame, and ``c = 0xFF`` means 254 data
bytes with no zero. A frame that ends exactly after a 0xFF block gets no
trailing 0x01 block (the minimal form); the decoder rejects that redundant
form and any block running past the delimiter, so each frame has exactly one
valid encoding.

The CRC is the IEEE 802.3 CRC-32 (reflected polynomial 0xEDB88320), the one
``binascii.crc32`` computes; COBS alone detects almost no corruption.

A writer should send a single ``b"\\x00"`` when it opens the port: whatever
partial segment the receiver holds is then closed at once instead of
swallowing the writer's first frame.

Frame types REQUEST, RESPONSE, EVENT and LOG are the well-known ones, but the
type is any u8 and unknown types are still delivered. Decoded frames are
``Frame(type, seq, payload)`` namedtuples with ``payload`` as bytes.

Drop accounting of :class:`FrameDecoder`: the byte stream is split on 0x00;
each complete non-empty segment either yields exactly one Frame or counts
exactly one drop (bad COBS, shorter than header + crc, CRC mismatch, wrong
version, or decoded length above ``max_frame``). Empty segments are not
drops; bytes after the last delimiter are pending.
"""

from collections import namedtuple

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


try:
    from binascii import crc32 as _crc32
except ImportError:
    _crc32 = None

VERSION = const(1)

REQUEST = const(1)
RESPONSE = const(2)
EVENT = const(3)
LOG = const(4)

# Room for a config blob or a batch of log lines in one CBOR item, while the
# decoder's preallocated buffer stays under a tenth of an ESP32's free heap.
MAX_FRAME = const(8192)

_HEADER = const(4)
_CRC = const(4)
_OVERHEAD = const(8)
_SMALL = const(256)

Frame = namedtuple("Frame", ("type", "seq", "payload"))


class FrameError(ValueError):
    """The one error this module raises: a frame that cannot be encoded."""


_tabs = None


def _crc32_py(data, crc=0):
    """CRC-32 (IEEE 802.3), same results as ``binascii.crc32(data, crc)``.

    Used on board builds without ``binascii.crc32``. The register is kept as
    two 16-bit halves so the per-byte loop never allocates a big integer on a
    32-bit MicroPython port; the 1 KB of tables is built on first use only.
    """
    global _tabs
    if _tabs is None:
        # Split into 16-bit halves: values stay small ints on 32-bit boards.
        from array import array

        lo_t = array("H")
        hi_t = array("H")
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
            lo_t.append(c & 0xFFFF)
            hi_t.append(c >> 16)
        _tabs = lo_t, hi_t
    lo_t, hi_t = _tabs
    crc ^= 0xFFFFFFFF
    lo = crc & 0xFFFF
    hi = crc >> 16
    for b in data:
        j = (lo ^ b) & 0xFF
        lo = ((lo >> 8) | ((hi & 0xFF) << 8)) ^ lo_t[j]
        hi = (hi >> 8) ^ hi_t[j]
    return ((hi << 16) | lo) ^ 0xFFFFFFFF


if _crc32 is None:
    _crc32 = _crc32_py


def _stuff(out, w, cp, run, data):
    # Append COBS of data to out. The open block's code byte is at out[cp]
    # with `run` data bytes so far; w is the write index. Lets encode()
    # stuff header, payload and crc in turn without joining them first.
    n = len(data)
    src = memoryview(data)
    i = 0
    while i < n:
        z = data.find(b"\x00", i)
        stop = n if z < 0 else z
        while i < stop:
            if run == 254:
                out[cp] = 0xFF
                cp = w
                w += 1
                run = 0
            k = stop - i
            if k > 254 - run:
                k = 254 - run
            out[w : w + k] = src[i : i + k]
            w += k
            i += k
            run += k
        if z < 0:
            break
        # A full block is closed only when more follows: a frame ending on a
        # 254-byte block gets no trailing 0x01 block.
        if run == 254:
            out[cp] = 0xFF
            cp = w
            w += 1
            run = 0
        out[cp] = run + 1
        cp = w
        w += 1
        run = 0
        i = z + 1
    return w, cp, run


def cobs_encode(data):
    """COBS-encode bytes or bytearray (no delimiter added); the minimal form.

    Jumps from zero to zero with ``find`` and copies whole runs instead of
    looping per byte, which matters on MicroPython.
    """
    n = len(data)
    out = bytearray(n + n // 254 + 1)
    w, cp, run = _stuff(out, 1, 0, 0, data)
    out[cp] = run + 1
    return bytes(memoryview(out)[:w])


def encode(ftype, seq, payload, max_frame=MAX_FRAME):
    """Return the wire bytes of one frame: COBS(header, payload, crc) and 0x00.

    Raises FrameError when the type is not a u8, the sequence number not a
    u16, or the decoded frame would exceed ``max_frame`` (the receiver would
    drop it, so failing here is the earlier, clearer error). The frame is
    stuffed piece by piece into one buffer sized for the worst case, so a
    large payload is never copied into an intermediate decoded frame.
    """
    if not isinstance(ftype, int) or not 0 <= ftype <= 255:
        raise FrameError("frame type not in 0..255")
    if not isinstance(seq, int) or not 0 <= seq <= 0xFFFF:
        raise FrameError("seq not in 0..65535")
    n = len(payload) + _OVERHEAD
    if n > max_frame:
        raise FrameError("payload too large")
    if isinstance(payload, memoryview):
        payload = bytes(payload)
    header = bytes((VERSION, ftype, seq >> 8, seq & 0xFF))
    crc = _crc32(payload, _crc32(header))
    out = bytearray(n + n // 254 + 2)
    w, cp, run = _stuff(out, 1, 0, 0, header)
    w, cp, run = _stuff(out, w, cp, run, payload)
    tail = bytes(((crc >> 24) & 0xFF, (crc >> 16) & 0xFF, (crc >> 8) & 0xFF, crc & 0xFF))
    w, cp, run = _stuff(out, w, cp, run, tail)
    out[cp] = run + 1
    return bytes(memoryview(out)[: w + 1])


class FrameDecoder:
    """Streaming decoder: bytes in through :meth:`feed`, Frames out.

    COBS is undone as bytes arrive, block by block, into one buffer that
    doubles up to ``max_frame`` bytes and shrinks back to 256 after each
    segment (an idle board holds 256 bytes, not a frame's worth), so a frame
    costs a few small objects rather than one per byte, and an oversized segment is discarded as it
    streams in without ever being held. Sans-I/O: it never touches the port.

    ``delivered`` and ``dropped`` count frames and bad segments (see the
    module docstring for the exact rule); ``last_error`` names the reason of
    the last drop: "cobs", "too short", "bad crc", "bad version", "too long".
    """

    def __init__(self, max_frame=MAX_FRAME):
        if max_frame < _OVERHEAD:
            raise FrameError("max_frame below header + crc")
        self.max_frame = max_frame
        self._buf = bytearray(_SMALL if max_frame > _SMALL else max_frame)
        self.delivered = 0
        self.dropped = 0
        self.last_error = None
        self._reset()

    def _reset(self):
        self._n = 0  # decoded bytes of the current segment
        self._left = 0  # data bytes still due in the current block
        self._code = 0  # code byte of the current block; 0 before the first
        self._prev = 0  # code byte of the block before it
        self._skip = False  # segment too long: discard until the delimiter

    def feed(self, data):
        """Take any number of bytes (bytes, bytearray or memoryview; bytes
        avoids a copy) and return the list of Frames they completed."""
        if isinstance(data, memoryview):
            data = bytes(data)
        frames = []
        end = len(data)
        i = 0
        src = None
        while i < end:
            z = data.find(b"\x00", i)
            stop = end if z < 0 else z
            if i < stop and not self._skip:
                if src is None:
                    src = memoryview(data)
                self._unstuff(data, src, i, stop)
            if z < 0:
                break
            self._close(frames)
            i = z + 1
        return frames

    def _unstuff(self, data, src, i, stop):
        # Decode the zero-free run data[i:stop] into the buffer.
        buf = self._buf
        cap = self.max_frame
        n = self._n
        left = self._left
        code = self._code
        prev = self._prev
        while i < stop:
            if left:
                k = stop - i
                if k > left:
                    k = left
                if n + k > cap:
                    self._skip = True
                    return
                if n + k > len(buf):
                    buf = self._grow(n + k)
                buf[n : n + k] = src[i : i + k]
                n += k
                i += k
                left -= k
            else:
                if code and code != 0xFF:
                    # The previous block owed a zero: another block follows.
                    if n >= cap:
                        self._skip = True
                        return
                    if n >= len(buf):
                        buf = self._grow(n + 1)
                    buf[n] = 0
                    n += 1
                prev = code
                code = data[i]
                left = code - 1
                i += 1
        self._n = n
        self._left = left
        self._code = code
        self._prev = prev

    def _grow(self, n):
        # Double (up to max_frame) until n bytes fit: an idle decoder holds _SMALL bytes.
        old = self._buf
        size = len(old) * 2
        while size < n:
            size *= 2
        nb = bytearray(size if size < self.max_frame else self.max_frame)
        nb[: len(old)] = old
        self._buf = nb
        return nb

    def _close(self, frames):
        # A delimiter arrived: judge the segment it ends.
        if self._skip:
            self._drop("too long")
        elif self._code:
            n = self._n
            buf = self._buf
            if self._left or (self._code == 1 and self._prev == 0xFF):
                self._drop("cobs")
            elif n < _OVERHEAD:
                self._drop("too short")
            elif _crc32(memoryview(buf)[: n - _CRC]) != (
                (buf[n - 4] << 24) | (buf[n - 3] << 16) | (buf[n - 2] << 8) | buf[n - 1]
            ):
                self._drop("bad crc")
            elif buf[0] != VERSION:
                self._drop("bad version")
            else:
                payload = bytes(memoryview(buf)[_HEADER : n - _CRC])
                frames.append(Frame(buf[1], (buf[2] << 8) | buf[3], payload))
                self.delivered += 1
        if len(self._buf) > _SMALL:
            self._buf = bytearray(_SMALL)
        self._reset()

    def _drop(self, reason):
        self.dropped += 1
        self.last_error = reason
