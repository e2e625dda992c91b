"""Board management messages: the CBOR maps carried in serial frames.

A request travels in a REQUEST frame (``sipmesh.proto.frame``) as the CBOR
map ``{"op": OP, ...args}``; the board answers in a RESPONSE frame with the
same sequence number, ``{"ok": True, ...}`` or ``{"ok": False, "error":
CODE, "message": text}``. The board also sends EVENT frames, ``{"event":
NAME, ...}`` (one ``boot`` event when its agent starts). CBOR is RFC 8949
with deterministic encoding (§4.2), as everywhere in sipmesh.

Both ends check shapes here, so the board's agent and the controller's
client agree on every argument: each op names its required and optional
arguments, each argument name has one type and size limit, unknown
arguments are refused, and every problem is one ``MgmtError(code,
message)``. A request that cannot be understood is ``bad-request``; a
well-formed request for an op this version does not know is ``unknown-op``.

Size: the board's frame decoder grows up to ``MAX_REQUEST`` bytes, so the
limits are chosen to make the largest valid request (a ``provision`` with
a config of MAX_CONFIG and a cert of MAX_CERT bytes) fit in it. On a 100 KB
board the agent loads this module per request and drops it while an op runs.
"""

from sipmesh.proto import cbor

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


PROTO = const(1)

# Error codes of the management protocol.
BAD_REQUEST = "bad-request"
UNKNOWN_OP = "unknown-op"
NOT_PROVISIONED = "not-provisioned"
REFUSED = "refused"
BUSY = "busy"
INTERNAL = "internal"
BAD_RESPONSE = "bad-response"  # raised by parse_response only, never sent
CODES = (BAD_REQUEST, UNKNOWN_OP, NOT_PROVISIONED, REFUSED, BUSY, INTERNAL)

# A signed configuration payload is at most 4096 bytes (sipmesh.proto.boardcfg);
# the COSE_Sign1 envelope adds under 100. Controller-issued Ed25519 certificates
# are a few hundred bytes of DER. A maximal provision request is then about
# 5.5 KB, the frame decoder's limit MAX_REQUEST on the board.
MAX_CONFIG = const(4224)
MAX_CERT = const(1024)
MAX_MESSAGE = const(200)
MAX_REQUEST = const(5632)

OPS = ("get", "hello", "info", "keygen", "logs", "ping", "provision", "reboot", "repl", "set")
# Per op: (required, optional) argument names; ops absent here take none.
_ARGS = {
    "provision": (("controller_key", "cert", "ca_key", "hb_key", "config"), ("seed",)),
    "set": (("config",), ()),
    "logs": ((), ("since",)),
}


class MgmtError(ValueError):
    """The one error of this module; ``code`` is one of the protocol's codes."""

    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message


def _check(op, args):
    if op not in OPS:
        raise MgmtError(UNKNOWN_OP, "no op " + op[:32])
    need, may = _ARGS.get(op, ((), ()))
    for name in args:
        if name not in need and name not in may:
            raise MgmtError(BAD_REQUEST, "%s takes no argument %s" % (op, str(name)[:32]))
    for name in need:
        if name not in args:
            raise MgmtError(BAD_REQUEST, "%s needs %s" % (op, name))
    for name in args:
        v = args[name]
        if name == "since":
            lo, hi, ok = 0, 0x7FFFFFFF, type(v) is int
        else:
            hi = MAX_CONFIG if name == "config" else MAX_CERT if name == "cert" else 32
            lo = 32 if hi == 32 else 1
            ok = isinstance(v, bytes)
            if ok:
                v = len(v)
        if not ok or v < lo or v > hi:
            raise MgmtError(BAD_REQUEST, "%s must be in %d..%d (bytes: length)" % (name, lo, hi))


def request(op, **args):
    """Encode a request map; raises MgmtError if op or args break the op's shape."""
    _check(op, args)
    args["op"] = op
    return cbor.dumps(args)


def parse_request(payload):
    """Decode a REQUEST payload into ``(op, args)``; args excludes "op".

    Raises ``MgmtError("bad-request", ...)`` for anything but a CBOR map
    with a text ``op`` and arguments of the op's shape, and
    ``MgmtError("unknown-op", ...)`` for an op name this version lacks.
    """
    try:
        m = cbor.loads(payload, max_depth=4, max_items=64)
    except cbor.CBORError as e:
        raise MgmtError(BAD_REQUEST, "not CBOR: %s" % e) from None
    op = m.pop("op", None) if isinstance(m, dict) else None
    if not isinstance(op, str):
        raise MgmtError(BAD_REQUEST, "not a map with a text op")
    _check(op, m)
    return op, m


def response_ok(**kw):
    """Encode a successful response ``{"ok": True, **kw}``."""
    kw["ok"] = True
    return cbor.dumps(kw)


def response_error(code, message):
    """Encode an error response; the message is cut to MAX_MESSAGE characters."""
    if code not in CODES:
        code = INTERNAL
    return cbor.dumps({"ok": False, "error": code, "message": str(message)[:MAX_MESSAGE]})


def event(name, **kw):
    """Encode an EVENT payload ``{"event": name, **kw}`` (e.g. "boot")."""
    kw["event"] = name
    return cbor.dumps(kw)


def _load(payload, key, kind):
    # A map from the board whose key has the type kind; else bad-response.
    try:
        m = cbor.loads(payload)
    except cbor.CBORError as e:
        raise MgmtError(BAD_RESPONSE, "not CBOR: %s" % e) from None
    if not isinstance(m, dict) or not isinstance(m.get(key), kind):
        raise MgmtError(BAD_RESPONSE, "not a response map")
    return m


def parse_response(payload):
    """Decode a RESPONSE payload; return the map of an ok response.

    An error response raises ``MgmtError(code, message)`` with the board's
    code; a payload that is not a response map raises
    ``MgmtError("bad-response", ...)``.
    """
    m = _load(payload, "ok", bool)
    if m["ok"]:
        return m
    code = m.get("error")
    msg = m.get("message")
    if not isinstance(code, str) or not isinstance(msg, str):
        raise MgmtError(BAD_RESPONSE, "not a response map")
    raise MgmtError(code, msg)


def parse_event(payload):
    """Decode an EVENT payload into ``(name, map)``; raises MgmtError("bad-response")."""
    m = _load(payload, "event", str)
    return m["event"], m
