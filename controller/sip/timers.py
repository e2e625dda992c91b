"""SIP transaction timers (RFC 3261 §17 and Table 4 of Appendix A).

Every timer is named by its letter in the RFC. Values are durations in
seconds; the transaction layer adds them to the ``now`` it is given and
never reads a clock itself (see transaction.py).

A, E and G retransmit over unreliable transports only; D, I, J and K
exist to absorb retransmissions and are therefore zero over reliable
transports, where nothing is retransmitted (Table 4). B, F and H are
64*T1 everywhere: the time seven requests take to be sent over UDP
(§17.1.1.2). ``TRYING`` is not an RFC letter: it is the 200 ms after
which an INVITE server transaction answers 100 Trying for a slow TU
(§17.2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

TIMER_A = "A"
TIMER_B = "B"
TIMER_D = "D"
TIMER_E = "E"
TIMER_F = "F"
TIMER_G = "G"
TIMER_H = "H"
TIMER_I = "I"
TIMER_J = "J"
TIMER_K = "K"
TIMER_TRYING = "TRYING"

# Table 4, "Meaning" column (Timer C belongs to the proxy core, §16.6, not here).
MEANING = {
    TIMER_A: "INVITE request retransmit interval, for UDP only (§17.1.1.2)",
    TIMER_B: "INVITE transaction timeout timer (§17.1.1.2)",
    TIMER_D: "wait time for response retransmits (§17.1.1.2)",
    TIMER_E: "non-INVITE request retransmit interval, UDP only (§17.1.2.2)",
    TIMER_F: "non-INVITE transaction timeout timer (§17.1.2.2)",
    TIMER_G: "INVITE response retransmit interval (§17.2.1)",
    TIMER_H: "wait time for ACK receipt (§17.2.1)",
    TIMER_I: "wait time for ACK retransmits (§17.2.1)",
    TIMER_J: "wait time for non-INVITE request retransmits (§17.2.2)",
    TIMER_K: "wait time for response retransmits (§17.1.2.2)",
    TIMER_TRYING: "send 100 Trying if the TU has not answered an INVITE (§17.2.1)",
}


@dataclass(frozen=True)
class TimerConfig:
    """The base values every transaction timer derives from (Table 4).

    T1 may be raised on high-latency links and lowered only inside closed
    networks (§17.1.1.2); the exponential backoffs apply whatever its value.
    """

    t1: float = 0.5
    "RTT estimate; A, E and G start at T1 and B, F, H, J are 64*T1 (§17.1.1.1)."
    t2: float = 4.0
    "Cap of the non-INVITE request and INVITE response retransmit interval (§17.1.2.2)."
    t4: float = 5.0
    "Longest a message stays in the network; Timers I and K over UDP (§17.1.2.2)."
    d: float = 32.0
    "Timer D over UDP: at least 32 s, not 64*T1, as the server's T1 is unknown (§17.1.1.2)."
    trying: float = 0.2
    "How long the INVITE server transaction waits for the TU before sending 100 (§17.2.1)."

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise ValueError("timers need 0 < T1 <= T2")
        if self.t4 < 0 or self.d < 0 or self.trying < 0:
            raise ValueError("T4, Timer D and the 100 Trying delay cannot be negative")

    def initial(self, timer: str, reliable: bool) -> float | None:
        """The value a timer is set to when first started; None when it is not started.

        RFC 3261 §17.1.1.2 (A, B, D), §17.1.2.2 (E, F, K), §17.2.1 (G, H, I),
        §17.2.2 (J). Retransmission timers are not started on reliable
        transports; wait timers are zero there.
        """
        timeout = 64 * self.t1
        if timer in (TIMER_A, TIMER_E, TIMER_G):
            return None if reliable else self.t1
        if timer in (TIMER_B, TIMER_F, TIMER_H):
            return timeout
        if timer == TIMER_D:
            return 0.0 if reliable else self.d
        if timer in (TIMER_I, TIMER_K):
            return 0.0 if reliable else self.t4
        if timer == TIMER_J:
            return 0.0 if reliable else timeout
        if timer == TIMER_TRYING:
            return self.trying
        raise ValueError(f"unknown timer {timer!r}")

    def backoff(self, timer: str, previous: float) -> float:
        """The retransmit interval after one of ``previous`` seconds.

        Timer A doubles without limit (§17.1.1.2); E and G double up to T2
        (§17.1.2.2, §17.2.1).
        """
        if timer == TIMER_A:
            return 2 * previous
        if timer in (TIMER_E, TIMER_G):
            return min(2 * previous, self.t2)
        raise ValueError(f"timer {timer!r} does not back off")
