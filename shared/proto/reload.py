"""RELOAD (RFC 6940) wire codec: framing, message envelope, Error and Ping bodies.

Portable: runs unchanged on CPython 3.11+ and MicroPython 1.2x. Sans-I/O: it
turns bytes into plain objects and back; it neither signs nor verifies.

What is covered (RFC 6940 section numbers):

- 6.6.2 FramedMessage: DATA ``0x80 | sequence u32 | length u24 | message``
  and ACK ``0x81 | ack_sequence u32 | received u32`` (the RFC's enum is
  data(128), ack(129)). :class:`FrameDecoder` is fed arbitrary chunks.
- 6.3 Message = ForwardingHeader | MessageContents | SecurityBlock.
- 6.3.2 ForwardingHeader (38 fixed bytes, then via list, destination list and
  options, whose three length fields count BYTES, not entries).
- 6.3.2.2 Destination: TLV ``type u8 | length u8 | data`` for node (16-byte
  Node-ID in this project), resource (``opaque ResourceId<0..255>``, so the
  data carries its own length byte) and opaque_id_type (``opaque<0..255>``),
  and the compressed form: 2 bytes whose first bit is 1, meaning an opaque id
  of those 2 bytes. Unknown TLV types 4..127 are kept as raw data (the RFC
  makes the TLV skippable); type 0 is an error.
- 6.3.2.3 ForwardingOption ``type u8 | flags u8 | length u16 | value``.
- 6.3.3 MessageContents ``message_code u16 | body opaque<0..2^32-1> |
  extensions<0..2^32-1>``, MessageExtension ``type u16 | critical Boolean |
  contents opaque<0..2^32-1>``.
- 6.3.4 SecurityBlock ``certificates<0..2^16-1>`` of GenericCertificate
  ``type u8 | certificate opaque<0..2^16-1>``, then Signature:
  SignatureAndHashAlgorithm ``hash u8 | signature u8``, SignerIdentity
  ``identity_type u8 | length u16 | value`` (cert_hash(1) and
  cert_hash_node_id(2): ``hash_alg u8 | opaque<0..255>``; none(3): empty),
  ``signature_value opaque<0..2^16-1>``.
- 6.3.3.1 ErrorResponse ``error_code u16 | error_info opaque<0..2^16-1>``.
- 6.5.3 PingReq ``padding opaque<0..2^16-1>``, PingAns ``response_id u64 |
  time u64``.

Errors: every decode function raises only :class:`ReloadDecodeError` (a
ValueError) with ``offset`` (byte offset in the input where the problem was
found) and ``code``: the RELOAD error code (section 14.9) to answer with, or
``None`` when the RFC says to discard without answering (not a RELOAD
message at all). Encoding invalid values raises ``ReloadEncodeError``.

Canonical form: the decoder accepts exactly one encoding for each value
(Booleans are 0/1, list lengths exact, nothing trailing), so decoding and
re-encoding gives back the same bytes; :func:`signed_bytes` can therefore be
rebuilt from a decoded message.
"""

import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


RELO_TOKEN = const(0xD2454C4F)
VERSION = const(0x0A)

# FramedMessageType (6.6.2)
FRAME_DATA = const(0x80)
FRAME_ACK = const(0x81)
_DATA_HDR = const(8)
_ACK_LEN = const(9)

# DestinationType (6.3.2.2)
DEST_NODE = const(1)
DEST_RESOURCE = const(2)
DEST_OPAQUE = const(3)

NODE_ID_LEN = const(16)

# ForwardingOption flags (6.3.2.3)
FORWARD_CRITICAL = const(0x01)
DESTINATION_CRITICAL = const(0x02)
RESPONSE_COPY = const(0x04)

# fragment field (6.3.2)
FRAGMENT_HISTORIC = const(0x80000000)
FRAGMENT_LAST = const(0x40000000)
_FRAGMENT_OFFSET_MASK = const(0x00FFFFFF)
FRAGMENT_UNFRAGMENTED = const(0xC0000000)

# SignerIdentityType (6.3.4)
ID_CERT_HASH = const(1)
ID_CERT_HASH_NODE_ID = const(2)
ID_NONE = const(3)

# TLS HashAlgorithm / SignatureAlgorithm values the project uses
HASH_SHA256 = const(4)
HASH_INTRINSIC = const(8)
SIG_ED25519 = const(7)

# Message codes (14.8)
PROBE_REQ = const(1)
PROBE_ANS = const(2)
ATTACH_REQ = const(3)
ATTACH_ANS = const(4)
STORE_REQ = const(7)
STORE_ANS = const(8)
FETCH_REQ = const(9)
FETCH_ANS = const(10)
FIND_REQ = const(13)
FIND_ANS = const(14)
JOIN_REQ = const(15)
JOIN_ANS = const(16)
LEAVE_REQ = const(17)
LEAVE_ANS = const(18)
UPDATE_REQ = const(19)
UPDATE_ANS = const(20)
ROUTE_QUERY_REQ = const(21)
ROUTE_QUERY_ANS = const(22)
PING_REQ = const(23)
PING_ANS = const(24)
STAT_REQ = const(25)
STAT_ANS = const(26)
APP_ATTACH_REQ = const(29)
APP_ATTACH_ANS = const(30)
CONFIG_UPDATE_REQ = const(33)
CONFIG_UPDATE_ANS = const(34)
ERROR = const(0xFFFF)

# Error codes (14.9)
ERROR_FORBIDDEN = const(0x02)
ERROR_NOT_FOUND = const(0x03)
ERROR_REQUEST_TIMEOUT = const(0x04)
ERROR_GENERATION_COUNTER_TOO_LOW = const(0x05)
ERROR_INCOMPATIBLE_WITH_OVERLAY = const(0x06)
ERROR_UNSUPPORTED_FORWARDING_OPTION = const(0x07)
ERROR_DATA_TOO_LARGE = const(0x08)
ERROR_DATA_TOO_OLD = const(0x09)
ERROR_TTL_EXCEEDED = const(0x0A)
ERROR_MESSAGE_TOO_LARGE = const(0x0B)
ERROR_UNKNOWN_KIND = const(0x0C)
ERROR_UNKNOWN_EXTENSION = const(0x0D)
ERROR_RESPONSE_TOO_LARGE = const(0x0E)
ERROR_CONFIG_TOO_OLD = const(0x0F)
ERROR_CONFIG_TOO_NEW = const(0x10)
ERROR_IN_PROGRESS = const(0x11)
ERROR_EXP_A = const(0x12)
ERROR_EXP_B = const(0x13)
ERROR_INVALID_MESSAGE = const(0x14)

# Limits. A board's whole message must fit its heap several times over; the
# controller may pass larger values. Counts bound the number of objects.
MAX_MESSAGE = const(65536)
MAX_FRAME = const(65536)
MAX_DESTINATIONS = const(32)
MAX_OPTIONS = const(16)
MAX_EXTENSIONS = const(16)
MAX_CERTIFICATES = const(8)

FIXED_HEADER_LEN = const(38)


class ReloadDecodeError(ValueError):
    """The one error decoding raises.

    ``offset``: byte offset of the problem in the decoded input.
    ``code``: RELOAD error code to answer with (section 14.9), or None when
    the input should be discarded silently (not a RELOAD message).
    """

    def __init__(self, msg, offset=0, code=ERROR_INVALID_MESSAGE):
        super().__init__("%s at offset %d" % (msg, offset))
        self.offset = offset
        self.code = code


class ReloadEncodeError(ValueError):
    """A value that cannot be encoded (out of range or too long)."""


class _S:
    # Equality and repr from the attributes, shared by the body modules
    # (reload_storage, reload_topology) so that each stays small on a board.
    def __eq__(self, other):
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        d = self.__dict__
        return "%s(%s)" % (
            type(self).__name__,
            ", ".join(["%s=%r" % (k, d[k]) for k in sorted(d)]),
        )


# ---------------------------------------------------------------- reading


class _Reader:
    # Bounds-checked cursor over a memoryview; every length is checked
    # against the bytes that remain before it is used.
    def __init__(self, data, pos=0, end=None):
        self.mv = memoryview(data)
        self.pos = pos
        self.end = len(data) if end is None else end

    def need(self, n, what):
        if n > self.end - self.pos:
            raise ReloadDecodeError("truncated " + what, self.pos)

    def u8(self, what):
        self.need(1, what)
        v = self.mv[self.pos]
        self.pos += 1
        return v

    def u16(self, what):
        self.need(2, what)
        v = struct.unpack_from(">H", self.mv, self.pos)[0]
        self.pos += 2
        return v

    def u32(self, what):
        self.need(4, what)
        v = struct.unpack_from(">I", self.mv, self.pos)[0]
        self.pos += 4
        return v

    def u64(self, what):
        self.need(8, what)
        hi, lo = struct.unpack_from(">II", self.mv, self.pos)
        self.pos += 8
        return (hi << 32) | lo

    def take(self, n, what):
        self.need(n, what)
        p = self.pos
        self.pos = p + n
        return bytes(self.mv[p : p + n])

    def opaque8(self, what):
        return self.take(self.u8(what + " length"), what)

    def opaque16(self, what):
        return self.take(self.u16(what + " length"), what)

    def opaque32(self, what):
        return self.take(self.u32(what + " length"), what)

    def sub_end(self, n, what):
        # End offset of a length-delimited region starting here.
        self.need(n, what)
        return self.pos + n

    def done(self, what):
        if self.pos != self.end:
            raise ReloadDecodeError("trailing bytes after " + what, self.pos)


# ---------------------------------------------------------------- writing


def _boolean(r, what):
    v = r.u8(what)
    if v > 1:
        raise ReloadDecodeError(what + " is not a Boolean", r.pos - 1)
    return v == 1


def _join(items):
    return b"".join([x.encode() for x in items])


def _list(r, width, what, limit, fn, arg=None):
    # A length-prefixed list (width 1, 2, 3 or 4 bytes): the items must
    # fill it exactly; at most ``limit`` of them.
    if width == 1:
        n = r.u8(what + " length")
    elif width == 2:
        n = r.u16(what + " length")
    elif width == 3:
        n = r.u8(what + " length") << 16
        n |= r.u16(what + " length")
    else:
        n = r.u32(what + " length")
    end = r.sub_end(n, what)
    outer = r.end
    r.end = end
    out = []
    while r.pos < end:
        if len(out) >= limit:
            raise ReloadDecodeError("too many " + what, r.pos)
        out.append(fn(r) if arg is None else fn(r, arg))
    r.end = outer
    return out


def _u8(v):
    if not 0 <= v <= 0xFF:
        raise ReloadEncodeError("u8 out of range: %r" % (v,))
    return bytes((v,))


def _u16(v):
    if not 0 <= v <= 0xFFFF:
        raise ReloadEncodeError("u16 out of range: %r" % (v,))
    return struct.pack(">H", v)


def _u32(v):
    if not 0 <= v <= 0xFFFFFFFF:
        raise ReloadEncodeError("u32 out of range: %r" % (v,))
    return struct.pack(">I", v)


def _u64(v):
    if not 0 <= v <= 0xFFFFFFFFFFFFFFFF:
        raise ReloadEncodeError("u64 out of range: %r" % (v,))
    return struct.pack(">II", v >> 32, v & 0xFFFFFFFF)


def _op8(b):
    return _u8(len(b)) + bytes(b)


def _op16(b):
    return _u16(len(b)) + bytes(b)


def _op32(b):
    return _u32(len(b)) + bytes(b)


# ---------------------------------------------------------------- framing


class DataFrame:
    """FramedMessage of type data: ``sequence`` and ``message`` bytes."""

    kind = FRAME_DATA

    def __init__(self, sequence, message):
        self.sequence = sequence
        self.message = message

    def encode(self):
        return encode_data_frame(self.sequence, self.message)

    def __eq__(self, other):
        return (
            isinstance(other, DataFrame)
            and self.sequence == other.sequence
            and bytes(self.message) == bytes(other.message)
        )

    def __repr__(self):
        return "DataFrame(%d, <%d bytes>)" % (self.sequence, len(self.message))


class AckFrame:
    """FramedMessage of type ack: ``sequence`` acknowledged, ``received`` bitmask."""

    kind = FRAME_ACK

    def __init__(self, sequence, received):
        self.sequence = sequence
        self.received = received

    def encode(self):
        return encode_ack_frame(self.sequence, self.received)

    def __eq__(self, other):
        return (
            isinstance(other, AckFrame)
            and self.sequence == other.sequence
            and self.received == other.received
        )

    def __repr__(self):
        return "AckFrame(%d, 0x%08x)" % (self.sequence, self.received)


def encode_data_frame(sequence, message):
    n = len(message)
    if n > 0xFFFFFF:
        raise ReloadEncodeError("framed message longer than 2^24-1")
    return b"\x80" + _u32(sequence) + struct.pack(">I", n)[1:] + bytes(message)


def encode_ack_frame(sequence, received):
    return b"\x81" + _u32(sequence) + _u32(received)


class FrameDecoder:
    """Streaming decoder of FramedMessages over a reliable byte stream.

    ``feed(chunk)`` accepts bytes of any split and returns the list of
    complete frames (DataFrame / AckFrame). On a stream error (unknown frame
    type, or a data frame longer than ``max_frame``) it raises
    ReloadDecodeError whose ``offset`` counts from the start of the stream;
    the stream cannot be resynchronised after that, so every later ``feed``
    raises the same error (close the connection; for an oversize frame RFC
    6940 section 6.6 says to send Error_Message_Too_Large first).
    """

    def __init__(self, max_frame=MAX_FRAME):
        self.max_frame = max_frame
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._error = None

    def pending(self):
        return len(self._buf)

    def feed(self, chunk):
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf.extend(chunk)
        out = []
        pos = 0
        n = len(buf)
        while pos < n:
            t = buf[pos]
            if t == FRAME_DATA:
                if n - pos < _DATA_HDR:
                    break
                length = (buf[pos + 5] << 16) | (buf[pos + 6] << 8) | buf[pos + 7]
                if length > self.max_frame:
                    self._error = ReloadDecodeError(
                        "framed message too large", self._base + pos + 5, ERROR_MESSAGE_TOO_LARGE
                    )
                    break
                if n - pos < _DATA_HDR + length:
                    break
                seq = struct.unpack_from(">I", buf, pos + 1)[0]
                start = pos + _DATA_HDR
                out.append(DataFrame(seq, bytes(buf[start : start + length])))
                pos = start + length
            elif t == FRAME_ACK:
                if n - pos < _ACK_LEN:
                    break
                seq, rec = struct.unpack_from(">II", buf, pos + 1)
                out.append(AckFrame(seq, rec))
                pos += _ACK_LEN
            else:
                self._error = ReloadDecodeError(
                    "unknown frame type 0x%02x" % t, self._base + pos, None
                )
                break
        if pos:
            self._buf = buf[pos:]
            self._base += pos
        if self._error is not None and not out:
            raise self._error
        return out


def decode_frame(data, max_frame=MAX_FRAME):
    """Decode exactly one complete frame from ``data`` (datagram transports)."""
    r = _Reader(data)
    t = r.u8("frame type")
    if t == FRAME_DATA:
        seq = r.u32("sequence")
        r.need(3, "frame length")
        length = (r.mv[r.pos] << 16) | (r.mv[r.pos + 1] << 8) | r.mv[r.pos + 2]
        if length > max_frame:
            raise ReloadDecodeError("framed message too large", r.pos, ERROR_MESSAGE_TOO_LARGE)
        r.pos += 3
        f = DataFrame(seq, r.take(length, "framed message"))
    elif t == FRAME_ACK:
        seq = r.u32("ack_sequence")
        f = AckFrame(seq, r.u32("received"))
    else:
        raise ReloadDecodeError("unknown frame type 0x%02x" % t, 0, None)
    r.done("frame")
    return f


# ---------------------------------------------------------------- header


class Destination:
    """One Destination (6.3.2.2).

    ``type``: DEST_NODE (``value`` = 16-byte Node-ID), DEST_RESOURCE
    (``value`` = ResourceId bytes, 0..255), DEST_OPAQUE (``value`` = opaque id
    bytes) or another TLV type 4..127 (``value`` = the raw destination_data).
    ``compressed``: DEST_OPAQUE sent as the 16-bit form (value is 2 bytes with
    the first bit set).
    """

    def __init__(self, type, value, compressed=False):
        self.type = type
        self.value = bytes(value)
        self.compressed = compressed

    @classmethod
    def node(cls, node_id):
        return cls(DEST_NODE, node_id)

    @classmethod
    def resource(cls, resource_id):
        return cls(DEST_RESOURCE, resource_id)

    @classmethod
    def opaque(cls, opaque_id):
        return cls(DEST_OPAQUE, opaque_id)

    @classmethod
    def compressed_id(cls, value16):
        if not 0x8000 <= value16 <= 0xFFFF:
            raise ReloadEncodeError("compressed destination needs the top bit set")
        return cls(DEST_OPAQUE, struct.pack(">H", value16), True)

    def encode(self):
        t = self.type
        v = self.value
        if self.compressed:
            if t != DEST_OPAQUE or len(v) != 2 or not v[0] & 0x80:
                raise ReloadEncodeError("bad compressed destination")
            return v
        if t == DEST_NODE:
            if len(v) != NODE_ID_LEN:
                raise ReloadEncodeError("Node-ID must be %d bytes" % NODE_ID_LEN)
            data = v
        elif t in (DEST_RESOURCE, DEST_OPAQUE):
            if len(v) > 254:
                raise ReloadEncodeError("destination id longer than 254 bytes")
            data = _op8(v)
        elif 4 <= t <= 127:
            data = v
        else:
            raise ReloadEncodeError("bad destination type %r" % (t,))
        return _u8(t) + _op8(data)

    def __eq__(self, other):
        return (
            isinstance(other, Destination)
            and self.type == other.type
            and self.value == other.value
            and self.compressed == other.compressed
        )

    def __repr__(self):
        return "Destination(%d, %s%s)" % (
            self.type,
            self.value.hex(),
            ", compressed" if self.compressed else "",
        )


class ForwardingOption:
    """ForwardingOption (6.3.2.3): ``type`` 1..255, ``flags``, ``value`` bytes."""

    def __init__(self, type, flags, value=b""):
        self.type = type
        self.flags = flags
        self.value = bytes(value)

    def encode(self):
        if self.type == 0:
            raise ReloadEncodeError("forwarding option type 0 is invalid")
        return _u8(self.type) + _u8(self.flags) + _op16(self.value)

    def __eq__(self, other):
        return (
            isinstance(other, ForwardingOption)
            and self.type == other.type
            and self.flags == other.flags
            and self.value == other.value
        )

    def __repr__(self):
        return "ForwardingOption(%d, 0x%02x, %s)" % (self.type, self.flags, self.value.hex())


class ForwardingHeader:
    """ForwardingHeader (6.3.2). ``length`` is filled in by Message.encode."""

    def __init__(
        self,
        overlay,
        transaction_id,
        destinations=(),
        via=(),
        options=(),
        configuration_sequence=0,
        ttl=100,
        fragment=FRAGMENT_UNFRAGMENTED,
        max_response_length=0,
        version=VERSION,
        length=0,
    ):
        self.overlay = overlay
        self.configuration_sequence = configuration_sequence
        self.version = version
        self.ttl = ttl
        self.fragment = fragment
        self.length = length
        self.transaction_id = transaction_id
        self.max_response_length = max_response_length
        self.via = list(via)
        self.destinations = list(destinations)
        self.options = list(options)

    def is_last_fragment(self):
        return bool(self.fragment & FRAGMENT_LAST)

    def fragment_offset(self):
        return self.fragment & _FRAGMENT_OFFSET_MASK

    def encode(self, length=None):
        if length is None:
            length = self.length
        via = b"".join([d.encode() for d in self.via])
        dst = b"".join([d.encode() for d in self.destinations])
        opt = b"".join([o.encode() for o in self.options])
        return b"".join(
            (
                _u32(RELO_TOKEN),
                _u32(self.overlay),
                _u16(self.configuration_sequence),
                _u8(self.version),
                _u8(self.ttl),
                _u32(self.fragment),
                _u32(length),
                _u64(self.transaction_id),
                _u32(self.max_response_length),
                _u16(len(via)),
                _u16(len(dst)),
                _u16(len(opt)),
                via,
                dst,
                opt,
            )
        )

    def __eq__(self, other):
        if not isinstance(other, ForwardingHeader):
            return False
        for a in (
            "overlay",
            "configuration_sequence",
            "version",
            "ttl",
            "fragment",
            "transaction_id",
            "max_response_length",
            "via",
            "destinations",
            "options",
        ):
            if getattr(self, a) != getattr(other, a):
                return False
        return True


# ---------------------------------------------------------------- contents


class MessageExtension:
    """MessageExtension (6.3.3): ``type`` u16, ``critical`` bool, ``content``."""

    def __init__(self, type, critical, content=b""):
        self.type = type
        self.critical = bool(critical)
        self.content = bytes(content)
        self.offset = None  # set by the decoder: where this extension starts

    def encode(self):
        return _u16(self.type) + (b"\x01" if self.critical else b"\x00") + _op32(self.content)

    def __eq__(self, other):
        return (
            isinstance(other, MessageExtension)
            and self.type == other.type
            and self.critical == other.critical
            and self.content == other.content
        )

    def __repr__(self):
        return "MessageExtension(%d, %r, %s)" % (self.type, self.critical, self.content.hex())


class MessageContents:
    """MessageContents (6.3.3): ``code`` (message_code), ``body``, ``extensions``."""

    def __init__(self, code, body=b"", extensions=()):
        self.code = code
        self.body = bytes(body)
        self.extensions = list(extensions)

    def is_request(self):
        return self.code != ERROR and self.code & 1 == 1 and self.code < 0x8000

    def encode(self):
        ext = b"".join([e.encode() for e in self.extensions])
        return _u16(self.code) + _op32(self.body) + _op32(ext)

    def check_extensions(self, known=()):
        """Raise ReloadDecodeError(code=Error_Unknown_Extension) for the first
        critical extension whose type is not in ``known`` (6.3.3); unknown
        non-critical extensions are ignored, as the RFC permits."""
        for e in self.extensions:
            if e.critical and e.type not in known:
                raise ReloadDecodeError(
                    "unknown critical extension %d" % e.type, e.offset or 0, ERROR_UNKNOWN_EXTENSION
                )

    def __eq__(self, other):
        return (
            isinstance(other, MessageContents)
            and self.code == other.code
            and self.body == other.body
            and self.extensions == other.extensions
        )


# ---------------------------------------------------------------- security


class GenericCertificate:
    """GenericCertificate (6.3.4): ``type`` (RFC 6091 CertificateType), ``data``."""

    def __init__(self, type, data):
        self.type = type
        self.data = bytes(data)

    def encode(self):
        return _u8(self.type) + _op16(self.data)

    def __eq__(self, other):
        return (
            isinstance(other, GenericCertificate)
            and self.type == other.type
            and self.data == other.data
        )


class SignerIdentity:
    """SignerIdentity (6.3.4).

    For ID_CERT_HASH / ID_CERT_HASH_NODE_ID: ``hash_alg`` and ``hash``
    (certificate_hash / certificate_node_id_hash). For ID_NONE both are
    empty. Other (future) types keep their value bytes in ``raw``.
    """

    def __init__(self, type, hash_alg=0, hash=b"", raw=b""):
        self.type = type
        self.hash_alg = hash_alg
        self.hash = bytes(hash)
        self.raw = bytes(raw)

    def encode(self):
        t = self.type
        if t in (ID_CERT_HASH, ID_CERT_HASH_NODE_ID):
            value = _u8(self.hash_alg) + _op8(self.hash)
        elif t == ID_NONE:
            value = b""
        elif 4 <= t <= 255:
            value = self.raw
        else:
            raise ReloadEncodeError("bad identity type %r" % (t,))
        return _u8(t) + _op16(value)

    def __eq__(self, other):
        return (
            isinstance(other, SignerIdentity)
            and self.type == other.type
            and self.hash_alg == other.hash_alg
            and self.hash == other.hash
            and self.raw == other.raw
        )


class Signature:
    """Signature (6.3.4): algorithm (``hash_alg``, ``sig_alg``), ``identity``, ``value``."""

    def __init__(self, identity, value=b"", hash_alg=HASH_INTRINSIC, sig_alg=SIG_ED25519):
        self.hash_alg = hash_alg
        self.sig_alg = sig_alg
        self.identity = identity
        self.value = bytes(value)

    def encode(self):
        return _u8(self.hash_alg) + _u8(self.sig_alg) + self.identity.encode() + _op16(self.value)

    def __eq__(self, other):
        return (
            isinstance(other, Signature)
            and self.hash_alg == other.hash_alg
            and self.sig_alg == other.sig_alg
            and self.identity == other.identity
            and self.value == other.value
        )


class SecurityBlock:
    """SecurityBlock (6.3.4): ``certificates`` list and one ``signature``."""

    def __init__(self, signature, certificates=()):
        self.certificates = list(certificates)
        self.signature = signature

    def encode(self):
        certs = b"".join([c.encode() for c in self.certificates])
        return _op16(certs) + self.signature.encode()

    def __eq__(self, other):
        return (
            isinstance(other, SecurityBlock)
            and self.certificates == other.certificates
            and self.signature == other.signature
        )


class Message:
    """A whole RELOAD message (6.3): ``header``, ``contents``, ``security``."""

    def __init__(self, header, contents, security):
        self.header = header
        self.contents = contents
        self.security = security

    def encode(self):
        contents = self.contents.encode()
        sec = self.security.encode()
        hdr_len = len(self.header.encode(0))
        total = hdr_len + len(contents) + len(sec)
        self.header.length = total
        return b"".join((self.header.encode(total), contents, sec))

    def __eq__(self, other):
        return (
            isinstance(other, Message)
            and self.header == other.header
            and self.contents == other.contents
            and self.security == other.security
        )


def signed_bytes(overlay, transaction_id, contents, identity):
    """The input of a message signature (6.3.4):
    ``overlay || transaction_id || MessageContents || SignerIdentity``.

    ``contents`` is a MessageContents (or its encoded bytes) and ``identity``
    a SignerIdentity (or its encoded bytes: type, length and value).
    """
    if not isinstance(contents, (bytes, bytearray, memoryview)):
        contents = contents.encode()
    if not isinstance(identity, (bytes, bytearray, memoryview)):
        identity = identity.encode()
    return _u32(overlay) + _u64(transaction_id) + bytes(contents) + bytes(identity)


def message_signed_bytes(msg):
    """signed_bytes of a Message, from its header, contents and signer identity."""
    return signed_bytes(
        msg.header.overlay, msg.header.transaction_id, msg.contents, msg.security.signature.identity
    )


# ---------------------------------------------------------------- decoding


def _decode_destinations(r, end, out, what):
    while r.pos < end:
        if len(out) >= MAX_DESTINATIONS:
            raise ReloadDecodeError("too many %s entries" % what, r.pos)
        start = r.pos
        t = r.u8(what)
        if t & 0x80:
            r.need(1, "compressed " + what)
            r.pos += 1
            out.append(Destination(DEST_OPAQUE, bytes(r.mv[start : start + 2]), True))
            continue
        length = r.u8(what + " length")
        dend = r.sub_end(length, what + " data")
        if t == DEST_NODE:
            if length != NODE_ID_LEN:
                raise ReloadDecodeError("Node-ID destination of length %d" % length, start + 1)
            value = r.take(NODE_ID_LEN, "Node-ID")
        elif t == DEST_RESOURCE or t == DEST_OPAQUE:
            value = r.opaque8(what + " id")
            if r.pos != dend:
                raise ReloadDecodeError("%s length disagrees with its id" % what, start + 1)
        elif t == 0:
            raise ReloadDecodeError("invalid destination type 0", start)
        else:
            value = r.take(length, what + " data")
        out.append(Destination(t, value))
    if r.pos != end:
        raise ReloadDecodeError("%s overruns its list length" % what, r.pos)


def _decode_header(r, max_message):
    h = ForwardingHeader(0, 0)
    total = len(r.mv)
    tok = r.u32("relo_token")
    if tok != RELO_TOKEN:
        raise ReloadDecodeError("bad relo_token", 0, None)
    h.overlay = r.u32("overlay")
    h.configuration_sequence = r.u16("configuration_sequence")
    p = r.pos
    h.version = r.u8("version")
    if h.version != VERSION:
        raise ReloadDecodeError("unsupported version 0x%02x" % h.version, p)
    h.ttl = r.u8("ttl")
    h.fragment = r.u32("fragment")
    p = r.pos
    h.length = r.u32("length")
    if h.length > max_message:
        raise ReloadDecodeError("message too large", p, ERROR_MESSAGE_TOO_LARGE)
    if h.length != total:
        raise ReloadDecodeError("length field %d but %d bytes given" % (h.length, total), p)
    h.transaction_id = r.u64("transaction_id")
    h.max_response_length = r.u32("max_response_length")
    via_len = r.u16("via_list_length")
    dst_len = r.u16("destination_list_length")
    opt_len = r.u16("options_length")
    r.need(via_len + dst_len + opt_len, "forwarding header lists")
    _decode_destinations(r, r.pos + via_len, h.via, "via")
    _decode_destinations(r, r.pos + dst_len, h.destinations, "destination")
    oend = r.pos + opt_len
    while r.pos < oend:
        if len(h.options) >= MAX_OPTIONS:
            raise ReloadDecodeError("too many forwarding options", r.pos)
        p = r.pos
        t = r.u8("option type")
        if t == 0:
            raise ReloadDecodeError("invalid forwarding option type 0", p)
        flags = r.u8("option flags")
        n = r.u16("option length")
        if n > oend - r.pos:
            raise ReloadDecodeError("forwarding option overruns options_length", r.pos)
        h.options.append(ForwardingOption(t, flags, r.take(n, "option value")))
    return h


def _decode_contents(r):
    code = r.u16("message_code")
    if code == 0:
        raise ReloadDecodeError("invalid message_code 0", r.pos - 2)
    body = r.opaque32("message_body")
    n = r.u32("extensions length")
    eend = r.sub_end(n, "extensions")
    exts = []
    while r.pos < eend:
        if len(exts) >= MAX_EXTENSIONS:
            raise ReloadDecodeError("too many extensions", r.pos)
        p = r.pos
        t = r.u16("extension type")
        if t == 0:
            raise ReloadDecodeError("invalid extension type 0", p)
        c = r.u8("extension critical")
        if c > 1:
            raise ReloadDecodeError("critical is not a Boolean", r.pos - 1)
        n = r.u32("extension length")
        if n > eend - r.pos:
            raise ReloadDecodeError("extension overruns extensions length", r.pos)
        e = MessageExtension(t, c, r.take(n, "extension contents"))
        e.offset = p
        exts.append(e)
    return MessageContents(code, body, exts)


def _decode_identity(r):
    p = r.pos
    t = r.u8("identity_type")
    n = r.u16("identity length")
    iend = r.sub_end(n, "identity")
    if t == ID_CERT_HASH or t == ID_CERT_HASH_NODE_ID:
        alg = r.u8("hash_alg")
        h = r.opaque8("certificate hash")
        if r.pos != iend:
            raise ReloadDecodeError("identity length disagrees with its value", p + 1)
        return SignerIdentity(t, alg, h)
    if t == ID_NONE:
        if n:
            raise ReloadDecodeError("identity none with a value", p + 1)
        return SignerIdentity(t)
    if t == 0:
        raise ReloadDecodeError("invalid identity type 0", p)
    return SignerIdentity(t, raw=r.take(n, "identity"))


def _decode_security(r):
    n = r.u16("certificates length")
    cend = r.sub_end(n, "certificates")
    certs = []
    while r.pos < cend:
        if len(certs) >= MAX_CERTIFICATES:
            raise ReloadDecodeError("too many certificates", r.pos)
        t = r.u8("certificate type")
        n = r.u16("certificate length")
        if n > cend - r.pos:
            raise ReloadDecodeError("certificate overruns certificates length", r.pos)
        certs.append(GenericCertificate(t, r.take(n, "certificate")))
    hash_alg = r.u8("hash algorithm")
    sig_alg = r.u8("signature algorithm")
    ident = _decode_identity(r)
    value = r.opaque16("signature_value")
    return SecurityBlock(Signature(ident, value, hash_alg, sig_alg), certs)


def decode_header(data, max_message=MAX_MESSAGE):
    """Decode only the ForwardingHeader of a whole message (for forwarding).

    Returns (header, offset of MessageContents). The length field must still
    equal len(data).
    """
    r = _Reader(data)
    h = _decode_header(r, max_message)
    return h, r.pos


def decode_message(data, max_message=MAX_MESSAGE):
    """Decode one whole RELOAD message; raise only ReloadDecodeError."""
    r = _Reader(data)
    h = _decode_header(r, max_message)
    c = _decode_contents(r)
    s = _decode_security(r)
    r.done("security block")
    return Message(h, c, s)


# ---------------------------------------------------------------- bodies


class ErrorResponse:
    """ErrorResponse body (6.3.3.1): ``error_code`` u16, ``error_info`` bytes."""

    def __init__(self, error_code, error_info=b""):
        self.error_code = error_code
        self.error_info = bytes(error_info)

    def encode(self):
        return _u16(self.error_code) + _op16(self.error_info)

    def __eq__(self, other):
        return (
            isinstance(other, ErrorResponse)
            and self.error_code == other.error_code
            and self.error_info == other.error_info
        )


def decode_error(body):
    r = _Reader(body)
    code = r.u16("error_code")
    info = r.opaque16("error_info")
    r.done("ErrorResponse")
    return ErrorResponse(code, info)


class PingReq:
    """PingReq body (6.5.3.1): ``padding`` bytes (0..65535)."""

    def __init__(self, padding=b""):
        self.padding = bytes(padding)

    def encode(self):
        return _op16(self.padding)

    def __eq__(self, other):
        return isinstance(other, PingReq) and self.padding == other.padding


def decode_ping_req(body):
    r = _Reader(body)
    pad = r.opaque16("padding")
    r.done("PingReq")
    return PingReq(pad)


class PingAns:
    """PingAns body (6.5.3.2): ``response_id`` u64, ``time`` u64 (ms since 1970)."""

    def __init__(self, response_id, time):
        self.response_id = response_id
        self.time = time

    def encode(self):
        return _u64(self.response_id) + _u64(self.time)

    def __eq__(self, other):
        return (
            isinstance(other, PingAns)
            and self.response_id == other.response_id
            and self.time == other.time
        )


def decode_ping_ans(body):
    r = _Reader(body)
    rid = r.u64("response_id")
    t = r.u64("time")
    r.done("PingAns")
    return PingAns(rid, t)


def error_message(request_header, error_code, error_info=b"", security=None, overlay=None):
    """Build an Error response (message_code 0xffff) to a decoded request header.

    The response keeps the transaction id; its destination list is the
    request's via list reversed (6.3.2.2 / 6.2.1 response routing).
    """
    h = request_header
    rh = ForwardingHeader(
        h.overlay if overlay is None else overlay,
        h.transaction_id,
        destinations=list(reversed(h.via)),
        configuration_sequence=h.configuration_sequence,
    )
    if security is None:
        security = SecurityBlock(Signature(SignerIdentity(ID_NONE), b"", 0, 0))
    return Message(
        rh, MessageContents(ERROR, ErrorResponse(error_code, error_info).encode()), security
    )
