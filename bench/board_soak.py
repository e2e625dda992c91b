"""Soak of the board application on the LAN (board_bench.py section 4).

Two boards at the same heap, one provisioned and online, one never
provisioned, run for SECONDS with the controller's short intervals
(heartbeat 2 s, pull 4 s, refresh 8 s): 600 s is ~300 heartbeats, ~150
configuration pulls and ~75 overlay refreshes (RFC 6940 §6.4.1 stores of
the device record). Counted from outside the board: heartbeats by the
registry's counter, pulls by tshark on the bridge (``GET
/boards/<id>/config``), refreshes by the stored record's storage_time
changing (`sipmesh overlay fetch`), the lowest free heap its heartbeats
report, any state change away from ``online`` in the controller's log, and
the board's own log over serial (``sipmesh board logs --follow``) for
MemoryError lines and reboots.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import board_lan

if TYPE_CHECKING:
    from board_bench import Site

SAMPLE = 4.0  # half the refresh interval: every storage_time change is seen


async def soak(site: Site, bid: str, pty: Path, other: str, heap: str, seconds: int) -> dict:
    """Run the soak; bid is provisioned and online (sim serial at pty); other is started here."""
    import board_bench

    loop = asyncio.get_running_loop()
    await site.sim("b2", other, heap, site.tmp / "soak-b2")
    fetch = ["overlay", "fetch", f"door-1@{board_bench.OVERLAY}", "--kind",
             str(board_bench.KIND_DEVICE_RECORD), "--data", str(site.data), "--json"]

    pulls: board_bench.Lines | None = None
    if shutil.which("tshark"):
        cap = await board_lan.start(
            site.procs, "tshark", site.ns["ctrl"], "tshark", "-i", site.ns["br"], "-l", "-n",
            "-d", "tcp.port==7380,http", "-Y", "http.request", "-T", "fields",
            "-e", "ip.src", "-e", "http.request.method", "-e", "http.request.uri")
        pulls = board_bench.Lines(cap)
        if await pulls.wait("Capturing on", timeout=60) is None:
            pulls = None
    follow = {}
    for key, port in ((bid, pty), (other, site.tmp / "soak-b2.pty")):
        proc = await board_lan.start(site.procs, "logs-" + key, None, board_bench.SIPMESH,
                                     "board", "logs", "--port", str(port), "--follow", "--json")
        follow[key] = board_bench.Lines(proc)

    def record_time() -> int | None:
        out = board_bench.sipmesh(*fetch, timeout=60)
        try:
            return max(v["storage_time"] for v in json.loads(out.stdout)["values"])
        except (ValueError, KeyError, TypeError):
            return None

    start = (await asyncio.to_thread(site.registry)).get(bid, {})
    mark = len(site.ctl.lines)
    cap_mark = len(pulls.lines) if pulls else 0
    t0 = loop.time()
    storage_times: list[int] = []
    frees: list[int] = []
    states: set[str] = set()
    other_states: set[str] = set()
    samples = 0
    while loop.time() - t0 < seconds:
        st = await asyncio.to_thread(record_time)
        if st is not None and (not storage_times or storage_times[-1] != st):
            storage_times.append(st)
        reg = await asyncio.to_thread(site.registry)
        b = reg.get(bid, {})
        if b:
            states.add(b["state"])
            if isinstance(b["heartbeat"].get("free"), int):
                frees.append(b["heartbeat"]["free"])
        if other in reg:
            other_states.add(reg[other]["state"])
        samples += 1
        await asyncio.sleep(max(0.0, SAMPLE - (loop.time() - t0) % SAMPLE))
    elapsed = loop.time() - t0
    end = (await asyncio.to_thread(site.registry)).get(bid, {})

    left = [ln for _, ln in site.ctl.lines[mark:]
            if f"boards: {bid} " in ln and ("online ->" in ln or " lost" in ln)]
    n_pulls = n_beats_wire = None
    if pulls:
        reqs = [ln.split("\t") for _, ln in pulls.lines[cap_mark:]]
        n_pulls = sum(1 for r in reqs if len(r) == 3 and r[1] == "GET"
                      and r[2] == f"/boards/{bid}/config")
        n_beats_wire = sum(1 for r in reqs if len(r) == 3 and r[1] == "POST"
                           and r[2] == f"/boards/{bid}/status")
    for lines in follow.values():
        await lines.proc.close()
        site.procs.remove(lines.proc)
    if pulls:
        await pulls.proc.close()
        site.procs.remove(pulls.proc)
    # And once more after the run, as an operator would: the lines the ring still holds.
    final = await asyncio.to_thread(board_bench.board_logs, pty)

    def bad(lines: list[str]) -> int:
        return sum(1 for ln in lines if "MemoryError" in ln)

    logs = {k: [_text(ln) for _, ln in v.lines] for k, v in follow.items()}
    hb0, hb1 = start.get("heartbeat", {}), end.get("heartbeat", {})
    fig = {
        "seconds": round(elapsed, 1), "heap": heap, "board": bid, "unprovisioned": other,
        "heartbeats": (hb1.get("n", 0) - hb0.get("n", 0)) if hb1.get("boot") == hb0.get("boot")
        else None,
        "heartbeats_wire": n_beats_wire, "pulls": n_pulls,
        "refreshes_seen": max(0, len(storage_times) - 1), "fetch_samples": samples,
        "expected": {"heartbeats": int(elapsed / 2), "pulls": int(elapsed / 4),
                     "refreshes": int(elapsed / 8)},
        "free_min": min(frees) if frees else None, "free_max": max(frees) if frees else None,
        "alloc_end": hb1.get("alloc"), "boot_start": hb0.get("boot"), "boot_end": hb1.get("boot"),
        "states": sorted(states), "left_online": left,
        "unprovisioned_states": sorted(other_states),
        "log_lines": {k: len(v) for k, v in logs.items()},
        "memory_errors": {k: bad(v) for k, v in logs.items()},
        "memory_errors_final_read": bad(final),
        "reboots_logged": reboots(logs[bid]),
        "unprovisioned_reboots_logged": reboots(logs[other]),
        "last_log": logs[bid][-3:],
    }
    exp = fig["expected"]
    problems = []
    if fig["states"] != ["online"] or left:
        problems.append("left online")
    if fig["boot_start"] != fig["boot_end"] or fig["reboots_logged"]:
        problems.append("board rebooted")
    if fig["unprovisioned_reboots_logged"]:
        problems.append("unprovisioned board rebooted")
    if any(fig["memory_errors"].values()) or fig["memory_errors_final_read"]:
        problems.append("MemoryError")
    for key, got in (("heartbeats", fig["heartbeats"]), ("pulls", fig["pulls"]),
                     ("refreshes", fig["refreshes_seen"])):
        if got is not None and got < 0.8 * exp[key]:
            problems.append(f"{key} {got} < 80% of {exp[key]}")
    fig["verdict"] = "PASS" if not problems else "FAIL"
    fig["problems"] = problems
    return fig


def _text(raw: str) -> str:
    try:
        return json.loads(raw)["line"]
    except (ValueError, KeyError, TypeError):
        return raw


def reboots(lines: list[str]) -> int:
    """Reboots seen in a board's log: its seconds-since-boot prefix going backwards."""
    count, last = 0, -1.0
    for ln in lines:
        try:
            t = float(ln.split(" ", 1)[0])
        except ValueError:
            continue
        if t < last:
            count += 1
        last = t
    return count


def table(f: dict) -> str:
    exp = f["expected"]

    def row(name: str, got: object, want: int) -> str:
        ratio = f"{got / want:.2f}" if isinstance(got, int) and want else "n/a"
        return f"{name:<34} {got!s:>8} {want:>9} {ratio:>6}"

    return "\n".join([
        f"4. Soak: {f['seconds']} s at heap {f['heap']}, board {f['board']} provisioned, "
        f"{f['unprovisioned']} not", "",
        f"{'':<34} {'counted':>8} {'nominal':>9} {'ratio':>6}",
        row("heartbeats (registry n)", f["heartbeats"], exp["heartbeats"]),
        row("heartbeats (tshark POST /status)", f["heartbeats_wire"], exp["heartbeats"]),
        row("pulls (tshark GET /config)", f["pulls"], exp["pulls"]),
        row("overlay refreshes (storage_time)", f["refreshes_seen"], exp["refreshes"]),
        "",
        f"heartbeat free heap: min {f['free_min']} B, max {f['free_max']} B; alloc at end "
        f"{f['alloc_end']} B; boot counter {f['boot_start']} -> {f['boot_end']}",
        f"registry states seen: {', '.join(f['states'])}; transitions away from online: "
        f"{len(f['left_online'])}; unprovisioned board: {', '.join(f['unprovisioned_states'])}",
        f"board log lines read over serial: {f['log_lines']}; MemoryError lines: "
        f"{f['memory_errors']} (final read: {f['memory_errors_final_read']}); reboots in the "
        f"logs: {f['reboots_logged']}, {f['unprovisioned_reboots_logged']}",
        f"verdict: {f['verdict']}" + (" (" + "; ".join(f["problems"]) + ")"
                                      if f["problems"] else ""),
    ])
