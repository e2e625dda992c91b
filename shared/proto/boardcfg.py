"""Signed board configuration: the payload map and the rules a board accepts it by.

The controller signs each board's configuration as a COSE_Sign1 (RFC 9052
§4.2, EdDSA) whose payload is the deterministic CBOR (RFC 8949 §4.2) map::

    {"v": 1, "board": "sm-…", "seq": 7, "issued": 1800000000,
     "name": "door-1", "aor": "sip:door-1@demo.sipmesh",
     "controller": {"host": "10.77.0.1", "port": 7380},
     "overlay": {"host": "10.77.0.1", "port": 6085, "name": "...", "kind": 4026531842},
     "intervals": {"heartbeat": 30, "pull": 300, "refresh": 600},
     "contacts": ["door-2"], "net": {"ssid": "...", "psk": "..."}, "settings": {...}}

``contacts``, ``net`` and ``settings`` are optional; unknown top-level keys
are ignored so an older board still takes a newer controller's config.

A board accepts a configuration only when the signature verifies with the
controller key it was provisioned with, the payload is well formed, it
names this board (a config for another board is refused even when signed
correctly), and its ``seq`` is above the one the board holds, so a
captured older configuration cannot be replayed. ``BoardConfigError`` is
the one error type; its ``reason`` is a short phrase the board logs and the
push listener returns ("bad signature", "for another board", "not newer",
"malformed: <key>", naming the first key found wrong).
"""

from sipmesh.proto import cbor

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


VERSION = const(1)
MAX_PAYLOAD = const(4096)
# Limits that keep one config small on a board and catch nonsense early.
_MAX_SEQ = const(0x7FFFFFFF)
_MAX_INTERVAL = const(604800)  # a week, in seconds
_MAX_CONTACTS = const(32)
_MAX_TEXT = const(255)

NOT_NEWER = "not newer"
OTHER_BOARD = "for another board"
BAD_SIGNATURE = "bad signature"


class BoardConfigError(ValueError):
    """A configuration the board must refuse; ``reason`` says why in a few words."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _chk(v, typ, lo, hi, what):
    """v when it has type typ and its value (int) or length lies in lo..hi, else refuse."""
    if type(v) is not typ or not lo <= (v if typ is int else len(v)) <= hi:
        raise BoardConfigError("malformed: " + what)
    return v


def _get(m, key, typ, lo=1, hi=_MAX_TEXT):
    return _chk(m.get(key), typ, lo, hi, key)


def _shape(m):
    _get(m, "v", int, VERSION, VERSION)
    _get(m, "board", str)
    _get(m, "seq", int, 1, _MAX_SEQ)
    _get(m, "issued", int, 0, 0xFFFFFFFFFF)
    _get(m, "name", str, 1, 63)
    if _get(m, "aor", str)[:4] != "sip:":
        raise BoardConfigError("malformed: aor")
    for k in ("controller", "overlay"):
        e = _get(m, k, dict, 0, MAX_PAYLOAD)
        _get(e, "host", str)
        _get(e, "port", int, 1, 65535)
    _get(e, "name", str)
    _get(e, "kind", int, 0, 0xFFFFFFFF)
    e = _get(m, "intervals", dict, 0, MAX_PAYLOAD)
    for k in ("heartbeat", "pull", "refresh"):
        _get(e, k, int, 1, _MAX_INTERVAL)
    for e in _chk(m.get("contacts", []), list, 0, _MAX_CONTACTS, "contacts"):
        _chk(e, str, 1, 63, "contacts")
    e = m.get("net")
    if e is not None:
        _get(_chk(e, dict, 0, MAX_PAYLOAD, "net"), "ssid", str, 1, 32)
        _get(e, "psk", str, 0, 64)
    e = m.get("settings")
    if e is not None:
        _chk(e, dict, 0, MAX_PAYLOAD, "settings")


def check(payload, board_id, current_seq):
    """Decode and judge a configuration payload; return its map.

    Raises ``BoardConfigError`` when the payload is over MAX_PAYLOAD bytes,
    not one CBOR map, misses a key or has one of the wrong type ("malformed:
    ..."), names another board ("for another board") or has ``seq`` <=
    current_seq ("not newer", the replay rule).
    """
    _chk(payload, type(payload), 0, MAX_PAYLOAD, "over MAX_PAYLOAD bytes")
    try:
        m = cbor.loads(payload, max_depth=8, max_items=1024)
    except cbor.CBORError:
        m = None
    _shape(_chk(m, dict, 0, MAX_PAYLOAD, "not a CBOR map"))
    if m["board"] != board_id:
        raise BoardConfigError(OTHER_BOARD)
    if m["seq"] <= current_seq:
        raise BoardConfigError(NOT_NEWER)
    return m


def make(
    board,
    seq,
    name,
    aor,
    controller,
    overlay,
    intervals,
    contacts=(),
    net=None,
    settings=None,
    issued=None,
):
    """Build a configuration payload (deterministic CBOR bytes) for signing.

    ``controller`` and ``overlay`` are maps as in the module docstring;
    ``issued`` defaults to the current Unix time. The result passes
    ``check`` (raises BoardConfigError otherwise), so a controller never
    signs a payload a board would refuse as malformed.
    """
    if issued is None:
        import time

        issued = int(time.time())
    m = {
        "v": VERSION,
        "board": board,
        "seq": seq,
        "issued": issued,
        "name": name,
        "aor": aor,
        "controller": dict(controller),
        "overlay": dict(overlay),
        "intervals": dict(intervals),
        "contacts": list(contacts),
    }
    if net is not None:
        m["net"] = dict(net)
    if settings is not None:
        m["settings"] = dict(settings)
    _shape(m)
    payload = cbor.dumps(m)
    return _chk(payload, bytes, 0, MAX_PAYLOAD, "over MAX_PAYLOAD bytes")


def accept(cose_bytes, controller_pub, board_id, current_seq, verify=None):
    """Verify a COSE_Sign1 configuration with the controller key, then ``check`` it.

    Any COSE failure (structure, algorithm, signature) becomes
    ``BoardConfigError("bad signature")``. ``verify`` is passed to
    ``cose.verify1`` (CPython may give a fast verifier). The COSE module
    (and Ed25519 with it) is imported here, on first use: it is needed only
    when a configuration arrives. A board does the same in stages instead,
    so that the Ed25519 check never shares its heap with the CBOR codec or
    this module (``fw_store.Store._checked``).
    """
    from sipmesh.proto import cose

    try:
        payload = cose.verify1(cose_bytes, controller_pub, verify=verify)
    except cose.CoseError:
        raise BoardConfigError(BAD_SIGNATURE) from None
    return check(payload, board_id, current_seq)
