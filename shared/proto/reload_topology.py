"""RELOAD (RFC 6940) topology and link bodies: Attach, Join, Leave, Update,
RouteQuery, Probe, AppAttach, ConfigUpdate (CHORD-RELOAD where overlay
specific).

Portable like :mod:`sipmesh.proto.reload` (CPython 3.11+ and MicroPython
1.2x), sans-I/O, same error contract: decoding raises only
``ReloadDecodeError``, encoding invalid values raises ``ReloadEncodeError``,
and each value has exactly one accepted encoding (Booleans 0/1, lengths
exact, nothing trailing), so decoding and re-encoding gives the same bytes.
Attach, IceCandidate and IpAddressPort come first (what a board needs).

Covered (RFC 6940 section numbers):

- 6.3.1.1 IpAddressPort ``type u8 | length u8 | addr u32|u128 | port
  u16``; ipv4 length 6, ipv6 length 18; other types 3..255 are kept raw
  (the structure "can be extended"); type 0 is invalid.
- 6.5.1.1 AttachReqAns ``ufrag<0..255> | password<0..255> | role<0..255> |
  IceCandidate candidates<0..2^16-1> | send_update Boolean`` and
  IceCandidate ``addr_port | overlay_link u8 | foundation<0..255> |
  priority u32 | type CandType | rel_addr_port (srflx, relay) |
  IceExtension extensions<0..2^16-1>``, IceExtension ``name<0..2^16-1> |
  value<0..2^16-1>``. CandType is host(1), srflx(2), relay(4): 3 is
  RESERVED and other values cannot be skipped (no length), so they are
  rejected. OverlayLinkType 0 is rejected, other values are kept.
- 6.5.2.1 / 6.5.2.2 AppAttachReq / AppAttachAns ``ufrag | password |
  application u16 | role | candidates``.
- 6.4.2.1 JoinReq ``joining_peer_id NodeId | overlay_specific_data
  <0..2^16-1>``, JoinAns ``overlay_specific_data<0..2^16-1>``.
- 6.4.2.2 LeaveReq (same shape as JoinReq); LeaveAns is empty; 10.9
  ChordLeaveData ``type u8 | NodeId successors|predecessors<0..2^16-1>``.
- 6.4.2.3 / 10.7 UpdateReq is wholly overlay specific: here the Chord
  ChordUpdate ``uptime u32 | type u8 | [predecessors NodeId<0..2^16-1> |
  successors <..> | fingers <..> (full only)]``. UpdateAns: empty body.
- 6.4.2.4 RouteQueryReq ``send_update Boolean | Destination |
  overlay_specific_data<0..2^16-1>``; 10.8 ChordRouteQueryAns ``next_peer``.
- 6.4.2.5 ProbeReq ``requested_info<0..2^8-1>`` (u8 each, 0 invalid),
  ProbeAns ``ProbeInformation probe_info<0..2^16-1>`` with
  ProbeInformation ``type u8 | length u8 | value``: types 1..3 carry a
  u32 (length must be 4), other types are kept raw.
- 6.5.4 ConfigUpdateReq ``type u8 | length u32 | config_data<0..2^24-1>
  (config) or KindDescription kinds<0..2^24-1> (kind)``, KindDescription
  ``opaque<0..2^16-1>``; other types kept raw; ConfigUpdateAns is empty.
"""

from sipmesh.proto.reload import (
    _S,
    NODE_ID_LEN,
    ReloadDecodeError,
    ReloadEncodeError,
    _boolean,
    _decode_destinations,
    _join,
    _list,
    _op8,
    _op16,
    _Reader,
    _u8,
    _u16,
    _u32,
)

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


ADDR_IPV4 = const(1)
ADDR_IPV6 = const(2)
CAND_HOST = const(1)
CAND_SRFLX = const(2)
CAND_RELAY = const(4)
LINK_DTLS_UDP_SR = const(1)
LINK_DTLS_UDP_SR_NO_ICE = const(3)
LINK_TLS_TCP_FH_NO_ICE = const(4)

MAX_CANDIDATES = const(16)
MAX_ICE_EXTENSIONS = const(16)
MAX_NODES = const(128)
MAX_PROBE = const(32)
MAX_KIND_DESCRIPTIONS = const(64)



def _nid(n):
    if len(n) != NODE_ID_LEN:
        raise ReloadEncodeError("Node-ID must be %d bytes" % NODE_ID_LEN)
    return bytes(n)


def _node_id(r):
    return r.take(NODE_ID_LEN, "Node-ID")


def _nodes(r, what):
    return _list(r, 2, what, MAX_NODES, _node_id)


def _enc_nodes(ns):
    return _op16(b"".join([_nid(n) for n in ns]))


# ---------------------------------------------------------------- addresses


class IpAddressPort(_S):
    """IpAddressPort (6.3.1.1): ``type`` (ADDR_IPV4 / ADDR_IPV6), ``addr`` (4 or 16
    bytes), ``port`` u16. Other types keep their raw data in ``addr``, port 0."""

    def __init__(self, type, addr, port=0):
        self.type = type
        self.addr = bytes(addr)
        self.port = port

    def encode(self):
        t = self.type
        a = self.addr
        if t == ADDR_IPV4 or t == ADDR_IPV6:
            if len(a) != (4 if t == ADDR_IPV4 else 16):
                raise ReloadEncodeError("address length does not match its type")
            return _u8(t) + _op8(a + _u16(self.port))
        if not 3 <= t <= 255 or self.port:
            raise ReloadEncodeError("bad address type %r" % (t,))
        return _u8(t) + _op8(a)


def _addr(r):
    p = r.pos
    t = r.u8("address type")
    n = r.u8("address length")
    if t == ADDR_IPV4 or t == ADDR_IPV6:
        if n != (6 if t == ADDR_IPV4 else 18):
            raise ReloadDecodeError("address length %d does not match its type" % n, p + 1)
        a = r.take(n - 2, "address")
        return IpAddressPort(t, a, r.u16("port"))
    if t == 0:
        raise ReloadDecodeError("invalid address type 0", p)
    return IpAddressPort(t, r.take(n, "address"))


# ---------------------------------------------------------------- ICE


class IceExtension(_S):
    """IceExtension (6.5.1.1): ``name`` and ``value`` bytes."""

    def __init__(self, name, value):
        self.name = bytes(name)
        self.value = bytes(value)

    def encode(self):
        return _op16(self.name) + _op16(self.value)


def _ice_ext(r):
    n = r.opaque16("extension name")
    return IceExtension(n, r.opaque16("extension value"))


class IceCandidate(_S):
    """IceCandidate (6.5.1.1): ``addr_port``, ``overlay_link`` u8, ``foundation``
    bytes, ``priority`` u32, ``type`` (CAND_HOST / CAND_SRFLX / CAND_RELAY),
    ``rel_addr_port`` (srflx and relay only, else None), ``extensions``."""

    def __init__(
        self, addr_port, overlay_link, foundation, priority, type, rel_addr_port=None, extensions=()
    ):
        self.addr_port = addr_port
        self.overlay_link = overlay_link
        self.foundation = bytes(foundation)
        self.priority = priority
        self.type = type
        self.rel_addr_port = rel_addr_port
        self.extensions = list(extensions)

    def encode(self):
        t = self.type
        rel = self.rel_addr_port
        if t == CAND_HOST:
            if rel is not None:
                raise ReloadEncodeError("host candidate with rel_addr_port")
            rb = b""
        elif t == CAND_SRFLX or t == CAND_RELAY:
            if rel is None:
                raise ReloadEncodeError("srflx/relay candidate needs rel_addr_port")
            rb = rel.encode()
        else:
            raise ReloadEncodeError("bad candidate type %r" % (t,))
        if not self.overlay_link:
            raise ReloadEncodeError("overlay_link 0 is invalid")
        return b"".join(
            (
                self.addr_port.encode(),
                _u8(self.overlay_link),
                _op8(self.foundation),
                _u32(self.priority),
                _u8(t),
                rb,
                _op16(_join(self.extensions)),
            )
        )


def _candidate(r):
    a = _addr(r)
    p = r.pos
    link = r.u8("overlay_link")
    if not link:
        raise ReloadDecodeError("invalid overlay_link 0", p)
    f = r.opaque8("foundation")
    pri = r.u32("priority")
    p = r.pos
    t = r.u8("candidate type")
    rel = None
    if t == CAND_SRFLX or t == CAND_RELAY:
        rel = _addr(r)
    elif t != CAND_HOST:
        raise ReloadDecodeError("unknown candidate type %d" % t, p)
    ext = _list(r, 2, "ICE extensions", MAX_ICE_EXTENSIONS, _ice_ext)
    return IceCandidate(a, link, f, pri, t, rel, ext)


class AttachReqAns(_S):
    """AttachReqAns (6.5.1.1), the body of both AttachReq and AttachAns:
    ``ufrag``, ``password``, ``role`` bytes, ``candidates``, ``send_update``."""

    def __init__(self, ufrag, password, role, candidates=(), send_update=False):
        self.ufrag = bytes(ufrag)
        self.password = bytes(password)
        self.role = bytes(role)
        self.candidates = list(candidates)
        self.send_update = bool(send_update)

    def encode(self):
        return b"".join(
            (
                _op8(self.ufrag),
                _op8(self.password),
                _op8(self.role),
                _op16(_join(self.candidates)),
                b"\x01" if self.send_update else b"\x00",
            )
        )


def _candidates(r):
    return _list(r, 2, "candidates", MAX_CANDIDATES, _candidate)


def decode_attach(body):
    """Decode an AttachReq or AttachAns body (AttachReqAns)."""
    r = _Reader(body)
    u = r.opaque8("ufrag")
    pw = r.opaque8("password")
    role = r.opaque8("role")
    c = _candidates(r)
    s = _boolean(r, "send_update")
    r.done("AttachReqAns")
    return AttachReqAns(u, pw, role, c, s)


class AppAttach(_S):
    """AppAttachReq / AppAttachAns (6.5.2, same shape): ``ufrag``,
    ``password``, ``application`` u16, ``role``, ``candidates``."""

    def __init__(self, ufrag, password, application, role, candidates=()):
        self.ufrag = bytes(ufrag)
        self.password = bytes(password)
        self.application = application
        self.role = bytes(role)
        self.candidates = list(candidates)

    def encode(self):
        return b"".join(
            (
                _op8(self.ufrag),
                _op8(self.password),
                _u16(self.application),
                _op8(self.role),
                _op16(_join(self.candidates)),
            )
        )


def decode_app_attach(body):
    r = _Reader(body)
    u = r.opaque8("ufrag")
    pw = r.opaque8("password")
    app = r.u16("application")
    role = r.opaque8("role")
    c = _candidates(r)
    r.done("AppAttach")
    return AppAttach(u, pw, app, role, c)


# ---------------------------------------------------------------- Join, Leave


class JoinReq(_S):
    """JoinReq (6.4.2.1): ``peer_id`` (joining_peer_id, 16 bytes), ``data``
    (overlay_specific_data)."""

    def __init__(self, peer_id, data=b""):
        self.peer_id = bytes(peer_id)
        self.data = bytes(data)

    def encode(self):
        return _nid(self.peer_id) + _op16(self.data)


class LeaveReq(JoinReq):
    """LeaveReq (6.4.2.2): ``peer_id`` (leaving_peer_id), ``data``."""


class JoinAns(_S):
    """JoinAns (6.4.2.1): ``data`` (overlay_specific_data)."""

    def __init__(self, data=b""):
        self.data = bytes(data)

    def encode(self):
        return _op16(self.data)


def _peer_req(body, cls, what):
    r = _Reader(body)
    n = _node_id(r)
    d = r.opaque16("overlay_specific_data")
    r.done(what)
    return cls(n, d)


def decode_join_req(body):
    return _peer_req(body, JoinReq, "JoinReq")


def decode_leave_req(body):
    return _peer_req(body, LeaveReq, "LeaveReq")


def decode_join_ans(body):
    r = _Reader(body)
    d = r.opaque16("overlay_specific_data")
    r.done("JoinAns")
    return JoinAns(d)


LEAVE_FROM_SUCC = const(1)
LEAVE_FROM_PRED = const(2)


class ChordLeaveData(_S):
    """ChordLeaveData (10.9), the LeaveReq overlay_specific_data: ``type``
    from_succ (with the sender's ``successors``) or from_pred (with its
    ``predecessors``)."""

    def __init__(self, type, successors=(), predecessors=()):
        self.type = type
        self.successors = [bytes(x) for x in successors]
        self.predecessors = [bytes(x) for x in predecessors]

    def encode(self):
        t = self.type
        if t == LEAVE_FROM_SUCC:
            if self.predecessors:
                raise ReloadEncodeError("from_succ leave data with predecessors")
            return _u8(t) + _enc_nodes(self.successors)
        if t == LEAVE_FROM_PRED:
            if self.successors:
                raise ReloadEncodeError("from_pred leave data with successors")
            return _u8(t) + _enc_nodes(self.predecessors)
        raise ReloadEncodeError("bad ChordLeaveType %r" % (t,))


def decode_chord_leave_data(data):
    r = _Reader(data)
    p = r.pos
    t = r.u8("ChordLeaveType")
    if t == LEAVE_FROM_SUCC:
        d = ChordLeaveData(t, successors=_nodes(r, "successors"))
    elif t == LEAVE_FROM_PRED:
        d = ChordLeaveData(t, predecessors=_nodes(r, "predecessors"))
    else:
        raise ReloadDecodeError("unknown ChordLeaveType %d" % t, p)
    r.done("ChordLeaveData")
    return d


def decode_empty(body, what="body"):
    """LeaveAns (6.4.2.2), UpdateAns (Chord) and ConfigUpdateAns (6.5.4.2)
    are empty: anything in them is an error."""
    _Reader(body).done(what)


# ---------------------------------------------------------------- Update

CHORD_PEER_READY = const(1)
CHORD_NEIGHBORS = const(2)
CHORD_FULL = const(3)


class ChordUpdate(_S):
    """ChordUpdate (10.7), the UpdateReq body: ``uptime`` u32 (s), ``type``,
    ``predecessors``, ``successors`` (neighbors, full), ``fingers`` (full)."""

    def __init__(self, uptime, type, predecessors=(), successors=(), fingers=()):
        self.uptime = uptime
        self.type = type
        self.predecessors = [bytes(x) for x in predecessors]
        self.successors = [bytes(x) for x in successors]
        self.fingers = [bytes(x) for x in fingers]

    def encode(self):
        t = self.type
        out = _u32(self.uptime) + _u8(t)
        if t == CHORD_PEER_READY:
            if self.predecessors or self.successors or self.fingers:
                raise ReloadEncodeError("peer_ready update with Node-IDs")
            return out
        if t == CHORD_NEIGHBORS:
            if self.fingers:
                raise ReloadEncodeError("neighbors update with fingers")
        elif t != CHORD_FULL:
            raise ReloadEncodeError("bad ChordUpdateType %r" % (t,))
        out += _enc_nodes(self.predecessors) + _enc_nodes(self.successors)
        if t == CHORD_FULL:
            out += _enc_nodes(self.fingers)
        return out


def decode_chord_update(body):
    r = _Reader(body)
    up = r.u32("uptime")
    p = r.pos
    t = r.u8("ChordUpdateType")
    u = ChordUpdate(up, t)
    if t == CHORD_NEIGHBORS or t == CHORD_FULL:
        u.predecessors = _nodes(r, "predecessors")
        u.successors = _nodes(r, "successors")
        if t == CHORD_FULL:
            u.fingers = _nodes(r, "fingers")
    elif t != CHORD_PEER_READY:
        raise ReloadDecodeError("unknown ChordUpdateType %d" % t, p)
    r.done("ChordUpdate")
    return u


# ---------------------------------------------------------------- RouteQuery


class RouteQueryReq(_S):
    """RouteQueryReq (6.4.2.4.1): ``send_update`` bool, ``destination``
    (reload.Destination), ``data`` (overlay_specific_data; empty for Chord)."""

    def __init__(self, send_update, destination, data=b""):
        self.send_update = bool(send_update)
        self.destination = destination
        self.data = bytes(data)

    def encode(self):
        s = b"\x01" if self.send_update else b"\x00"
        return s + self.destination.encode() + _op16(self.data)


def decode_route_query_req(body):
    r = _Reader(body)
    s = _boolean(r, "send_update")
    r.need(2, "destination")
    t = r.mv[r.pos]
    end = r.pos + (2 if t & 0x80 else 2 + r.mv[r.pos + 1])
    if end > r.end:
        raise ReloadDecodeError("truncated destination", r.pos)
    d = []
    _decode_destinations(r, end, d, "destination")
    data = r.opaque16("overlay_specific_data")
    r.done("RouteQueryReq")
    return RouteQueryReq(s, d[0], data)


class ChordRouteQueryAns(_S):
    """ChordRouteQueryAns (10.8), the RouteQueryAns body: ``next_peer``."""

    def __init__(self, next_peer):
        self.next_peer = bytes(next_peer)

    def encode(self):
        return _nid(self.next_peer)


def decode_chord_route_query_ans(body):
    r = _Reader(body)
    n = _node_id(r)
    r.done("ChordRouteQueryAns")
    return ChordRouteQueryAns(n)


# ---------------------------------------------------------------- Probe

PROBE_RESPONSIBLE_SET = const(1)
PROBE_NUM_RESOURCES = const(2)
PROBE_UPTIME = const(3)


class ProbeReq(_S):
    """ProbeReq (6.4.2.5.1): ``requested_info`` list of ProbeInformationType."""

    def __init__(self, requested_info=()):
        self.requested_info = list(requested_info)

    def encode(self):
        for t in self.requested_info:
            if not 1 <= t <= 255:
                raise ReloadEncodeError("bad ProbeInformationType %r" % (t,))
        return _op8(bytes(self.requested_info))


def _probe_type(r):
    t = r.u8("ProbeInformationType")
    if not t:
        raise ReloadDecodeError("invalid ProbeInformationType 0", r.pos - 1)
    return t


def decode_probe_req(body):
    r = _Reader(body)
    ts = _list(r, 1, "requested_info", 255, _probe_type)
    r.done("ProbeReq")
    return ProbeReq(ts)


class ProbeInformation(_S):
    """ProbeInformation (6.4.2.5.2): ``type`` and ``value``: an int (u32) for
    types 1..3, raw bytes for other types."""

    def __init__(self, type, value):
        self.type = type
        self.value = value

    def encode(self):
        t = self.type
        if 1 <= t <= 3:
            v = _u32(self.value)
        elif 4 <= t <= 255:
            v = bytes(self.value)
        else:
            raise ReloadEncodeError("bad ProbeInformationType %r" % (t,))
        return _u8(t) + _op8(v)


def _probe_info(r):
    t = _probe_type(r)
    p = r.pos
    n = r.u8("probe length")
    if t <= 3:
        if n != 4:
            raise ReloadDecodeError("probe value of length %d" % n, p)
        return ProbeInformation(t, r.u32("probe value"))
    return ProbeInformation(t, r.take(n, "probe value"))


class ProbeAns(_S):
    """ProbeAns (6.4.2.5.2): ``probe_info`` list of ProbeInformation."""

    def __init__(self, probe_info=()):
        self.probe_info = list(probe_info)

    def encode(self):
        return _op16(_join(self.probe_info))


def decode_probe_ans(body):
    r = _Reader(body)
    pi = _list(r, 2, "probe_info", MAX_PROBE, _probe_info)
    r.done("ProbeAns")
    return ProbeAns(pi)


# ---------------------------------------------------------------- ConfigUpdate

CONFIG_CONFIG = const(1)
CONFIG_KIND = const(2)


def _u24op(b):
    if len(b) > 0xFFFFFF:
        raise ReloadEncodeError("longer than 2^24-1")
    return _u32(len(b))[1:] + b


class ConfigUpdateReq(_S):
    """ConfigUpdateReq (6.5.4.1): ``type`` and ``data``: for CONFIG_CONFIG the
    config_data bytes, for CONFIG_KIND a list of KindDescription bytes, for
    other types the raw bytes after the length field."""

    def __init__(self, type, data):
        self.type = type
        self.data = [bytes(x) for x in data] if type == CONFIG_KIND else bytes(data)

    def encode(self):
        t = self.type
        if t == CONFIG_CONFIG:
            v = _u24op(self.data)
        elif t == CONFIG_KIND:
            v = _u24op(b"".join([_op16(k) for k in self.data]))
        elif 3 <= t <= 255:
            v = self.data
        else:
            raise ReloadEncodeError("bad ConfigUpdateType %r" % (t,))
        return _u8(t) + _u32(len(v)) + v


def _kind_desc(r):
    return r.opaque16("KindDescription")


def decode_config_update_req(body):
    r = _Reader(body)
    p = r.pos
    t = r.u8("ConfigUpdateType")
    n = r.u32("length")
    end = r.sub_end(n, "ConfigUpdateReq")
    if t == CONFIG_CONFIG:
        d = r.take(r.u8("length") << 16 | r.u16("length"), "config_data")
    elif t == CONFIG_KIND:
        d = _list(r, 3, "kinds", MAX_KIND_DESCRIPTIONS, _kind_desc)
    elif t == 0:
        raise ReloadDecodeError("invalid ConfigUpdateType 0", p)
    else:
        d = r.take(n, "config update")
    if r.pos != end:
        raise ReloadDecodeError("ConfigUpdateReq length disagrees with its contents", p + 1)
    r.done("ConfigUpdateReq")
    return ConfigUpdateReq(t, d)
