"""Portable checks of sipmesh.proto.boardcfg (signed board configuration payloads)."""

from portable import eq, raises

from sipmesh.proto import boardcfg, cbor

BID = "sm-0123456789ab"


def _make(**kw):
    args = {"board": BID, "seq": 5, "name": "door-1", "aor": "sip:door-1@demo.sipmesh",
            "controller": {"host": "10.77.0.1", "port": 7380},
            "overlay": {"host": "10.77.0.1", "port": 6085, "name": "demo", "kind": 4026531842},
            "intervals": {"heartbeat": 30, "pull": 300, "refresh": 600}, "issued": 1800000000}
    args.update(kw)
    return boardcfg.make(**args)


def _reason(payload, board=BID, seq=0):
    return raises(boardcfg.BoardConfigError, boardcfg.check, payload, board, seq).reason


def check_make_and_check():
    m = boardcfg.check(_make(contacts=["door-2"], net={"ssid": "x", "psk": "y"}), BID, 4)
    eq((m["seq"], m["contacts"], m["net"]["ssid"]), (5, ["door-2"], "x"), "fields")
    eq(_make(), _make(), "deterministic")


def check_replay_and_other_board():
    eq(_reason(_make(), seq=5), "not newer", "same seq")
    eq(_reason(_make(), seq=9), "not newer", "older")
    eq(_reason(_make(), board="sm-ffffffffffff"), "for another board", "board")


def check_malformed():
    good = cbor.loads(_make())
    cases = [b"", b"\xff", cbor.dumps([1]), bytes(5000)]
    for key, val in (("v", 2), ("seq", 0), ("seq", "5"), ("name", ""), ("aor", "tel:1"),
                     ("controller", {"host": "h"}), ("intervals", {"pull": 1}),
                     ("contacts", ["x"] * 40), ("net", {"ssid": 1}), ("settings", [])):
        m = dict(good)
        m[key] = val
        cases.append(cbor.dumps(m))
    m = dict(good)
    del m["overlay"]
    cases.append(cbor.dumps(m))
    for c in cases:
        r = _reason(c)
        assert r.startswith("malformed"), r
    raises(boardcfg.BoardConfigError, _make, seq=-1)
