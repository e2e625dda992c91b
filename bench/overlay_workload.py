"""The overlay benchmark's workload, independent of the system under test.

The issue fixes the workload: N peers on loopback join one overlay, 1,000
resources are stored from random peers, 2,000 fetches are made from random
peers, then 20% of the peers crash in four waves of 5%, one stabilisation
period apart, while a steady stream of fetches runs. After the churn the
runner waits ``SETTLE_PERIODS`` periods, fetches 2,000 times again and then
fetches every stored resource once.

A system is driven through the ``System`` protocol (an async adapter), so
sipmesh's RELOAD/Chord overlay (RFC 6940 §10) and the anchor are measured by
the same code in the same process. ``run`` returns a ``Result`` holding every
figure; ``format_table`` prints systems side by side with the issue's goals.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Protocol

FETCH_CAP = 30.0  # seconds; a get still running then is a failure with this latency
CHURN_WAVES = 4
CHURN_WAVE_FRACTION = 0.05
SETTLE_PERIODS = 2  # periods waited after the churn stream before the after-churn fetches
CONCURRENCY = 16  # stores in flight while storing the resources
FETCH_RATE = 100.0  # fetches started per second before and after churn (open loop)
VALUE_SIZE = 200  # bytes; about one SIP registration (RFC 7904 §3)

# The goals.
GOAL_SUCCESS = 0.999
GOAL_CHURN_P99 = 1.0  # seconds
GOAL_HOPS_SLACK = 1.0  # mean hops within this of 1/2 log2 N
GOAL_RSS_PER_PEER = 100 * 1024  # bytes

Progress = Callable[[str], None]


class System(Protocol):
    """An overlay under test: n peers in this process, driven by the runner.

    Peers are numbered 0..n-1 in the order they were started. A system whose
    counters live in other processes may also have ``async refresh()``: the
    runner awaits it before reading bytes_sent() and rss_per_peer().
    """

    name: str
    stabilisation_period: float  # seconds: churn waves are this far apart

    async def start(self, n: int, progress: Progress) -> None:
        """Start n peers and join them into one overlay; returns when all have joined."""

    async def put(self, peer: int, key: bytes, value: bytes) -> bool:
        """Store value under key, issued by peer; True when the overlay accepted it."""

    async def get(self, peer: int, key: bytes) -> tuple[bytes | None, int | None]:
        """Fetch key from peer: (value or None, route hops or None if not countable)."""

    def kill(self, peer: int) -> None:
        """Crash peer: sockets closed, timers stopped, no message to anyone."""

    def alive(self) -> list[int]:
        """Peers started and not killed."""

    def bytes_sent(self) -> int:
        """Bytes all peers have written to their sockets so far."""

    def rss_per_peer(self) -> float:
        """(RSS now - RSS before the first peer started) / peers started, in bytes."""

    async def stop(self) -> None:
        """Stop every peer still alive."""


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE")


def udp_receive_drops() -> int:
    """Datagrams this network namespace dropped for full receive buffers (/proc/net/snmp).

    System-wide, so other processes' drops count too; a loopback overlay in one
    process loses datagrams only this way, so a rise explains lost RPCs.
    """
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


@dataclass
class Sample:
    """One fetch: whether it returned the stored value, how long it took, its hops."""

    ok: bool
    latency: float
    hops: int | None
    timed_out: bool = False


@dataclass
class PhaseStats:
    """Fetch figures of one phase; latencies in milliseconds."""

    count: int = 0
    ok: int = 0
    timeouts: int = 0
    orphaned: int = 0  # the issuing peer was killed while the fetch ran: not counted
    success: float = 0.0
    median_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    hops_mean: float | None = None
    hops_p99: float | None = None

    @classmethod
    def of(cls, samples: list[Sample], orphaned: int = 0) -> PhaseStats:
        lat = sorted(s.latency * 1000 for s in samples)
        hops = sorted(s.hops for s in samples if s.ok and s.hops is not None)
        ok = sum(s.ok for s in samples)
        return cls(
            count=len(samples), ok=ok, timeouts=sum(s.timed_out for s in samples),
            orphaned=orphaned, success=ok / len(samples) if samples else 0.0,
            median_ms=_percentile(lat, 50), p99_ms=_percentile(lat, 99),
            max_ms=lat[-1] if lat else 0.0,
            hops_mean=sum(hops) / len(hops) if hops else None,
            hops_p99=_percentile(hops, 99) if hops else None,
        )


@dataclass
class Result:
    """Every figure of one run of the workload against one system at one N."""

    system: str
    n: int
    resources: int
    fetches: int
    seed: int
    period: float
    join_s: float = 0.0
    put_failures: int = 0
    hops_target: float = 0.0
    before: PhaseStats = field(default_factory=PhaseStats)
    churn: PhaseStats = field(default_factory=PhaseStats)
    after: PhaseStats = field(default_factory=PhaseStats)
    stored_fetchable: PhaseStats = field(default_factory=PhaseStats)
    killed: int = 0
    bytes_per_fetch: float = 0.0
    rss_per_peer: float = 0.0
    wall_s: float = 0.0
    udp_drops: int = 0  # udp_receive_drops() rise over the run
    phase_s: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Result:
        phases = ("before", "churn", "after", "stored_fetchable")
        return cls(**{k: PhaseStats(**v) if k in phases else v for k, v in d.items()})


def _percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


class _Runner:
    """State of one run: the system, the random source, the stored keys."""

    def __init__(self, system: System, seed: int, progress: Progress) -> None:
        self.system = system
        self.rng = random.Random(seed)
        self.progress = progress
        self.stored: dict[bytes, bytes] = {}
        self.dead: set[int] = set()

    async def fetch(self, peer: int, key: bytes) -> Sample | None:
        """One capped get; None when peer was killed while the get ran (orphaned)."""
        start = time.perf_counter()
        try:
            value, hops = await asyncio.wait_for(self.system.get(peer, key), FETCH_CAP)
        except TimeoutError:
            return Sample(False, FETCH_CAP, None, timed_out=True)
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling() or peer not in self.dead:
                raise
            return None
        except Exception:  # noqa: BLE001 - any failure of the system is a failed fetch
            if peer in self.dead:
                return None
            return Sample(False, time.perf_counter() - start, None)
        if peer in self.dead:
            return None
        return Sample(value == self.stored[key], time.perf_counter() - start, hops)

    async def pool(self, jobs: Iterable[Callable[[], object]], concurrency: int) -> list:
        """Run async job factories with at most `concurrency` in flight, results in order."""
        jobs = list(jobs)
        results: list = [None] * len(jobs)
        cursor = iter(range(len(jobs)))

        async def worker() -> None:
            for i in cursor:
                results[i] = await jobs[i]()

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(jobs)))))
        return results

    def random_fetch(self) -> Callable[[], object]:
        keys = list(self.stored)

        def job() -> object:
            return self.fetch(self.rng.choice(self.system.alive()), self.rng.choice(keys))
        return job

    async def stream(
        self, jobs: list[Callable[[], object]], interval: float,
        events: Iterable[tuple[float, Callable[[], None]]] = (),
    ) -> PhaseStats:
        """Start one fetch job every `interval` seconds whatever is in flight (open loop).

        `events` are (offset, action) pairs run when the schedule reaches
        them; the phase ends when every fetch has finished.
        """
        pending = sorted(events, key=lambda e: e[0])
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tasks: list[asyncio.Future] = []
        for i, job in enumerate(jobs):
            due = t0 + i * interval
            while pending and t0 + pending[0][0] <= due:
                offset, action = pending.pop(0)
                await asyncio.sleep(max(0.0, t0 + offset - loop.time()))
                action()
            await asyncio.sleep(max(0.0, due - loop.time()))
            tasks.append(asyncio.ensure_future(job()))
        samples = await asyncio.gather(*tasks)
        kept = [s for s in samples if s is not None]
        return PhaseStats.of(kept, orphaned=len(samples) - len(kept))

    async def fetch_phase(self, count: int) -> PhaseStats:
        return await self.stream([self.random_fetch() for _ in range(count)], 1 / FETCH_RATE)

    async def churn_phase(self, n: int, count: int, period: float) -> tuple[PhaseStats, int]:
        """Kill CHURN_WAVES waves of 5% of n, one period apart, under a steady fetch stream.

        The stream starts with the first wave and ends one period after the
        last, so `count` fetches run at count / (CHURN_WAVES * period) per second.
        """
        per_wave = max(1, round(CHURN_WAVE_FRACTION * n))
        killed = 0

        def wave() -> None:
            nonlocal killed
            victims = self.rng.sample(self.system.alive(), per_wave)
            for peer in victims:
                self.dead.add(peer)
                self.system.kill(peer)
            killed += len(victims)
            self.progress(f"churn wave: killed {len(victims)}, {len(self.system.alive())} alive")

        waves = [(i * period, wave) for i in range(CHURN_WAVES)]
        jobs = [self.random_fetch() for _ in range(count)]
        stats = await self.stream(jobs, CHURN_WAVES * period / count, waves)
        return stats, killed

    async def sweep(self) -> PhaseStats:
        """Fetch every stored resource once, each from a random alive peer."""
        def job(key: bytes) -> Callable[[], object]:
            return lambda: self.fetch(self.rng.choice(self.system.alive()), key)
        return await self.stream([job(k) for k in self.stored], 1 / FETCH_RATE)


async def run(
    system: System,
    n: int,
    resources: int = 1000,
    fetches: int = 2000,
    seed: int = 1,
    progress: Progress = lambda _msg: None,
) -> Result:
    """Run the issue's workload against system with n peers; system is stopped after."""
    wall = time.perf_counter()
    drops = udp_receive_drops()
    r = _Runner(system, seed, lambda msg: progress(f"[{system.name} N={n}] {msg}"))
    period = system.stabilisation_period
    res = Result(system.name, n, resources, fetches, seed, period,
                 hops_target=0.5 * math.log2(n))
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        res.phase_s[name] = round(now - mark, 2)
        mark = now
        r.progress(f"{name} done in {res.phase_s[name]:.1f} s")

    try:
        await system.start(n, r.progress)
        res.join_s = time.perf_counter() - mark
        phase("join")

        values = {f"resource-{i}".encode(): r.rng.randbytes(VALUE_SIZE) for i in range(resources)}

        def put_job(key: bytes, value: bytes) -> Callable[[], object]:
            async def job() -> bool:
                try:
                    return await asyncio.wait_for(
                        system.put(r.rng.choice(system.alive()), key, value), FETCH_CAP)
                except Exception:  # noqa: BLE001 - a failed store is counted, not fatal
                    return False
            return job

        oks = await r.pool((put_job(k, v) for k, v in values.items()), CONCURRENCY)
        res.put_failures = oks.count(False)
        r.stored = {k: v for (k, v), ok in zip(values.items(), oks, strict=True) if ok}
        phase("store")
        if not r.stored:
            raise RuntimeError(f"{system.name}: no resource could be stored")

        # Systems whose peers live in other processes collect their counters here.
        refresh = getattr(system, "refresh", None)
        if refresh is not None:
            await refresh()
        sent = system.bytes_sent()
        res.before = await r.fetch_phase(fetches)
        if refresh is not None:
            await refresh()
        res.bytes_per_fetch = (system.bytes_sent() - sent) / fetches
        res.rss_per_peer = system.rss_per_peer()
        phase("fetch before churn")

        res.churn, res.killed = await r.churn_phase(n, fetches, period)
        phase("churn")
        await asyncio.sleep(SETTLE_PERIODS * period)
        phase("settle")
        res.after = await r.fetch_phase(fetches)
        phase("fetch after churn")
        res.stored_fetchable = await r.sweep()
        phase("sweep")
    finally:
        await system.stop()
    res.wall_s = time.perf_counter() - wall
    res.udp_drops = udp_receive_drops() - drops
    return res


# --- report -----------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _ms(x: float) -> str:
    return f"{x:,.1f}"


def _opt(x: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)


# (label, goal text, value getter, formatter, goal check or None)
Row = tuple[str, str, Callable[[Result], float | None], Callable[[float | None], str],
            Callable[[Result], bool] | None]


def _hops_ok(r: Result) -> bool:
    return r.before.hops_mean is not None and abs(r.before.hops_mean - r.hops_target) <= 1


ROWS: list[Row] = [
    ("join time (s)", "", lambda r: r.join_s, lambda x: f"{x:.1f}", None),
    ("stores failed", "", lambda r: r.put_failures, lambda x: f"{x:.0f}", None),
    ("route hops mean", "1/2 log2 N +- 1", lambda r: r.before.hops_mean, _opt, _hops_ok),
    ("route hops p99", "", lambda r: r.before.hops_p99, lambda x: _opt(x, "{:.0f}"), None),
    ("fetch success before churn", ">= 99.9%", lambda r: r.before.success, _pct,
     lambda r: r.before.success >= GOAL_SUCCESS),
    ("  latency median (ms)", "", lambda r: r.before.median_ms, _ms, None),
    ("  latency p99 (ms)", "", lambda r: r.before.p99_ms, _ms, None),
    ("fetch success during churn", "", lambda r: r.churn.success, _pct, None),
    ("  latency median (ms)", "", lambda r: r.churn.median_ms, _ms, None),
    ("  latency p99 (ms)", "< 1000 ms", lambda r: r.churn.p99_ms, _ms,
     lambda r: r.churn.p99_ms < GOAL_CHURN_P99 * 1000),
    ("fetch success after churn", ">= 99.9%", lambda r: r.after.success, _pct,
     lambda r: r.after.success >= GOAL_SUCCESS),
    ("  latency median (ms)", "", lambda r: r.after.median_ms, _ms, None),
    ("  latency p99 (ms)", "", lambda r: r.after.p99_ms, _ms, None),
    ("stored data fetchable after", "", lambda r: r.stored_fetchable.success, _pct, None),
    ("bytes sent per fetch", "", lambda r: r.bytes_per_fetch, lambda x: f"{x:,.0f}", None),
    ("RSS per peer (KiB)", "<= 100 KiB", lambda r: r.rss_per_peer / 1024,
     lambda x: f"{x:,.1f}", lambda r: r.rss_per_peer <= GOAL_RSS_PER_PEER),
]


def _cell(row: Row, r: Result) -> str:
    _, _, get, fmt, check = row
    text = fmt(get(r))
    if check is not None and not check(r):
        text += " (miss)"
    return text


def format_table(results: list[Result]) -> str:
    """Systems side by side per N, with the goal column and first/last system ratios."""
    systems = list(dict.fromkeys(r.system for r in results))
    by = {(r.system, r.n): r for r in results}
    lines: list[str] = []
    for n in sorted({r.n for r in results}):
        here = [by[s, n] for s in systems if (s, n) in by]
        first = here[0]
        lines += [
            f"N = {n}: {first.resources} resources of {VALUE_SIZE} B, {first.fetches} fetches "
            f"per phase; 1/2 log2 N = {first.hops_target:.2f}",
            "  periods (s): " + ", ".join(f"{r.system} {r.period:g}" for r in here)
            + "; wall (s): " + ", ".join(f"{r.system} {r.wall_s:.0f}" for r in here),
        ]
        ratio = len(here) > 1
        head = f"  {'':<30} {'goal':<16}" + "".join(f"{r.system:>18}" for r in here)
        if ratio:
            head += f"{here[0].system + ' / ' + here[-1].system:>22}"
        lines.append(head)
        for row in ROWS:
            line = f"  {row[0]:<30} {row[1]:<16}" + "".join(f"{_cell(row, r):>18}" for r in here)
            if ratio:
                a, b = row[2](here[0]), row[2](here[-1])
                line += f"{a / b:>22.3g}" if a is not None and b else f"{'-':>22}"
            lines.append(line)
        for r in here:
            lines += [
                f"  {r.system}: {r.killed} peers killed; fetches orphaned by their peer's "
                f"death during churn: {r.churn.orphaned}; max latency during churn "
                f"{r.churn.max_ms:,.0f} ms;",
                f"    fetches over the {FETCH_CAP:g} s cap before/during/after/sweep: "
                f"{r.before.timeouts}/{r.churn.timeouts}/{r.after.timeouts}/"
                f"{r.stored_fetchable.timeouts}; UDP receive-buffer drops (system-wide): "
                f"{r.udp_drops};",
                "    phase times (s): "
                + ", ".join(f"{k} {v:g}" for k, v in r.phase_s.items()),
            ]
        lines.append("")
    lines += textwrap.wrap(
        "How measured: peers on 127.0.0.1, driven by one asyncio loop (each adapter's "
        "docstring says which processes hold its peers). Fetches are issued "
        "from random alive peers for random stored keys in an open loop: before and after "
        f"churn one is started every 1/{FETCH_RATE:g} s whatever is in flight; during churn "
        f"they are spread evenly over the {CHURN_WAVES} waves (each wave kills "
        f"{CHURN_WAVE_FRACTION:.0%} of N at random, one stabilisation period apart; the "
        "stream ends one period after the last wave). The after-churn fetches start "
        f"{SETTLE_PERIODS} periods after the churn stream's last fetch has finished. A fetch "
        "succeeds when it returns the stored bytes; one still running after "
        f"{FETCH_CAP:g} s fails with that latency; a fetch whose peer was killed while it "
        "ran is left out (orphaned). 'stored data fetchable' fetches every stored resource "
        "once after churn. Bytes per fetch: bytes all peers wrote to their sockets during "
        "the before-churn fetch phase / fetches (maintenance traffic in that window "
        "included). RSS per peer: (RSS of the processes holding peers after the before-churn "
        "fetches - their RSS before the first peer started) / N, so it includes the stored "
        "replicas (and, for peers in the runner's process, the runner's own records). "
        "Hops: mean and p99 over the successful before-churn fetches. "
        "'(miss)' marks a goal not met.", 92, break_on_hyphens=False)
    return "\n".join(lines)
