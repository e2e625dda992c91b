"""The four transaction state machines of RFC 3261 §17, driven by an injected clock.

Time is a plain float passed in; nothing sleeps and nothing opens a socket.
``run`` steps a transaction from timer to timer exactly as an event loop
would (``handle_timer(next_timer())``) and records when each action came
out, so the tests can state the RFC's schedules as lists of instants.
"""

from __future__ import annotations

import pytest

from sipmesh.sip.message import Request, Response
from sipmesh.sip.parser import parse_message
from sipmesh.sip.reject import make_response
from sipmesh.sip.timers import TimerConfig
from sipmesh.sip.transaction import (
    ClientTransaction,
    Deliver,
    Send,
    ServerTransaction,
    State,
    Terminated,
    Timeout,
    TransactionTable,
    TransportError,
    build_ack,
    new_branch,
)
from sipmesh.sip.via import MAGIC_COOKIE

DEST = ("192.0.2.7", 5060, "udp")
UDP, TCP = False, True  # the ``reliable`` argument


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKkjshdyff",
    sent_by: str = "pc33.atlanta.com",
    uri: str = "sip:bob@biloxi.com",
    cseq: int = 986759,
    cseq_method: str | None = None,
    from_tag: str = "88sja8x",
    to_tag: str | None = None,
    extra: str = "",
) -> Request:
    """A request as it arrives from the network (parsed from text)."""
    via = f"SIP/2.0/UDP {sent_by}" + (f";branch={branch}" if branch else "")
    to = "Bob <sip:bob@biloxi.com>" + (f";tag={to_tag}" if to_tag else "")
    raw = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via}\r\n"
        f"{extra}"
        f"To: {to}\r\n"
        f"From: Alice <sip:alice@atlanta.com>;tag={from_tag}\r\n"
        "Max-Forwards: 70\r\n"
        "Call-ID: 987asjd97y7atg\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw.encode())
    assert isinstance(msg, Request)
    return msg


def answer(req: Request, status: int, to_tag: str = "99sa0xk") -> Response:
    """The response a UAS would send to req (its Via rows, a To tag above 100)."""
    return make_response(req, status, to_tag=to_tag)


def run(txn: ClientTransaction | ServerTransaction, until: float = 1000.0) -> list[tuple]:
    """Fire timers in order until none is left (or ``until``): [(time, action), ...]."""
    log = []
    while (when := txn.next_timer()) is not None and when <= until:
        log += [(when, action) for action in txn.handle_timer(when)]
    return log


def sends(log: list[tuple]) -> list[float]:
    return [t for t, action in log if isinstance(action, Send)]


def tail(log: list[tuple]) -> list[tuple]:
    return [(t, a) for t, a in log if not isinstance(a, Send)]


# --- INVITE client transaction (Figure 5) -------------------------------------


def test_invite_client_udp_timer_a_doubles_until_timer_b():
    """§17.1.1.2: A starts at T1 and doubles; B = 64*T1 ends Calling with a timeout."""
    inv = request()
    txn = ClientTransaction(inv, DEST, 0.0, UDP)
    assert txn.state is State.CALLING
    assert txn.start(0.0) == [Send(inv, DEST)]
    assert txn.armed == {"A": 0.5, "B": 32.0}
    log = run(txn)
    times = sends(log)
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [b - a for a, b in zip([0.0, *times], times, strict=False)] == [0.5, 1, 2, 4, 8, 16]
    assert all(a == Send(inv, DEST, retransmission=True) for t, a in log if t < 32)
    assert tail(log) == [(32.0, Timeout("B")), (32.0, Terminated("Timer B"))]
    assert txn.state is State.TERMINATED
    assert txn.next_timer() is None


def test_invite_client_tcp_sends_once_then_timer_b():
    """§17.1.1.2: no Timer A on a reliable transport; Timer B still runs."""
    inv = request()
    txn = ClientTransaction(inv, DEST, 10.0, TCP)
    assert txn.start(10.0) == [Send(inv, DEST)]
    assert txn.armed == {"B": 42.0}
    assert run(txn) == [(42.0, Timeout("B")), (42.0, Terminated("Timer B"))]


def test_invite_client_provisional_stops_retransmissions_and_timer_b():
    """§17.1.1.2: in Proceeding nothing is retransmitted and B no longer fires."""
    inv = request()
    txn = ClientTransaction(inv, DEST, 0.0, UDP)
    txn.start(0.0)
    assert txn.handle_timer(0.5) == [Send(inv, DEST, retransmission=True)]
    ringing = answer(inv, 180)
    assert txn.receive_response(ringing, 1.0) == [Deliver(ringing)]
    assert txn.state is State.PROCEEDING
    assert txn.next_timer() is None
    again = answer(inv, 183)
    assert txn.receive_response(again, 50.0) == [Deliver(again)]
    ok = answer(inv, 200)
    assert txn.receive_response(ok, 60.0) == [Deliver(ok), Terminated("2xx")]
    assert txn.ack is None


def test_invite_client_2xx_in_calling_terminates_without_ack():
    """§17.1.1.2: the 2xx goes up and the UAC core, not the transaction, ACKs it."""
    inv = request()
    txn = ClientTransaction(inv, DEST, 0.0, UDP)
    txn.start(0.0)
    ok = answer(inv, 200)
    assert txn.receive_response(ok, 0.3) == [Deliver(ok), Terminated("2xx")]
    assert txn.state is State.TERMINATED
    assert txn.receive_response(ok, 0.4) == []


def test_invite_client_failure_acks_and_waits_timer_d_udp():
    """§17.1.1.2: 300-699 goes up once, is ACKed, and every retransmission is re-ACKed."""
    inv = request()
    txn = ClientTransaction(inv, DEST, 0.0, UDP)
    txn.start(0.0)
    busy = answer(inv, 486)
    actions = txn.receive_response(busy, 2.0)
    ack = txn.ack
    assert isinstance(ack, Request)
    assert actions == [Deliver(busy), Send(ack, DEST)]
    assert txn.state is State.COMPLETED
    assert txn.armed == {"D": 34.0}
    assert txn.receive_response(answer(inv, 486), 3.0) == [Send(ack, DEST, retransmission=True)]
    assert txn.receive_response(answer(inv, 180), 4.0) == []
    assert txn.receive_response(answer(inv, 200), 4.5) == []
    assert run(txn) == [(34.0, Terminated("Timer D"))]


def test_invite_client_failure_tcp_timer_d_is_zero():
    """§17.1.1.2: the ACK is sent even over TCP, and Timer D is zero there."""
    inv = request()
    txn = ClientTransaction(inv, DEST, 0.0, TCP)
    txn.start(0.0)
    busy = answer(inv, 603)
    actions = txn.receive_response(busy, 5.0)
    assert actions == [Deliver(busy), Send(txn.ack, DEST), Terminated("Timer D")]
    assert txn.state is State.TERMINATED


def test_ack_for_non_2xx_is_built_by_the_transaction():
    """§17.1.1.3, with the RFC's own example plus a second Via and Route rows."""
    inv = request(
        extra=(
            "Via: SIP/2.0/UDP upstream.example.com;branch=z9hG4bKearlier\r\n"
            "Route: <sip:p1.example.com;lr>\r\n"
            "Route: <sip:p2.example.com;lr>\r\n"
        )
    )
    txn = ClientTransaction(inv, DEST, 0.0, UDP)
    txn.start(0.0)
    busy = answer(inv, 486)
    txn.receive_response(busy, 1.0)
    assert txn.ack is not None
    assert txn.ack.to_bytes() == (
        b"ACK sip:bob@biloxi.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKkjshdyff\r\n"
        b"Route: <sip:p1.example.com;lr>\r\n"
        b"Route: <sip:p2.example.com;lr>\r\n"
        b"To: Bob <sip:bob@biloxi.com>;tag=99sa0xk\r\n"
        b"From: Alice <sip:alice@atlanta.com>;tag=88sja8x\r\n"
        b"Max-Forwards: 70\r\n"
        b"Call-ID: 987asjd97y7atg\r\n"
        b"CSeq: 986759 ACK\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    reparsed = parse_message(txn.ack.to_bytes())
    assert reparsed.validate() == []
    # Sent again, unchanged, for each retransmitted final response.
    assert txn.receive_response(busy, 2.0) == [Send(txn.ack, DEST, retransmission=True)]
    assert build_ack(inv, busy).to_bytes() == txn.ack.to_bytes()


# --- non-INVITE client transaction (Figure 6) ---------------------------------


def test_non_invite_client_udp_timer_e_caps_at_t2_until_timer_f():
    """§17.1.2.2: intervals 500 ms, 1 s, 2 s, 4 s, 4 s, ... and F at 64*T1."""
    opt = request("OPTIONS")
    txn = ClientTransaction(opt, DEST, 0.0, UDP)
    assert txn.state is State.TRYING
    assert txn.start(0.0) == [Send(opt, DEST)]
    assert txn.armed == {"E": 0.5, "F": 32.0}
    log = run(txn)
    assert sends(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert tail(log) == [(32.0, Timeout("F")), (32.0, Terminated("Timer F"))]


def test_non_invite_client_retransmits_every_t2_after_a_provisional():
    """§17.1.2.2: in Proceeding Timer E keeps going, reset to T2 each time."""
    reg = request("REGISTER")
    txn = ClientTransaction(reg, DEST, 0.0, UDP)
    txn.start(0.0)
    assert txn.handle_timer(0.5) == [Send(reg, DEST, retransmission=True)]
    trying = answer(reg, 100)
    assert txn.receive_response(trying, 0.7) == [Deliver(trying)]
    assert txn.state is State.PROCEEDING
    log = run(txn)
    assert sends(log) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert tail(log) == [(32.0, Timeout("F")), (32.0, Terminated("Timer F"))]


def test_non_invite_client_tcp_no_retransmission():
    bye = request("BYE", to_tag="99sa0xk")
    txn = ClientTransaction(bye, DEST, 0.0, TCP)
    assert txn.start(0.0) == [Send(bye, DEST)]
    assert run(txn) == [(32.0, Timeout("F")), (32.0, Terminated("Timer F"))]


def test_non_invite_client_final_then_timer_k():
    """§17.1.2.2: Completed absorbs retransmitted finals for T4 over UDP, 0 over TCP."""
    opt = request("OPTIONS")
    txn = ClientTransaction(opt, DEST, 0.0, UDP)
    txn.start(0.0)
    ok = answer(opt, 200)
    assert txn.receive_response(ok, 1.0) == [Deliver(ok)]
    assert txn.state is State.COMPLETED
    assert txn.armed == {"K": 6.0}
    assert txn.receive_response(answer(opt, 200), 2.0) == []
    assert run(txn) == [(6.0, Terminated("Timer K"))]

    txn = ClientTransaction(opt, DEST, 0.0, TCP)
    txn.start(0.0)
    refused = answer(opt, 403)
    assert txn.receive_response(refused, 1.0) == [Deliver(refused), Terminated("Timer K")]


# --- INVITE server transaction (Figure 7) -------------------------------------


def test_invite_server_sends_100_trying_after_200_ms():
    """§17.2.1: the TU did not answer within 200 ms, so the transaction sends 100 itself."""
    inv = request(extra="Timestamp: 54\r\n")
    txn = ServerTransaction(inv, DEST, 0.0, UDP)
    assert txn.state is State.PROCEEDING
    assert txn.start(0.0) == [Deliver(inv)]
    assert txn.armed == {"TRYING": 0.2}
    assert txn.receive_request(request(extra="Timestamp: 54\r\n"), 0.1) == []
    log = run(txn)
    assert len(log) == 1
    when, action = log[0]
    assert when == 0.2 and isinstance(action, Send) and not action.retransmission
    trying = action.message
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.to is not None and trying.to.tag is None
    assert trying.get("via") == inv.get("via") and trying.cseq == inv.cseq
    assert trying.get("Timestamp") == "54 0.200"
    assert txn.receive_request(request(), 0.5) == [Send(trying, DEST, retransmission=True)]


def test_invite_server_no_100_trying_when_tu_answers_within_200_ms():
    inv = request()
    txn = ServerTransaction(inv, DEST, 0.0, UDP)
    txn.start(0.0)
    ringing = answer(inv, 180)
    assert txn.send_response(ringing, 0.15) == [Send(ringing, DEST)]
    assert txn.next_timer() is None
    assert txn.handle_timer(0.2) == []
    # A retransmitted INVITE gets the TU's latest provisional again.
    assert txn.receive_request(request(), 1.0) == [Send(ringing, DEST, retransmission=True)]

    txn = ServerTransaction(inv, DEST, 0.0, UDP)
    txn.start(0.0)
    txn.send_response(answer(inv, 486), 0.05)
    statuses = {a.message.status for _, a in run(txn) if isinstance(a, Send)}
    assert statuses == {486}


def test_invite_server_udp_timer_g_caps_at_t2_until_timer_h():
    """§17.2.1: G starts at T1, doubles up to T2; H = 64*T1 means no ACK came."""
    inv = request()
    txn = ServerTransaction(inv, DEST, 0.0, UDP)
    txn.start(0.0)
    busy = answer(inv, 486)
    assert txn.send_response(busy, 0.0) == [Send(busy, DEST)]
    assert txn.state is State.COMPLETED
    assert txn.armed == {"G": 0.5, "H": 32.0}
    log = run(txn)
    assert sends(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(a == Send(busy, DEST, retransmission=True) for _, a in log if isinstance(a, Send))
    assert tail(log) == [(32.0, Timeout("H")), (32.0, Terminated("Timer H"))]


def test_invite_server_ack_confirms_then_timer_i():
    """§17.2.1: ACK stops G and H; Confirmed absorbs ACKs for T4."""
    inv = request()
    txn = ServerTransaction(inv, DEST, 0.0, UDP)
    txn.start(0.0)
    busy = answer(inv, 486)
    txn.send_response(busy, 1.0)
    assert txn.receive_request(request(), 1.2) == [Send(busy, DEST, retransmission=True)]
    ack = build_ack(inv, busy)
    assert txn.receive_request(ack, 2.0) == []
    assert txn.state is State.CONFIRMED
    assert txn.armed == {"I": 7.0}
    assert txn.receive_request(ack, 3.0) == []
    assert txn.receive_request(request(), 3.5) == []
    assert txn.send_response(answer(inv, 500), 4.0) == []
    assert run(txn) == [(7.0, Terminated("Timer I"))]


def test_invite_server_tcp_no_timer_g_and_timer_i_is_zero():
    inv = request()
    txn = ServerTransaction(inv, DEST, 0.0, TCP)
    txn.start(0.0)
    busy = answer(inv, 486)
    assert txn.send_response(busy, 1.0) == [Send(busy, DEST)]
    assert txn.armed == {"H": 33.0}
    assert txn.receive_request(build_ack(inv, busy), 1.1) == [Terminated("Timer I")]

    txn = ServerTransaction(inv, DEST, 0.0, TCP)
    txn.start(0.0)
    txn.send_response(busy, 1.0)
    assert run(txn) == [(33.0, Timeout("H")), (33.0, Terminated("Timer H"))]


def test_invite_server_2xx_terminates():
    """§17.2.1: the TU, not the transaction, retransmits the 2xx."""
    inv = request()
    txn = ServerTransaction(inv, DEST, 0.0, UDP)
    txn.start(0.0)
    ok = answer(inv, 200)
    assert txn.send_response(ok, 3.0) == [Send(ok, DEST), Terminated("2xx")]
    assert txn.next_timer() is None


# --- non-INVITE server transaction (Figure 8) ---------------------------------


def test_non_invite_server_udp_timer_j():
    """§17.2.2: retransmissions are ignored in Trying and answered from Completed for 64*T1."""
    opt = request("OPTIONS")
    txn = ServerTransaction(opt, DEST, 0.0, UDP)
    assert txn.state is State.TRYING
    assert txn.start(0.0) == [Deliver(opt)]
    assert txn.next_timer() is None
    assert txn.receive_request(request("OPTIONS"), 0.5) == []
    ok = answer(opt, 200)
    assert txn.send_response(ok, 1.0) == [Send(ok, DEST)]
    assert txn.armed == {"J": 33.0}
    assert txn.receive_request(request("OPTIONS"), 1.5) == [Send(ok, DEST, retransmission=True)]
    assert txn.send_response(answer(opt, 500), 2.0) == []
    assert run(txn) == [(33.0, Terminated("Timer J"))]


def test_non_invite_server_tcp_timer_j_is_zero():
    opt = request("OPTIONS")
    txn = ServerTransaction(opt, DEST, 0.0, TCP)
    txn.start(0.0)
    ok = answer(opt, 200)
    assert txn.send_response(ok, 1.0) == [Send(ok, DEST), Terminated("Timer J")]


def test_non_invite_server_proceeding_resends_latest_provisional():
    reg = request("REGISTER")
    txn = ServerTransaction(reg, DEST, 0.0, UDP)
    txn.start(0.0)
    trying = answer(reg, 100)
    assert txn.send_response(trying, 0.1) == [Send(trying, DEST)]
    assert txn.state is State.PROCEEDING
    assert txn.receive_request(request("REGISTER"), 0.6) == [
        Send(trying, DEST, retransmission=True)
    ]
    ok = answer(reg, 200)
    assert txn.send_response(ok, 1.0) == [Send(ok, DEST)]
    assert txn.state is State.COMPLETED


# --- transport errors (§17.1.4, §17.2.4) ------------------------------------------


def _invite_client_completed() -> ClientTransaction:
    inv = request()
    txn = ClientTransaction(inv, DEST, 0.0, UDP)
    txn.start(0.0)
    txn.receive_response(answer(inv, 486), 1.0)
    return txn


def _client(method: str, *responses: int) -> ClientTransaction:
    req = request(method)
    txn = ClientTransaction(req, DEST, 0.0, UDP)
    txn.start(0.0)
    for status in responses:
        txn.receive_response(answer(req, status), 1.0)
    return txn


def _server(method: str, *responses: int, ack: bool = False) -> ServerTransaction:
    req = request(method)
    txn = ServerTransaction(req, DEST, 0.0, UDP)
    txn.start(0.0)
    for status in responses:
        txn.send_response(answer(req, status), 0.1)
    if ack:
        txn.receive_request(build_ack(req, answer(req, 486)), 1.0)
    return txn


FAILS = [TransportError(), Terminated("transport error")]


@pytest.mark.parametrize(
    "make, state, expected",
    [
        (lambda: _client("INVITE"), State.CALLING, FAILS),
        (lambda: _client("INVITE", 180), State.PROCEEDING, []),
        (_invite_client_completed, State.COMPLETED, FAILS),
        (lambda: _client("OPTIONS"), State.TRYING, FAILS),
        (lambda: _client("OPTIONS", 100), State.PROCEEDING, FAILS),
        (lambda: _client("OPTIONS", 200), State.COMPLETED, []),
        (lambda: _server("INVITE"), State.PROCEEDING, FAILS),
        (lambda: _server("INVITE", 486), State.COMPLETED, FAILS),
        (lambda: _server("INVITE", 486, ack=True), State.CONFIRMED, []),
        (lambda: _server("OPTIONS"), State.TRYING, []),
        (lambda: _server("OPTIONS", 100), State.PROCEEDING, FAILS),
        (lambda: _server("OPTIONS", 200), State.COMPLETED, FAILS),
    ],
    ids=[
        "invite-client-calling", "invite-client-proceeding", "invite-client-completed",
        "non-invite-client-trying", "non-invite-client-proceeding",
        "non-invite-client-completed", "invite-server-proceeding", "invite-server-completed",
        "invite-server-confirmed", "non-invite-server-trying",
        "non-invite-server-proceeding", "non-invite-server-completed",
    ],
)
def test_transport_error(make, state, expected):
    """Figures 5-8: the TU is informed and the transaction ends, in the states that send.

    Where the figures draw no transport error (nothing is sent in that state)
    the report is ignored.
    """
    txn = make()
    assert txn.state is state
    assert txn.transport_error(5.0) == expected
    assert txn.state is (State.TERMINATED if expected else state)
    if expected:
        assert txn.next_timer() is None


# --- matching (§17.1.3, §17.2.3, §9.2) ------------------------------------------


def test_response_matching_by_branch_and_method():
    """§17.1.3: the CSeq method tells the CANCEL's transaction from the INVITE's."""
    table = TransactionTable()
    inv = request()
    cancel = request("CANCEL")
    inv_txn = ClientTransaction(inv, DEST, 0.0, UDP)
    cancel_txn = ClientTransaction(cancel, DEST, 1.0, UDP)
    table.add_client(inv_txn)
    table.add_client(cancel_txn)
    assert table.match_response(answer(inv, 487)) is inv_txn
    assert table.match_response(answer(cancel, 200)) is cancel_txn
    assert table.match_response(answer(request(branch="z9hG4bKother"), 487)) is None
    assert table.match_response(answer(request("BYE"), 200)) is None
    # Branches are tokens, compared case-insensitively (§7.3.1).
    assert table.match_response(answer(request(branch="z9hG4bKKJSHDYFF"), 180)) is inv_txn
    with pytest.raises(ValueError):
        table.add_client(ClientTransaction(inv, DEST, 0.0, UDP))


def test_second_2xx_matches_nothing_once_the_invite_client_terminated():
    """§17.1.1.2: the first 2xx destroys the transaction; later ones go to the core."""
    table = TransactionTable()
    inv = request()
    txn = ClientTransaction(inv, DEST, 0.0, UDP)
    table.add_client(txn)
    txn.start(0.0)
    ok = answer(inv, 200)
    assert table.match_response(ok) is txn
    txn.receive_response(ok, 1.0)
    assert table.match_response(answer(inv, 200)) is None
    assert len(table) == 0


def test_request_matching_rfc3261():
    """§17.2.3: branch, sent-by and method; ACK finds its INVITE, CANCEL does not."""
    table = TransactionTable()
    inv_txn = ServerTransaction(request(), DEST, 0.0, UDP)
    table.add_server(inv_txn)
    assert table.match_request(request()) is inv_txn
    assert table.match_request(request("ACK", to_tag="99sa0xk")) is inv_txn
    assert table.match_request(request("CANCEL")) is None
    assert table.match_request(request("OPTIONS")) is None
    assert table.match_request(request(sent_by="evil.example.com")) is None
    assert table.match_request(request(branch="z9hG4bKother")) is None

    cancel_txn = ServerTransaction(request("CANCEL"), DEST, 1.0, UDP)
    table.add_server(cancel_txn)
    assert table.match_request(request("CANCEL")) is cancel_txn
    assert table.match_request(request()) is inv_txn
    assert table.find_invite_for_cancel(request("CANCEL")) is inv_txn
    assert table.find_invite_for_cancel(request("CANCEL", branch="z9hG4bKother")) is None


def test_cancel_of_a_non_invite_request():
    """§9.2: a CANCEL can match any method, but only an INVITE is affected."""
    table = TransactionTable()
    opt_txn = ServerTransaction(request("OPTIONS"), DEST, 0.0, UDP)
    table.add_server(opt_txn)
    cancel = request("CANCEL")
    assert table.find_cancelled(cancel) is opt_txn
    assert table.find_invite_for_cancel(cancel) is None


def test_request_matching_rfc2543_fallback():
    """§17.2.3: without the magic cookie, match on Request-URI, tags, Call-ID, CSeq, top Via."""
    table = TransactionTable()
    old = request(branch="1")
    txn = ServerTransaction(old, DEST, 0.0, UDP)
    assert txn.key is None
    table.add_server(txn)
    txn.start(0.0)
    assert table.match_request(request(branch="1")) is txn
    assert table.match_request(request(branch="1", uri="sip:bob@BILOXI.COM")) is txn
    assert table.match_request(request(branch="1", cseq=986760)) is None
    assert table.match_request(request(branch="1", from_tag="other")) is None
    assert table.match_request(request(branch="2")) is None
    assert table.match_request(request(branch=None)) is None
    # An ACK matches once a response was sent, by that response's To tag.
    assert table.match_request(request("ACK", branch="1", to_tag="99sa0xk")) is None
    busy = answer(old, 486, to_tag="99sa0xk")
    txn.send_response(busy, 1.0)
    ack = request("ACK", branch="1", to_tag="99sa0xk")
    assert table.match_request(ack) is txn
    assert table.match_request(request("ACK", branch="1", to_tag="another")) is None
    assert txn.receive_request(ack, 1.5) == []
    assert txn.state is State.CONFIRMED
    # A CANCEL is not a retransmission of the INVITE but finds it per §9.2.
    cancel = request("CANCEL", branch="1")
    assert table.match_request(cancel) is None
    assert table.find_invite_for_cancel(cancel) is txn


def test_rfc2543_non_invite_includes_the_cseq_method():
    table = TransactionTable()
    bye = request("BYE", branch=None, to_tag="99sa0xk")
    txn = ServerTransaction(bye, DEST, 0.0, UDP)
    table.add_server(txn)
    assert table.match_request(request("BYE", branch=None, to_tag="99sa0xk")) is txn
    assert table.match_request(request("BYE", branch=None, to_tag="x")) is None
    assert table.match_request(request("INFO", branch=None, to_tag="99sa0xk")) is None


def test_client_and_server_over_a_lossless_wire():
    """The ACK the client builds (§17.1.1.3) matches the server's INVITE transaction."""
    client_table, server_table = TransactionTable(), TransactionTable()
    inv = request(branch=new_branch())
    client = ClientTransaction(inv, "to-server", 0.0, UDP)
    client_table.add_client(client)
    [sent] = client.start(0.0)
    assert isinstance(sent, Send)
    wire_inv = parse_message(sent.message.to_bytes())
    assert server_table.match_request(wire_inv) is None
    server = ServerTransaction(wire_inv, "to-client", 0.01, UDP)
    server_table.add_server(server)
    assert server.start(0.01) == [Deliver(wire_inv)]
    [out] = server.send_response(answer(wire_inv, 404), 0.05)
    wire_resp = parse_message(out.message.to_bytes())
    matched = client_table.match_response(wire_resp)
    assert matched is client
    deliver, send_ack = matched.receive_response(wire_resp, 0.1)
    assert deliver == Deliver(wire_resp)
    wire_ack = parse_message(send_ack.message.to_bytes())
    assert server_table.match_request(wire_ack) is server
    assert server.receive_request(wire_ack, 0.15) == []
    assert server.state is State.CONFIRMED
    assert client.state is State.COMPLETED


# --- the table's timers and the configuration ----------------------------------


def test_table_timers_across_transactions():
    table = TransactionTable()
    a = ClientTransaction(request(branch="z9hG4bKa"), DEST, 0.0, UDP)
    b = ServerTransaction(request("OPTIONS", branch="z9hG4bKb"), DEST, 0.0, UDP)
    table.add_client(a)
    table.add_server(b)
    a.start(0.0)
    b.start(0.0)
    b.send_response(answer(b.request, 200), 0.25)
    assert table.next_timer() == 0.5
    assert table.handle_timers(0.4) == []
    fired = table.handle_timers(0.5)
    assert [(txn, type(action)) for txn, action in fired] == [(a, Send)]
    # A late wake-up fires each due timer once, earliest first (A was due at 1.5).
    assert table.handle_timers(32.25) == [
        (a, Send(a.request, DEST, retransmission=True)),
        (a, Timeout("B")),
        (a, Terminated("Timer B")),
        (b, Terminated("Timer J")),
    ]
    assert len(table) == 0
    assert table.next_timer() is None


def test_timer_config_scales_with_t1():
    """Every backoff and timeout follows T1 (§17.1.1.2); D stays at its 32 s floor."""
    timers = TimerConfig(t1=1.0, t2=8.0, t4=6.0)
    inv = request()
    txn = ClientTransaction(inv, DEST, 0.0, UDP, timers)
    txn.start(0.0)
    log = run(txn)
    assert sends(log) == [1.0, 3.0, 7.0, 15.0, 31.0, 63.0]
    assert tail(log)[0] == (64.0, Timeout("B"))
    assert timers.initial("D", reliable=False) == 32.0
    assert timers.initial("K", reliable=False) == 6.0
    assert timers.backoff("E", 8.0) == 8.0
    with pytest.raises(ValueError):
        TimerConfig(t1=5.0, t2=4.0)


def test_misuse_is_refused():
    with pytest.raises(ValueError):
        ClientTransaction(request("ACK"), DEST, 0.0, UDP)
    with pytest.raises(ValueError):
        ClientTransaction(request(branch=None), DEST, 0.0, UDP)
    with pytest.raises(ValueError):
        ServerTransaction(request("ACK"), DEST, 0.0, UDP)
    txn = ClientTransaction(request(), DEST, 0.0, UDP)
    txn.start(0.0)
    with pytest.raises(RuntimeError):
        txn.start(0.0)
    server = ServerTransaction(request(), DEST, 0.0, UDP)
    server.start(0.0)
    with pytest.raises(ValueError):
        server.send_response(Response(700), 0.1)


def test_new_branch_is_rfc3261_and_unique():
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100
    assert all(b.startswith(MAGIC_COOKIE) for b in branches)
