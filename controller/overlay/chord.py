"""The CHORD-RELOAD routing table (RFC 6940 section 10), sans I/O.

A peer keeps a Neighbor Table (successors and predecessors, at least three
each, section 10.1 and 10.7) and a Finger Table whose i-th entry (i from 1)
is the first peer at or after ``own + 2^(128-i)`` (section 10.5). Both hold
Node-IDs as integers; which of them has a live link is the peer's business
(the Connection Table): the peer adds a node when a link to it works and
removes it the moment the link fails (section 10.7.1 and 10.7.2), and this
table recomputes its neighbours from what is left.

Routing follows section 10.3: to a directly connected destination if there
is one, else to the routing-table node with the largest Node-ID in
(own, target], else to the smallest Node-ID after the target.
"""

from __future__ import annotations

from sipmesh.overlay.ids import RING, distance, in_half_open

NEIGHBOURS = 3


class ChordTable:
    """Neighbour and finger state of one peer (section 10.1)."""

    __slots__ = ("own", "size", "successors", "predecessors", "_known")

    def __init__(self, own: int, size: int = NEIGHBOURS):
        self.own = own
        self.size = size
        self.successors: list[int] = []
        self.predecessors: list[int] = []
        self._known: set[int] = set()

    # ------------------------------------------------------------ membership

    def nodes(self) -> set[int]:
        """Every routable peer this table knows (the Routing Table, 10.3)."""
        return set(self._known)

    def neighbours(self) -> set[int]:
        return set(self.successors) | set(self.predecessors)

    def add(self, node: int) -> bool:
        """Add a routable peer; True when the Neighbor Table changed."""
        if node == self.own or node in self._known:
            return False
        self._known.add(node)
        return self._recompute()

    def remove(self, node: int) -> bool:
        """Remove a failed or departed peer (10.7.1, 10.7.2); True when the
        Neighbor Table changed."""
        if node not in self._known:
            return False
        self._known.discard(node)
        return self._recompute()

    def _recompute(self) -> bool:
        old = (self.successors, self.predecessors)
        ordered = sorted(self._known, key=lambda n: distance(self.own, n))
        self.successors = ordered[: self.size]
        self.predecessors = list(reversed(ordered[-self.size :])) if ordered else []
        return (self.successors, self.predecessors) != old

    # ------------------------------------------------------------ fingers

    @staticmethod
    def finger_target(own: int, i: int) -> int:
        """Start of the i-th finger interval, ``own + 2^(128-i)`` (10.5)."""
        return (own + (1 << (128 - i))) % RING

    def finger_count(self) -> int:
        """Finger Table size from the ring density seen in the successor list
        (10.7.4.3): about log2 of the estimated number of peers, plus one."""
        if not self.successors:
            return 0
        span = distance(self.own, self.successors[-1]) or RING
        estimate = max(2, RING * len(self.successors) // span)
        return estimate.bit_length() + 1

    def finger_for(self, i: int) -> int | None:
        """The known peer closest at or after finger target i."""
        target = self.finger_target(self.own, i)
        best = None
        best_d = RING
        for n in self._known:
            d = distance(target, n)
            if d < best_d:
                best, best_d = n, d
        return best

    def finger_ids(self) -> list[int]:
        """Distinct Finger Table entries in numerically ascending order (10.7)."""
        out = set()
        for i in range(1, self.finger_count() + 1):
            f = self.finger_for(i)
            if f is not None:
                out.add(f)
        return sorted(out)

    # ------------------------------------------------------------ routing

    def responsible(self, rid: int) -> bool:
        """Section 10.1: this peer owns ``rid`` when rid is in (pred, own]."""
        if not self.predecessors:
            return True
        return in_half_open(rid, self.predecessors[0], self.own)

    def responsible_range(self) -> tuple[int, int]:
        """The interval (low, high] this peer is responsible for."""
        low = self.predecessors[0] if self.predecessors else self.own
        return low, self.own

    def next_hop(self, target: int, exclude: int | None = None) -> int | None:
        """Next hop toward ``target`` (10.3), or None when the table is empty.

        ``exclude`` leaves one node out (the one a message came from, when
        this table would send it straight back).
        """
        if target in self._known and target != exclude:
            return target
        best = None
        best_d = -1
        after = None
        after_d = RING
        own = self.own
        span = distance(own, target)
        for n in self._known:
            if n == exclude:
                continue
            d = distance(own, n)
            if d <= span:
                if d > best_d:
                    best, best_d = n, d
            else:
                dt = distance(target, n)
                if dt < after_d:
                    after, after_d = n, dt
        return best if best is not None else after

    def replica_set(self, count: int = 2) -> list[int]:
        """The next ``count`` successors, which hold replicas (10.4)."""
        return self.successors[:count]
