"""SIP transactions (RFC 3261 §17): four state machines fed with messages and time.

Sans-I/O, in the manner of aioquic: a transaction never touches a socket or
a clock. Every input is a method call that carries ``now`` (seconds from any
monotonic origin) and returns a list of actions for the caller to carry out:

- ``Send``: hand a message to the transport layer (§18), addressed to the
  opaque ``dest`` the TU gave when it created the transaction;
- ``Deliver``: pass a request or response up to the TU;
- ``Timeout``: Timer B, F or H fired; the TU treats B and F as a 408
  (§8.1.3.1) and H as a failed INVITE transaction (§17.2.1);
- ``TransportError``: the transport failed to send (§17.1.4, §17.2.4);
- ``Terminated``: the transaction is over and must be forgotten at once.

``next_timer()`` tells the caller when to call ``handle_timer(now)`` next.
``TransactionTable`` finds the transaction a message belongs to (§17.1.3,
§17.2.3, §9.2).

The four machines of Figures 5 to 8 are the table ``TRANSITIONS``: for each
(state, event) the figures draw, the next state and the steps to take, in
the order the RFC gives them. Events the figures do not draw for a state are
absorbed: that is how retransmissions are filtered. Timers are cancelled on
entering a state whose figure does not let them fire there.

RFC 3261 is followed as written, without RFC 6026: a 2xx to an INVITE
terminates both INVITE transactions; the TU retransmits the 2xx (§13.3.1.4)
and acknowledges it (§13.2.2.4).
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias, TypeVar

from sipmesh.sip.address import Address
from sipmesh.sip.errors import SIPParseError
from sipmesh.sip.grammar import split_list
from sipmesh.sip.headers import canonical_key
from sipmesh.sip.message import Message, Request, Response
from sipmesh.sip.reject import make_response
from sipmesh.sip.timers import (
    TIMER_A,
    TIMER_B,
    TIMER_D,
    TIMER_E,
    TIMER_F,
    TIMER_G,
    TIMER_H,
    TIMER_I,
    TIMER_J,
    TIMER_K,
    TIMER_TRYING,
    TimerConfig,
)
from sipmesh.sip.via import MAGIC_COOKIE, Via

__all__ = [
    "Action",
    "ClientTransaction",
    "DEFAULT_TIMERS",
    "Deliver",
    "Event",
    "INITIAL_STATE",
    "Machine",
    "Send",
    "ServerTransaction",
    "State",
    "Step",
    "Terminated",
    "Timeout",
    "TransactionTable",
    "TransportError",
    "TRANSITIONS",
    "build_ack",
    "new_branch",
]

DEFAULT_TIMERS = TimerConfig()


# --- actions (outputs) -------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Pass a message to the transport layer for transmission (RFC 3261 §18)."""

    message: Request | Response
    "The request, ACK or response to send, ready to serialize."
    dest: object
    "Where to send it: the opaque destination the TU gave the transaction (§17.1, §18.2.2)."
    retransmission: bool = False
    "True when the same message was already sent once (Timers A, E, G or a repeated request)."


@dataclass(frozen=True)
class Deliver:
    """Pass a message up to the Transaction User."""

    message: Request | Response
    "The request that created a server transaction, or a response a client transaction let through."


@dataclass(frozen=True)
class Timeout:
    """A transaction timer ran out: the TU must be told (§17.1.1.2, §17.1.2.2, §17.2.1)."""

    timer: str
    "'B' or 'F': no final response, the TU acts as on a 408 (§8.1.3.1); 'H': no ACK came."


@dataclass(frozen=True)
class TransportError:
    """The transport could not send for this transaction; the TU may fail over (§17.1.4, §17.2.4).

    The caller reports the failure with ``transport_error(now)``.
    """


@dataclass(frozen=True)
class Terminated:
    """The transaction entered "Terminated" and must be destroyed now (§17.1.1.2, §17.2.1)."""

    reason: str
    "The event that ended it, as the figures name it: '2xx', 'Timer D', 'transport error'..."


Action: TypeAlias = Send | Deliver | Timeout | TransportError | Terminated


# --- the state machines ------------------------------------------------------


class State(Enum):
    """Transaction states, as named in Figures 5 to 8."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class Machine(Enum):
    """Which of the four state machines a transaction runs (chosen from the request method)."""

    INVITE_CLIENT = "Figure 5"
    NON_INVITE_CLIENT = "Figure 6"
    INVITE_SERVER = "Figure 7"
    NON_INVITE_SERVER = "Figure 8"


class Event(Enum):
    """Inputs of the state machines, named as on the figures' arrows."""

    START = "created"
    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "300-699"
    REQUEST = "request retransmission"
    ACK = "ACK"
    TRANSPORT_ERROR = "transport error"
    A_FIRES = "Timer A"
    B_FIRES = "Timer B"
    D_FIRES = "Timer D"
    E_FIRES = "Timer E"
    F_FIRES = "Timer F"
    G_FIRES = "Timer G"
    H_FIRES = "Timer H"
    I_FIRES = "Timer I"
    J_FIRES = "Timer J"
    K_FIRES = "Timer K"
    TRYING_FIRES = "200 ms without a TU response"


class Step(Enum):
    """What a transition does, in the words of the figures."""

    SEND_REQUEST = "request sent"
    RESEND_REQUEST = "request retransmitted"
    PASS_UP = "pass to TU"
    SEND_ACK = "ACK sent"
    RESEND_ACK = "ACK retransmitted"
    SEND_RESPONSE = "send response"
    RESEND_RESPONSE = "retransmit last response"
    SEND_100 = "send 100 Trying"
    INFORM_TIMEOUT = "inform TU of the timeout"
    INFORM_TRANSPORT_ERROR = "inform TU of the transport error"
    START_A = "start Timer A at T1 (unreliable only)"
    BACKOFF_A = "reset Timer A to twice its value"
    START_B = "start Timer B at 64*T1"
    START_D = "start Timer D at 32 s (0 if reliable)"
    START_E = "start Timer E at T1 (unreliable only)"
    BACKOFF_E = "reset Timer E to MIN(twice its value, T2)"
    E_AT_T2 = "reset Timer E to T2"
    START_F = "start Timer F at 64*T1"
    START_G = "start Timer G at T1 (unreliable only)"
    BACKOFF_G = "reset Timer G to MIN(twice its value, T2)"
    START_H = "start Timer H at 64*T1"
    START_I = "start Timer I at T4 (0 if reliable)"
    START_J = "start Timer J at 64*T1 (0 if reliable)"
    START_K = "start Timer K at T4 (0 if reliable)"
    START_TRYING = "start the 200 ms 100 Trying timer"
    STOP_TRYING = "stop the 100 Trying timer"


INVITE_CLIENT = Machine.INVITE_CLIENT
NON_INVITE_CLIENT = Machine.NON_INVITE_CLIENT
INVITE_SERVER = Machine.INVITE_SERVER
NON_INVITE_SERVER = Machine.NON_INVITE_SERVER
CALLING, TRYING, PROCEEDING = State.CALLING, State.TRYING, State.PROCEEDING
COMPLETED, CONFIRMED, TERMINATED = State.COMPLETED, State.CONFIRMED, State.TERMINATED
On, Do = Event, Step  # short names for the table: 'on 1xx do pass up'

INITIAL_STATE = {
    INVITE_CLIENT: CALLING,
    NON_INVITE_CLIENT: TRYING,
    INVITE_SERVER: PROCEEDING,
    NON_INVITE_SERVER: TRYING,
}

Transition: TypeAlias = tuple[State, tuple[Step, ...]]

# For servers, 1xx / 2xx / 300-699 are responses from the TU; for clients,
# responses from the network. REQUEST is a retransmission of the request
# that created a server transaction.
TRANSITIONS: dict[Machine, dict[tuple[State, Event], Transition]] = {
    # Figure 5, §17.1.1.2. After a 1xx the request is not retransmitted and
    # Timer B no longer applies: how long to ring is the TU's decision.
    INVITE_CLIENT: {
        (CALLING, On.START): (CALLING, (Do.SEND_REQUEST, Do.START_A, Do.START_B)),
        (CALLING, On.A_FIRES): (CALLING, (Do.RESEND_REQUEST, Do.BACKOFF_A)),
        (CALLING, On.B_FIRES): (TERMINATED, (Do.INFORM_TIMEOUT,)),
        (CALLING, On.TRANSPORT_ERROR): (TERMINATED, (Do.INFORM_TRANSPORT_ERROR,)),
        (CALLING, On.PROVISIONAL): (PROCEEDING, (Do.PASS_UP,)),
        (CALLING, On.SUCCESS): (TERMINATED, (Do.PASS_UP,)),
        (CALLING, On.FAILURE): (COMPLETED, (Do.PASS_UP, Do.SEND_ACK, Do.START_D)),
        (PROCEEDING, On.PROVISIONAL): (PROCEEDING, (Do.PASS_UP,)),
        (PROCEEDING, On.SUCCESS): (TERMINATED, (Do.PASS_UP,)),
        (PROCEEDING, On.FAILURE): (COMPLETED, (Do.PASS_UP, Do.SEND_ACK, Do.START_D)),
        (COMPLETED, On.FAILURE): (COMPLETED, (Do.RESEND_ACK,)),
        (COMPLETED, On.TRANSPORT_ERROR): (TERMINATED, (Do.INFORM_TRANSPORT_ERROR,)),
        (COMPLETED, On.D_FIRES): (TERMINATED, ()),
    },
    # Figure 6, §17.1.2.2. Timer E keeps running after a 1xx, then at T2.
    NON_INVITE_CLIENT: {
        (TRYING, On.START): (TRYING, (Do.SEND_REQUEST, Do.START_E, Do.START_F)),
        (TRYING, On.E_FIRES): (TRYING, (Do.RESEND_REQUEST, Do.BACKOFF_E)),
        (TRYING, On.F_FIRES): (TERMINATED, (Do.INFORM_TIMEOUT,)),
        (TRYING, On.TRANSPORT_ERROR): (TERMINATED, (Do.INFORM_TRANSPORT_ERROR,)),
        (TRYING, On.PROVISIONAL): (PROCEEDING, (Do.PASS_UP,)),
        (TRYING, On.SUCCESS): (COMPLETED, (Do.PASS_UP, Do.START_K)),
        (TRYING, On.FAILURE): (COMPLETED, (Do.PASS_UP, Do.START_K)),
        (PROCEEDING, On.E_FIRES): (PROCEEDING, (Do.RESEND_REQUEST, Do.E_AT_T2)),
        (PROCEEDING, On.F_FIRES): (TERMINATED, (Do.INFORM_TIMEOUT,)),
        (PROCEEDING, On.TRANSPORT_ERROR): (TERMINATED, (Do.INFORM_TRANSPORT_ERROR,)),
        (PROCEEDING, On.PROVISIONAL): (PROCEEDING, (Do.PASS_UP,)),
        (PROCEEDING, On.SUCCESS): (COMPLETED, (Do.PASS_UP, Do.START_K)),
        (PROCEEDING, On.FAILURE): (COMPLETED, (Do.PASS_UP, Do.START_K)),
        (COMPLETED, On.K_FIRES): (TERMINATED, ()),
    },
    # Figure 7, §17.2.1. ACKs in Confirmed are absorbed (no row).
    INVITE_SERVER: {
        (PROCEEDING, On.START): (PROCEEDING, (Do.PASS_UP, Do.START_TRYING)),
        (PROCEEDING, On.TRYING_FIRES): (PROCEEDING, (Do.SEND_100,)),
        (PROCEEDING, On.REQUEST): (PROCEEDING, (Do.RESEND_RESPONSE,)),
        (PROCEEDING, On.PROVISIONAL): (PROCEEDING, (Do.STOP_TRYING, Do.SEND_RESPONSE)),
        (PROCEEDING, On.SUCCESS): (TERMINATED, (Do.SEND_RESPONSE,)),
        (PROCEEDING, On.FAILURE): (COMPLETED, (Do.SEND_RESPONSE, Do.START_G, Do.START_H)),
        (PROCEEDING, On.TRANSPORT_ERROR): (TERMINATED, (Do.INFORM_TRANSPORT_ERROR,)),
        (COMPLETED, On.REQUEST): (COMPLETED, (Do.RESEND_RESPONSE,)),
        (COMPLETED, On.G_FIRES): (COMPLETED, (Do.RESEND_RESPONSE, Do.BACKOFF_G)),
        (COMPLETED, On.ACK): (CONFIRMED, (Do.START_I,)),
        (COMPLETED, On.H_FIRES): (TERMINATED, (Do.INFORM_TIMEOUT,)),
        (COMPLETED, On.TRANSPORT_ERROR): (TERMINATED, (Do.INFORM_TRANSPORT_ERROR,)),
        (CONFIRMED, On.I_FIRES): (TERMINATED, ()),
    },
    # Figure 8, §17.2.2. Retransmissions in Trying are discarded (no row).
    NON_INVITE_SERVER: {
        (TRYING, On.START): (TRYING, (Do.PASS_UP,)),
        (TRYING, On.PROVISIONAL): (PROCEEDING, (Do.SEND_RESPONSE,)),
        (TRYING, On.SUCCESS): (COMPLETED, (Do.SEND_RESPONSE, Do.START_J)),
        (TRYING, On.FAILURE): (COMPLETED, (Do.SEND_RESPONSE, Do.START_J)),
        (PROCEEDING, On.REQUEST): (PROCEEDING, (Do.RESEND_RESPONSE,)),
        (PROCEEDING, On.PROVISIONAL): (PROCEEDING, (Do.SEND_RESPONSE,)),
        (PROCEEDING, On.SUCCESS): (COMPLETED, (Do.SEND_RESPONSE, Do.START_J)),
        (PROCEEDING, On.FAILURE): (COMPLETED, (Do.SEND_RESPONSE, Do.START_J)),
        (PROCEEDING, On.TRANSPORT_ERROR): (TERMINATED, (Do.INFORM_TRANSPORT_ERROR,)),
        (COMPLETED, On.REQUEST): (COMPLETED, (Do.RESEND_RESPONSE,)),
        (COMPLETED, On.TRANSPORT_ERROR): (TERMINATED, (Do.INFORM_TRANSPORT_ERROR,)),
        (COMPLETED, On.J_FIRES): (TERMINATED, ()),
    },
}

_FIRES = {
    TIMER_A: Event.A_FIRES, TIMER_B: Event.B_FIRES, TIMER_D: Event.D_FIRES,
    TIMER_E: Event.E_FIRES, TIMER_F: Event.F_FIRES, TIMER_G: Event.G_FIRES,
    TIMER_H: Event.H_FIRES, TIMER_I: Event.I_FIRES, TIMER_J: Event.J_FIRES,
    TIMER_K: Event.K_FIRES, TIMER_TRYING: Event.TRYING_FIRES,
}
_TIMER_OF = {event: name for name, event in _FIRES.items()}
_STARTS = {
    Step.START_A: TIMER_A, Step.START_B: TIMER_B, Step.START_D: TIMER_D,
    Step.START_E: TIMER_E, Step.START_F: TIMER_F, Step.START_G: TIMER_G,
    Step.START_H: TIMER_H, Step.START_I: TIMER_I, Step.START_J: TIMER_J,
    Step.START_K: TIMER_K, Step.START_TRYING: TIMER_TRYING,
}
_BACKOFFS = {Step.BACKOFF_A: TIMER_A, Step.BACKOFF_E: TIMER_E, Step.BACKOFF_G: TIMER_G}


def _classify(status: int) -> Event | None:
    if 100 <= status <= 199:
        return Event.PROVISIONAL
    if 200 <= status <= 299:
        return Event.SUCCESS
    if 300 <= status <= 699:
        return Event.FAILURE
    return None


class _Transaction:
    """What the four machines share: the table walk, timers, transport errors."""

    machine: Machine

    def __init__(
        self, request: Request, dest: object, now: float, reliable: bool, timers: TimerConfig
    ) -> None:
        self.request = request
        self.dest = dest
        self.created = now
        self.reliable = reliable
        self.timers = timers
        self.method = request.method
        self.state = INITIAL_STATE[self.machine]
        self._deadlines: dict[str, float] = {}
        self._intervals: dict[str, float] = {}
        self._started = False
        # Called after every event so that a TransactionTable can keep its
        # timer heap current without scanning every transaction.
        self.watcher: Callable[[_Transaction], None] | None = None

    @property
    def armed(self) -> dict[str, float]:
        """Absolute expiry time of each running timer, by RFC letter."""
        return dict(self._deadlines)

    def next_timer(self) -> float | None:
        """When ``handle_timer`` must next be called, or None if no timer runs."""
        return min(self._deadlines.values(), default=None)

    def handle_timer(self, now: float) -> list[Action]:
        """Fire every timer due at ``now``, earliest first; restarted timers count from now.

        Calling it early, late or twice is harmless: only due timers fire,
        and each at most once per call (no burst of catch-up retransmissions).
        """
        actions: list[Action] = []
        due = sorted((t, name) for name, t in self._deadlines.items() if t <= now)
        for deadline, name in due:
            if self.state is TERMINATED:
                break
            if self._deadlines.get(name) != deadline:
                continue
            del self._deadlines[name]
            actions += self._run(_FIRES[name], now)
        return actions

    def transport_error(self, now: float) -> list[Action]:
        """The transport failed to send this transaction's message (§17.1.4, §17.2.4).

        In the states where the figures draw a transport error the TU is
        informed and the transaction terminates; elsewhere nothing was sent
        that could fail, and the report is ignored.
        """
        return self._run(Event.TRANSPORT_ERROR, now)

    def _begin(self, now: float, message: Message | None = None) -> list[Action]:
        if self._started:
            raise RuntimeError("start() was already called")
        self._started = True
        return self._run(Event.START, now, message)

    def _run(self, event: Event, now: float, message: Message | None = None) -> list[Action]:
        """Apply one event, then any zero-length timers it started (reliable transports)."""
        actions: list[Action] = []
        pending = [event]
        table = TRANSITIONS[self.machine]
        while pending and self.state is not TERMINATED:
            current = pending.pop(0)
            row = table.get((self.state, current))
            if row is None:
                continue
            target, steps = row
            if target is not self.state:
                self.state = target
                for name in [n for n in self._deadlines if (target, _FIRES[n]) not in table]:
                    del self._deadlines[name]
            for step in steps:
                self._step(step, current, now, message, actions, pending)
            if target is TERMINATED:
                self._deadlines.clear()
                actions.append(Terminated(current.value))
        if self.watcher is not None:
            self.watcher(self)
        return actions

    def _step(
        self,
        step: Step,
        event: Event,
        now: float,
        message: Message | None,
        actions: list[Action],
        pending: list[Event],
    ) -> None:
        if step in _STARTS:
            name = _STARTS[step]
            self._arm(name, self.timers.initial(name, self.reliable), now, pending)
        elif step in _BACKOFFS:
            name = _BACKOFFS[step]
            self._arm(name, self.timers.backoff(name, self._intervals[name]), now, pending)
        elif step is Step.E_AT_T2:
            self._arm(TIMER_E, None if self.reliable else self.timers.t2, now, pending)
        elif step is Step.STOP_TRYING:
            self._deadlines.pop(TIMER_TRYING, None)
        elif step is Step.PASS_UP:
            assert isinstance(message, (Request, Response))
            actions.append(Deliver(message))
        elif step is Step.INFORM_TIMEOUT:
            actions.append(Timeout(_TIMER_OF[event]))
        elif step is Step.INFORM_TRANSPORT_ERROR:
            actions.append(TransportError())
        else:
            self._send(step, now, message, actions)

    def _send(
        self, step: Step, now: float, message: Message | None, actions: list[Action]
    ) -> None:
        raise NotImplementedError(step)

    def _arm(self, name: str, delay: float | None, now: float, pending: list[Event]) -> None:
        if delay is None:
            return
        self._intervals[name] = delay
        if delay <= 0:
            pending.append(_FIRES[name])
        else:
            self._deadlines[name] = now + delay


class ClientTransaction(_Transaction):
    """An INVITE (Figure 5) or non-INVITE (Figure 6) client transaction (§17.1).

    The TU creates it with the request to send, already carrying a top Via
    with a unique branch (§8.1.1.7), and the destination the transport layer
    understands (address, port, transport: §17.1, §18.1.1).
    """

    def __init__(
        self,
        request: Request,
        dest: object,
        now: float,
        reliable: bool,
        timers: TimerConfig = DEFAULT_TIMERS,
    ) -> None:
        if request.method == "ACK":
            raise ValueError("there is no client transaction for ACK (RFC 3261 §17.1)")
        via = request.top_via
        if via is None or not via.branch:
            raise ValueError("a client transaction needs a top Via with a branch (§8.1.1.7)")
        self.machine = INVITE_CLIENT if request.method == "INVITE" else NON_INVITE_CLIENT
        super().__init__(request, dest, now, reliable, timers)
        self.key: tuple[str, str] = (via.branch.lower(), request.method)
        "Top Via branch (case-insensitive, §7.3.1) and method: how responses match (§17.1.3)."
        self.ack: Request | None = None
        "The ACK sent for a 300-699 final response to an INVITE (§17.1.1.3)."

    def start(self, now: float) -> list[Action]:
        """Send the request and start A and B (INVITE) or E and F (§17.1.1.2, §17.1.2.2)."""
        return self._begin(now)

    def receive_response(self, response: Response, now: float) -> list[Action]:
        """Handle a response that matched this transaction (§17.1.3).

        Responses the figures do not pass up (retransmitted finals, 1xx after
        a final, anything once terminated) are absorbed; a retransmitted
        300-699 to an INVITE makes the ACK go out again.
        """
        event = _classify(response.status)
        if event is None:
            return []
        return self._run(event, now, response)

    def _send(
        self, step: Step, now: float, message: Message | None, actions: list[Action]
    ) -> None:
        if step is Step.SEND_REQUEST:
            actions.append(Send(self.request, self.dest))
        elif step is Step.RESEND_REQUEST:
            actions.append(Send(self.request, self.dest, retransmission=True))
        elif step is Step.SEND_ACK:
            assert isinstance(message, Response)
            self.ack = build_ack(self.request, message)
            actions.append(Send(self.ack, self.dest))
        elif step is Step.RESEND_ACK:
            assert self.ack is not None
            actions.append(Send(self.ack, self.dest, retransmission=True))
        else:
            raise AssertionError(step)

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.method} {self.key[0]} {self.state.value}>"


class ServerTransaction(_Transaction):
    """An INVITE (Figure 7) or non-INVITE (Figure 8) server transaction (§17.2).

    The core creates it for a request that matched no transaction, with the
    destination responses go to (§18.2.2), and calls ``start`` to pass the
    request to the TU.
    """

    def __init__(
        self,
        request: Request,
        dest: object,
        now: float,
        reliable: bool,
        timers: TimerConfig = DEFAULT_TIMERS,
    ) -> None:
        if request.method == "ACK":
            raise ValueError("an ACK creates no server transaction (RFC 3261 §17)")
        if request.top_via is None:
            raise ValueError("a request without Via cannot be answered (§8.2.6.2)")
        self.machine = INVITE_SERVER if request.method == "INVITE" else NON_INVITE_SERVER
        super().__init__(request, dest, now, reliable, timers)
        self.key: tuple[str, str, int, str] | None = _server_key(request)
        "Branch, sent-by host and port, method (§17.2.3); None for an RFC 2543 branch."
        self.last_response: Response | None = None
        "The response retransmitted when the request is (the most recent 1xx, or the final)."

    @property
    def to_tag(self) -> str | None:
        """The To tag of the last response sent, that an RFC 2543 ACK must carry (§17.2.3)."""
        return _tag(self.last_response.to) if self.last_response is not None else None

    def start(self, now: float) -> list[Action]:
        """Pass the request to the TU; an INVITE also starts the 100 Trying timer (§17.2.1)."""
        return self._begin(now, self.request)

    def receive_request(self, request: Request, now: float) -> list[Action]:
        """Handle a request that matched this transaction (§17.2.3).

        A retransmission of the request resends the last response (Figures
        7, 8), or nothing if none was sent yet; an ACK moves an INVITE
        transaction from Completed to Confirmed and is otherwise absorbed.
        """
        if request.method == "ACK" and self.machine is INVITE_SERVER:
            return self._run(Event.ACK, now)
        if request.method == self.method:
            return self._run(Event.REQUEST, now)
        return []

    def send_response(self, response: Response, now: float) -> list[Action]:
        """Send a response from the TU, as far as the current state allows (§17.2.1, §17.2.2).

        Responses the figures do not accept (anything once Completed) are
        discarded, as §17.2.2 requires for additional finals.
        """
        event = _classify(response.status)
        if event is None:
            raise ValueError(f"status {response.status} is not 100-699")
        return self._run(event, now, response)

    def _send(
        self, step: Step, now: float, message: Message | None, actions: list[Action]
    ) -> None:
        if step is Step.SEND_RESPONSE:
            assert isinstance(message, Response)
            self.last_response = message
            actions.append(Send(message, self.dest))
        elif step is Step.RESEND_RESPONSE:
            if self.last_response is not None:
                actions.append(Send(self.last_response, self.dest, retransmission=True))
        elif step is Step.SEND_100:
            self.last_response = _trying(self.request, now - self.created)
            actions.append(Send(self.last_response, self.dest))
        else:
            raise AssertionError(step)

    def __repr__(self) -> str:
        branch = self.key[0] if self.key else "rfc2543"
        return f"<ServerTransaction {self.method} {branch} {self.state.value}>"


# --- messages the transaction layer builds ------------------------------------


def new_branch() -> str:
    """A branch for a new client transaction: magic cookie and 64 random bits (§8.1.1.7)."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def build_ack(request: Request, response: Response) -> Request:
    """The ACK for a 300-699 response to ``request``, an INVITE (§17.1.1.3).

    Request-URI, Call-ID and From are those of the request; To is the
    response's (with the tag the UAS added); the only Via is the request's
    top one, so the ACK matches the INVITE server transaction; CSeq keeps
    the number with method ACK; Route rows are copied so that stateless
    proxies route it like the INVITE. Header values are copied verbatim.
    """
    cseq = request.cseq
    via_row = request.get("via")
    if cseq is None or via_row is None:
        raise ValueError("the INVITE has no CSeq or Via")
    rows = [("Via", split_list(via_row, "Via")[0])]
    rows += [("Route", value) for value in request.get_all("route")]
    for name, source in (("To", response), ("From", request)):
        value = source.get(name)
        if value is None:
            raise ValueError(f"no {name} header to copy into the ACK")
        rows.append((name, value))
    rows.append(("Max-Forwards", "70"))
    call_id = request.get("call-id")
    if call_id is None:
        raise ValueError("the INVITE has no Call-ID")
    rows += [("Call-ID", call_id), ("CSeq", f"{cseq.seq} ACK"), ("Content-Length", "0")]
    return Request("ACK", request.uri_text, rows)


def _trying(request: Request, delay: float) -> Response:
    """The 100 Trying an INVITE server transaction sends by itself (§17.2.1, §8.2.6.1).

    No To tag (§17.2.1); the request's Timestamp is copied, with the time
    the request waited added as its delay.
    """
    response = make_response(request, 100)
    stamp = request.get("timestamp")
    if stamp is not None:
        if len(stamp.split()) == 1:
            stamp = f"{stamp} {max(delay, 0.0):.3f}"
        response.headers.insert(len(response.headers) - 1,
                                ("Timestamp", canonical_key("Timestamp"), stamp))
    return response


# --- matching (§17.1.3, §17.2.3, §9.2) ------------------------------------------


def _tag(address: Address | None) -> str | None:
    """A From/To tag for comparison: tokens compare case-insensitively (§7.3.1)."""
    if address is None or address.tag is None:
        return None
    return address.tag.lower()


def _response_key(response: Response) -> tuple[str, str] | None:
    try:
        via, cseq = response.top_via, response.cseq
    except SIPParseError:
        return None
    if via is None or not via.branch or cseq is None:
        return None
    return via.branch.lower(), cseq.method


def _server_key(request: Request) -> tuple[str, str, int, str] | None:
    try:
        via = request.top_via
    except SIPParseError:
        return None
    if via is None or not via.rfc3261_branch:
        return None
    host, port = via.sent_by
    method = "INVITE" if request.method == "ACK" else request.method
    return via.branch.lower(), host.lower(), port, method


def _same_via(a: Via | None, b: Via | None) -> bool:
    """Via equality (§20.42): same sent-protocol and sent-by, same parameters and values."""
    if a is None or b is None:
        return False

    def norm(v: Via) -> tuple:
        params = {k.lower(): (val or "").lower() for k, val in v.params}
        proto = (v.protocol.upper(), v.version, v.transport.upper())
        return proto, v.host.lower(), v.sent_by[1], params

    return norm(a) == norm(b)


def _legacy_match(txn: ServerTransaction, request: Request, *, cancel: bool = False) -> bool:
    """RFC 2543 matching of a request without the magic cookie (§17.2.3; §9.2 for CANCEL)."""
    original = txn.request
    try:
        cseq, first = request.cseq, original.cseq
        if cseq is None or first is None or cseq.seq != first.seq:
            return False
        if not (request.uri == original.uri
                and request.call_id == original.call_id
                and _tag(request.from_) == _tag(original.from_)
                and _same_via(request.top_via, original.top_via)):
            return False
        if cancel:
            return original.method != "CANCEL" and _tag(request.to) == _tag(original.to)
        if request.method == "ACK":
            return (original.method == "INVITE" and txn.last_response is not None
                    and _tag(request.to) == txn.to_tag)
        return cseq == first and _tag(request.to) == _tag(original.to)
    except SIPParseError:
        return False


_T = TypeVar("_T", ClientTransaction, ServerTransaction)


class TransactionTable:
    """The transactions of one element, and the rules that route messages to them.

    Terminated transactions must be destroyed at once (§17.1.1.2): they
    never match, so a second 2xx to an INVITE goes to the core, and the
    table drops them when it meets them.
    """

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str], ClientTransaction] = {}
        self._servers: dict[tuple[str, str, int], dict[str, ServerTransaction]] = {}
        self._legacy: list[ServerTransaction] = []
        # (deadline, tie-breaker, transaction); entries whose deadline is no
        # longer the transaction's next timer are skipped when they surface.
        self._heap: list[tuple[float, int, ClientTransaction | ServerTransaction]] = []
        self._count = itertools.count()

    def _touch(self, txn: _Transaction) -> None:
        when = txn.next_timer()
        if when is not None and txn.state is not TERMINATED:
            assert isinstance(txn, ClientTransaction | ServerTransaction)
            heapq.heappush(self._heap, (when, next(self._count), txn))

    def _watch(self, txn: ClientTransaction | ServerTransaction) -> None:
        txn.watcher = self._touch
        self._touch(txn)

    def __len__(self) -> int:
        return len(self.transactions())

    def transactions(self) -> list[ClientTransaction | ServerTransaction]:
        """Every transaction held, client ones first."""
        servers = [t for bucket in self._servers.values() for t in bucket.values()]
        return [*self._clients.values(), *servers, *self._legacy]

    def add_client(self, txn: ClientTransaction) -> None:
        """Hold a new client transaction; its branch and method must be unused (§17.1.3)."""
        old = self._clients.get(txn.key)
        if old is not None and old.state is not TERMINATED:
            raise ValueError(f"a client transaction for {txn.key} exists already")
        self._clients[txn.key] = txn
        self._watch(txn)

    def add_server(self, txn: ServerTransaction) -> None:
        """Hold a new server transaction (created for a request that matched none)."""
        self._watch(txn)
        if txn.key is None:
            self._legacy.append(txn)
            return
        bucket = self._servers.setdefault(txn.key[:3], {})
        old = bucket.get(txn.key[3])
        if old is not None and old.state is not TERMINATED:
            raise ValueError(f"a server transaction for {txn.key} exists already")
        bucket[txn.key[3]] = txn

    def remove(self, txn: ClientTransaction | ServerTransaction) -> None:
        """Forget a transaction (normally once it reported Terminated); unknown ones are ignored."""
        if isinstance(txn, ClientTransaction):
            if self._clients.get(txn.key) is txn:
                del self._clients[txn.key]
        elif txn.key is None:
            if txn in self._legacy:
                self._legacy.remove(txn)
        else:
            bucket = self._servers.get(txn.key[:3], {})
            if bucket.get(txn.key[3]) is txn:
                del bucket[txn.key[3]]
                if not bucket:
                    del self._servers[txn.key[:3]]

    def match_response(self, response: Response) -> ClientTransaction | None:
        """The client transaction with the response's top Via branch and CSeq method (§17.1.3).

        The method tells a CANCEL's transaction from the INVITE's, which
        shares its branch. None sends the response to the core (a 2xx
        retransmission, a stray).
        """
        key = _response_key(response)
        txn = self._clients.get(key) if key is not None else None
        return self._live(txn)

    def match_request(self, request: Request) -> ServerTransaction | None:
        """The server transaction a request belongs to (§17.2.3).

        With the magic cookie: same branch, same sent-by, same method, an
        ACK matching its INVITE; a CANCEL has its own transaction and never
        matches the INVITE here (use ``find_cancelled``). Without it: the
        RFC 2543 rules on Request-URI, tags, Call-ID, CSeq and top Via.
        """
        key = _server_key(request)
        if key is not None:
            return self._live(self._servers.get(key[:3], {}).get(key[3]))
        return self._live(next((t for t in self._legacy if _legacy_match(t, request)), None))

    def find_cancelled(self, cancel: Request) -> ServerTransaction | None:
        """The server transaction a CANCEL asks to cancel (§9.2).

        The CANCEL is matched by the rules of §17.2.3 as if its method were
        the cancelled request's; any method but CANCEL and ACK can match,
        and the UAS answers 481 when nothing does (§9.2).
        """
        if cancel.method != "CANCEL":
            raise ValueError("find_cancelled takes a CANCEL")
        key = _server_key(cancel)
        if key is not None:
            bucket = self._servers.get(key[:3], {})
            found = bucket.get("INVITE") or next(
                (t for m, t in bucket.items() if m != "CANCEL"), None)
            return self._live(found)
        return self._live(next(
            (t for t in self._legacy if _legacy_match(t, cancel, cancel=True)), None))

    def find_invite_for_cancel(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (§9.2), or None.

        None also when the CANCEL matched a non-INVITE transaction: §9.2
        gives it no effect there beyond the 200 to the CANCEL.
        """
        txn = self.find_cancelled(cancel)
        return txn if txn is not None and txn.method == "INVITE" else None

    def next_timer(self) -> float | None:
        """The earliest time any held transaction needs ``handle_timers``."""
        heap = self._heap
        while heap:
            when, _, txn = heap[0]
            if txn.state is not TERMINATED and txn.next_timer() == when and self._holds(txn):
                return when
            heapq.heappop(heap)
        return None

    def handle_timers(
        self, now: float
    ) -> list[tuple[ClientTransaction | ServerTransaction, Action]]:
        """Fire the due timers of every transaction, earliest first; drop terminated ones."""
        out: list[tuple[ClientTransaction | ServerTransaction, Action]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, txn = heapq.heappop(heap)
            if txn.state is TERMINATED or txn.next_timer() != when or not self._holds(txn):
                continue
            out += [(txn, action) for action in txn.handle_timer(now)]
            if txn.state is TERMINATED:
                self.remove(txn)
        return out

    def _holds(self, txn: ClientTransaction | ServerTransaction) -> bool:
        if isinstance(txn, ClientTransaction):
            return self._clients.get(txn.key) is txn
        if txn.key is None:
            return txn in self._legacy
        return self._servers.get(txn.key[:3], {}).get(txn.key[3]) is txn

    def _live(self, txn: _T | None) -> _T | None:
        if txn is not None and txn.state is TERMINATED:
            self.remove(txn)
            return None
        return txn
