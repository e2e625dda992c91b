"""Portable checks of sipmesh.proto.mgmt (board management messages)."""

from portable import eq, raises

from sipmesh.proto import cbor, mgmt


def _code(fn, *args):
    return raises(mgmt.MgmtError, fn, *args).code


def check_request_round_trip():
    op, args = mgmt.parse_request(mgmt.request("logs", since=5))
    eq((op, args), ("logs", {"since": 5}), "logs")
    cfg = b"\xd2" + bytes(100)
    op, args = mgmt.parse_request(mgmt.request("set", config=cfg))
    eq(args["config"], cfg, "set config")
    for op in mgmt.OPS:
        if op not in ("set", "provision"):
            eq(mgmt.parse_request(mgmt.request(op)), (op, {}), op)


def check_bad_requests_are_bad_request():
    for payload in (b"", b"\xff", cbor.dumps([1]), cbor.dumps({"op": 1}), cbor.dumps({}),
                    cbor.dumps({"op": "logs", "since": -1}),
                    cbor.dumps({"op": "logs", "since": True}),
                    cbor.dumps({"op": "set"}), cbor.dumps({"op": "set", "config": "x"}),
                    cbor.dumps({"op": "set", "config": b""}),
                    cbor.dumps({"op": "ping", "x": 1}), cbor.dumps({"op": "ping", 1: 1}),
                    cbor.dumps({"op": "set", "config": bytes(mgmt.MAX_CONFIG + 1)})):
        eq(_code(mgmt.parse_request, payload), "bad-request", repr(payload[:20]))
    eq(_code(mgmt.parse_request, cbor.dumps({"op": "dance"})), "unknown-op", "unknown")


def check_provision_shapes():
    ok = {"controller_key": bytes(32), "cert": b"\x30\x00", "ca_key": bytes(32),
          "hb_key": bytes(32), "config": b"\xd2"}
    eq(mgmt.parse_request(mgmt.request("provision", **ok))[1], ok, "provision")
    for key, bad in (("controller_key", bytes(31)), ("seed", bytes(33)), ("cert", b""),
                     ("hb_key", "text")):
        args = dict(ok)
        args[key] = bad
        eq(_code(mgmt.parse_request, cbor.dumps(dict(args, op="provision"))), "bad-request", key)
    args = dict(ok)
    del args["ca_key"]
    eq(_code(mgmt.parse_request, cbor.dumps(dict(args, op="provision"))), "bad-request", "miss")


def check_responses():
    eq(mgmt.parse_response(mgmt.response_ok(t=5)), {"ok": True, "t": 5}, "ok")
    e = raises(mgmt.MgmtError, mgmt.parse_response, mgmt.response_error("refused", "not newer"))
    eq((e.code, e.message), ("refused", "not newer"), "error")
    for payload in (b"\xff", cbor.dumps([]), cbor.dumps({"ok": 1}), cbor.dumps({"ok": False})):
        eq(_code(mgmt.parse_response, payload), "bad-response", repr(payload))
    eq(cbor.loads(mgmt.response_error("nonsense", "x"))["error"], "internal", "unknown code")
    eq(mgmt.parse_event(mgmt.event("boot", id="sm-1")), ("boot", {"event": "boot", "id": "sm-1"}),
       "event")


def check_largest_request_fits_the_board_decoder():
    from sipmesh.proto import frame

    big = mgmt.request("provision", controller_key=bytes(32), cert=bytes(mgmt.MAX_CERT),
                       ca_key=bytes(32), hb_key=bytes(32), config=bytes(mgmt.MAX_CONFIG),
                       seed=bytes(32))
    wire = frame.encode(frame.REQUEST, 0xFFFF, big, mgmt.MAX_REQUEST)
    got = frame.FrameDecoder(mgmt.MAX_REQUEST).feed(wire)
    eq(len(got), 1, "one frame")
    eq(mgmt.parse_request(got[0].payload)[0], "provision", "op")
