"""RFC 3261 §17 transactions over a lossy UDP path, on an injected clock.

Two real UDP endpoints on 127.0.0.1, a "client host" and a "server host",
talk through a relay: a third UDP endpoint that forwards datagrams both ways
and discards those whose sequence number in their direction is in a chosen
set. The relay reports every datagram's fate (forwarded or dropped, with
the start line of the message it carried) so the test waits for events,
never for time.

The transactions (sans-I/O) see only the injected clock ``Wire.now``.
The driver carries out each ``Send`` by writing the bytes to the relay and
awaiting its report (and, if forwarded, the datagram's arrival at the
other host, where it is parsed and fed to the matching transaction at the
same ``now``); when nothing is left to deliver it jumps ``now`` to the
earliest ``next_timer()`` and calls ``handle_timer(now)``. Everything that
happens is logged with the time it happened at, so each scenario states
the RFC's schedule as literal lists.

Timer values are those of Table 4 with T1 = 0.5 s, T2 = 4 s, T4 = 5 s:
A, E, G start at T1; A doubles, E and G double up to T2; B, F, H, J are
64*T1 = 32 s; D is 32 s over UDP; I and K are T4.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container
from dataclasses import dataclass, field

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
    new_branch,
)

TIMERS = TimerConfig(t1=0.5, t2=4.0, t4=5.0, d=32.0)
UDP = False  # the ``reliable`` argument
WAIT = 10.0  # seconds to wait for a datagram event before the test fails (never reached)
EVERY: Container[int] = range(1, 1_000_000)  # drop every datagram in a direction
NONE: Container[int] = frozenset()
TO_SERVER, TO_CLIENT = "to server", "to client"
TO_TAG = "99sa0xk"


# --- the UDP hosts and the lossy relay -------------------------------------------


class Endpoint(asyncio.DatagramProtocol):
    """A host's UDP socket: what arrives is queued for the driver to pick up."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, tuple]] = asyncio.Queue()
        self.errors: list[Exception] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.inbox.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    @property
    def addr(self) -> tuple:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")


@dataclass(frozen=True)
class Fate:
    """What the relay did with one datagram."""

    direction: str
    seq: int
    "1 for the first datagram in this direction, 2 for the next, ..."
    start_line: str
    forwarded: bool


class Relay(asyncio.DatagramProtocol):
    """Forwards client<->server, discarding the datagrams numbered in ``drop[direction]``."""

    def __init__(
        self, client: tuple, server: tuple, drop: dict[str, Container[int]]
    ) -> None:
        self.client, self.server, self.drop = client, server, drop
        self.counts = {TO_SERVER: 0, TO_CLIENT: 0}
        self.reports: asyncio.Queue[Fate] = asyncio.Queue()
        self.history: list[Fate] = []
        self.strangers: list[tuple] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if addr == self.client:
            direction, target = TO_SERVER, self.server
        elif addr == self.server:
            direction, target = TO_CLIENT, self.client
        else:
            self.strangers.append(addr)
            return
        self.counts[direction] += 1
        seq = self.counts[direction]
        forwarded = seq not in self.drop[direction]
        if forwarded:
            assert self.transport is not None
            self.transport.sendto(data, target)
        try:
            start_line = parse_message(data).start_line()
        except Exception as e:  # reported, so the driver's check names the culprit
            start_line = f"unparsable ({e}): {data[:60]!r}"
        fate = Fate(direction, seq, start_line, forwarded)
        self.history.append(fate)
        self.reports.put_nowait(fate)

    @property
    def addr(self) -> tuple:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")

    def dropped(self, direction: str) -> list[int]:
        return [f.seq for f in self.history if f.direction == direction and not f.forwarded]

    def forwarded(self, direction: str) -> list[int]:
        return [f.seq for f in self.history if f.direction == direction and f.forwarded]


# --- the driver ----------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One thing that happened, at injected time ``time``, on one side."""

    time: float
    side: str
    kind: str
    "fire (a timer was due), send, resend, deliver, timeout, terminated, stray"
    what: str
    "timer letter, request method or response status, timeout timer, termination reason"
    fate: str | None = None
    "for send/resend: what the relay did with the datagram"


@dataclass
class Party:
    """One host: its UDP endpoint, its transactions and (for the server) a TU."""

    name: str
    endpoint: Endpoint
    answers: tuple[int, ...] = ()
    "Statuses the TU sends at once, in order, when a new request is delivered to it."
    table: TransactionTable = field(default_factory=TransactionTable)
    transactions: list[ClientTransaction | ServerTransaction] = field(default_factory=list)


def label(message: Request | Response) -> str:
    return message.method if isinstance(message, Request) else str(message.status)


class Wire:
    """Client host, relay, server host, and the injected clock that drives both sides."""

    def __init__(
        self,
        drop_to_server: Container[int] = NONE,
        drop_to_client: Container[int] = NONE,
        answers: tuple[int, ...] = (),
    ) -> None:
        self.drop = {TO_SERVER: drop_to_server, TO_CLIENT: drop_to_client}
        self.answers = answers
        self.now = 0.0
        self.log: list[Entry] = []

    async def __aenter__(self) -> Wire:
        loop = asyncio.get_running_loop()
        local = ("127.0.0.1", 0)
        _, client = await loop.create_datagram_endpoint(Endpoint, local_addr=local)
        _, server = await loop.create_datagram_endpoint(Endpoint, local_addr=local)
        self.client = Party("client", client)
        self.server = Party("server", server, self.answers)
        _, self.relay = await loop.create_datagram_endpoint(
            lambda: Relay(client.addr, server.addr, self.drop), local_addr=local)
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        for protocol in (self.client.endpoint, self.server.endpoint, self.relay):
            assert protocol.transport is not None
            protocol.transport.close()
        if exc_type is None:
            # Every datagram sent was accounted for as it went: nothing may be left over.
            assert self.relay.reports.empty()
            assert self.client.endpoint.inbox.empty() and self.server.endpoint.inbox.empty()
            assert not self.relay.strangers
            assert not self.client.endpoint.errors and not self.server.endpoint.errors

    # -- inputs --------------------------------------------------------------------

    def request(self, method: str) -> Request:
        """A request from the client host, with a fresh RFC 3261 branch (parsed from text)."""
        host, port = self.client.endpoint.addr[:2]
        raw = (
            f"{method} sip:bob@{self.server.endpoint.addr[0]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch={new_branch()}\r\n"
            "To: Bob <sip:bob@biloxi.com>\r\n"
            "From: Alice <sip:alice@atlanta.com>;tag=88sja8x\r\n"
            "Max-Forwards: 70\r\n"
            "Call-ID: 987asjd97y7atg\r\n"
            f"CSeq: 1 {method}\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        msg = parse_message(raw.encode())
        assert isinstance(msg, Request)
        return msg

    async def start_client(self, request: Request) -> ClientTransaction:
        """The client TU starts a transaction at ``now``; its first sends are carried out."""
        txn = ClientTransaction(request, self.relay.addr, self.now, UDP, TIMERS)
        self.client.table.add_client(txn)
        self.client.transactions.append(txn)
        await self._carry_out(self.client, txn, txn.start(self.now))
        return txn

    async def send_bare(self, party: Party, message: Request | Response) -> None:
        """Send one datagram with no transaction behind it (a peer that then goes silent)."""
        await self._transmit(party, message, "send")

    async def run(self) -> None:
        """Jump from timer to timer until no transaction has one left."""
        while True:
            live = [
                (party, txn)
                for party in (self.client, self.server)
                for txn in party.transactions
                if txn.next_timer() is not None
            ]
            if not live:
                return
            when = min(txn.next_timer() for _, txn in live)
            assert when >= self.now, "a timer was due in the past"
            self.now = when
            for party, txn in live:
                due = sorted((t, name) for name, t in txn.armed.items() if t <= self.now)
                if not due:
                    continue
                self.log += [Entry(self.now, party.name, "fire", name) for _, name in due]
                await self._carry_out(party, txn, txn.handle_timer(self.now))

    # -- what the log shows ------------------------------------------------------------

    def sent(self, side: str) -> list[tuple[float, str, str, str | None]]:
        """(time, send|resend, what, forwarded|dropped) for each datagram ``side`` wrote."""
        return [(e.time, e.kind, e.what, e.fate) for e in self.log
                if e.side == side and e.kind in ("send", "resend")]

    def fired(self, side: str) -> list[tuple[float, str]]:
        """(time, timer letter) for each timer of ``side`` that was due."""
        return [(e.time, e.what) for e in self.log if e.side == side and e.kind == "fire"]

    def outcome(self, side: str) -> list[tuple[float, str, str]]:
        """What went up to ``side``'s TU and how its transactions ended."""
        return [(e.time, e.kind, e.what) for e in self.log
                if e.side == side and e.kind in ("deliver", "timeout", "terminated", "stray")]

    # -- carrying out actions ------------------------------------------------------------

    def _other(self, party: Party) -> Party:
        return self.server if party is self.client else self.client

    async def _carry_out(
        self,
        party: Party,
        txn: ClientTransaction | ServerTransaction,
        actions: list,
    ) -> None:
        for action in actions:
            if isinstance(action, Send):
                assert action.dest == self.relay.addr
                kind = "resend" if action.retransmission else "send"
                await self._transmit(party, action.message, kind)
            elif isinstance(action, Deliver):
                self._note(party, "deliver", label(action.message))
                if isinstance(action.message, Request) and isinstance(txn, ServerTransaction):
                    for status in party.answers:
                        response = make_response(action.message, status, to_tag=TO_TAG)
                        await self._carry_out(party, txn, txn.send_response(response, self.now))
            elif isinstance(action, Timeout):
                self._note(party, "timeout", action.timer)
            elif isinstance(action, Terminated):
                self._note(party, "terminated", action.reason)
                party.table.remove(txn)
            elif isinstance(action, TransportError):
                self._note(party, "transport error", "")
            else:
                raise AssertionError(action)

    async def _transmit(self, party: Party, message: Request | Response, kind: str) -> None:
        """Write the message to the relay, await its fate, and its arrival if forwarded."""
        direction = TO_SERVER if party is self.client else TO_CLIENT
        assert party.endpoint.transport is not None
        party.endpoint.transport.sendto(message.to_bytes(), self.relay.addr)
        fate = await asyncio.wait_for(self.relay.reports.get(), WAIT)
        assert (fate.direction, fate.start_line) == (direction, message.start_line())
        self._note(party, kind, label(message), "forwarded" if fate.forwarded else "dropped")
        if fate.forwarded:
            other = self._other(party)
            data, source = await asyncio.wait_for(other.endpoint.inbox.get(), WAIT)
            assert source == self.relay.addr
            await self._receive(other, parse_message(data))

    async def _receive(self, party: Party, message: Request | Response) -> None:
        """The transport of ``party`` got a message: route it as §17.1.3 / §17.2.3 say."""
        if isinstance(message, Response):
            client_txn = party.table.match_response(message)
            if client_txn is None:
                self._note(party, "stray", label(message))
                return
            await self._carry_out(party, client_txn, client_txn.receive_response(message, self.now))
            return
        server_txn = party.table.match_request(message)
        if server_txn is not None:
            await self._carry_out(party, server_txn, server_txn.receive_request(message, self.now))
        elif message.method == "ACK":
            self._note(party, "stray", label(message))  # would go to the core (2xx ACK)
        else:
            server_txn = ServerTransaction(message, self.relay.addr, self.now, UDP, TIMERS)
            party.table.add_server(server_txn)
            party.transactions.append(server_txn)
            await self._carry_out(party, server_txn, server_txn.start(self.now))

    def _note(self, party: Party, kind: str, what: str, fate: str | None = None) -> None:
        self.log.append(Entry(self.now, party.name, kind, what, fate))


def states(transactions: list) -> list[State]:
    return [txn.state for txn in transactions]


def times(entries: list[tuple]) -> list[float]:
    return [e[0] for e in entries]


# --- 1: INVITE, lost requests and a lost final response -------------------------------


async def test_invite_with_lost_invites_and_lost_486_completes_both_sides():
    """Figures 5 and 7: Timer A recovers two lost INVITEs, Timer G a lost 486.

    Client: INVITE at 0 (lost), Timer A at T1 = 0.5 (lost), again 2*T1 later
    at 1.5 (arrives). The server TU answers 180 then 486 at once; the 486 is
    lost and Timer G resends it T1 later, at 2.0. The client passes it up,
    ACKs it from the transaction (§17.1.1.3) and waits Timer D = 32 s in
    Completed: it ends at 34.0. The server is Confirmed by the ACK at 2.0 and
    ends T4 = 5 s later, at 7.0 (Timer I).
    """
    async with Wire(drop_to_server={1, 2}, drop_to_client={2}, answers=(180, 486)) as wire:
        client = await wire.start_client(wire.request("INVITE"))
        assert client.armed == {"A": 0.5, "B": 32.0}
        await wire.run()

        assert wire.sent("client") == [
            (0.0, "send", "INVITE", "dropped"),
            (0.5, "resend", "INVITE", "dropped"),
            (1.5, "resend", "INVITE", "forwarded"),
            (2.0, "send", "ACK", "forwarded"),
        ]
        assert wire.sent("server") == [
            (1.5, "send", "180", "forwarded"),
            (1.5, "send", "486", "dropped"),
            (2.0, "resend", "486", "forwarded"),
        ]
        assert wire.fired("client") == [(0.5, "A"), (1.5, "A"), (34.0, "D")]
        assert wire.fired("server") == [(2.0, "G"), (7.0, "I")]
        assert wire.outcome("client") == [
            (1.5, "deliver", "180"),
            (2.0, "deliver", "486"),
            (34.0, "terminated", "Timer D"),
        ]
        assert wire.outcome("server") == [
            (1.5, "deliver", "INVITE"),
            (7.0, "terminated", "Timer I"),
        ]
        assert client.ack is not None and client.ack.method == "ACK"
        assert states(wire.client.transactions) == [State.TERMINATED]
        assert states(wire.server.transactions) == [State.TERMINATED]
        assert wire.relay.dropped(TO_SERVER) == [1, 2]
        assert wire.relay.dropped(TO_CLIENT) == [2]
        assert len(wire.client.table) == len(wire.server.table) == 0


async def test_invite_states_while_the_486_is_lost():
    """The states in between: Proceeding after the 180, Completed/Confirmed after the ACK."""
    async with Wire(drop_to_server={1, 2}, drop_to_client={2}, answers=(180, 486)) as wire:
        client = await wire.start_client(wire.request("INVITE"))
        # Step by hand to t = 1.5: the third INVITE arrives, 180 comes back, 486 is lost.
        for t in (0.5, 1.5):
            assert client.next_timer() == t
            wire.now = t
            await wire._carry_out(wire.client, client, client.handle_timer(t))
        [server] = wire.server.transactions
        assert client.state is State.PROCEEDING
        assert client.next_timer() is None  # §17.1.1.2: no A, no B once a 1xx came
        assert server.state is State.COMPLETED
        assert server.armed == {"G": 2.0, "H": 1.5 + 32.0}
        wire.now = 2.0
        await wire._carry_out(wire.server, server, server.handle_timer(2.0))
        assert client.state is State.COMPLETED and client.armed == {"D": 34.0}
        assert server.state is State.CONFIRMED and server.armed == {"I": 7.0}
        await wire.run()
        assert states([client, server]) == [State.TERMINATED, State.TERMINATED]


# --- 2, 3: the server never answers -----------------------------------------------------


async def test_non_invite_client_gets_nothing_timer_e_then_timer_f():
    """Figure 6, §17.1.2.2: E at T1 doubling up to T2 = 4 s; F = 64*T1 = 32 s times out."""
    async with Wire(drop_to_server=EVERY) as wire:
        client = await wire.start_client(wire.request("OPTIONS"))
        assert client.armed == {"E": 0.5, "F": 32.0}
        await wire.run()

        retransmissions = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        assert wire.sent("client") == [(0.0, "send", "OPTIONS", "dropped")] + [
            (t, "resend", "OPTIONS", "dropped") for t in retransmissions
        ]
        assert wire.fired("client") == [(t, "E") for t in retransmissions] + [(32.0, "F")]
        assert wire.outcome("client") == [(32.0, "timeout", "F"), (32.0, "terminated", "Timer F")]
        assert client.state is State.TERMINATED
        assert wire.relay.dropped(TO_SERVER) == list(range(1, 12))  # exactly 11 datagrams
        assert wire.relay.history == [
            Fate(TO_SERVER, n, client.request.start_line(), False) for n in range(1, 12)
        ]
        assert wire.server.transactions == [] and wire.sent("server") == []


async def test_invite_client_gets_nothing_timer_a_then_timer_b():
    """Figure 5, §17.1.1.2: A at T1 doubling without cap; B = 64*T1 = 32 s times out."""
    async with Wire(drop_to_server=EVERY) as wire:
        client = await wire.start_client(wire.request("INVITE"))
        await wire.run()

        assert times(wire.sent("client")) == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
        assert wire.sent("client") == [(0.0, "send", "INVITE", "dropped")] + [
            (t, "resend", "INVITE", "dropped") for t in [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
        ]
        assert wire.fired("client") == [
            (0.5, "A"), (1.5, "A"), (3.5, "A"), (7.5, "A"), (15.5, "A"), (31.5, "A"),
            (32.0, "B"),
        ]
        assert wire.outcome("client") == [(32.0, "timeout", "B"), (32.0, "terminated", "Timer B")]
        assert client.state is State.TERMINATED
        assert client.ack is None
        assert wire.relay.dropped(TO_SERVER) == list(range(1, 8))
        assert wire.relay.forwarded(TO_SERVER) == []


# --- 4: the client never acknowledges the final response ----------------------------------


async def test_invite_server_486_never_acknowledged_timer_g_then_timer_h():
    """Figure 7, §17.2.1: G at T1 doubling up to T2; H = 64*T1 = 32 s with no ACK.

    The client host sends one INVITE and goes silent; everything toward it
    is discarded, so no ACK can ever come.
    """
    async with Wire(drop_to_client=EVERY, answers=(486,)) as wire:
        await wire.send_bare(wire.client, wire.request("INVITE"))
        [server] = wire.server.transactions
        assert server.state is State.COMPLETED
        assert server.armed == {"G": 0.5, "H": 32.0}
        await wire.run()

        timer_g = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        assert wire.sent("client") == [(0.0, "send", "INVITE", "forwarded")]
        assert wire.sent("server") == [(0.0, "send", "486", "dropped")] + [
            (t, "resend", "486", "dropped") for t in timer_g
        ]
        assert wire.fired("server") == [(t, "G") for t in timer_g] + [(32.0, "H")]
        assert wire.outcome("server") == [
            (0.0, "deliver", "INVITE"),
            (32.0, "timeout", "H"),
            (32.0, "terminated", "Timer H"),
        ]
        assert server.state is State.TERMINATED
        assert wire.relay.dropped(TO_CLIENT) == list(range(1, 12))


async def test_invite_both_sides_time_out_when_the_path_to_the_client_is_dead():
    """Both transactions alive: the client's INVITE retransmissions reach the server.

    Each one makes the server resend the 486 (§17.2.1, Completed), without
    disturbing Timer G's schedule; the client hears nothing. Timer B ends
    the client and Timer H the server, both at 64*T1 = 32 s.
    """
    async with Wire(drop_to_client=EVERY, answers=(486,)) as wire:
        client = await wire.start_client(wire.request("INVITE"))
        await wire.run()

        timer_a = [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
        timer_g = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        assert wire.fired("client") == [(t, "A") for t in timer_a] + [(32.0, "B")]
        assert wire.fired("server") == [(t, "G") for t in timer_g] + [(32.0, "H")]
        assert times(wire.sent("client")) == [0.0, *timer_a]
        # One 486 for the first INVITE, one per retransmitted INVITE, one per Timer G.
        assert times(wire.sent("server")) == sorted([0.0, *timer_a, *timer_g])
        assert {what for _, _, what, _ in wire.sent("server")} == {"486"}
        assert wire.outcome("client") == [(32.0, "timeout", "B"), (32.0, "terminated", "Timer B")]
        assert wire.outcome("server") == [
            (0.0, "deliver", "INVITE"),
            (32.0, "timeout", "H"),
            (32.0, "terminated", "Timer H"),
        ]
        assert client.state is State.TERMINATED
        assert states(wire.server.transactions) == [State.TERMINATED]
        assert wire.relay.forwarded(TO_CLIENT) == []
        assert len(wire.relay.forwarded(TO_SERVER)) == 7


# --- 5: non-INVITE server answering retransmissions -------------------------------------


@pytest.mark.parametrize(
    ("lost_200s", "client_sends", "server_sends", "client_end"),
    [
        # The first 200 is lost; the retransmission at 0.5 is answered and gets through.
        ({1}, [0.0, 0.5], [0.0, 0.5], 0.5 + 5.0),
        # Three lost: each retransmitted request is answered again, the fourth 200 arrives.
        ({1, 2, 3}, [0.0, 0.5, 1.5, 3.5], [0.0, 0.5, 1.5, 3.5], 3.5 + 5.0),
    ],
    ids=["first 200 lost", "three 200s lost"],
)
async def test_non_invite_server_resends_its_200_then_timer_j(
    lost_200s, client_sends, server_sends, client_end
):
    """Figure 8, §17.2.2: Completed resends the last response per request retransmission.

    The server TU answers 200 at once (t = 0). Timer J = 64*T1 = 32 s from
    then ends the server; the client, once it has the 200, waits Timer K = T4.
    """
    async with Wire(drop_to_client=lost_200s, answers=(200,)) as wire:
        client = await wire.start_client(wire.request("MESSAGE"))
        [server] = wire.server.transactions
        assert server.state is State.COMPLETED and server.armed == {"J": 32.0}
        await wire.run()

        assert wire.sent("client") == [(0.0, "send", "MESSAGE", "forwarded")] + [
            (t, "resend", "MESSAGE", "forwarded") for t in client_sends[1:]
        ]
        fates = ["dropped" if n in lost_200s else "forwarded"
                 for n in range(1, len(server_sends) + 1)]
        assert wire.sent("server") == [(0.0, "send", "200", fates[0])] + [
            (t, "resend", "200", fate)
            for t, fate in zip(server_sends[1:], fates[1:], strict=True)
        ]
        assert wire.fired("client") == [(t, "E") for t in client_sends[1:]] + [(client_end, "K")]
        assert wire.fired("server") == [(32.0, "J")]
        assert wire.outcome("client") == [
            (client_sends[-1], "deliver", "200"),
            (client_end, "terminated", "Timer K"),
        ]
        assert wire.outcome("server") == [
            (0.0, "deliver", "MESSAGE"),
            (32.0, "terminated", "Timer J"),
        ]
        assert states([client, server]) == [State.TERMINATED, State.TERMINATED]
        assert wire.relay.dropped(TO_CLIENT) == sorted(lost_200s)
